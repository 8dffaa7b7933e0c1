package netport

import (
	"net"
	"strconv"
	"testing"
)

func TestLoopbackPortsAreFreeDistinctAndBelowTheOutgoingRange(t *testing.T) {
	low := outgoingLow()
	seen := map[int]bool{}
	for range 3 {
		ports, err := Loopback(4)
		if err != nil {
			t.Fatal(err)
		}
		if len(ports) != 4 {
			t.Fatalf("got %d ports, want 4", len(ports))
		}
		for _, p := range ports {
			if seen[p] {
				t.Fatalf("port %d handed out twice", p)
			}
			seen[p] = true
			if p >= low || p < 1024 {
				t.Fatalf("port %d: want 1024 <= port < %d", p, low)
			}
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				t.Fatalf("port %d cannot be listened on: %v", p, err)
			}
			_ = l.Close()
		}
	}
}

// LoopbackAddrs gives host:port addresses, none of them a port given before.
func TestLoopbackAddrs(t *testing.T) {
	ports, err := Loopback(1)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := LoopbackAddrs(2)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if a == net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])) {
			t.Fatalf("%s given again", a)
		}
		if _, err := net.ResolveTCPAddr("tcp", a); err != nil {
			t.Fatalf("address %q: %v", a, err)
		}
	}
}

func TestParseRange(t *testing.T) {
	for in, want := range map[string]int{"32768\t60999\n": 32768, "1024 65535": 1024} {
		if got, err := parseRange(in); err != nil || got != want {
			t.Errorf("parseRange(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x 2", "0 5", "70000 70001", "1"} {
		if _, err := parseRange(in); err == nil {
			t.Errorf("parseRange(%q): want an error", in)
		}
	}
}
