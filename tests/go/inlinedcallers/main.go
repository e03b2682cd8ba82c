// inlinedcallers performs map writes through small generic helpers that the
// compiler inlines into their callers, and writes down, for each operation,
// the caller mapguard must report (see README "The caller is the code that
// asked"): the code that asked, unless a helper does more than forward.
//
//	inlinedcallers TRUTH
//
// TRUTH gets one JSON line per operation site:
// {"tag","op","func","line","via","n"}: n operations of kind op whose caller
// is func (as runtime.CallersFrames names it) at line, and via one of "-"
// (none), a function name prefix, or "std:maps" (a frame of the standard
// maps package, whatever the release calls it). The sites are read from the
// program's own stack, so edits to this file cannot make the truth stale.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"

	umaps "inlinedcallers/src/maps"
)

type rec struct {
	tag, op, fn, via string
	line, n          int
}

// A slice, not a map: the bookkeeping must not add map writes of its own.
var truth []rec

// record notes n operations at line (its frame's line + dline) of the frame
// `up` logical frames above record's caller (inlined frames count).
//
//go:noinline
func record(up int, tag, op string, dline int, via string, n int) {
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(1, pcs)])
	fr, _ := frames.Next() // record itself
	for i := 0; i <= up; i++ {
		fr, _ = frames.Next()
	}
	for i := range truth {
		t := &truth[i]
		if t.tag == tag {
			if t.fn != fr.Function || t.line != fr.Line+dline {
				panic("tag " + tag + " used at two sites")
			}
			t.n += n
			return
		}
	}
	truth = append(truth, rec{tag, op, fr.Function, via, fr.Line + dline, n})
}

// expect: the next line of the calling function performs one op.
//
//go:noinline
func expect(tag, op, via string) { record(1, tag, op, 1, via, 1) }

// expectN: the next line of the calling function performs n ops.
//
//go:noinline
func expectN(tag, op, via string, n int) { record(1, tag, op, 1, via, n) }

func key(p string, i int) string { return p + strconv.Itoa(i) }

// Forwarders: every call they make goes to the runtime (or to another
// forwarder), so the function that calls them is the caller.

func putInl[K comparable, V any](m map[K]V, k K, v V) { m[k] = v }

func delInl[K comparable, V any](m map[K]V, k K) { delete(m, k) }

func clearInl[M ~map[K]V, K comparable, V any](m M) { clear(m) }

func putTwice[K comparable, V any](m map[K]V, k K, v V) { putInl(m, k, v) }

//go:noinline
func putOuter[K comparable, V any](m map[K]V, k K, v V) { putInl(m, k, v) }

type Set[T comparable] map[T]struct{}

func (s Set[T]) Add(v T) { s[v] = struct{}{} }

type Store[K comparable] struct{ m map[K]int }

func (s *Store[K]) Put(k K) { s.m[k]++ }

// Generics that do more than forward are the caller themselves.

func putNoted[K comparable, V any](m map[K]V, k K, v V) {
	m[k] = v
	notedHere()
}

//go:noinline
func notedHere() { record(1, "noted", "assign", -1, "-", 1) }

// putVia calls through a function value: whatever it calls may be anything.
func putVia[K comparable, V any](m map[K]V, k K, v V, f func(K) K) { m[f(k)] = v }

var keyFn func(string) string

//go:noinline
func viaHere() { record(2, "via_fn", "assign", 0, "-", 1) }

// putMaybe's copies differ: inlined with note=false it only forwards, with
// note=true it also calls maybeHere, so only that copy is the caller.
func putMaybe[K comparable, V any](m map[K]V, k K, v V, note bool) {
	m[k] = v
	if note {
		maybeHere()
	}
}

//go:noinline
func maybeHere() { record(1, "maybe_noted", "assign", -2, "-", 1) }

//go:noinline
func forwarders() {
	m := map[string]int{}
	for i := 0; i < 10; i++ {
		expect("put_inl", "assign", "main.putInl[")
		putInl(m, key("a", i), i)
	}
	for i := 0; i < 6; i++ {
		expect("del_inl", "delete", "main.delInl[")
		delInl(m, key("a", i))
	}
	for i := 0; i < 7; i++ {
		expect("put_twice", "assign", "main.putInl[")
		putTwice(m, key("b", i), i)
	}
	for i := 0; i < 5; i++ {
		expect("put_outer", "assign", "main.putInl[")
		putOuter(m, key("c", i), i)
	}
	mi := map[int]int{}
	for i := 0; i < 4; i++ {
		expect("put_inl_int", "assign", "main.putInl[")
		putInl(mi, i, i)
	}
	expect("clear_inl", "clear", "main.clearInl[")
	clearInl(m)
	for i := 0; i < 3; i++ {
		expect("maybe_quiet", "assign", "main.putMaybe[")
		putMaybe(mi, i+100, i, false)
	}
	runtime.KeepAlive(mi)
}

//go:noinline
func methods() {
	s := Set[int]{}
	for i := 0; i < 6; i++ {
		expect("set_add", "assign", "main.Set[")
		s.Add(i)
	}
	st := &Store[string]{m: map[string]int{}}
	for i := 0; i < 7; i++ {
		expect("store_put", "assign", "main.(*Store[")
		st.Put("p")
	}
}

//go:noinline
func callers() {
	m := map[int]int{}
	for i := 0; i < 8; i++ {
		putNoted(m, i, i)
	}
	ms := map[string]int{}
	for i := 0; i < 9; i++ {
		putVia(ms, key("v", i), i, keyFn)
	}
	for i := 0; i < 2; i++ {
		putMaybe(m, i+200, i, true)
	}
}

// userPkg writes through inlinedcallers/src/maps, which is not the
// standard maps package whatever its path ends in.
//
//go:noinline
func userPkg() {
	m := map[string]int{}
	mark := func(dline int) { record(1, "upkg_put", "assign", dline, "-", 1) }
	markNI := func(dline int) { record(1, "upkg_putni", "assign", dline, "-", 1) }
	for i := 0; i < 4; i++ {
		umaps.Put(m, key("u", i), i, mark)
	}
	for i := 0; i < 3; i++ {
		umaps.PutNI(m, key("w", i), i, markNI)
	}
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: inlinedcallers TRUTH")
		os.Exit(2)
	}
	keyFn = func(k string) string {
		viaHere()
		return k
	}
	forwarders()
	methods()
	callers()
	userPkg()
	iterators()
	f, err := os.Create(os.Args[1])
	if err != nil {
		panic(err)
	}
	for _, t := range truth {
		fmt.Fprintf(f, "{\"tag\":%q,\"op\":%q,\"func\":%q,\"line\":%d,\"via\":%q,\"n\":%d}\n",
			t.tag, t.op, t.fn, t.line, t.via, t.n)
	}
	if err := f.Close(); err != nil {
		panic(err)
	}
}
