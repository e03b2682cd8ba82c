module manymaps

go 1.21
