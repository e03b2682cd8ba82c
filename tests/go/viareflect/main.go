// viareflect writes maps the ways libraries do, not with m[k] = v in the
// function that means it: through encoding/json, through reflect, through
// the standard maps package and through a generic helper that only
// forwards. mapguard should name the function below that asked for each
// write, with the runtime or reflect frame that made it as `via`.
//
//	viareflect N
//
// Each of the functions below runs N times on its own map type, so a test
// can tell them apart by map type alone:
//
//	fromJSON     map[string]int      json.Unmarshal of {"a":1,"b":2}: 2 assigns per run
//	byReflect    map[string]bool     reflect SetMapIndex: 1 assign, then 1 delete per run
//	byReflectInt map[int64]string    reflect SetMapIndex (generic path): 1 assign, 1 delete
//	byCopy       map[uint16]float64  maps.Copy of a 3-key map: 3 assigns per run
//	byHelper     map[string]uint8    put(), a generic forwarder: 1 assign per run
//	byClear      map[string]int8     reflect Value.Clear: 1 assign (direct), 1 clear per run
package main

import (
	"encoding/json"
	"maps"
	"os"
	"reflect"
	"strconv"
)

//go:noinline
func fromJSON(m map[string]int, data []byte) {
	if err := json.Unmarshal(data, &m); err != nil {
		panic(err)
	}
}

//go:noinline
func byReflect(m map[string]complex64, k string) {
	v := reflect.ValueOf(m)
	v.SetMapIndex(reflect.ValueOf(k), reflect.ValueOf(complex64(1)))
	v.SetMapIndex(reflect.ValueOf(k), reflect.Value{})
}

//go:noinline
func byReflectInt(m map[int64]string, k int64) {
	v := reflect.ValueOf(m)
	v.SetMapIndex(reflect.ValueOf(k), reflect.ValueOf("x"))
	v.SetMapIndex(reflect.ValueOf(k), reflect.Value{})
}

//go:noinline
func byCopy(dst, src map[uint16]float64) {
	maps.Copy(dst, src)
}

// put is a generic helper that only forwards to the runtime.
//
//go:noinline
func put[K comparable, V any](m map[K]V, k K, v V) {
	m[k] = v
}

//go:noinline
func byHelper(m map[string]uint8, k string) {
	put(m, k, 1)
}

//go:noinline
func byClear(m map[string]int8, k string) {
	m[k] = 1
	reflect.ValueOf(m).Clear()
}

func main() {
	n, err := strconv.Atoi(os.Args[1])
	if err != nil {
		os.Stderr.WriteString("usage: viareflect N\n")
		os.Exit(2)
	}
	js := make(map[string]int)
	rs := make(map[string]complex64)
	ri := make(map[int64]string)
	cp := make(map[uint16]float64)
	src := map[uint16]float64{1: 1, 2: 2, 3: 3}
	hp := make(map[string]uint8)
	cl := make(map[string]int8)
	data := []byte(`{"a":1,"b":2}`)
	for i := 0; i < n; i++ {
		k := "k" + strconv.Itoa(i)
		fromJSON(js, data)
		byReflect(rs, k)
		byReflectInt(ri, int64(i))
		byCopy(cp, src)
		byHelper(hp, k)
		byClear(cl, k)
	}
}
