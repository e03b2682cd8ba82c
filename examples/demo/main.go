// demo: Go map churn to watch with kubectl-mapguard (README demo, overhead measurement).
//
//	demo [DURATION]             churn for DURATION (default 5s; "10s", "2m" or plain seconds)
//	demo -bench-deletes N       time N deletes in a tight loop, print ns/delete to stderr
//
// Standard library only; arguments are parsed by hand (the flag package uses maps itself).
package main

import (
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// User is what the session cache holds.
type User struct {
	ID    int64
	Name  string
	Age   int32
	Admin bool
}

var (
	assigns atomic.Int64
	deletes atomic.Int64
	clears  atomic.Int64
)

// sessions is shared by the workers, guarded by mu (no concurrent map writes).
var (
	mu       sync.Mutex
	sessions = make(map[string]User)
)

//go:noinline
func login(id int64) {
	key := "user-" + strconv.FormatInt(id, 10)
	mu.Lock()
	sessions[key] = User{ID: id, Name: key, Age: int32(20 + id%50), Admin: id%97 == 0}
	mu.Unlock()
	assigns.Add(1)
}

//go:noinline
func logout(id int64) {
	key := "user-" + strconv.FormatInt(id, 10)
	mu.Lock()
	delete(sessions, key)
	mu.Unlock()
	deletes.Add(1)
}

//go:noinline
func countHit(hits map[int64]int, k int64) {
	hits[k]++
	assigns.Add(1)
}

//go:noinline
func resetHits(hits map[int64]int) {
	clear(hits)
	clears.Add(1)
}

func worker(w int, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	hits := make(map[int64]int) // this goroutine's own
	next := int64(w) * 1_000_000
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		login(next)
		if next-int64(w)*1_000_000 >= 20 {
			logout(next - 20) // sessions expire after 20 logins
		}
		countHit(hits, next%64)
		if i%500 == 499 {
			resetHits(hits)
		}
		next++
		time.Sleep(time.Millisecond)
	}
}

func parseDuration(s string) (time.Duration, bool) {
	if n, err := strconv.ParseFloat(s, 64); err == nil && n >= 0 {
		return time.Duration(n * float64(time.Second)), true
	}
	d, err := time.ParseDuration(s)
	return d, err == nil && d >= 0
}

//go:noinline
func deleteLoop(m map[int64]int, n int64) {
	for k := int64(0); k < n; k++ {
		delete(m, k)
	}
}

func benchDeletes(n int64) {
	m := make(map[int64]int, n)
	for k := int64(0); k < n; k++ {
		m[k] = int(k)
	}
	start := time.Now()
	deleteLoop(m, n)
	el := time.Since(start)
	per := float64(el.Nanoseconds()) / float64(n)
	os.Stderr.WriteString("bench-deletes: " + strconv.FormatInt(n, 10) + " deletes in " +
		el.String() + ": " + strconv.FormatFloat(per, 'f', 1, 64) + " ns/delete\n")
}

func usage() {
	os.Stderr.WriteString("usage: demo [DURATION] | demo -bench-deletes N\n")
	os.Exit(2)
}

func main() {
	args := os.Args[1:]
	if len(args) >= 1 && (args[0] == "-bench-deletes" || args[0] == "--bench-deletes") {
		if len(args) != 2 {
			usage()
		}
		n, err := strconv.ParseInt(args[1], 10, 64)
		if err != nil || n <= 0 {
			usage()
		}
		benchDeletes(n)
		return
	}
	dur := 5 * time.Second
	if len(args) == 1 {
		d, ok := parseDuration(args[0])
		if !ok {
			usage()
		}
		dur = d
	} else if len(args) > 1 {
		usage()
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	const workers = 3
	for w := 1; w <= workers; w++ {
		wg.Add(1)
		go worker(w, stop, &wg)
	}
	time.Sleep(dur)
	close(stop)
	wg.Wait()
	mu.Lock()
	left := len(sessions)
	mu.Unlock()
	os.Stderr.WriteString("demo: " + dur.String() + ": " +
		strconv.FormatInt(assigns.Load(), 10) + " assigns, " +
		strconv.FormatInt(deletes.Load(), 10) + " deletes, " +
		strconv.FormatInt(clears.Load(), 10) + " clears, " +
		strconv.Itoa(left) + " sessions left\n")
}
