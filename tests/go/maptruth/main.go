// maptruth performs known Go map operations and writes down each one it performed, so the
// end-to-end tests can compare kubectl-mapguard's events with the program's own account.
//
//	maptruth TRUTHFILE [SCENARIO]
//
// Scenarios:
//
//	all      (default) every workload below, then exit 0
//	wait     block until a line (or EOF) arrives on stdin, forget what was done so far, then "all"
//	exit3    "all", then exit with status 3
//	hold     block until stdin closes, then exit 0 without writing a truth file
//
// TRUTHFILE gets one JSON object per line and per operation, in no particular order:
//
//	{"op":"delete","map_type":"map[string]int","func":"main.delStr","line":57,"goid":1,"key":"k","len":3}
//
// "key" is absent for clear; "len" is len(m) just before the operation. Keys are formatted as
// kubectl-mapguard prints them: strings as is, integers in decimal, pointers as 0x + lowercase
// hex, other keys as lowercase hex of their bytes in memory.
//
// The program avoids every standard-library facility that uses maps itself (encoding/json,
// flag, os.Getenv, ...): the JSON is written by hand. Every map statement lives in a
// //go:noinline function, so the caller the tool reports is that function, and its line is taken
// with runtime.Caller(0) at a fixed distance above the statement (checked by check_lines.sh
// against `go tool objdump`).
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"unsafe"
)

// rec accumulates truth lines for one goroutine.
type rec struct {
	buf  []byte
	goid int64
}

func newRec() *rec { return &rec{goid: curGoid()} }

var mainRec *rec

// curGoid parses "goroutine 18 [running]:" from the goroutine's own stack dump.
func curGoid() int64 {
	var buf [64]byte
	n := runtime.Stack(buf[:], false)
	s := buf[:n]
	const prefix = "goroutine "
	if len(s) < len(prefix) || string(s[:len(prefix)]) != prefix {
		panic("unexpected runtime.Stack output: " + string(s))
	}
	s = s[len(prefix):]
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	id, err := strconv.ParseInt(string(s[:i]), 10, 64)
	if err != nil {
		panic("cannot parse goroutine id: " + err.Error())
	}
	return id
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
			b = append(b, c) // UTF-8 passes through (keys here are valid UTF-8)
		}
	}
	return append(b, '"')
}

