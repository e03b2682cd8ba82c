module coldkeys

go 1.21
