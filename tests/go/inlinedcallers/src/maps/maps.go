// Package maps is a user package whose import path (inlinedcallers/src/maps)
// and directory (…/src/maps/) look like the standard library's maps to a
// careless rule: its functions write maps for themselves and are the caller.
package maps

import "runtime"

// Put is small enough to be inlined into its caller.
func Put(m map[string]int, k string, v int, mark func(dline int)) {
	m[k] = v
	mark(-1)
}

// PutNI stays out of line, so the probe's frame walk meets it.
//
//go:noinline
func PutNI(m map[string]int, k string, v int, mark func(dline int)) {
	m[k] = v
	mark(-1)
	runtime.KeepAlive(m)
}
