// hotkeys: deletes and assigns with a known, skewed distribution over keys, on two maps, so a
// tool's "top keys" can be compared with the exact truth. Nothing on stdout; exits 0.
//
//	hotkeys TRUTHFILE
//
// Maps (one of each type, so a map type names one map):
//
//	map[string]main.score  hot keys "hot-1".."hot-7" with 5000, 3000, 2000, 1200, 800, 500, 300
//	                       operations (assigns and deletes, all different), and 2000 keys
//	                       "cold-0".."cold-1999" assigned once each
//	map[int64]main.score   hot keys 9000000001..9000000007 with 4000, 2500, 1500, 900, 600,
//	                       400, 200 operations, and 2000 keys 100000..101999 assigned once each
//
// The operations are interleaved in a fixed pseudo-random order, in 12 batches about 120 ms
// apart (the run takes about 1.5 s, so a `watch --interval 500ms` sees it mid-way). Totals of
// every key differ from those of every other key above the cold ones: the top N is unambiguous
// for every N <= 7.
//
// TRUTHFILE gets JSON lines (hand-written: encoding/json, flag and os.Getenv use maps):
//
//	{"kind":"key","map_type":"map[string]main.score","key":"hot-1","deletes":2000,"assigns":3000}
//	... one per key (keys formatted as kubectl-mapguard prints them: strings as is, integers in
//	decimal), then
//	{"kind":"caller","map_type":"map[string]main.score","func":"main.putStr","line":L,"op":"assign","count":N}
//	... one per map statement (func, line) that ran, then
//	{"kind":"total","delete":D,"assign":A,"clear":0}
//
// "caller" and "total" count package main's operations only (the runtime's own are not
// included). Deletes of absent keys are deletes too (the runtime's delete function runs).
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"
)

// score makes both map types unique to this program.
type score struct {
	n int64
}

type hot struct {
	assigns, deletes int
}

var strHot = []hot{{3000, 2000}, {1800, 1200}, {1100, 900}, {700, 500}, {450, 350}, {300, 200}, {180, 120}}
var intHot = []hot{{2300, 1700}, {1400, 1100}, {900, 600}, {500, 400}, {350, 250}, {220, 180}, {130, 70}}

const (
	cold    = 2000
	batches = 12
	pause   = 120 * time.Millisecond
)

// keyCount is the truth of one key.
type keyCount struct {
	key              string
	assigns, deletes int64
}

// site is one map statement: its line and how often it ran.
type site struct {
	fn    string
	line  int
	op    string
	count int64
}

// The four map statements, in this order (no map of package main's own: its operations would
// show up as main.* too).
const (
	sPutStr = iota
	sDropStr
	sPutInt
	sDropInt
)

var sites = [4]site{
	{fn: "main.putStr", op: "assign"},
	{fn: "main.dropStr", op: "delete"},
	{fn: "main.putInt", op: "assign"},
	{fn: "main.dropInt", op: "delete"},
}

func count(i int, line int) {
	sites[i].line = line
	sites[i].count++
}

// One //go:noinline function per (map, op), so the caller is unambiguous. Each statement's line
// is runtime.Caller(0)'s line + the offset noted.

//go:noinline
func putStr(m map[string]score, k string, i int64) int {
	_, _, line, _ := runtime.Caller(0)
	m[k] = score{i} // line+1
	return line + 1
}

//go:noinline
func dropStr(m map[string]score, k string) int {
	_, _, line, _ := runtime.Caller(0)
	delete(m, k) // line+1
	return line + 1
}

//go:noinline
func putInt(m map[int64]score, k int64, i int64) int {
	_, _, line, _ := runtime.Caller(0)
	m[k] = score{i} // line+1
	return line + 1
}

//go:noinline
func dropInt(m map[int64]score, k int64) int {
	_, _, line, _ := runtime.Caller(0)
	delete(m, k) // line+1
	return line + 1
}

