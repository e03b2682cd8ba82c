module maptruth

go 1.21
