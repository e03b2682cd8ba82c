// reuse makes the GC give one map's address to a map of another type, for
// the test that hot keys are told apart by map type too:
//
//	reuse
//
// It makes a map[string]int, writes key "same" 7 times, drops it, collects,
// and makes a map[string]bool until one lands on the first one's address;
// that one gets key "same" written 3 times. It prints "reused 0xADDR" (or
// "no reuse" after many tries) and exits.
package main

import (
	"fmt"
	"runtime"
	"unsafe"
)

//go:noinline
func addr(m unsafe.Pointer) uintptr { return *(*uintptr)(m) }

//go:noinline
func putInt(m map[string]int, k string, v int) { m[k] = v }

//go:noinline
func putBool(m map[string]bool, k string, v bool) { m[k] = v }

var keep []map[string]bool

// held makes the maps live on the heap, where the GC hands out addresses.
var held any

func main() {
	for try := 0; try < 200; try++ {
		a := make(map[string]int)
		held = a
		at := addr(unsafe.Pointer(&a))
		for i := 0; i < 7; i++ {
			putInt(a, "same", i)
		}
		a, held = nil, nil
		runtime.GC()
		for j := 0; j < 64; j++ {
			b := make(map[string]bool)
			held = b
			if addr(unsafe.Pointer(&b)) == at {
				for i := 0; i < 3; i++ {
					putBool(b, "same", true)
				}
				fmt.Printf("reused 0x%x\n", at)
				return
			}
			keep = append(keep, b)
		}
	}
	fmt.Println("no reuse")
}