func (r *rec) add(op, mapType, fn string, line int, key string, hasKey bool, n int) {
	b := r.buf
	b = append(b, `{"op":`...)
	b = appendJSONString(b, op)
	b = append(b, `,"map_type":`...)
	b = appendJSONString(b, mapType)
	b = append(b, `,"func":`...)
	b = appendJSONString(b, fn)
	b = append(b, `,"line":`...)
	b = strconv.AppendInt(b, int64(line), 10)
	b = append(b, `,"goid":`...)
	b = strconv.AppendInt(b, r.goid, 10)
	if hasKey {
		b = append(b, `,"key":`...)
		b = appendJSONString(b, key)
	}
	b = append(b, `,"len":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, "}\n"...)
	r.buf = b
}

func hexBytes(p []byte) string {
	const hexd = "0123456789abcdef"
	out := make([]byte, 0, 2*len(p))
	for _, c := range p {
		out = append(out, hexd[c>>4], hexd[c&15])
	}
	return string(out)
}

// ---------------------------------------------------------------------------------------------
// Key types.

type node struct{ x int64 }

// skey has no padding: 8+8+4+4 = 24 bytes, so its bytes are well defined.
type skey struct {
	A, B int64
	C, D uint32
}

func skeyHex(k *skey) string {
	return hexBytes(unsafe.Slice((*byte)(unsafe.Pointer(k)), unsafe.Sizeof(*k)))
}

func ptrHex(p *node) string { return fmt.Sprintf("%p", p) }

// ---------------------------------------------------------------------------------------------
// The operations. Each statement's line = runtime.Caller(0)'s line + the offset noted.

var startMap map[string]int

//go:noinline
func initAssign(r *rec) {
	startMap = make(map[string]int)
	_, _, line, _ := runtime.Caller(0)
	n := len(startMap)
	startMap["init"] = 1 // line+2
	r.add("assign", fmt.Sprintf("%T", startMap), "main.initAssign", line+2, "init", true, n)
}

//go:noinline
func firstAssign(r *rec) {
	_, _, line, _ := runtime.Caller(0)
	n := len(startMap)
	startMap["first"] = 2 // line+2
	r.add("assign", fmt.Sprintf("%T", startMap), "main.firstAssign", line+2, "first", true, n)
}

//go:noinline
func assignStr(r *rec, m map[string]int, keys []string) {
	t := fmt.Sprintf("%T", m)
	_, _, line, _ := runtime.Caller(0)
	for i, k := range keys {
		n := len(m)
		m[k] = i // line+3
		r.add("assign", t, "main.assignStr", line+3, k, true, n)
	}
}

//go:noinline
func delStr(r *rec, m map[string]int, keys []string) {
	t := fmt.Sprintf("%T", m)
	_, _, line, _ := runtime.Caller(0)
	for _, k := range keys {
		n := len(m)
		delete(m, k) // line+3
		r.add("delete", t, "main.delStr", line+3, k, true, n)
	}
}

//go:noinline
func incStr(r *rec, m map[string]int, k string) {
	_, _, line, _ := runtime.Caller(0)
	n := len(m)
	m[k]++ // line+2
	r.add("assign", fmt.Sprintf("%T", m), "main.incStr", line+2, k, true, n)
}

//go:noinline
func assignSpecial(r *rec, m map[string]string, keys []string) {
	t := fmt.Sprintf("%T", m)
	_, _, line, _ := runtime.Caller(0)
	for _, k := range keys {
		n := len(m)
		m[k] = "v" // line+3
		r.add("assign", t, "main.assignSpecial", line+3, k, true, n)
	}
}

//go:noinline
func delSpecial(r *rec, m map[string]string, keys []string) {
	t := fmt.Sprintf("%T", m)
	_, _, line, _ := runtime.Caller(0)
	for _, k := range keys {
		n := len(m)
		delete(m, k) // line+3
		r.add("delete", t, "main.delSpecial", line+3, k, true, n)
	}
}

//go:noinline
func assignI32(r *rec, m map[int32]string, keys []int32) {
	t := fmt.Sprintf("%T", m)
	_, _, line, _ := runtime.Caller(0)
	for _, k := range keys {
		n := len(m)
		m[k] = "x" // line+3
		r.add("assign", t, "main.assignI32", line+3, strconv.FormatInt(int64(k), 10), true, n)
	}
}

//go:noinline
func delI32(r *rec, m map[int32]string, keys []int32) {
	t := fmt.Sprintf("%T", m)
	_, _, line, _ := runtime.Caller(0)
	for _, k := range keys {
		n := len(m)
		delete(m, k) // line+3
		r.add("delete", t, "main.delI32", line+3, strconv.FormatInt(int64(k), 10), true, n)
	}
}

//go:noinline
func assignU32(r *rec, m map[uint32]int, keys []uint32) {
	t := fmt.Sprintf("%T", m)
	_, _, line, _ := runtime.Caller(0)
	for _, k := range keys {
		n := len(m)
		m[k] = 1 // line+3
		r.add("assign", t, "main.assignU32", line+3, strconv.FormatUint(uint64(k), 10), true, n)
	}
}

//go:noinline
func delU32(r *rec, m map[uint32]int, keys []uint32) {
	t := fmt.Sprintf("%T", m)
	_, _, line, _ := runtime.Caller(0)
	for _, k := range keys {
		n := len(m)
		delete(m, k) // line+3
		r.add("delete", t, "main.delU32", line+3, strconv.FormatUint(uint64(k), 10), true, n)
	}
}

//go:noinline
func assignI64(r *rec, m map[int64]int, keys []int64) {
	t := fmt.Sprintf("%T", m)
	_, _, line, _ := runtime.Caller(0)
	for _, k := range keys {
		n := len(m)
		m[k] = 7 // line+3
		r.add("assign", t, "main.assignI64", line+3, strconv.FormatInt(k, 10), true, n)
	}
}

//go:noinline
func delI64(r *rec, m map[int64]int, keys []int64) {
	t := fmt.Sprintf("%T", m)
	_, _, line, _ := runtime.Caller(0)
	for _, k := range keys {
		n := len(m)
		delete(m, k) // line+3
		r.add("delete", t, "main.delI64", line+3, strconv.FormatInt(k, 10), true, n)
	}
}

//go:noinline
func assignU64(r *rec, m map[uint64]bool, keys []uint64) {
	t := fmt.Sprintf("%T", m)
	_, _, line, _ := runtime.Caller(0)
	for _, k := range keys {
		n := len(m)
		m[k] = true // line+3
		r.add("assign", t, "main.assignU64", line+3, strconv.FormatUint(k, 10), true, n)
	}
}

//go:noinline
func delU64(r *rec, m map[uint64]bool, keys []uint64) {
	t := fmt.Sprintf("%T", m)
	_, _, line, _ := runtime.Caller(0)
	for _, k := range keys {
		n := len(m)
		delete(m, k) // line+3
		r.add("delete", t, "main.delU64", line+3, strconv.FormatUint(k, 10), true, n)
	}
}

//go:noinline
func assignPtr(r *rec, m map[*node]int, keys []*node) {
	t := fmt.Sprintf("%T", m)
	_, _, line, _ := runtime.Caller(0)
	for i, k := range keys {
		n := len(m)
		m[k] = i // line+3
		r.add("assign", t, "main.assignPtr", line+3, ptrHex(k), true, n)
	}
}

//go:noinline
func delPtr(r *rec, m map[*node]int, keys []*node) {
	t := fmt.Sprintf("%T", m)
	_, _, line, _ := runtime.Caller(0)
	for _, k := range keys {
		n := len(m)
		delete(m, k) // line+3
		r.add("delete", t, "main.delPtr", line+3, ptrHex(k), true, n)
	}
}

//go:noinline
func assignStruct(r *rec, m map[skey]int, keys []skey) {
	t := fmt.Sprintf("%T", m)
	_, _, line, _ := runtime.Caller(0)
	for i := range keys {
		n := len(m)
		m[keys[i]] = i // line+3
		r.add("assign", t, "main.assignStruct", line+3, skeyHex(&keys[i]), true, n)
	}
}

//go:noinline
func delStruct(r *rec, m map[skey]int, keys []skey) {
	t := fmt.Sprintf("%T", m)
	_, _, line, _ := runtime.Caller(0)
	for i := range keys {
		n := len(m)
		delete(m, keys[i]) // line+3
		r.add("delete", t, "main.delStruct", line+3, skeyHex(&keys[i]), true, n)
	}
}

// Elements larger than 128 bytes: the compiler uses the generic mapassign/mapdelete whatever
// the key type.

//go:noinline
func assignBigI64(r *rec, m map[int64][200]byte, keys []int64) {
	t := fmt.Sprintf("%T", m)
	var v [200]byte
	_, _, line, _ := runtime.Caller(0)
	for _, k := range keys {
		n := len(m)
		m[k] = v // line+3
		r.add("assign", t, "main.assignBigI64", line+3, strconv.FormatInt(k, 10), true, n)
	}
}

//go:noinline
func delBigI64(r *rec, m map[int64][200]byte, keys []int64) {
	t := fmt.Sprintf("%T", m)
	_, _, line, _ := runtime.Caller(0)
	for _, k := range keys {
		n := len(m)
		delete(m, k) // line+3
		r.add("delete", t, "main.delBigI64", line+3, strconv.FormatInt(k, 10), true, n)
	}
}

//go:noinline
func assignBigStr(r *rec, m map[string][160]byte, keys []string) {
	t := fmt.Sprintf("%T", m)
	var v [160]byte
	_, _, line, _ := runtime.Caller(0)
	for _, k := range keys {
		n := len(m)
		m[k] = v // line+3
		r.add("assign", t, "main.assignBigStr", line+3, k, true, n)
	}
}

//go:noinline
func delBigStr(r *rec, m map[string][160]byte, keys []string) {
	t := fmt.Sprintf("%T", m)
	_, _, line, _ := runtime.Caller(0)
	for _, k := range keys {
		n := len(m)
		delete(m, k) // line+3
		r.add("delete", t, "main.delBigStr", line+3, k, true, n)
	}
}

// clear(m) on a non-empty map: one runtime.mapclear call.
//
//go:noinline
func clearStr(r *rec, m map[string]int) {
	_, _, line, _ := runtime.Caller(0)
	n := len(m)
	clear(m) // line+2
	r.add("clear", fmt.Sprintf("%T", m), "main.clearStr", line+2, "", false, n)
}

//go:noinline
func clearI64(r *rec, m map[int64]int) {
	_, _, line, _ := runtime.Caller(0)
	n := len(m)
	clear(m) // line+2
	r.add("clear", fmt.Sprintf("%T", m), "main.clearI64", line+2, "", false, n)
}

// The idiom `for k := range m { delete(m, k) }` is compiled to ONE runtime.mapclear call,
// attributed to the line of the `for` statement (checked with go tool objdump for Go 1.21-1.27).
//
//go:noinline
func rangeDeleteI32(r *rec, m map[int32]string) {
	_, _, line, _ := runtime.Caller(0)
	n := len(m)
	for k := range m { // line+2: the mapclear call is attributed here
		delete(m, k)
	}
	r.add("clear", fmt.Sprintf("%T", m), "main.rangeDeleteI32", line+2, "", false, n)
}

//go:noinline
func rangeDeleteStr(r *rec, m map[string][160]byte) {
	_, _, line, _ := runtime.Caller(0)
	n := len(m)
	for k := range m { // line+2
		delete(m, k)
	}
	r.add("clear", fmt.Sprintf("%T", m), "main.rangeDeleteStr", line+2, "", false, n)
}

// ---------------------------------------------------------------------------------------------
// Goroutines: each has maps of its own (no concurrent writes), a few thousand operations.

const workers = 8
const perWorker = 3000 // keys per worker: each is assigned once and deleted once

//go:noinline
func workerInt(r *rec, w int) {
	m := make(map[int]int)
	t := fmt.Sprintf("%T", m)
	keys := make([]int, perWorker)
	for i := range keys {
		keys[i] = w*1000000 + i*7 - 5000
	}
	_, _, line, _ := runtime.Caller(0)
	for i, k := range keys {
		n := len(m)
		m[k] = i // line+3
		r.add("assign", t, "main.workerInt", line+3, strconv.Itoa(k), true, n)
	}
	for _, k := range keys {
		n := len(m)
		delete(m, k) // line+8
		r.add("delete", t, "main.workerInt", line+8, strconv.Itoa(k), true, n)
	}
}

//go:noinline
func workerStr(r *rec, w int) {
	m := make(map[string]int64)
	t := fmt.Sprintf("%T", m)
	keys := make([]string, perWorker)
	for i := range keys {
		keys[i] = "w" + strconv.Itoa(w) + "-" + strconv.Itoa(i)
	}
	_, _, line, _ := runtime.Caller(0)
	for i, k := range keys {
		n := len(m)
		m[k] = int64(i) // line+3
		r.add("assign", t, "main.workerStr", line+3, k, true, n)
	}
	for _, k := range keys {
		n := len(m)
		delete(m, k) // line+8
		r.add("delete", t, "main.workerStr", line+8, k, true, n)
	}
}

//go:noinline
func runWorkers() []*rec {
	recs := make([]*rec, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := newRec()
			if w%2 == 0 {
				workerInt(r, w)
			} else {
				workerStr(r, w)
			}
			recs[w] = r
		}(w)
	}
	wg.Wait()
	return recs
}

// ---------------------------------------------------------------------------------------------

//go:noinline
func runMain(r *rec) {
	// Strings, including an empty key, absent keys, a long key and keys that need JSON escaping.
	strKeys := make([]string, 0, 130)
	for i := 0; i < 120; i++ {
		strKeys = append(strKeys, "key-"+strconv.Itoa(i))
	}
	strKeys = append(strKeys, "", "a-very-long-key-that-exceeds-eight-bytes", "secret-token-1", "secret-token-2")
	ms := make(map[string]int)
	assignStr(r, ms, strKeys)
	incStr(r, ms, "key-7")
	incStr(r, ms, "counter")
	delStr(r, ms, strKeys[:60])
	delStr(r, ms, []string{"absent-1", "absent-2", "key-0", "absent-3"}) // key-0 is gone already
	clearStr(r, ms)
	assignStr(r, ms, strKeys[:10])

	special := []string{`quo"te`, `back\slash`, "tab\there", "ключ-ü", "new\nline"}
	msp := make(map[string]string)
	assignSpecial(r, msp, special)
	delSpecial(r, msp, special[:3])

	// int32, including negatives, min/max and absent keys.
	i32 := []int32{-2147483648, 2147483647, 0}
	for i := int32(-50); i < 50; i++ {
		i32 = append(i32, i*1000)
	}
	m32 := make(map[int32]string)
	assignI32(r, m32, i32)
	delI32(r, m32, append(i32[:40:40], 123456, -654321))
	rangeDeleteI32(r, m32)
	assignI32(r, m32, i32[:5])

	u32 := []uint32{4294967295, 0, 3000000000}
	for i := uint32(0); i < 30; i++ {
		u32 = append(u32, 4000000000+i)
	}
	mu32 := make(map[uint32]int)
	assignU32(r, mu32, u32)
	delU32(r, mu32, u32[:20])

	i64 := []int64{-9223372036854775808, 9223372036854775807, 0, -1}
	for i := int64(-60); i < 60; i++ {
		i64 = append(i64, i*1000000000007)
	}
	m64 := make(map[int64]int)
	assignI64(r, m64, i64)
	delI64(r, m64, append(i64[:50:50], 42, -42))
	clearI64(r, m64)

	u64 := []uint64{18446744073709551615, 9223372036854775808, 0}
	for i := uint64(0); i < 40; i++ {
		u64 = append(u64, 1<<63+i*977)
	}
	mu64 := make(map[uint64]bool)
	assignU64(r, mu64, u64)
	delU64(r, mu64, u64[:25])

	nodes := make([]node, 32)
	ptrs := make([]*node, len(nodes))
	for i := range nodes {
		ptrs[i] = &nodes[i]
	}
	mp := make(map[*node]int)
	assignPtr(r, mp, ptrs)
	delPtr(r, mp, ptrs[:16])
	delPtr(r, mp, []*node{new(node)}) // absent

	sk := make([]skey, 0, 40)
	for i := 0; i < 40; i++ {
		sk = append(sk, skey{A: int64(i) - 20, B: int64(i) * 0x0102030405, C: uint32(i) * 3, D: 0xdeadbeef})
	}
	mst := make(map[skey]int)
	assignStruct(r, mst, sk)
	delStruct(r, mst, sk[:20])
	delStruct(r, mst, []skey{{A: -1, B: -1, C: 1, D: 1}}) // absent

	bigKeys := make([]int64, 0, 50)
	for i := int64(0); i < 50; i++ {
		bigKeys = append(bigKeys, i*i*31-700)
	}
	mbig := make(map[int64][200]byte)
	assignBigI64(r, mbig, bigKeys)
	delBigI64(r, mbig, append(bigKeys[:30:30], 99999999))

	bigStr := make([]string, 0, 40)
	for i := 0; i < 40; i++ {
		bigStr = append(bigStr, "big-"+strconv.Itoa(i*13))
	}
	mbs := make(map[string][160]byte)
	assignBigStr(r, mbs, bigStr)
	delBigStr(r, mbs, append(bigStr[:10:10], "big-absent"))
	rangeDeleteStr(r, mbs)

	// A few repeated rounds so the total is sizeable on the main goroutine too.
	for round := 0; round < 20; round++ {
		assignStr(r, ms, strKeys[:50])
		delStr(r, ms, strKeys[:50])
		assignI64(r, m64, i64[:40])
		clearI64(r, m64)
	}
}

func waitStdin() {
	var b [1]byte
	for {
		n, err := os.Stdin.Read(b[:])
		if err != nil || (n == 1 && b[0] == '\n') {
			return
		}
	}
}

func writeTruth(path string, recs []*rec) {
	var all []byte
	for _, r := range recs {
		all = append(all, r.buf...)
	}
	if err := os.WriteFile(path, all, 0o644); err != nil {
		os.Stderr.WriteString("maptruth: " + err.Error() + "\n")
		os.Exit(1)
	}
}

func init() {
	mainRec = newRec()
	initAssign(mainRec) // the first map operation of package main, before main.main
}

func main() {
	firstAssign(mainRec) // the first statement of main

	if len(os.Args) < 2 {
		os.Stderr.WriteString("usage: maptruth TRUTHFILE [all|wait|exit3|hold]\n")
		os.Exit(2)
	}
	path := os.Args[1]
	scenario := "all"
	if len(os.Args) > 2 {
		scenario = os.Args[2]
	}
	switch scenario {
	case "all", "exit3":
	case "wait":
		waitStdin()
		mainRec.buf = mainRec.buf[:0] // only what happens after the trigger counts
	case "hold":
		waitStdin()
		return
	default:
		os.Stderr.WriteString("maptruth: unknown scenario " + scenario + "\n")
		os.Exit(2)
	}
	runMain(mainRec)
	recs := append([]*rec{mainRec}, runWorkers()...)
	writeTruth(path, recs)
	if scenario == "exit3" {
		os.Exit(3)
	}
}
