// mapbench: the loops benches/overhead.sh times under each probe setup.
//
//	mapbench delete N   delete N present string keys (runtime.mapdelete_faststr)
//	mapbench assign N   assign N string keys into a fresh map (runtime.mapassign_faststr)
//	mapbench hotdelete N  N deletes cycling over 1024 keys (hot keys: no new key after the first 1024)
//	mapbench churn SECONDS  assign+delete as fast as possible, for throughput runs
//	mapbench distinct N     assign N distinct keys once each (hot-key LRU pressure)
//	mapbench deletefor SECONDS  string-key deletes only, for SECONDS: 65,536 keys are
//	                        put in once, then deletes of 65,536 other (absent) keys
//	                        cycle, so the map never changes and nothing else runs
//
// It prints one line to stderr: "mapbench: MODE N ops in T ns" (churn: N/2
// assigns and N/2 deletes); deletefor also prints "mapbench: setup N assigns"
// before it. With MAPBENCH_TICKS set, churn and deletefor also print
// "tick NS OPS" to stdout every 100 ms (ns since the loop began, ops so far),
// so a benchmark can compare stretches of one run with and without a probe. Standard library only; arguments parsed by hand (flag uses maps
// itself).
package main

import (
	"os"
	"strconv"
	"time"
)

func keys(n int) []string {
	ks := make([]string, n)
	for i := range ks {
		ks[i] = "key-" + strconv.Itoa(i)
	}
	return ks
}

//go:noinline
func deleteAll(m map[string]int, ks []string) {
	for _, k := range ks {
		delete(m, k)
	}
}

//go:noinline
func assignAll(m map[string]int, ks []string) {
	for i, k := range ks {
		m[k] = i
	}
}

func report(mode string, n int, d time.Duration) {
	os.Stderr.WriteString("mapbench: " + mode + " " + strconv.Itoa(n) + " ops in " +
		strconv.FormatInt(d.Nanoseconds(), 10) + " ns\n")
}

// ticker prints "tick NS OPS" every 100 ms of a loop when MAPBENCH_TICKS is set.
type ticker struct {
	on    bool
	start time.Time
	next  time.Time
}

func newTicker(start time.Time) ticker {
	return ticker{os.Getenv("MAPBENCH_TICKS") != "", start, start.Add(100 * time.Millisecond)}
}

func (t *ticker) at(now time.Time, ops int) {
	if !t.on || now.Before(t.next) {
		return
	}
	os.Stdout.WriteString("tick " + strconv.FormatInt(now.Sub(t.start).Nanoseconds(), 10) + " " +
		strconv.Itoa(ops) + "\n")
	t.next = t.next.Add(100 * time.Millisecond)
}

func main() {
	if len(os.Args) != 3 {
		os.Stderr.WriteString("usage: mapbench delete|assign|hotdelete|churn|distinct|deletefor N\n")
		os.Exit(2)
	}
	n, err := strconv.Atoi(os.Args[2])
	if err != nil || n <= 0 {
		os.Stderr.WriteString("mapbench: N must be a positive integer\n")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "delete":
		ks := keys(n)
		m := make(map[string]int, n)
		assignAll(m, ks)
		start := time.Now()
		deleteAll(m, ks)
		report("delete", n, time.Since(start))
	case "hotdelete":
		ks := keys(1024)
		m := make(map[string]int, 1024)
		assignAll(m, ks)
		all := make([]string, n)
		for i := range all {
			all[i] = ks[i&1023]
		}
		start := time.Now()
		deleteAll(m, all)
		report("hotdelete", n, time.Since(start))
	case "assign":
		ks := keys(n)
		m := make(map[string]int, n)
		start := time.Now()
		assignAll(m, ks)
		report("assign", n, time.Since(start))
	case "churn":
		ks := keys(1024)
		m := make(map[string]int, 1024)
		deadline := time.Now().Add(time.Duration(n) * time.Second)
		ops := 0
		start := time.Now()
		tick := newTicker(start)
		for now := start; now.Before(deadline); now = time.Now() {
			tick.at(now, ops)
			for i := 0; i < 1024; i++ {
				m[ks[i]] = i
				delete(m, ks[(i+512)&1023])
			}
			ops += 2048
		}
		report("churn", ops, time.Since(start))
	case "deletefor":
		present := keys(1 << 16)
		m := make(map[string]int, len(present))
		assignAll(m, present)
		os.Stderr.WriteString("mapbench: setup " + strconv.Itoa(len(present)) + " assigns\n")
		absent := make([]string, 1<<16)
		for i := range absent {
			absent[i] = "absent-" + strconv.Itoa(i)
		}
		deadline := time.Now().Add(time.Duration(n) * time.Second)
		ops := 0
		start := time.Now()
		tick := newTicker(start)
		for now := start; now.Before(deadline); now = time.Now() {
			tick.at(now, ops)
			for i := 0; i < len(absent); i += 4096 {
				deleteAll(m, absent[i:i+4096])
			}
			ops += len(absent)
		}
		report("deletefor", ops, time.Since(start))
	case "distinct":
		m := make(map[string]int)
		start := time.Now()
		for i := 0; i < n; i++ {
			m["distinct-"+strconv.Itoa(i)] = i
		}
		report("distinct", n, time.Since(start))
	default:
		os.Stderr.WriteString("mapbench: unknown mode " + os.Args[1] + "\n")
		os.Exit(2)
	}
}
