package rabbitmq

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"
)

// pipe returns a corked socket over one end of a loopback TCP connection
// and the other end.
func pipe(t *testing.T) (*corkConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { _ = c.Close(); _ = peer.Close() })
	return &corkConn{Conn: c}, peer
}

func TestCorkCollectsWritesInOrder(t *testing.T) {
	cc, peer := pipe(t)
	var want bytes.Buffer
	write := func(s string) {
		t.Helper()
		if n, err := cc.Write([]byte(s)); err != nil || n != len(s) {
			t.Fatalf("write %q: %d, %v", s, n, err)
		}
		want.WriteString(s)
	}
	write("before;")
	cc.cork()
	cc.cork() // a second publisher on the connection
	for i := range 100 {
		write("m" + strconv.Itoa(i) + ";")
	}
	cc.uncork()
	if cc.writes != 1 {
		t.Fatalf("%d socket writes before the last uncork, want only the uncorked one", cc.writes)
	}
	cc.uncork()
	if cc.writes != 2 {
		t.Fatalf("%d socket writes after the last uncork, want 2 (one for all 100 corked)", cc.writes)
	}
	write("after")
	if cc.writes != 3 {
		t.Fatalf("%d socket writes, want the uncorked write passed straight through", cc.writes)
	}
	got := make([]byte, want.Len())
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != want.String() {
		t.Fatalf("peer read %q, want %q", got, want.String())
	}
}

func TestCorkWritesWhenFull(t *testing.T) {
	cc, peer := pipe(t)
	go func() { _, _ = io.Copy(io.Discard, peer) }()
	cc.cork()
	chunk := make([]byte, 64<<10)
	for range 4 * corkMax / len(chunk) {
		if _, err := cc.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if cc.writes != 4 {
		t.Fatalf("%d socket writes for 4×corkMax corked bytes, want 4", cc.writes)
	}
	cc.uncork()
}

func TestCorkWriteErrorClosesTheSocket(t *testing.T) {
	cc, peer := pipe(t)
	_ = peer.Close()
	_ = cc.Conn.Close() // the socket fails under the corked writes
	cc.cork()
	if _, err := cc.Write([]byte("x")); err != nil {
		t.Fatalf("a corked write failed before the socket was written: %v", err)
	}
	cc.uncork()
	if _, err := cc.Write([]byte("y")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after a failed write-out: %v, want the socket's error", err)
	}
}

// A publish call leaves in a handful of socket writes, not one per
// message, and every message is confirmed and delivered.
func TestPublishCallIsOneWrite(t *testing.T) {
	t.Parallel()
	b := newTestBroker(t)
	const n = 500
	sub, msgs := groupAndMessages(t, b, "cork", 0, n)
	cc := b.pub.corker()
	if cc == nil {
		t.Fatal("the publishing connection is not corked")
	}
	cc.mu.Lock()
	before := cc.writes
	cc.mu.Unlock()
	if err := b.Publish(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}
	cc.mu.Lock()
	writes := cc.writes - before
	cc.mu.Unlock()
	t.Logf("%d messages published in %d socket writes", n, writes)
	if writes > 10 {
		t.Errorf("%d socket writes for one call of %d messages", writes, n)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	seen := map[string]bool{}
	for len(seen) < n {
		d, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", len(seen), n, err)
		}
		seen[d.Message().ID] = true
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
