//go:build fault && long

package fault

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
)

// TestRestartTime stores HERALD_FAULT_RESTART_EVENTS events (default 5M)
// at full rate in a sync server, SIGKILLs it and measures the time until
// the restarted server's /readyz answers 200. HERALD_FAULT_DEDUP_WINDOW
// sets the topic's dedup window (default: the adapter's, 2 minutes);
// HERALD_FAULT_RESTART_SIGNAL=TERM stops the server gracefully instead.
//
//	go test -tags fault,long -run TestRestartTime -timeout 30m -v ./test/fault
func TestRestartTime(t *testing.T) {
	events := envInt(t, "HERALD_FAULT_RESTART_EVENTS", 5_000_000)
	var cfg broker.TopicConfig
	if v := os.Getenv("HERALD_FAULT_DEDUP_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("HERALD_FAULT_DEDUP_WINDOW=%q: %v", v, err)
		}
		cfg.DedupWindow = d
	}
	bin := build(t, "./cmd/herald")
	srv := startServer(t, bin, filepath.Join(t.TempDir(), "data"), "--log-level", "debug")
	ctx := t.Context()
	const topic = "restart"
	b, err := natsjs.New(ctx, natsjs.WithURL(srv.state.NATSURL), natsjs.WithGroupCommit(true), natsjs.WithTopic(topic, cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	const workers, batch = 16, 100
	var next atomic.Int64
	began := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := make([]byte, 256)
			for {
				first := next.Add(batch) - batch
				if first >= int64(events) {
					return
				}
				msgs := make([]*broker.Message, batch)
				for i := range msgs {
					n := first + int64(i)
					msgs[i] = &broker.Message{Topic: topic, Route: "r.v1", Key: fmt.Sprint(n % 64), ID: fmt.Sprint(n), Data: data}
				}
				pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				err := b.Publish(pctx, msgs...)
				cancel()
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("publish: %v", err)
	}
	took := time.Since(began)
	t.Logf("stored %d events in %s (%.0f/s), dedup window %v", events, took.Round(time.Millisecond), float64(events)/took.Seconds(), cfg.DedupWindow)
	_ = b.Close()

	sig, how := syscall.SIGKILL, "kill -9"
	if os.Getenv("HERALD_FAULT_RESTART_SIGNAL") == "TERM" {
		sig, how = syscall.SIGTERM, "SIGTERM (graceful stop)"
	}
	killed := time.Now()
	srv.signal(sig)
	srv.restart()
	restart := time.Since(killed)
	t.Logf("%s to /readyz 200: %s", how, restart.Round(time.Millisecond))
	// The embedded server logs, at debug level, how long each stream took
	// to restore: the restart's time split by what it was spent on.
	for line := range strings.Lines(srv.out.String()) {
		if strings.Contains(line, "Restored") || strings.Contains(line, "to start JetStream") {
			t.Log(strings.TrimSpace(line))
		}
	}
	report(t, Summary{Acked: events, MaxRestartMS: ms(restart), DurationS: time.Since(began).Seconds()})
}
