// phases does string-key map operations in phases whose rates differ, and
// writes down how many it did, so the tests of `--max-overhead` can hold the
// tool's estimates against the truth.
//
//	phases TRUTHFILE STEP...
//
// Steps, in order:
//
//	wait             block until a line (or EOF) arrives on stdin
//	idle:MS          sleep
//	burst:MS         assign and delete as fast as it can (a process doing
//	                 nothing but map operations)
//	service:MS:RATE  RATE assign+delete pairs a second, each with some work
//	                 of its own around it, as a request handler does
//	requests:MS:RATE as service, each pair also reading 64 bytes of
//	                 /dev/zero and writing them to /dev/null, as a handler
//	                 reads a request and writes its answer (a read and a
//	                 write system call per pair)
//	deletes:N        N assigns, then N deletes of those keys
//
// TRUTHFILE gets {"delete":N,"assign":N} for the map type map[string]main.val
// only (the runtime's own maps are not in it). No encoding/json, flag or
// os.Getenv: they use maps themselves.
package main

import (
	"os"
	"strconv"
	"strings"
	"time"
)

type val struct{ n, pad int }

var (
	m       = map[string]val{}
	keys    []string
	deletes int
	assigns int
	sink    uint64
)

//go:noinline
func put(k string, i int) {
	m[k] = val{n: i}
	assigns++
}

//go:noinline
func del(k string) {
	delete(m, k)
	deletes++
}

// work is a handler's own CPU: a few microseconds of hashing.
//
//go:noinline
func work(seed int) {
	h := uint64(seed) | 1
	for i := 0; i < 2000; i++ {
		h ^= h << 13
		h ^= h >> 7
		h ^= h << 17
	}
	sink += h
}

func burst(d time.Duration) {
	end := time.Now().Add(d)
	for i := 0; ; i++ {
		if i%1024 == 0 && time.Now().After(end) {
			return
		}
		k := keys[i%len(keys)]
		put(k, i)
		del(k)
	}
}

func service(d time.Duration, rate int, io bool) {
	var in, out *os.File
	var buf [64]byte
	if io {
		var err error
		if in, err = os.Open("/dev/zero"); err == nil {
			out, err = os.OpenFile("/dev/null", os.O_WRONLY, 0)
		}
		if err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		defer in.Close()
		defer out.Close()
	}
	start := time.Now()
	every := time.Second / time.Duration(rate)
	for i := 0; ; i++ {
		due := start.Add(time.Duration(i) * every)
		if due.Sub(start) >= d {
			return
		}
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		k := keys[i%len(keys)]
		if io {
			in.Read(buf[:])
		}
		work(i)
		put(k, i)
		work(i + 1)
		del(k)
		if io {
			out.Write(buf[:])
		}
	}
}

func onlyDeletes(n int) {
	ks := make([]string, n)
	for i := range ks {
		ks[i] = "d" + strconv.Itoa(i)
		put(ks[i], i)
	}
	for _, k := range ks {
		del(k)
	}
}

func ms(s string) time.Duration {
	n, err := strconv.Atoi(s)
	if err != nil {
		os.Stderr.WriteString("phases: bad number " + s + "\n")
		os.Exit(2)
	}
	return time.Duration(n) * time.Millisecond
}

func main() {
	if len(os.Args) < 3 {
		os.Stderr.WriteString("usage: phases TRUTHFILE STEP...\n")
		os.Exit(2)
	}
	for i := 0; i < 4096; i++ {
		keys = append(keys, "key-"+strconv.Itoa(i))
	}
	for _, step := range os.Args[2:] {
		f := strings.Split(step, ":")
		switch {
		case f[0] == "wait":
			var b [1]byte
			os.Stdin.Read(b[:])
		case f[0] == "idle" && len(f) == 2:
			time.Sleep(ms(f[1]))
		case f[0] == "burst" && len(f) == 2:
			burst(ms(f[1]))
		case f[0] == "service" && len(f) == 3:
			r, _ := strconv.Atoi(f[2])
			service(ms(f[1]), r, false)
		case f[0] == "requests" && len(f) == 3:
			r, _ := strconv.Atoi(f[2])
			service(ms(f[1]), r, true)
		case f[0] == "deletes" && len(f) == 2:
			n, _ := strconv.Atoi(f[1])
			onlyDeletes(n)
		default:
			os.Stderr.WriteString("phases: bad step " + step + "\n")
			os.Exit(2)
		}
	}
	out := `{"delete":` + strconv.Itoa(deletes) + `,"assign":` + strconv.Itoa(assigns) + "}\n"
	if err := os.WriteFile(os.Args[1], []byte(out), 0o644); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
}
