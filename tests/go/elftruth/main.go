// elftruth prints what Go's own standard library (debug/elf, debug/gosym,
// debug/buildinfo) reads from a Go executable: the independent truth that
// tests/check_cmd.rs compares `kubectl-mapguard check` with. It shares no
// code with mapguard's reader (src/gobin).
//
// Usage: elftruth BINARY. Output, tab-separated, one fact per line:
//
//	GOVERSION  go1.25.5
//	SETTING    KEY  VALUE          (every build setting, GOEXPERIMENT included)
//	ELFTYPE    ET_EXEC | ET_DYN
//	SYMTAB     true | false        (a .symtab section is present)
//	LOAD       VADDR  OFFSET  FILESZ  EXEC(true|false)   (every PT_LOAD, hex)
//	FUNC       NAME  ENTRY  END    (runtime.map* and runtime.fatal, from the pclntab, hex)
package main

import (
	"debug/buildinfo"
	"debug/elf"
	"debug/gosym"
	"fmt"
	"os"
	"strings"
)

func die(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "elftruth: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 2 {
		die("usage: elftruth BINARY")
	}
	path := os.Args[1]
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		die("buildinfo: %v", err)
	}
	fmt.Printf("GOVERSION\t%s\n", bi.GoVersion)
	for _, s := range bi.Settings {
		fmt.Printf("SETTING\t%s\t%s\n", s.Key, s.Value)
	}
	f, err := elf.Open(path)
	if err != nil {
		die("elf: %v", err)
	}
	defer f.Close()
	fmt.Printf("ELFTYPE\t%s\n", f.Type)
	fmt.Printf("SYMTAB\t%v\n", f.Section(".symtab") != nil)
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			fmt.Printf("LOAD\t%#x\t%#x\t%#x\t%v\n", p.Vaddr, p.Off, p.Filesz, p.Flags&elf.PF_X != 0)
		}
	}
	// As cmd/internal/objfile does: .text start, and the pclntab section.
	text := f.Section(".text")
	if text == nil {
		die("no .text section")
	}
	pcln := f.Section(".gopclntab")
	if pcln == nil {
		pcln = f.Section(".data.rel.ro.gopclntab")
	}
	if pcln == nil {
		die("no .gopclntab section")
	}
	data, err := pcln.Data()
	if err != nil {
		die("pclntab: %v", err)
	}
	tab, err := gosym.NewTable(nil, gosym.NewLineTable(data, text.Addr))
	if err != nil {
		die("gosym: %v", err)
	}
	for _, fn := range tab.Funcs {
		if strings.HasPrefix(fn.Name, "runtime.map") || fn.Name == "runtime.fatal" {
			fmt.Printf("FUNC\t%s\t%#x\t%#x\n", fn.Name, fn.Entry, fn.End)
		}
	}
}
