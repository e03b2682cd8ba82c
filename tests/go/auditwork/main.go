// auditwork runs map workloads that satisfy or violate delete-audit rules:
//
//	auditwork MODE
//
//	calm       main.janitor deletes 20 distinct sessions ("s-0".."s-19"), one every 50 ms,
//	           from a map[string]*main.Session, then the program exits 0
//	storm      like calm, then main.janitor deletes 200000 keys as fast as it can
//	forbidden  like calm, and main.handleLogout deletes 3 sessions ("u-0".."u-2")
//	race       two goroutines assign to one map without a lock until the runtime
//	           dies with "fatal error: concurrent map writes"
//	steady     like calm, then main.janitor deletes one key every 50 ms until killed
//	escapes    main.janitor deletes 3 sessions whose keys hold control characters:
//	           "esc-\x1b[31mred", "nul-\x00-x", "nl-a\nb"
//	sites      main.expire assigns 30 sessions on one line, deletes 20 of them on
//	           another and the other 10 on a third: three sites of one function
//
// Every map statement sits in its own //go:noinline function, so the caller the
// tool reports is that function.
package main

import (
	"os"
	"strconv"
	"time"
)

type Session struct{ user string }

//go:noinline
func login(m map[string]*Session, k string) { m[k] = &Session{user: k} }

//go:noinline
func janitor(m map[string]*Session, k string) { delete(m, k) }

//go:noinline
func handleLogout(m map[string]*Session, k string) { delete(m, k) }

//go:noinline
func put(m map[int]int, k int) { m[k] = k }

// expire writes one map from three lines: an audit row is a site (function,
// file and line), so each line keeps its own counts.
//
//go:noinline
func expire(m map[string]*Session) {
	for i := 0; i < 30; i++ {
		m["e-"+strconv.Itoa(i)] = &Session{} // sites: assign
	}
	for i := 0; i < 20; i++ {
		delete(m, "e-"+strconv.Itoa(i)) // sites: delete first
	}
	for i := 20; i < 30; i++ {
		delete(m, "e-"+strconv.Itoa(i)) // sites: delete rest
	}
}

func calm(m map[string]*Session) {
	for i := 0; i < 20; i++ {
		login(m, "s-"+strconv.Itoa(i))
	}
	for i := 0; i < 20; i++ {
		janitor(m, "s-"+strconv.Itoa(i))
		time.Sleep(50 * time.Millisecond)
	}
}

func main() {
	if len(os.Args) != 2 {
		os.Stderr.WriteString("usage: auditwork calm|storm|forbidden|race|steady|escapes|sites\n")
		os.Exit(2)
	}
	// Give the tracer a moment after exec before the first operation counts.
	time.Sleep(300 * time.Millisecond)
	m := make(map[string]*Session)
	switch os.Args[1] {
	case "calm":
		calm(m)
	case "storm":
		calm(m)
		for i := 0; i < 200000; i++ {
			k := "x-" + strconv.Itoa(i)
			login(m, k)
			janitor(m, k)
		}
	case "forbidden":
		calm(m)
		for i := 0; i < 3; i++ {
			k := "u-" + strconv.Itoa(i)
			login(m, k)
			handleLogout(m, k)
		}
	case "steady":
		calm(m)
		for i := 0; ; i++ {
			k := "t-" + strconv.Itoa(i)
			login(m, k)
			janitor(m, k)
			time.Sleep(50 * time.Millisecond)
		}
	case "escapes":
		for _, k := range []string{"esc-\x1b[31mred", "nul-\x00-x", "nl-a\nb"} {
			login(m, k)
			janitor(m, k)
		}
	case "sites":
		expire(m)
	case "race":
		shared := make(map[int]int)
		for g := 0; g < 2; g++ {
			go func(g int) {
				for i := 0; ; i++ {
					put(shared, i*2+g)
				}
			}(g)
		}
		time.Sleep(30 * time.Second)
		os.Stderr.WriteString("auditwork: the race did not crash\n")
		os.Exit(3)
	default:
		os.Stderr.WriteString("auditwork: unknown mode\n")
		os.Exit(2)
	}
	// Let the last stats interval see the final counts.
	time.Sleep(1500 * time.Millisecond)
}
