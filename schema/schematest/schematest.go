// Package schematest helps test code that uses the schema registry: it
// starts an embedded NATS server with JetStream in process, on a free
// loopback port, for a KV-backed registry.
package schematest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Server is a running embedded server.
type Server struct {
	*server.Server
	StoreDir string
}

// Start starts a JetStream server on a free loopback port storing in dir
// (t.TempDir() when empty) and shuts it down at cleanup.
func Start(t testing.TB, dir string) *Server {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	s, err := server.NewServer(&server.Options{JetStream: true, StoreDir: dir, Port: -1, Host: "127.0.0.1", NoSigs: true})
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("nats server not ready for connections within 10s")
	}
	srv := &Server{Server: s, StoreDir: dir}
	t.Cleanup(srv.Stop)
	return srv
}

// Stop shuts the server down and waits for it. Calling it twice is fine.
func (s *Server) Stop() {
	s.Shutdown()
	s.WaitForShutdown()
}

// Connect returns a JetStream context on a new connection that is closed
// at cleanup.
func (s *Server) Connect(t testing.TB) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatalf("nats connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}
