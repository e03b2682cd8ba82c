// sameline writes a map from two call sites on one source line, for the
// watch rows, which are per caller line unless --by-pc asks for each site:
//
//	sameline N
//
// twice assigns keys "kI" and "kI-b" for I in 0..N (one line, two calls of
// runtime.mapassign_faststr), then gone deletes both (one line, two calls of
// runtime.mapdelete_faststr), then it exits.
package main

import (
	"os"
	"strconv"
)

//go:noinline
func twice(m map[string]int, k string, i int) { m[k] = i; m[k+"-b"] = i }

//go:noinline
func gone(m map[string]int, k string) { delete(m, k); delete(m, k+"-b") }

func main() {
	n, err := strconv.Atoi(os.Args[1])
	if err != nil {
		os.Stderr.WriteString("usage: sameline N\n")
		os.Exit(2)
	}
	m := make(map[string]int)
	for i := 0; i < n; i++ {
		twice(m, "k"+strconv.Itoa(i), i)
	}
	for i := 0; i < n; i++ {
		gone(m, "k"+strconv.Itoa(i))
	}
}
