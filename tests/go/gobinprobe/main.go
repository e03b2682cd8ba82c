// gobinprobe is built by tests/gobin_read.rs with every installed Go toolchain.
// It exercises each runtime map entry point mapguard probes and prints the
// ground truth the test compares against (type names, type addresses, a pc
// with its file and line as the Go runtime itself resolves them).
package main

import (
	"fmt"
	"os"
	"reflect"
	"runtime"
	"unsafe"
)

type User struct {
	Name string
	Age  int
}

type Point struct {
	X, Y int32
	Tag  string
}

type Big struct {
	Payload [200]byte
}

var sink int

// typeAddr returns the *abi.Type word of an interface holding v.
func typeAddr(v any) uintptr {
	return *(*uintptr)(unsafe.Pointer(&v))
}

func report(m any) {
	fmt.Printf("TYPE\t%T\t%#x\n", m, typeAddr(m))
}

//go:noinline
func knownLine() (uintptr, string, int) {
	pc, file, line, _ := runtime.Caller(0) // KNOWN_LINE_MARKER
	return pc, file, line
}

// returnAddr returns the return address into its caller, as a stack walk
// (and mapguard's BPF stacks) would see it, and the pcs runtime.Callers
// reports for the logical frames from there up (inlined ones included).
//
//go:noinline
func returnAddr() []uintptr {
	pcs := make([]uintptr, 4)
	return pcs[:runtime.Callers(2, pcs)]
}

// inlinedHelper is inlined into outerOfInlined: the return address it
// records lies in outerOfInlined's code but on this function's line.
func inlinedHelper() []uintptr {
	return returnAddr() // INLINED_LINE_MARKER
}

//go:noinline
func outerOfInlined() []uintptr {
	return inlinedHelper()
}

// bigFrame's frame exceeds the 4 KiB StackBig, so its prologue uses the
// long form of the stack check (mov r12,rsp; sub r12,N; jb; cmp; jbe).
//
//go:noinline
func bigFrame(i int) byte {
	var buf [64 << 10]byte
	for j := range buf {
		buf[j] = byte(i + j)
	}
	return buf[i%len(buf)]
}

// midFrame's frame is between 128 bytes and 4 KiB: lea r12,[rsp-N]; cmp; jbe.
//
//go:noinline
func midFrame(i int) byte {
	var buf [1 << 10]byte
	for j := range buf {
		buf[j] = byte(i * j)
	}
	return buf[i%len(buf)]
}

//go:noinline
func useStr(m map[string]User, k string) {
	m[k] = User{Name: k, Age: len(k)}
	delete(m, k+"x")
}

//go:noinline
func use32(m map[int32]int, k int32) {
	m[k] = int(k)
	delete(m, k+1)
}

//go:noinline
func use64(m map[int64]string, k int64) {
	m[k] = "v"
	delete(m, k+1)
}

//go:noinline
func usePtr(m map[*User]int, k *User) {
	m[k] = 1
	delete(m, k)
}

//go:noinline
func useStruct(m map[Point]bool, k Point) {
	m[k] = true
	delete(m, Point{X: k.X + 1})
}

//go:noinline
func useBig(m map[string]Big, k string) {
	m[k] = Big{}
	delete(m, k+"y")
}

//go:noinline
func useClear(m map[string]User) {
	clear(m)
}

func main() {
	ms := map[string]User{}
	m32 := map[int32]int{}
	m64 := map[int64]string{}
	mp := map[*User]int{}
	mst := map[Point]bool{}
	mb := map[string]Big{}
	for i := 0; i < 3; i++ {
		useStr(ms, fmt.Sprint(i))
		use32(m32, int32(i))
		use64(m64, int64(i))
		usePtr(mp, &User{Age: i})
		useStruct(mst, Point{X: int32(i)})
		useBig(mb, fmt.Sprint(i))
	}
	useClear(ms)
	sink += int(bigFrame(3)) + int(midFrame(5))
	sink = len(ms) + len(m32) + len(m64) + len(mp) + len(mst) + len(mb)

	report(ms)
	report(m32)
	report(m64)
	report(mp)
	report(mst)
	report(mb)
	fmt.Printf("MAIN\t%#x\n", reflect.ValueOf(main).Pointer())
	pc, file, line := knownLine()
	fmt.Printf("KNOWN\t%#x\t%s\t%d\n", pc, file, line)
	ipcs := outerOfInlined()
	frames := runtime.CallersFrames(ipcs)
	for {
		f, more := frames.Next()
		fmt.Printf("INLINE\t%#x\t%s\t%s\t%d\n", ipcs[0], f.Function, f.File, f.Line)
		if !more {
			break
		}
	}
	fmt.Printf("VERSION\t%s\n", runtime.Version())
	os.Exit(0)
}
