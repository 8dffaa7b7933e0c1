//go:build unix

package e2ebench

import (
	"syscall"
	"time"
)

// CPUTime returns the CPU time (user + system) this process used so far.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
