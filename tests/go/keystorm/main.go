// keystorm: a few hot keys, then a storm of keys used once, then the hot keys again, so a
// tool's hot-key table can be checked to keep the hot keys (with exact counts) through a storm
// of one-off keys far larger than the table. Nothing on stdout; exits 0.
//
//	keystorm TRUTHFILE [STORM [late]]
//
// One map, map[string]main.tally:
//
//	phase 1  "hot-1".."hot-5" get half their operations, round-robin, and no other key is used
//	phase 2  STORM keys (default 50000) "once-0".."once-N", each assigned once and deleted once
//	phase 3  the hot keys get the other half
//
// With "late", the storm comes first and the hot keys get all their operations after it: they
// must find their way into a table the storm has filled. The map work then runs on one OS
// thread pinned to one CPU, so a tool that counts per CPU sees every operation of a key on the
// same CPU.
//
// Hot key i (1-based) gets 120*(6-i) assigns and 80*(6-i) deletes in all: totals 1000, 800,
// 600, 400, 200, all different, so the top 5 is unambiguous.
//
// TRUTHFILE gets JSON lines (hand-written: encoding/json uses maps):
//
//	{"kind":"key","map_type":"map[string]main.tally","key":"hot-1","deletes":400,"assigns":600}
//	... one per hot key, then
//	{"kind":"total","delete":D,"assign":A,"clear":0}
//
// where the totals count every operation on the map, the storm's included.
package main

import (
	"os"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"
)

// tally makes the map type unique to this program.
type tally struct {
	n int
}

//go:noinline
func put(m map[string]tally, k string, n int) {
	m[k] = tally{n}
}

//go:noinline
func drop(m map[string]tally, k string) {
	delete(m, k)
}

const hot = 5

func main() {
	if len(os.Args) < 2 || len(os.Args) > 4 || (len(os.Args) == 4 && os.Args[3] != "late") {
		os.Stderr.WriteString("usage: keystorm TRUTHFILE [STORM [late]]\n")
		os.Exit(2)
	}
	storm := 50000
	late := len(os.Args) == 4
	if late {
		pinToOneCPU()
	}
	if len(os.Args) >= 3 {
		n, err := strconv.Atoi(os.Args[2])
		if err != nil || n < 0 {
			os.Stderr.WriteString("keystorm: STORM must be a count\n")
			os.Exit(2)
		}
		storm = n
	}
	m := make(map[string]tally)
	keys := make([]string, hot)
	assigns := make([]int, hot)
	deletes := make([]int, hot)
	for i := range keys {
		keys[i] = "hot-" + strconv.Itoa(i+1)
	}
	var totalA, totalD int
	// Half of each hot key's operations (the first half before the storm, the second after):
	// round-robin over the keys, an assign and a delete a step until the key's share is done.
	hotHalf := func(half int) {
		for busy := true; busy; {
			busy = false
			for i, k := range keys {
				share := hot - i // 5, 4, 3, 2, 1
				if assigns[i] < 60*share*half {
					put(m, k, assigns[i])
					assigns[i]++
					totalA++
					busy = true
				}
				if deletes[i] < 40*share*half {
					drop(m, k)
					deletes[i]++
					totalD++
					busy = true
				}
			}
		}
	}
	stormAll := func() {
		for j := 0; j < storm; j++ {
			k := "once-" + strconv.Itoa(j)
			put(m, k, j)
			drop(m, k)
			totalA++
			totalD++
		}
	}
	if late {
		stormAll()
		hotHalf(1)
		hotHalf(2)
	} else {
		hotHalf(1)
		stormAll()
		hotHalf(2)
	}

	b := []byte{}
	for i, k := range keys {
		b = append(b, `{"kind":"key","map_type":"map[string]main.tally","key":"`...)
		b = append(b, k...)
		b = append(b, `","deletes":`...)
		b = strconv.AppendInt(b, int64(deletes[i]), 10)
		b = append(b, `,"assigns":`...)
		b = strconv.AppendInt(b, int64(assigns[i]), 10)
		b = append(b, "}\n"...)
	}
	b = append(b, `{"kind":"total","delete":`...)
	b = strconv.AppendInt(b, int64(totalD), 10)
	b = append(b, `,"assign":`...)
	b = strconv.AppendInt(b, int64(totalA), 10)
	b = append(b, ",\"clear\":0}\n"...)
	if err := os.WriteFile(os.Args[1], b, 0o644); err != nil {
		os.Stderr.WriteString("keystorm: " + err.Error() + "\n")
		os.Exit(1)
	}
}

// pinToOneCPU keeps the main goroutine on this OS thread and the thread on the first CPU it may
// use (sched_setaffinity on the calling thread; the standard library has no wrapper).
func pinToOneCPU() {
	runtime.LockOSThread()
	var mask [16]uint64
	if _, _, e := syscall.RawSyscall(syscall.SYS_SCHED_GETAFFINITY, 0, unsafe.Sizeof(mask), uintptr(unsafe.Pointer(&mask))); e != 0 {
		os.Stderr.WriteString("keystorm: sched_getaffinity: " + e.Error() + "\n")
		os.Exit(1)
	}
	var one [16]uint64
	for i, w := range mask {
		if w != 0 {
			one[i] = w & -w
			break
		}
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_SCHED_SETAFFINITY, 0, unsafe.Sizeof(one), uintptr(unsafe.Pointer(&one))); e != 0 {
		os.Stderr.WriteString("keystorm: sched_setaffinity: " + e.Error() + "\n")
		os.Exit(1)
	}
}
