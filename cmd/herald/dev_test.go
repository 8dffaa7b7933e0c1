package main

import (
	"bytes"
	"context"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/examples/shop"
	"github.com/heraldhq/herald/internal/testenv"
)

// TestDevSummaryAndCleanStop runs herald dev with its output not on a
// terminal: it prints the URLs, then a summary line every --summary-every
// whose counts move; Ctrl-C (SIGINT) stops it with status 0 and removes
// the shop's PostgreSQL schema.
func TestDevSummaryAndCleanStop(t *testing.T) {
	t.Parallel()
	devSummaryAndCleanStop(t, nil)
}

// TestDevCluster runs herald dev --cluster: the shop runs on three nodes
// whose topics keep three copies, and Ctrl-C stops all of them.
func TestDevCluster(t *testing.T) {
	t.Parallel()
	devSummaryAndCleanStop(t, func(out string) {
		m := regexp.MustCompile(`Cluster of 3 nodes .*--url (\S+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("herald dev --cluster did not print the cluster's URLs:\n%s", out)
		}
		if urls := strings.Split(m[1], ","); len(urls) != 3 {
			t.Fatalf("cluster URLs %q: want 3", m[1])
		}
		b, err := natsjs.New(t.Context(), natsjs.WithURL(m[1]))
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		s, err := b.JetStream().Stream(t.Context(), natsjs.StreamName(shop.TopicOrders))
		if err != nil {
			t.Fatal(err)
		}
		if r := s.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("%s keeps %d copies in a 3-node cluster, want 3", shop.TopicOrders, r)
		}
	}, "--cluster")
}

// devSummaryAndCleanStop runs herald dev with extra flags until its
// summary shows completed orders, calls during with its output so far,
// then stops it with SIGINT and checks the clean exit. It returns the
// output.
func devSummaryAndCleanStop(t *testing.T, during func(out string), extra ...string) string {
	testenv.Need(t, "PostgreSQL", testenv.HostPort(testenv.PostgresURL))
	stateFile := filepath.Join(t.TempDir(), "state.json")
	cmd, out := spawn(t, stateFile, append([]string{"dev", "--rate", "5", "--summary-every", "1s", "--postgres", testenv.PostgresURL}, extra...)...)
	summary := regexp.MustCompile(`orders placed (\d+)  completed (\d+)  compensated (\d+)  in progress (\d+) \| dead letters (\d+) \| max lag \S+ \| (\d+) events/s`)
	var schema string
	deadline := time.Now().Add(90 * time.Second)
	for {
		text := out.String()
		if m := regexp.MustCompile(`PostgreSQL schema (herald_dev_[0-9a-f]+)`).FindStringSubmatch(text); m != nil {
			schema = m[1]
		}
		done := false
		for _, m := range summary.FindAllStringSubmatch(text, -1) {
			completed, _ := strconv.Atoi(m[2])
			rate, _ := strconv.Atoi(m[6])
			if completed > 0 && rate > 0 {
				done = true
			}
		}
		if done && schema != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no summary line with completed orders and events/s in 90s:\n%s", text)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, want := range []string{"NATS:", "Admin API:", "Registry:", "Order API: http://", "curl -s -X POST http://"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("herald dev did not print %q:\n%s", want, out)
		}
	}
	if strings.Contains(out.String(), "\r") {
		t.Errorf("herald dev redraws in place although its output is not a terminal")
	}
	if during != nil {
		during(out.String())
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("herald dev exited with %v after SIGINT:\n%s", err, out)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("herald dev did not stop within 60s of SIGINT:\n%s", out)
	}
	conn, err := pgx.Connect(t.Context(), testenv.PostgresURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1", schema).Scan(&n); err != nil || n != 0 {
		t.Fatalf("schema %s left behind after exit (%d, %v)", schema, n, err)
	}
	return out.String()
}

// TestDevWithoutPostgres runs herald dev against a PostgreSQL that does
// not answer: the platform runs, and dev says why the shop does not.
func TestDevWithoutPostgres(t *testing.T) {
	t.Parallel()
	st, stateFile, out := startHerald(t, "dev", "--postgres", "postgres://postgres@"+closedAddr(t)+"/none?sslmode=disable&connect_timeout=2")
	poll(t, "the note that the shop is off", func() (bool, string) {
		return strings.Contains(out.String(), "Shop:      off:") && strings.Contains(out.String(), "--postgres URL"), out.String()
	})
	if got := mustRun(t, stateFile, "pub", "--topic", "demo", "--type", "demo.hello.v1", `{"hello":"dev"}`); !strings.Contains(got, "published") {
		t.Fatalf("pub without the shop: %s", got)
	}
	if st.AdminURL == "" || bytes.Contains([]byte(out.String()), []byte("panic")) {
		t.Fatalf("state %+v, output:\n%s", st, out)
	}
}
