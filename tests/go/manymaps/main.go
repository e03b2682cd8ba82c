// manymaps is a service's map shape: one long-lived map with hot keys and
// a fresh map per request, the way net/http makes a header map for each.
//
//	manymaps N
//
// The sessions map (map[string]main.session) gets "hot" assigned 900
// times, "warm" 600 times and "cool" 300 times, and "cool" deleted once.
// Each of N request maps (map[string]main.header), all kept alive so no
// two share an address, gets two keys assigned ("id-I" and "trace") and
// one of them ("trace") deleted: 2N keys in N maps, N of them deleted.
package main

import (
	"fmt"
	"os"
	"strconv"
)

type session struct{ n int }

type header struct{ v string }

//go:noinline
func serve(h map[string]header, i int) {
	h["id-"+strconv.Itoa(i)] = header{"x"}
	h["trace"] = header{"y"}
	delete(h, "trace")
}

//go:noinline
func touch(s map[string]session, k string, i int) { s[k] = session{i} }

var kept []map[string]header

func main() {
	n, err := strconv.Atoi(os.Args[1])
	if len(os.Args) != 2 || err != nil || n < 1 {
		fmt.Fprintln(os.Stderr, "usage: manymaps N")
		os.Exit(2)
	}
	sessions := make(map[string]session)
	for i := 0; i < 900; i++ {
		touch(sessions, "hot", i)
		if i < 600 {
			touch(sessions, "warm", i)
		}
		if i < 300 {
			touch(sessions, "cool", i)
		}
	}
	delete(sessions, "cool")
	for i := 0; i < n; i++ {
		h := make(map[string]header)
		serve(h, i)
		kept = append(kept, h)
	}
	fmt.Fprintf(os.Stderr, "%d request maps, %d sessions\n", len(kept), len(sessions))
}
