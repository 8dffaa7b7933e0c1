//go:build !long

package projection_test

// rebuildEvents is how many events the rebuild test projects; build with
// -tags long for the full 100,000.
const rebuildEvents = 20_000
