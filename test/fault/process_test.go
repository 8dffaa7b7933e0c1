//go:build fault

package fault

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/localstate"
)

// moduleRoot is the repository root, where `go build ./cmd/herald` runs.
func moduleRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test source")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// build compiles the package pkg (relative to the module root) into a
// temporary directory and returns the binary's path.
func build(t *testing.T, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-tags", "fault", "-o", bin, pkg)
	cmd.Dir = moduleRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// lockedBuffer collects a process's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// server is one `herald serve` process on a data dir.
type server struct {
	t       *testing.T
	bin     string
	dataDir string
	extra   []string
	// wrap, if set, is the command that runs bin with the arguments
	// (e.g. ip netns exec NAME); it must exec bin, keeping its pid.
	wrap []string
	// natsAddr and httpAddr are the addresses the first start chose; every
	// restart listens on them again so clients reconnect.
	natsAddr, httpAddr string

	cmd   *exec.Cmd
	out   *lockedBuffer
	state localstate.State
	// exited is closed when cmd was waited for.
	exited chan struct{}
}

// startServer runs `herald serve --durability sync` on dataDir with ports
// it chose, and waits until /readyz answers.
func startServer(t *testing.T, bin, dataDir string, extra ...string) *server {
	t.Helper()
	s := &server{t: t, bin: bin, dataDir: dataDir, extra: extra, natsAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0"}
	s.start()
	s.natsAddr = hostPort(t, s.state.NATSURL)
	s.httpAddr = hostPort(t, s.state.AdminURL)
	t.Cleanup(s.stop)
	s.waitReady(2 * time.Minute)
	return s
}

func hostPort(t *testing.T, url string) string {
	t.Helper()
	for i := len(url) - 1; i >= 0; i-- {
		if url[i] == '/' {
			return url[i+1:]
		}
	}
	t.Fatalf("no host:port in %q", url)
	return ""
}

// start spawns the process and waits until it recorded its addresses.
func (s *server) start() {
	s.t.Helper()
	s.awaitStarted(s.spawn())
}

// spawn starts the process and returns the file it records its
// addresses in.
func (s *server) spawn() (stateFile string) {
	t := s.t
	t.Helper()
	stateFile = filepath.Join(t.TempDir(), "state.json")
	args := append([]string{"serve", "--durability", "sync", "--data-dir", s.dataDir,
		"--nats-addr", s.natsAddr, "--http-addr", s.httpAddr, "--registry-addr", "127.0.0.1:0"}, s.extra...)
	if len(s.wrap) > 0 {
		args = append(append(slices.Clone(s.wrap[1:]), s.bin), args...)
		s.cmd = exec.Command(s.wrap[0], args...)
	} else {
		s.cmd = exec.Command(s.bin, args...)
	}
	s.cmd.Env = append(os.Environ(), "HERALD_STATE_FILE="+stateFile)
	s.out = &lockedBuffer{}
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start herald serve: %v", err)
	}
	s.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		_ = cmd.Wait()
		close(exited)
	}(s.cmd, s.exited)
	return stateFile
}

// awaitStarted waits until the process spawned last recorded its
// addresses in stateFile.
func (s *server) awaitStarted(stateFile string) {
	t := s.t
	t.Helper()
	waitFor(t, 2*time.Minute, func() string { return "herald serve recorded its addresses; output:\n" + s.out.String() }, func() bool {
		var st localstate.State
		b, err := os.ReadFile(stateFile)
		if err != nil || json.Unmarshal(b, &st) != nil || st.PID != s.cmd.Process.Pid {
			select {
			case <-s.exited:
				t.Fatalf("herald serve exited: %v\n%s", s.cmd.ProcessState, s.out.String())
			default:
			}
			return false
		}
		s.state = st
		return true
	})
}

// ready reports whether /readyz answers 200.
func (s *server) ready() bool {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(s.state.AdminURL + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (s *server) waitReady(within time.Duration) {
	s.t.Helper()
	waitFor(s.t, within, func() string { return "herald serve /readyz answered 200; output:\n" + s.out.String() }, s.ready)
}

// kill SIGKILLs the process and waits until it is gone.
func (s *server) kill() {
	s.t.Helper()
	s.signal(syscall.SIGKILL)
}

// signal sends sig to the process and waits until it is gone.
func (s *server) signal(sig syscall.Signal) {
	s.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("%s herald serve: %v", sig, err)
	}
	select {
	case <-s.exited:
	case <-time.After(time.Minute):
		s.t.Fatalf("herald serve still runs a minute after %s", sig)
	}
}

// restart starts the server again on the same data dir and addresses and
// returns once it is ready.
func (s *server) restart() {
	s.t.Helper()
	s.start()
	s.waitReady(2 * time.Minute)
}

// stop interrupts the process and waits for it, killing it if it does not
// stop.
func (s *server) stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// waitFor polls cond until it holds, failing the test with what was
// awaited when within passes.
func waitFor(t *testing.T, within time.Duration, what func() string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for: %s", within, what())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// envInt reads a positive integer from the environment.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	return envPositive(t, name, def, strconv.Atoi, "a positive integer")
}

// envPositive reads the variable name with parse, def if it is unset; a
// value that does not parse or is not above zero fails the test.
func envPositive[T int | time.Duration](t *testing.T, name string, def T, parse func(string) (T, error), want string) T {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := parse(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want %s", name, v, want)
	}
	return n
}

// newRand returns a random source seeded from HERALD_FAULT_SEED or the
// clock, and logs the seed so a run can be repeated.
func newRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("HERALD_FAULT_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("HERALD_FAULT_SEED=%q: %v", v, err)
		}
		seed = n
	}
	t.Logf("HERALD_FAULT_SEED=%d", seed)
	return rand.New(rand.NewPCG(seed, seed))
}

// Summary is what a fault run reports.
type Summary struct {
	Cycles              int     `json:"cycles,omitempty"`
	Acked               int     `json:"acked"`
	Found               int     `json:"found"`
	Lost                int     `json:"lost"`
	Duplicates          int     `json:"duplicates_delivered"`
	OrderViolations     int     `json:"order_violations"`
	MaxUnavailabilityMS float64 `json:"max_unavailability_ms"`
	MaxRestartMS        float64 `json:"max_restart_ms,omitempty"`
	// LossWindowMS is, over the lost events, the longest time from a
	// confirmation to the fault that lost it (power-cut test, fast mode).
	LossWindowMS  float64 `json:"loss_window_ms,omitempty"`
	ConsumerKills int     `json:"consumer_kills,omitempty"`
	DurationS     float64 `json:"duration_s"`
}

var summaryMu sync.Mutex

// report logs s and merges it, under the test's name, into the JSON file
// HERALD_FAULT_SUMMARY names, if set.
func report(t *testing.T, s Summary) {
	t.Helper()
	b, _ := json.Marshal(s)
	t.Logf("summary %s: %s", t.Name(), b)
	path := os.Getenv("HERALD_FAULT_SUMMARY")
	if path == "" {
		return
	}
	summaryMu.Lock()
	defer summaryMu.Unlock()
	all := map[string]Summary{}
	if old, err := os.ReadFile(path); err == nil {
		_ = json.Unmarshal(old, &all)
	}
	all[t.Name()] = s
	out, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(out, '\n'), 0o644); err != nil {
		t.Fatalf("HERALD_FAULT_SUMMARY: %v", err)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
