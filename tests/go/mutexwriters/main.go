// mutexwriters: 8 goroutines write maps as hard as they can, correctly, so a tool that reports
// "concurrent writes" must report none. 5,000,000 map operations in total (8 x 312,500 assigns
// + 8 x 312,500 deletes), then exit 0. Nothing on stdout.
//
//	mutexwriters TRUTHFILE [shared|own] [TOTAL]
//
// TOTAL (default 5000000, a multiple of 16) is the number of map operations in all.
//
//	shared  (default) one map[int64]main.slot shared by all 8 goroutines, every write under one
//	        sync.Mutex (assign and delete in the same critical section): caller main.sharedWorker
//	own     each goroutine writes its own map[int64]main.slot, no lock: caller main.ownWorker
//
// TRUTHFILE gets JSON lines (hand-written: encoding/json, flag and os.Getenv use maps):
//
//	{"kind":"caller","map_type":"map[int64]main.slot","func":"main.sharedWorker","line":L,"op":"assign","count":2500000}
//	{"kind":"caller","map_type":"map[int64]main.slot","func":"main.sharedWorker","line":L,"op":"delete","count":2500000}
//	{"kind":"total","delete":2500000,"assign":2500000,"clear":0}
//	{"kind":"mutexwriters","mode":"shared","goroutines":8,"ops":5000000,"map_type":"map[int64]main.slot"}
//
// "caller" lines count the operations of one call site (func, line of the map statement);
// "total" sums the operations package main performed (the runtime's own are not included).
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
)

// slot makes the map type unique to this program: map[int64]main.slot.
type slot struct {
	a, b int64
}

const (
	goroutines = 8
	defaultOps = 5_000_000
	window     = 256 // a goroutine deletes the key it assigned `window` iterations ago
)

// site is one map statement's location and how often it ran.
type site struct {
	line  int
	count int64
}

type result struct {
	assign, delete site
}

// sharedWorker writes the shared map under mu.
//
//go:noinline
func sharedWorker(g int, perG int64, m map[int64]slot, mu *sync.Mutex) result {
	_, _, line, _ := runtime.Caller(0)
	base := int64(g) * 1_000_000_000
	var n int64
	for i := int64(0); i < perG; i++ {
		mu.Lock()
		m[base+i] = slot{a: i} // line+5
		// For the first `window` iterations the key is absent: still one delete call.
		delete(m, base+i-window) // line+7
		mu.Unlock()
		n++
	}
	return result{assign: site{line + 5, n}, delete: site{line + 7, n}}
}

// ownWorker writes a map no other goroutine sees, without a lock.
//
//go:noinline
func ownWorker(g int, perG int64, m map[int64]slot) result {
	_, _, line, _ := runtime.Caller(0)
	base := int64(g) * 1_000_000_000
	var n int64
	for i := int64(0); i < perG; i++ {
		m[base+i] = slot{a: i}   // line+4
		delete(m, base+i-window) // line+5
		n++
	}
	return result{assign: site{line + 4, n}, delete: site{line + 5, n}}
}

func appendJSONString(b []byte, s string) []byte {
	const hexd = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c == 0x7f:
			b = append(b, '\\', 'u', '0', '0', hexd[c>>4], hexd[c&15])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

func callerLine(b []byte, mapType, fn string, line int, op string, count int64) []byte {
	b = append(b, `{"kind":"caller","map_type":`...)
	b = appendJSONString(b, mapType)
	b = append(b, `,"func":`...)
	b = appendJSONString(b, fn)
	b = append(b, `,"line":`...)
	b = strconv.AppendInt(b, int64(line), 10)
	b = append(b, `,"op":`...)
	b = appendJSONString(b, op)
	b = append(b, `,"count":`...)
	b = strconv.AppendInt(b, count, 10)
	return append(b, "}\n"...)
}

func main() {
	if len(os.Args) < 2 {
		os.Stderr.WriteString("usage: mutexwriters TRUTHFILE [shared|own]\n")
		os.Exit(2)
	}
	path := os.Args[1]
	mode := "shared"
	if len(os.Args) > 2 {
		mode = os.Args[2]
	}
	if mode != "shared" && mode != "own" {
		os.Stderr.WriteString("mutexwriters: unknown mode " + mode + "\n")
		os.Exit(2)
	}
	total := int64(defaultOps)
	if len(os.Args) > 3 {
		n, err := strconv.ParseInt(os.Args[3], 10, 64)
		if err != nil || n <= 0 || n%(2*goroutines) != 0 {
			os.Stderr.WriteString("mutexwriters: TOTAL must be a positive multiple of 16\n")
			os.Exit(2)
		}
		total = n
	}
	// Iterations per goroutine: one assign and one delete each.
	perG := total / (2 * goroutines)
	if runtime.GOMAXPROCS(0) < 2 {
		runtime.GOMAXPROCS(2) // writers really run at the same time
	}

	shared := make(map[int64]slot)
	var mu sync.Mutex
	mapType := fmt.Sprintf("%T", shared)
	fn := "main.sharedWorker"
	if mode == "own" {
		fn = "main.ownWorker"
	}

	results := make([]result, goroutines)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			<-start
			if mode == "shared" {
				results[g] = sharedWorker(g, perG, shared, &mu)
			} else {
				results[g] = ownWorker(g, perG, make(map[int64]slot))
			}
		}(g)
	}
	close(start)
	wg.Wait()

	var assigns, deletes int64
	for _, r := range results {
		if r.assign.line != results[0].assign.line || r.delete.line != results[0].delete.line {
			panic("mutexwriters: one function, different lines?")
		}
		assigns += r.assign.count
		deletes += r.delete.count
	}
	var b []byte
	b = callerLine(b, mapType, fn, results[0].assign.line, "assign", assigns)
	b = callerLine(b, mapType, fn, results[0].delete.line, "delete", deletes)
	b = append(b, `{"kind":"total","delete":`...)
	b = strconv.AppendInt(b, deletes, 10)
	b = append(b, `,"assign":`...)
	b = strconv.AppendInt(b, assigns, 10)
	b = append(b, `,"clear":0}`+"\n"...)
	b = append(b, `{"kind":"mutexwriters","mode":`...)
	b = appendJSONString(b, mode)
	b = append(b, `,"goroutines":`...)
	b = strconv.AppendInt(b, goroutines, 10)
	b = append(b, `,"ops":`...)
	b = strconv.AppendInt(b, assigns+deletes, 10)
	b = append(b, `,"map_type":`...)
	b = appendJSONString(b, mapType)
	b = append(b, "}\n"...)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		os.Stderr.WriteString("mutexwriters: " + err.Error() + "\n")
		os.Exit(1)
	}
}
