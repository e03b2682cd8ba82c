module reuse

go 1.21
