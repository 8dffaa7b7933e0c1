package natsjs

import (
	"strconv"
	"strings"
)

// serverAtLeast reports whether a "vX.Y.Z" or "X.Y.Z[-suffix]" version is
// at least major.minor.patch. An unparsable version counts as new enough.
func serverAtLeast(version string, major, minor, patch int) bool {
	v := strings.TrimPrefix(version, "v")
	if i := strings.IndexAny(v, "-+"); i >= 0 {
		v = v[:i]
	}
	parts := strings.Split(v, ".")
	want := [3]int{major, minor, patch}
	for i := 0; i < 3; i++ {
		if i >= len(parts) {
			return true
		}
		n, err := strconv.Atoi(parts[i])
		if err != nil {
			return true
		}
		if n != want[i] {
			return n > want[i]
		}
	}
	return true
}
