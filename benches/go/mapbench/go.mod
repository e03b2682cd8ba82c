module mapbench

go 1.21
