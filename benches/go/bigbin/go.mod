module bigbin

go 1.21
