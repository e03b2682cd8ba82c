module gobinprobe

go 1.21
