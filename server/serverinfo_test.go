package server_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/servertest"
)

// TestServerInfoTellsDurability: herald serve answers on
// natsjs.ServerInfoSubject with its durability, and an SDK client
// connected over the network group-commits exactly when it is sync.
func TestServerInfoTellsDurability(t *testing.T) {
	t.Parallel()
	for _, d := range []natsjs.Durability{natsjs.Sync, natsjs.Fast} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			srv := servertest.Start(t, server.Config{Durability: d})
			nc, err := nats.Connect(srv.NATSURL())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			m, err := nc.Request(natsjs.ServerInfoSubject, nil, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var info natsjs.ServerInfo
			if err := json.Unmarshal(m.Data, &info); err != nil || info.Durability != d {
				t.Fatalf("answer %s (%v), want durability %s", m.Data, err, d)
			}
			c, err := herald.Connect(t.Context(), herald.Config{URL: srv.NATSURL(), Source: "info"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close() })
			nb, ok := c.Broker().(*natsjs.Broker)
			if !ok {
				t.Fatalf("broker %T", c.Broker())
			}
			if got, want := nb.GroupCommit(), d == natsjs.Sync; got != want {
				t.Fatalf("group commit %v on a %s server, want %v", got, d, want)
			}
		})
	}
}