// op is one scheduled map operation.
type op struct {
	intMap bool
	del    bool
	idx    int // index into strKeys / intKeys
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

func main() {
	if len(os.Args) < 2 {
		os.Stderr.WriteString("usage: hotkeys TRUTHFILE\n")
		os.Exit(2)
	}
	path := os.Args[1]

	ms := make(map[string]score)
	mi := make(map[int64]score)
	strType := fmt.Sprintf("%T", ms)
	intType := fmt.Sprintf("%T", mi)

	// Keys and their planned counts.
	var strKeys []string
	var intKeys []int64
	var strTruth, intTruth []keyCount
	var plan []op
	for i, h := range strHot {
		k := "hot-" + strconv.Itoa(i+1)
		strKeys = append(strKeys, k)
		strTruth = append(strTruth, keyCount{k, int64(h.assigns), int64(h.deletes)})
		for j := 0; j < h.assigns; j++ {
			plan = append(plan, op{false, false, i})
		}
		for j := 0; j < h.deletes; j++ {
			plan = append(plan, op{false, true, i})
		}
	}
	for i := 0; i < cold; i++ {
		k := "cold-" + strconv.Itoa(i)
		strKeys = append(strKeys, k)
		strTruth = append(strTruth, keyCount{k, 1, 0})
		plan = append(plan, op{false, false, len(strKeys) - 1})
	}
	for i, h := range intHot {
		k := int64(9000000001 + i)
		intKeys = append(intKeys, k)
		intTruth = append(intTruth, keyCount{strconv.FormatInt(k, 10), int64(h.assigns), int64(h.deletes)})
		for j := 0; j < h.assigns; j++ {
			plan = append(plan, op{true, false, i})
		}
		for j := 0; j < h.deletes; j++ {
			plan = append(plan, op{true, true, i})
		}
	}
	for i := 0; i < cold; i++ {
		k := int64(100000 + i)
		intKeys = append(intKeys, k)
		intTruth = append(intTruth, keyCount{strconv.FormatInt(k, 10), 1, 0})
		plan = append(plan, op{true, false, len(intKeys) - 1})
	}

	// A fixed shuffle (xorshift64), the same every run.
	x := uint64(0x9e3779b97f4a7c15)
	for i := len(plan) - 1; i > 0; i-- {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		j := int(x % uint64(i+1))
		plan[i], plan[j] = plan[j], plan[i]
	}

	// Run it.
	var assigns, deletes int64
	per := (len(plan) + batches - 1) / batches
	for b := 0; b < batches; b++ {
		if b > 0 {
			time.Sleep(pause)
		}
		end := (b + 1) * per
		if end > len(plan) {
			end = len(plan)
		}
		for n, o := range plan[b*per : end] {
			v := int64(b*per + n)
			switch {
			case !o.intMap && !o.del:
				count(sPutStr, putStr(ms, strKeys[o.idx], v))
				assigns++
			case !o.intMap && o.del:
				count(sDropStr, dropStr(ms, strKeys[o.idx]))
				deletes++
			case o.intMap && !o.del:
				count(sPutInt, putInt(mi, intKeys[o.idx], v))
				assigns++
			default:
				count(sDropInt, dropInt(mi, intKeys[o.idx]))
				deletes++
			}
		}
	}

	// The truth.
	var out []byte
	keyLines := func(mapType string, kc []keyCount) {
		for _, k := range kc {
			out = append(out, `{"kind":"key","map_type":`...)
			out = appendJSONString(out, mapType)
			out = append(out, `,"key":`...)
			out = appendJSONString(out, k.key)
			out = append(out, `,"deletes":`...)
			out = strconv.AppendInt(out, k.deletes, 10)
			out = append(out, `,"assigns":`...)
			out = strconv.AppendInt(out, k.assigns, 10)
			out = append(out, "}\n"...)
		}
	}
	keyLines(strType, strTruth)
	keyLines(intType, intTruth)
	for i := range sites {
		s := &sites[i]
		if s.count == 0 {
			continue
		}
		mt := strType
		if i == sPutInt || i == sDropInt {
			mt = intType
		}
		out = append(out, `{"kind":"caller","map_type":`...)
		out = appendJSONString(out, mt)
		out = append(out, `,"func":`...)
		out = appendJSONString(out, s.fn)
		out = append(out, `,"line":`...)
		out = strconv.AppendInt(out, int64(s.line), 10)
		out = append(out, `,"op":`...)
		out = appendJSONString(out, s.op)
		out = append(out, `,"count":`...)
		out = strconv.AppendInt(out, s.count, 10)
		out = append(out, "}\n"...)
	}
	out = append(out, `{"kind":"total","delete":`...)
	out = strconv.AppendInt(out, deletes, 10)
	out = append(out, `,"assign":`...)
	out = strconv.AppendInt(out, assigns, 10)
	out = append(out, `,"clear":0}`+"\n"...)
	if err := os.WriteFile(path, out, 0o644); err != nil {
		os.Stderr.WriteString("hotkeys: " + err.Error() + "\n")
		os.Exit(1)
	}
}
