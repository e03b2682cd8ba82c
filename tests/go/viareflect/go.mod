module viareflect

go 1.21
