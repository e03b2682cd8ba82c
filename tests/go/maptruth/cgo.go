package main

// In a cgo build (the test matrix's *-cgo-* variants) the C runtime's code
// comes before Go's in .text, so Go's function table does not count from
// the start of the section. Without cgo this file is left out of the build.
// (The blank line below keeps this comment from being read as C.)

import "C"
