//go:build long

package projection_test

const rebuildEvents = 100_000
