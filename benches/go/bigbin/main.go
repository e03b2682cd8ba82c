// bigbin is the attach-time benchmark's 100 MB Go binary: a small program
// that carries a large embedded asset (as binaries with bundled UIs, models
// or fixtures do). benches/overhead.py writes blob.bin before building; it is
// not in the repository.
package main

import (
	_ "embed"
	"os"
	"strconv"
)

//go:embed blob.bin
var blob []byte

func main() {
	m := map[string]int{"size": len(blob)}
	delete(m, "size")
	os.Stdout.WriteString("bigbin " + strconv.Itoa(len(blob)) + "\n")
}
