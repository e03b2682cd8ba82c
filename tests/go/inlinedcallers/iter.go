//go:build go1.23

package main

import "maps"

// iterators writes through maps.Insert and maps.Collect, which on go1.23
// to go1.26 the compiler inlines as closures named after this package
// (main.iterators.Insert[...]-range1) but compiled from the standard
// library's maps/iter.go; and through a range-over-func loop of its own,
// whose body closure is user code and the caller.
//
//go:noinline
func iterators() {
	src := map[string]int{}
	for i := 0; i < 8; i++ {
		expect("iter_fill", "assign", "-")
		src[key("i", i)] = i
	}
	dst := map[string]int{}
	expectN("insert", "assign", "std:maps", len(src))
	maps.Insert(dst, maps.All(src))
	expectN("collect", "assign", "std:maps", len(src))
	c := maps.Collect(maps.All(src))
	own := map[string]int{}
	for k, v := range maps.All(src) {
		expect("range_body", "assign", "-")
		own[k] = v + len(c)
	}
}
