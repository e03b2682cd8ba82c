module racer

go 1.21
