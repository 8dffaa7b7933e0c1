package natskv_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/idempotency"
	"github.com/heraldhq/herald/idempotency/natskv"
	"github.com/heraldhq/herald/idempotency/storetest"
	"github.com/heraldhq/herald/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testenv.NATSLeaks()...) }

// runServer starts an in-process NATS server with JetStream (in the given
// domain, if any) for the test.
func runServer(t testing.TB, domain string) *server.Server {
	t.Helper()
	srv, err := server.NewServer(&server.Options{
		JetStream: true, JetStreamDomain: domain, StoreDir: t.TempDir(),
		DontListen: true, NoSigs: true, NoLog: true,
	})
	if err != nil {
		t.Fatalf("configure server: %v", err)
	}
	go srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("waiting for the embedded server: not ready after 10s")
	}
	return srv
}

// connect opens a connection of its own to srv, as a separate consumer
// process would, and returns a JetStream context on it (in domain, if
// any).
func connect(t testing.TB, srv *server.Server, domain string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect("", nats.InProcessServer(srv))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	var js jetstream.JetStream
	if domain != "" {
		js, err = jetstream.NewWithDomain(nc, domain)
	} else {
		js, err = jetstream.New(nc)
	}
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// jetStream starts an embedded server for the test and returns a
// JetStream context on an in-process connection to it.
func jetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	return connect(t, runServer(t, ""), "")
}

func bucketName() string { return "idem_test_" + strings.ToLower(rand.Text()) }

func newStore(t testing.TB, js jetstream.JetStream, bucket string, opts ...natskv.Option) *natskv.Store {
	t.Helper()
	s, err := natskv.New(t.Context(), js, bucket, opts...)
	if err != nil {
		t.Fatalf("new store on bucket %q: %v", bucket, err)
	}
	return s
}

// Each store the suite asks for has a connection of its own, so claims
// race in the server as they would from several processes.
func TestConformance(t *testing.T) {
	srv := runServer(t, "")
	bucket := bucketName()
	storetest.Run(t, func(t *testing.T) idempotency.Store { return newStore(t, connect(t, srv, ""), bucket) })
}

func TestConformanceMemoryStorage(t *testing.T) {
	srv := runServer(t, "")
	bucket := bucketName()
	storetest.Run(t, func(t *testing.T) idempotency.Store {
		return newStore(t, connect(t, srv, ""), bucket, natskv.WithStorage(jetstream.MemoryStorage))
	})
}

func TestRecordLayout(t *testing.T) {
	t.Parallel()
	js := jetStream(t)
	bucket := bucketName()
	s := newStore(t, js, bucket)
	ctx := t.Context()
	key := "billing/évt 42\n*>"
	if err := s.Claim(ctx, key, time.Minute); err != nil {
		t.Fatalf("claim: %v", err)
	}
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, natskv.Key(key))
	if err != nil {
		t.Fatalf("get %q (Key(%q)): %v", natskv.Key(key), key, err)
	}
	if v := string(e.Value()); !strings.HasSuffix(v, "\n"+key) {
		t.Fatalf("claimed value %q does not end with the original key", v)
	}
	if got := natskv.Key(key); len(got) != 43 || strings.ContainsAny(got, ".*> =+/") {
		t.Fatalf("Key(%q) = %q: want 43 base64url characters", key, got)
	}
	if natskv.Key("a") == natskv.Key("b") {
		t.Fatal("Key maps different keys to one KV key")
	}
}

