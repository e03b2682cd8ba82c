// recursion: map writes from deep in a recursion whose goroutine stacks keep growing, so the Go
// runtime copies stacks (moving every frame, and the stack pointer) while map functions are
// being probed: a tool that pairs a delete's entry with its return by stack address, or that
// uses uretprobes, miscounts or crashes the program here. Must exit 0. Nothing on stdout.
//
//	recursion TRUTHFILE
//
// 6 rounds; each round runs 2 fresh goroutines at once (fresh goroutines start on a small stack),
// each with its own map[main.rkey]int, recursing 12000+ levels through two functions with
// different frame sizes (main.deepBig, ~1 KiB frame; main.deepSmall). Every level assigns its own
// key and deletes the previous level's key. The key is a struct holding a string, so the map
// functions call a compiler-generated hash function, which has its own stack check: stacks can
// grow (be copied) in the middle of a mapassign or mapdelete. runtime.GC() between rounds
// shrinks stacks again.
//
// TRUTHFILE gets JSON lines (hand-written: encoding/json, flag and os.Getenv use maps):
//
//	{"kind":"caller","map_type":"map[main.rkey]int","func":"main.deepBig","line":L,"op":"assign","count":N}
//	{"kind":"caller","map_type":"map[main.rkey]int","func":"main.deepBig","line":L,"op":"delete","count":N}
//	{"kind":"caller","map_type":"map[main.rkey]int","func":"main.deepSmall","line":L,"op":"assign","count":N}
//	{"kind":"caller","map_type":"map[main.rkey]int","func":"main.deepSmall","line":L,"op":"delete","count":N}
//	{"kind":"caller","map_type":"map[main.rkey]int","func":"main.fill","line":L,"op":"assign","count":1200}
//	{"kind":"total","delete":D,"assign":A,"clear":0}
//	{"kind":"recursion","map_type":"map[main.rkey]int","deletes":D,"assigns":A,"rounds":6,"goroutines":12,"max_depth":...}
//
// "caller" lines count the operations of one call site; "total" sums package main's operations
// (all of them on map[main.rkey]int; the runtime's own are not included).
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
)

// rkey: a struct key with a string field, hashed by a generated Go function (not assembly).
type rkey struct {
	name  string
	depth int64
}

const (
	rounds    = 6
	perRound  = 2
	baseDepth = 12000
	fillers   = 100 // keys that stay in each map, so it is never tiny
)

// counts of one goroutine's recursion; lines are the same for all.
type counts struct {
	bigAssign, bigDelete, smallAssign, smallDelete int64
}

var (
	linesMu                          sync.Mutex
	bigAssignLine, bigDeleteLine     int
	smallAssignLine, smallDeleteLine int
	fillLine                         int
	bigLineReady, smallLineReady     atomic.Bool
)

// fill puts the keys that stay in a map for the whole round.
//
//go:noinline
func fill(m map[rkey]int) int64 {
	_, _, line, _ := runtime.Caller(0)
	var n int64
	for i := 0; i < fillers; i++ {
		m[rkey{"filler", int64(i)}] = i // line+3
		n++
	}
	linesMu.Lock()
	fillLine = line + 3
	linesMu.Unlock()
	return n
}

//go:noinline
func sink(p *[1024]byte) byte { return p[int(p[0])%len(p)] }

//go:noinline
func sinkSmall(p *[40]byte) byte { return p[int(p[0])%len(p)] }

// deepBig: a ~1 KiB frame per level. It deletes first, then assigns (deepSmall the other way
// round): the first map call of a level is the one that runs out of stack, so both kinds get
// their stacks copied mid-call.
//
//go:noinline
func deepBig(m map[rkey]int, name string, depth, max int, c *counts) byte {
	var pad [1024]byte
	pad[depth%len(pad)] = byte(depth)
	if depth == 0 {
		_, _, line, _ := runtime.Caller(0)
		linesMu.Lock()
		bigDeleteLine, bigAssignLine = line+6, line+8
		bigLineReady.Store(true)
		linesMu.Unlock()
	}
	delete(m, rkey{name, int64(depth - 1)}) // line+6 (depth 0: an absent key, still a delete)
	c.bigDelete++
	m[rkey{name, int64(depth)}] = depth // line+8
	c.bigAssign++
	var r byte
	if depth < max {
		if depth%4 == 3 {
			r = deepSmall(m, name, depth+1, max, c)
		} else {
			r = deepBig(m, name, depth+1, max, c)
		}
	}
	return r + sink(&pad)
}

