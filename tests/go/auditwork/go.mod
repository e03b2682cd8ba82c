module auditwork

go 1.21
