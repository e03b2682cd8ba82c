module podwork

go 1.21
