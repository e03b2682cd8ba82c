// racer writes one map[int]int from two goroutines without a lock, which the Go runtime detects
// and turns into `fatal error: concurrent map writes` (exit status 2), usually within
// milliseconds. kubectl-mapguard should report the concurrent write (both goroutines, both
// callers: main.write and main.remove) before the runtime kills the process, then the fatal
// message. If the runtime never notices within 30 s (it checks a flag, detection is not
// guaranteed), racer prints "racer: no crash" to stderr and exits 0. It never writes to stdout
// (under `kubectl-mapguard -- racer` its stdout is the tool's stdout).
//
//	racer
//
// Standard library only, no encoding/json, flag or os.Getenv (they use maps themselves).
package main

import (
	"os"
	"runtime"
	"sync"
	"time"
)

// write is one of the two racing writers (an assign).
//
//go:noinline
func write(m map[int]int, k int) {
	m[k] = k // racy on purpose
}

// remove is the other racing writer (a delete).
//
//go:noinline
func remove(m map[int]int, k int) {
	delete(m, k) // racy on purpose
}

func main() {
	// Two writers must really run at the same time: at least two Ps even on one CPU.
	if runtime.GOMAXPROCS(0) < 2 {
		runtime.GOMAXPROCS(2)
	}
	m := make(map[int]int)
	for k := 0; k < 64; k++ {
		m[1_000_000+k] = k // not empty: deletes hash and write, they don't return early
	}
	deadline := time.Now().Add(30 * time.Second)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			<-start // both goroutines begin together
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
	close(start)
	wg.Wait()
	os.Stderr.WriteString("racer: no crash\n")
}
