package gateway_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/server"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.NATSLeaks()...)
}

// startServer runs a platform on free ports in a temporary data dir.
func startServer(t testing.TB, cfg server.Config) *server.Server {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	cfg.NATSAddr, cfg.HTTPAddr, cfg.RegistryAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	if cfg.GatewayAddr != "" {
		cfg.GatewayAddr = "127.0.0.1:0"
	}
	if cfg.Audit.Store == "" {
		cfg.Audit.Store = server.AuditOff
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return srv
}

func unique(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// newTopic creates a topic with a unique name.
func newTopic(t testing.TB, srv *server.Server) string {
	t.Helper()
	topic := unique("t")
	if err := srv.Broker().EnsureTopic(context.Background(), topic, broker.TopicConfig{}); err != nil {
		t.Fatal(err)
	}
	return topic
}

// stored returns how many messages topic holds.
func stored(t testing.TB, srv *server.Server, topic string) uint64 {
	t.Helper()
	st, err := srv.Broker().JetStream().Stream(context.Background(), natsjs.StreamName(topic))
	if err != nil {
		t.Fatalf("stream of %s: %v", topic, err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// post sends body to url with headers and returns the status and body.
func post(t testing.TB, url string, h map[string]string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// eventually polls cond every 20ms until it holds or timeout passes; what
// names the awaited condition in the failure.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s; last state: %s", timeout, what, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
