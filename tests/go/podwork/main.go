// podwork stands in for a workload container in the cluster tests:
//
//	podwork TRIGGER TAG N
//
// Each time the file TRIGGER appears (so the test decides when the agent has
// attached), it removes it, assigns keys "TAG-0".."TAG-<N-1>" into a fresh
// map[string]int, deletes the first N/2 of them and prints one truth line
// ("podwork TAG: done N assigns N/2 deletes"); it runs until it is killed.
// The test knows the exact operations of a round from the arguments alone.
package main

import (
	"os"
	"strconv"
	"time"
)

//go:noinline
func put(m map[string]int, k string, v int) { m[k] = v }

//go:noinline
func del(m map[string]int, k string) { delete(m, k) }

func main() {
	if len(os.Args) != 4 {
		os.Stderr.WriteString("usage: podwork TRIGGER TAG N\n")
		os.Exit(2)
	}
	trigger, tag := os.Args[1], os.Args[2]
	n, err := strconv.Atoi(os.Args[3])
	if err != nil {
		os.Stderr.WriteString("podwork: N must be a number\n")
		os.Exit(2)
	}
	for {
		for {
			if _, err := os.Stat(trigger); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		os.Remove(trigger)
		m := make(map[string]int)
		for i := 0; i < n; i++ {
			put(m, tag+"-"+strconv.Itoa(i), i)
		}
		for i := 0; i < n/2; i++ {
			del(m, tag+"-"+strconv.Itoa(i))
		}
		os.Stdout.WriteString("podwork " + tag + ": done " + strconv.Itoa(n) + " assigns " + strconv.Itoa(n/2) + " deletes\n")
	}
}