// deepSmall: a small frame, so the recursion's layout is irregular and stacks run out at
// varying points inside the map calls.
//
//go:noinline
func deepSmall(m map[rkey]int, name string, depth, max int, c *counts) byte {
	var pad [40]byte
	pad[depth%len(pad)] = byte(depth)
	if !smallLineReady.Load() {
		_, _, line, _ := runtime.Caller(0)
		linesMu.Lock()
		smallAssignLine, smallDeleteLine = line+6, line+8
		smallLineReady.Store(true)
		linesMu.Unlock()
	}
	m[rkey{name, int64(depth)}] = depth // line+6
	c.smallAssign++
	delete(m, rkey{name, int64(depth - 1)}) // line+8
	c.smallDelete++
	var r byte
	if depth < max {
		r = deepBig(m, name, depth+1, max, c)
	}
	return r + sinkSmall(&pad)
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
		os.Stderr.WriteString("usage: recursion TRUTHFILE\n")
		os.Exit(2)
	}
	path := os.Args[1]
	if runtime.GOMAXPROCS(0) < 2 {
		runtime.GOMAXPROCS(2)
	}
	var total counts
	var fillerAssigns int64
	maxDepth := 0
	mapType := ""
	for round := 0; round < rounds; round++ {
		depth := baseDepth + round*1013
		if depth > maxDepth {
			maxDepth = depth
		}
		res := make([]counts, perRound)
		var wg sync.WaitGroup
		for g := 0; g < perRound; g++ {
			m := make(map[rkey]int) // this goroutine's own: no concurrent writes
			mapType = fmt.Sprintf("%T", m)
			fillerAssigns += fill(m)
			wg.Add(1)
			go func(g int, m map[rkey]int) {
				defer wg.Done()
				name := "r" + strconv.Itoa(round) + "g" + strconv.Itoa(g)
				deepBig(m, name, 0, depth, &res[g])
				if len(m) != fillers+1 {
					panic("recursion: map size " + strconv.Itoa(len(m)))
				}
			}(g, m)
		}
		wg.Wait()
		for _, c := range res {
			total.bigAssign += c.bigAssign
			total.bigDelete += c.bigDelete
			total.smallAssign += c.smallAssign
			total.smallDelete += c.smallDelete
		}
		runtime.GC() // shrinks stacks: the next round grows them again
	}
	assigns := total.bigAssign + total.smallAssign + fillerAssigns
	deletes := total.bigDelete + total.smallDelete
	if !bigLineReady.Load() || !smallLineReady.Load() {
		panic("recursion: lines not recorded")
	}

	var b []byte
	b = callerLine(b, mapType, "main.deepBig", bigAssignLine, "assign", total.bigAssign)
	b = callerLine(b, mapType, "main.deepBig", bigDeleteLine, "delete", total.bigDelete)
	b = callerLine(b, mapType, "main.deepSmall", smallAssignLine, "assign", total.smallAssign)
	b = callerLine(b, mapType, "main.deepSmall", smallDeleteLine, "delete", total.smallDelete)
	b = callerLine(b, mapType, "main.fill", fillLine, "assign", fillerAssigns)
	b = append(b, `{"kind":"total","delete":`...)
	b = strconv.AppendInt(b, deletes, 10)
	b = append(b, `,"assign":`...)
	b = strconv.AppendInt(b, assigns, 10)
	b = append(b, `,"clear":0}`+"\n"...)
	b = append(b, `{"kind":"recursion","map_type":`...)
	b = appendJSONString(b, mapType)
	b = append(b, `,"deletes":`...)
	b = strconv.AppendInt(b, deletes, 10)
	b = append(b, `,"assigns":`...)
	b = strconv.AppendInt(b, assigns, 10)
	b = append(b, `,"rounds":`...)
	b = strconv.AppendInt(b, rounds, 10)
	b = append(b, `,"goroutines":`...)
	b = strconv.AppendInt(b, rounds*perRound, 10)
	b = append(b, `,"max_depth":`...)
	b = strconv.AppendInt(b, int64(maxDepth), 10)
	b = append(b, "}\n"...)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		os.Stderr.WriteString("recursion: " + err.Error() + "\n")
		os.Exit(1)
	}
}
