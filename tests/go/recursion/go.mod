module recursion

go 1.21
