//go:build fault

// Package fault is Herald's fault suite: it builds the herald binary, runs
// it as a real process, SIGKILLs it (or the consumers beside it) under
// load, restarts it on the same data dir and counts what survived.
//
//	go test -tags fault ./test/fault/...
//
// HERALD_FAULT_CYCLES sets the number of kill cycles (default 100),
// HERALD_FAULT_SEED the random seed, HERALD_FAULT_SUMMARY a JSON file the
// figures of every run are written to. docs/durability.md describes what
// is checked.
package fault
