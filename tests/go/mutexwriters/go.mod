module mutexwriters

go 1.21
