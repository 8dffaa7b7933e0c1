//go:build fault

package fault

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/event"
)

// consumerProc is one faultconsumer process.
type consumerProc struct {
	cmd    *exec.Cmd
	out    *lockedBuffer
	exited chan struct{}
}

func startConsumer(t *testing.T, bin string, args ...string) *consumerProc {
	t.Helper()
	p := &consumerProc{cmd: exec.Command(bin, args...), out: &lockedBuffer{}, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start faultconsumer: %v", err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() { p.stop() })
	return p
}

func (p *consumerProc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL faultconsumer: %v", err)
	}
	<-p.exited
}

func (p *consumerProc) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// TestKillConsumersKeepsKeyOrder runs a key-ordered group in three
// processes while events of many keys are published, SIGKILLs one of them
// at random moments and starts a replacement, and checks from the shared
// handling log that no event was handled before an earlier event of its
// key had been handled. Redeliveries (at-least-once) are counted, not
// failed.
func TestKillConsumersKeepsKeyOrder(t *testing.T) {
	kills := envInt(t, "HERALD_FAULT_CONSUMER_KILLS", 6)
	rnd := newRand(t)
	bin := build(t, "./cmd/herald")
	consumerBin := build(t, "./test/fault/faultconsumer")
	srv := startServer(t, bin, filepath.Join(t.TempDir(), "data"))
	began := time.Now()
	ctx := t.Context()

	const (
		topic    = "fault-order"
		keys     = 16
		rounds   = 1500
		replicas = 3
	)
	logFile := filepath.Join(t.TempDir(), "handled.log")
	args := []string{"-url", srv.state.NATSURL, "-topic", topic, "-group", "ordered", "-log", logFile}
	procs := make([]*consumerProc, replicas)
	var all []*consumerProc // every process started, killed ones included
	for i := range procs {
		procs[i] = startConsumer(t, consumerBin, args...)
		all = append(all, procs[i])
	}
	// On a failure, what the instances logged (a member that stopped
	// waiting for deliveries says so) tells which handover broke order.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, p := range all {
			t.Logf("faultconsumer pid %d (%v), last output:\n%s", p.cmd.Process.Pid, p.cmd.ProcessState, tail(p.out.String(), 3000))
		}
	})

	c, err := herald.Connect(ctx, herald.Config{URL: srv.state.NATSURL, Source: "fault"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })

	// Each round publishes the next event of every key in one call, and
	// the next round starts after it was confirmed: per key, publish order
	// is sequence order.
	var (
		wg     sync.WaitGroup
		pubErr error
	)
	published := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(published)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for n := 1; n <= rounds; n++ {
			evs := make([]*event.Event, keys)
			for k := range evs {
				evs[k] = event.New("fault", "fault.step.v1", strconv.AppendInt(nil, int64(n), 10))
				evs[k].Subject = fmt.Sprintf("k%02d", k)
			}
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := c.PublishTo(pctx, topic, evs...)
			cancel()
			if err != nil {
				pubErr = fmt.Errorf("round %d: %w", n, err)
				return
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
		}
	}()

	// Kill one instance at a random moment every 1-3 s while events come
	// in, and after.
	for range kills {
		<-time.After(time.Second + time.Duration(rnd.Int64N(int64(2*time.Second))))
		i := rnd.IntN(replicas)
		procs[i].kill(t)
		procs[i] = startConsumer(t, consumerBin, args...)
		all = append(all, procs[i])
	}
	<-published
	wg.Wait()
	if pubErr != nil {
		t.Fatalf("publish: %v", pubErr)
	}

	total := keys * rounds
	var res orderCheck
	waitFor(t, 5*time.Minute, func() string {
		return fmt.Sprintf("every one of %d events handled; %d handled, %d violations", total, res.handled, res.violations)
	}, func() bool {
		res = checkOrder(t, logFile, keys, rounds)
		return res.handled == total
	})
	for _, p := range procs {
		p.stop()
	}
	res = checkOrder(t, logFile, keys, rounds)
	report(t, Summary{Acked: total, Found: res.handled, Lost: total - res.handled, Duplicates: res.redelivered,
		OrderViolations: res.violations, ConsumerKills: kills, DurationS: time.Since(began).Seconds()})
	for _, v := range res.examples {
		t.Error(v)
	}
	if res.violations > 0 {
		t.Fatalf("%d per-key order violations over %d consumer kills", res.violations, kills)
	}
}

type orderCheck struct {
	handled     int // distinct events handled
	redelivered int // handlings of an event already handled
	violations  int
	examples    []string
}

// checkOrder reads the handling log. An event handled for the first time
// while an earlier event of its key was never handled is a violation.
func checkOrder(t *testing.T, path string, keys, rounds int) orderCheck {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return orderCheck{}
		}
		t.Fatal(err)
	}
	var r orderCheck
	seen := make([][]bool, keys)
	next := make([]int, keys) // the lowest sequence of each key not yet handled
	for k := range seen {
		seen[k] = make([]bool, rounds+2)
		next[k] = 1
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for line := 1; sc.Scan(); line++ {
		f := bytes.Fields(sc.Bytes())
		if len(f) != 3 || len(f[0]) < 2 {
			// The last line may be cut by a kill mid-write.
			continue
		}
		k, err1 := strconv.Atoi(string(f[0][1:]))
		n, err2 := strconv.Atoi(string(f[1]))
		if err1 != nil || err2 != nil || k < 0 || k >= keys || n < 1 || n > rounds {
			t.Fatalf("%s:%d: malformed line %q", path, line, sc.Text())
		}
		if seen[k][n] {
			r.redelivered++
			continue
		}
		if n != next[k] {
			r.violations++
			if len(r.examples) < 10 {
				r.examples = append(r.examples, fmt.Sprintf("line %d: key k%02d event %d handled (pid %s) before event %d", line, k, n, f[2], next[k]))
			}
		}
		seen[k][n] = true
		r.handled++
		for next[k] <= rounds && seen[k][next[k]] {
			next[k]++
		}
	}
	return r
}
