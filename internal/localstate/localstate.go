// Package localstate records where the local Herald (started by `herald
// serve` or `herald dev`) listens, so CLI commands find it without flags.
// The record is a small JSON file in the user's state directory; it names
// the owning process and is ignored once that process is gone.
package localstate

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// State is what a running Herald publishes about itself.
type State struct {
	PID     int    `json:"pid"`
	NATSURL string `json:"nats_url"`
	// BrokerURL is where events live when that is not NATS (kafka://,
	// amqp://); CLI commands publish and subscribe there.
	BrokerURL   string `json:"broker_url,omitempty"`
	AdminURL    string `json:"admin_url"`
	RegistryURL string `json:"registry_url,omitempty"`
	DataDir     string `json:"data_dir"`
	// CAFile is the CA certificate the local Herald's TLS listeners use
	// (herald dev --tls); CredsFile the credentials of its first admin
	// (--auth). The CLI uses them only with the local Herald's URLs.
	CAFile    string `json:"ca_file,omitempty"`
	CredsFile string `json:"creds_file,omitempty"`
}

// Path returns the state file: $HERALD_STATE_FILE, else
// <user config dir>/herald/local.json.
func Path() (string, error) {
	if p := os.Getenv("HERALD_STATE_FILE"); p != "" {
		return p, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("localstate: %w", err)
	}
	return filepath.Join(dir, "herald", "local.json"), nil
}

// Write records s, replacing any earlier record.
func Write(s State) error {
	p, err := Path()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("localstate: %w", err)
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("localstate: %w", err)
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("localstate: %w", err)
	}
	return os.Rename(tmp, p)
}

// Read returns the record of a running local Herald. It returns an error
// wrapping os.ErrNotExist when there is none or its process is gone.
func Read() (State, error) {
	var s State
	p, err := Path()
	if err != nil {
		return s, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("localstate: %s: %w", p, err)
	}
	if !alive(s.PID) {
		return State{}, fmt.Errorf("localstate: herald pid %d is gone: %w", s.PID, os.ErrNotExist)
	}
	return s, nil
}

// Remove deletes the record if this process wrote it.
func Remove() {
	s, err := Read()
	if err != nil || s.PID != os.Getpid() {
		return
	}
	if p, err := Path(); err == nil {
		_ = os.Remove(p)
	}
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	err = p.Signal(syscall.Signal(0))
	return err == nil || errors.Is(err, syscall.EPERM)
}
