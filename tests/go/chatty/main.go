// chatty is a traced command that talks a lot, for the tests of where a
// command's output goes and how its exit status comes back:
//
//	chatty N STATUS
//
// It writes N lines to stdout and N to stderr, some in pieces with no
// newline yet (as a progress bar or a formatter does), assigns and deletes
// one key per line in a map[string]int, then exits with STATUS, or, when
// STATUS is a signal name (TERM, KILL), dies of that signal.
package main

import (
	"os"
	"strconv"
	"syscall"
)

//go:noinline
func put(m map[string]int, k string, v int) { m[k] = v }

//go:noinline
func del(m map[string]int, k string) { delete(m, k) }

func main() {
	if len(os.Args) != 3 {
		os.Stderr.WriteString("usage: chatty N STATUS\n")
		os.Exit(2)
	}
	n, err := strconv.Atoi(os.Args[1])
	if err != nil {
		os.Stderr.WriteString("chatty: N must be a number\n")
		os.Exit(2)
	}
	m := make(map[string]int)
	for i := 0; i < n; i++ {
		k := "k" + strconv.Itoa(i)
		os.Stdout.WriteString("chatty out " + k)
		put(m, k, i)
		os.Stdout.WriteString(" [m{\"v\":1,\"kind\":\"event\"}\n")
		os.Stderr.WriteString("chatty err " + k + "\n")
		del(m, k)
	}
	switch os.Args[2] {
	case "TERM":
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
	case "KILL":
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	status, err := strconv.Atoi(os.Args[2])
	if err != nil {
		select {} // the signal is on its way
	}
	os.Exit(status)
}
