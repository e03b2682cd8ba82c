// widetypes writes maps whose types and callers have long names, as
// generic code does, from many callers, for the tests of the watch table on
// a small terminal:
//
//	widetypes SECONDS
//
// For SECONDS it keeps twelve goroutines assigning and deleting in maps of
// long generic types, each from a function with a long name.
package main

import (
	"os"
	"strconv"
	"time"
)

type SessionIdentifierForTheCheckoutService[T any] struct{ ID T }

type ShoppingCartContentsWithPricingInformation[T any] struct {
	Items []T
	Total float64
}

type Store[K comparable, V any] struct {
	m map[SessionIdentifierForTheCheckoutService[K]]ShoppingCartContentsWithPricingInformation[V]
}

//go:noinline
func (s *Store[K, V]) rememberTheShoppingCartOfThisSessionForLater(k K, v V) {
	s.m[SessionIdentifierForTheCheckoutService[K]{k}] = ShoppingCartContentsWithPricingInformation[V]{Items: []V{v}}
}

//go:noinline
func (s *Store[K, V]) forgetTheShoppingCartOfThisSessionNowThatItIsDone(k K) {
	delete(s.m, SessionIdentifierForTheCheckoutService[K]{k})
}

func churn[K comparable, V any](keys func(int) K, v V, until time.Time) {
	s := &Store[K, V]{m: map[SessionIdentifierForTheCheckoutService[K]]ShoppingCartContentsWithPricingInformation[V]{}}
	for i := 0; time.Now().Before(until); i++ {
		s.rememberTheShoppingCartOfThisSessionForLater(keys(i%512), v)
		s.forgetTheShoppingCartOfThisSessionNowThatItIsDone(keys((i + 256) % 512))
		if i%64 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
}

type LongNamedElementTypeNumberOne struct{ A, B int }
type LongNamedElementTypeNumberTwo struct{ S string }

func main() {
	secs, err := strconv.Atoi(os.Args[1])
	if err != nil {
		os.Stderr.WriteString("usage: widetypes SECONDS\n")
		os.Exit(2)
	}
	until := time.Now().Add(time.Duration(secs) * time.Second)
	done := make(chan bool)
	for g := 0; g < 6; g++ {
		go func() { churn(func(i int) int { return i }, LongNamedElementTypeNumberOne{}, until); done <- true }()
		go func() {
			churn(func(i int) string { return strconv.Itoa(i) }, LongNamedElementTypeNumberTwo{}, until)
			done <- true
		}()
	}
	for g := 0; g < 12; g++ {
		<-done
	}
}
