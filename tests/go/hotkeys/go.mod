module hotkeys

go 1.21
