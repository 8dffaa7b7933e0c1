//go:build !unix

package e2ebench

import "time"

// cpuTime is not measured on this platform.
func cpuTime() time.Duration { return 0 }
