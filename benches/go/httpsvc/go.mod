module httpsvc

go 1.21
