// Command herald runs the Herald platform (broker, schema registry, admin API)
// and talks to it: publish, subscribe, schemas, dead letters, replay, lag,
// benchmarks. Run `herald --help` for the list.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		var ex exitError
		if errors.As(err, &ex) {
			os.Exit(ex.code)
		}
		fmt.Fprintln(os.Stderr, "herald:", err)
		os.Exit(1)
	}
}

// exitError ends the program with a status code and no further message
// (the command already printed one).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }
