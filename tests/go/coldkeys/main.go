// coldkeys writes a map with string keys whose bytes lie in memory the
// process has never touched, the way a key in a not-yet-read page of a
// binary's read-only data does: the probe runs before the runtime reads the
// key, finds the page not mapped in, and cannot fault it in.
//
//	coldkeys N
//
// For each of N fresh pages of an anonymous mapping it assigns the key made
// of the page's first 8 bytes (the runtime's hashing then maps the page
// in), then deletes every key again, now from touched pages: N cold
// assigns, then N deletes, of one key value (eight zero bytes).
package main

import (
	"os"
	"strconv"
	"syscall"
	"unsafe"
)

func main() {
	n, err := strconv.Atoi(os.Args[1])
	if err != nil || n < 1 {
		os.Stderr.WriteString("usage: coldkeys N\n")
		os.Exit(2)
	}
	page := os.Getpagesize()
	mem, err := syscall.Mmap(-1, 0, n*page, syscall.PROT_READ, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		panic(err)
	}
	// One page per fault: a huge page would map in 511 neighbours at once.
	if err := syscall.Madvise(mem, 14 /* MADV_NOHUGEPAGE */); err != nil {
		panic(err)
	}
	m := make(map[string]int)
	keys := make([]string, n)
	for i := range keys {
		keys[i] = unsafe.String(&mem[i*page], 8)
	}
	for i, k := range keys {
		m[k] = i
	}
	for _, k := range keys {
		delete(m, k)
	}
}
