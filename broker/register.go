package broker

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
)

// Driver is what an adapter registers for a URL scheme (see Register).
type Driver struct {
	// Open connects to the broker at url (the whole URL, scheme
	// included). The caller closes the broker.
	Open func(ctx context.Context, url string, log *slog.Logger) (Broker, error)
	// Binding names the CloudEvents protocol binding the broker's headers
	// follow: "nats", "kafka" or "amqp".
	Binding string
}

var (
	driversMu sync.RWMutex
	drivers   = map[string]Driver{}
)

// Register makes a driver available under scheme, as database/sql does:
// an adapter registers its schemes when its package is imported, so a
// program links only the adapters it imports
// (import _ "github.com/heraldhq/herald/broker/kafka"). Register panics
// if scheme is empty, d.Open is nil or scheme is already registered: those
// are programming errors found at start-up.
func Register(scheme string, d Driver) {
	if scheme == "" || d.Open == nil {
		panic("broker: Register with an empty scheme or a nil Open")
	}
	driversMu.Lock()
	defer driversMu.Unlock()
	if _, dup := drivers[scheme]; dup {
		panic(fmt.Sprintf("broker: Register called twice for scheme %q", scheme))
	}
	drivers[scheme] = d
}

// Lookup returns the driver registered for scheme.
func Lookup(scheme string) (Driver, bool) {
	driversMu.RLock()
	defer driversMu.RUnlock()
	d, ok := drivers[scheme]
	return d, ok
}

// Schemes returns the registered schemes, sorted.
func Schemes() []string {
	driversMu.RLock()
	defer driversMu.RUnlock()
	out := make([]string, 0, len(drivers))
	for s := range drivers {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}
