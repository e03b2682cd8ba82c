//go:build !go1.23

package main

// Before go1.23 there is no maps.Insert, maps.All or range over functions.
func iterators() {}
