module chatty

go 1.21
