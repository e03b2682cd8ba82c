module keystorm

go 1.21
