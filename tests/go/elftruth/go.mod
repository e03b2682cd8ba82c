module elftruth

go 1.21
