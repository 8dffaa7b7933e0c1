// Package netport picks loopback ports for listeners that must be known
// before they start, such as the route ports of cluster nodes that name
// each other in their configuration.
//
// Asking the kernel for port 0 and closing the listener again hands out a
// port from the range the kernel also uses for the local end of outgoing
// connections; any connection dialled before the real listener binds it
// can take it ("address already in use"). The ports given here lie below
// that range, so only another listener can take them, and a process never
// gets the same port twice.
package netport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// span is how many ports below the outgoing range are candidates.
const span = 12000

var (
	mu    sync.Mutex
	given = map[int]bool{}
)

// Loopback returns n distinct ports on 127.0.0.1 that were free a moment
// ago, outside the kernel's range for outgoing connections.
func Loopback(n int) ([]int, error) {
	low := outgoingLow()
	first := max(low-span, 1024)
	mu.Lock()
	defer mu.Unlock()
	var ports []int
	var err error
	if low-first < 4*n {
		ports, err = anyPorts(n) // an unusual range: leave the choice to the kernel
	} else {
		ports, err = below(first, low, n)
	}
	if err != nil {
		return nil, err
	}
	for _, p := range ports {
		given[p] = true
	}
	return ports, nil
}

// below holds n free ports of first..low-1 together, starting at a random
// one and skipping those given before, and returns them.
func below(first, low, n int) ([]int, error) {
	ports := make([]int, 0, n)
	held := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range held {
			_ = l.Close()
		}
	}()
	start := rand.IntN(low - first)
	for i := 0; i < low-first && len(ports) < n; i++ {
		p := first + (start+i)%(low-first)
		if given[p] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		held = append(held, l)
		ports = append(ports, p)
	}
	if len(ports) < n {
		return nil, fmt.Errorf("netport: only %d of %d ports free in %d-%d", len(ports), n, first, low-1)
	}
	return ports, nil
}

// anyPorts holds n listeners on port 0 together and returns their ports.
func anyPorts(n int) ([]int, error) {
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("netport: %w", err)
		}
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}

// LoopbackAddrs is Loopback as "127.0.0.1:port" addresses.
func LoopbackAddrs(n int) ([]string, error) {
	ports, err := Loopback(n)
	if err != nil {
		return nil, err
	}
	addrs := make([]string, n)
	for i, p := range ports {
		addrs[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	}
	return addrs, nil
}

// outgoingLow is the first port of the range for outgoing connections:
// Linux says it in /proc; elsewhere the IANA range starts at 49152.
func outgoingLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if low, err := parseRange(string(b)); err == nil {
			return low
		}
	}
	return 49152
}

func parseRange(s string) (int, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return 0, errors.New("want two ports")
	}
	low, err := strconv.Atoi(f[0])
	if err != nil || low < 1 || low > 65535 {
		return 0, fmt.Errorf("first port %q", f[0])
	}
	return low, nil
}
