// Package testenv helps tests find the outside services they need
// (PostgreSQL, Redis, RabbitMQ, an external NATS). When a service is
// unreachable a test skips with a one-line reason, unless the environment
// variable CI is set, in which case it fails: CI must run everything.
package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"
)

// Addresses of the local services, overridable by environment variables.
var (
	NATSURL     = env("HERALD_TEST_NATS_URL", "nats://127.0.0.1:4222")
	PostgresURL = env("HERALD_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	RedisAddr   = env("HERALD_TEST_REDIS_ADDR", "127.0.0.1:6379")
	RabbitURL   = env("HERALD_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
)

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// InCI reports whether the CI environment variable is set to a true value.
func InCI() bool {
	v, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && v
}

// Need checks that a TCP service answers at hostport. If it does not, the
// test skips with a one-line reason, or fails when running in CI.
func Need(t testing.TB, name, hostport string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", hostport, 2*time.Second)
	if err == nil {
		_ = c.Close()
		return
	}
	if InCI() {
		t.Fatalf("%s at %s is unreachable and CI is set: %v", name, hostport, err)
	}
	t.Skipf("%s at %s is unreachable: %v (set CI=true to make this a failure)", name, hostport, err)
}

// HostPort returns the host:port of a URL like nats://h:p or
// amqp://u:p@h:p/v, or the input unchanged when it does not parse.
func HostPort(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return rawURL
	}
	return u.Host
}

// Unique returns prefix, a dash and eight random hex digits: a name for a
// topic, group or stream that no other test uses.
func Unique(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}
