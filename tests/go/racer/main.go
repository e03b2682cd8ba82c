// racer writes one map from two goroutines without a lock, which the Go runtime detects and
// turns into `fatal error: concurrent map writes` (exit status 2). kubectl-mapguard should
// report the concurrent write and the fatal message. If the runtime never notices within 30 s
// (it checks a flag, it is not guaranteed), racer prints "racer: no crash" and exits 0.
package main

import (
	"os"
	"sync"
	"time"
)

//go:noinline
func write(m map[int]int, k int) {
	m[k] = k // racy on purpose
}

//go:noinline
func remove(m map[int]int, k int) {
	delete(m, k) // racy on purpose
}

func main() {
	m := make(map[int]int)
	deadline := time.Now().Add(30 * time.Second)
	var wg sync.WaitGroup
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; ; i++ {
				if i%1024 == 0 && time.Now().After(deadline) {
					return
				}
				k := g*100000 + i%4096
				write(m, k)
				remove(m, k)
			}
		}(g)
	}
	wg.Wait()
	os.Stderr.WriteString("racer: no crash\n")
}