func TestServerDeletesExpiredRecords(t *testing.T) {
	t.Parallel()
	js := jetStream(t)
	bucket := bucketName()
	s := newStore(t, js, bucket)
	ctx := t.Context()
	if err := s.Claim(ctx, "done", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Complete(ctx, "done", 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := s.Claim(ctx, "crashed", 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := s.Claim(ctx, "released", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, "released"); err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	// The records' server TTLs are 2s, their markers' 1s: wait for the
	// server to remove all of them without any read or purge from us.
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for the server to expire every record: %d messages left after 20s", info.State.Msgs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestForeignValue(t *testing.T) {
	t.Parallel()
	js := jetStream(t)
	bucket := bucketName()
	s := newStore(t, js, bucket)
	ctx := t.Context()
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, natskv.Key("k"), []byte("something else")); err != nil {
		t.Fatal(err)
	}
	err = s.Claim(ctx, "k", time.Minute)
	if err == nil || errors.Is(err, idempotency.ErrDuplicate) || errors.Is(err, idempotency.ErrInProgress) ||
		!strings.Contains(err.Error(), "not an idempotency record") {
		t.Fatalf("claim over a foreign value: got %v, want an error naming the bad record", err)
	}
	if err := s.Release(ctx, "k"); err == nil {
		t.Fatal("release over a foreign value: no error")
	}
}

func TestExistingBucket(t *testing.T) {
	t.Parallel()
	js := jetStream(t)
	ctx := t.Context()

	plain := bucketName()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: plain}); err != nil {
		t.Fatal(err)
	}
	_, err := natskv.New(ctx, js, plain)
	if err == nil || !strings.Contains(err.Error(), "per-message TTLs") {
		t.Fatalf("bucket without TTLs: got %v, want an error naming per-message TTLs", err)
	}

	// A bucket New made is reused by the next New, even with other options.
	bucket := bucketName()
	a := newStore(t, js, bucket)
	b := newStore(t, js, bucket, natskv.WithStorage(jetstream.MemoryStorage))
	if err := a.Claim(ctx, "k", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := b.Claim(ctx, "k", time.Minute); !errors.Is(err, idempotency.ErrInProgress) {
		t.Fatalf("claim through a second store on the same bucket: got %v, want ErrInProgress", err)
	}
}

func TestNewInvalid(t *testing.T) {
	t.Parallel()
	js := jetStream(t)
	tests := []struct {
		name   string
		js     jetstream.JetStream
		bucket string
		opts   []natskv.Option
		want   string
	}{
		{"nil JetStream", nil, "b", nil, "JetStream is nil"},
		{"bad bucket name", js, "no spaces allowed", nil, "no spaces allowed"},
		{"empty bucket name", js, "", nil, "bucket"},
		{"zero replicas", js, "b", []natskv.Option{natskv.WithReplicas(0)}, "replicas 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := natskv.New(t.Context(), tc.js, tc.bucket, tc.opts...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestDomain runs the store against a server with a JetStream domain,
// where writes to the bucket go through the domain's API prefix.
func TestDomain(t *testing.T) {
	srv := runServer(t, "hub")
	bucket := bucketName()
	storetest.Run(t, func(t *testing.T) idempotency.Store { return newStore(t, connect(t, srv, "hub"), bucket) })
}

// TestExternal runs the suite against the local NATS server when it is
// new enough for per-message TTLs, and otherwise checks that New says
// which version it needs.
func TestExternal(t *testing.T) {
	testenv.Need(t, "NATS", testenv.HostPort(testenv.NATSURL))
	nc, err := nats.Connect(testenv.NATSURL)
	if err != nil {
		t.Fatalf("connect to %s: %v", testenv.NATSURL, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	bucket := bucketName()
	_, err = natskv.New(t.Context(), js, bucket)
	version := nc.ConnectedServerVersion()
	if !atLeast211(version) {
		if err == nil || !strings.Contains(err.Error(), "2.11") {
			t.Fatalf("New on nats-server %s: got %v, want an error naming the 2.11 it needs", version, err)
		}
		t.Logf("nats-server %s has no per-message TTLs; New said: %v", version, err)
		return
	}
	if err != nil {
		t.Fatalf("New on nats-server %s: %v", version, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := js.DeleteKeyValue(ctx, bucket); err != nil {
			t.Errorf("delete bucket %q: %v", bucket, err)
		}
	})
	storetest.Run(t, func(t *testing.T) idempotency.Store {
		nc, err := nats.Connect(testenv.NATSURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return newStore(t, js, bucket)
	})
}

// atLeast211 reports whether a server version string ("2.9.10",
// "2.12.0-beta") is 2.11 or later.
func atLeast211(version string) bool {
	var major, minor int
	if _, err := fmt.Sscanf(version, "%d.%d", &major, &minor); err != nil {
		return false
	}
	return major > 2 || (major == 2 && minor >= 11)
}
