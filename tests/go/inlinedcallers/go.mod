module inlinedcallers

go 1.21
