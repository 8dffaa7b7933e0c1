package shop_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/examples/shop"
)

// buildServices builds the service programs into a temporary directory.
func buildServices(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("go", "build", "-o", dir+string(os.PathSeparator), "./cmd/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./cmd/...: %v\n%s", err, out)
	}
	return dir
}

// service is one running service program.
type service struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs strings.Builder
	url  chan string
}

func (s *service) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs.Write(p)
}

func (s *service) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs.String()
}

func startService(t *testing.T, bin, name string, p *platform, tuning shop.Tuning) *service {
	t.Helper()
	args := []string{"--url", p.srv.NATSURL(), "--registry", p.srv.RegistryURL(), "--postgres", p.pgURL, "--schema", p.schema,
		"--addr", "127.0.0.1:0",
		"--payment-fail-rate", fmt.Sprint(tuning.PaymentFailRate), "--shipping-timeout-rate", fmt.Sprint(tuning.ShippingTimeoutRate),
		"--shipping-timeout", tuning.ShippingTimeout.String(), "--step-timeout", tuning.StepTimeout.String(),
		"--ack-wait", tuning.AckWait.String(), "--stock", fmt.Sprint(tuning.Stock), "--sms-fail-every", fmt.Sprint(tuning.SMSFailEvery)}
	s := &service{cmd: exec.Command(filepath.Join(bin, name), args...), url: make(chan string, 1)}
	s.cmd.Env = append(os.Environ(), "HERALD_CREDS=")
	s.cmd.Stderr = s
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "orders API on "); ok {
				s.url <- u
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	t.Cleanup(func() { s.stop(t) })
	return s
}

// stop ends the service with SIGTERM and checks it exits cleanly.
func (s *service) stop(t *testing.T) {
	if s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s exited with %v after SIGTERM:\n%s", s.cmd.Path, err, tail(s.String()))
		}
	case <-time.After(45 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
		t.Errorf("%s did not stop within 45s of SIGTERM:\n%s", s.cmd.Path, tail(s.String()))
	}
}

func tail(s string) string {
	if len(s) > 4000 {
		return "..." + s[len(s)-4000:]
	}
	return s
}

// TestShopThousandOrdersAsProcesses runs each service as its own program
// over TCP, SIGKILLs payments after 300 orders and starts it again:
// every order must still end completed or compensated, the books balanced.
func TestShopThousandOrdersAsProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 orders through five processes")
	}
	bin := buildServices(t)
	p := startPlatform(t)
	orders := startService(t, bin, "orders", p, testTuning)
	var url string
	select {
	case url = <-orders.url:
	case <-time.After(60 * time.Second):
		t.Fatalf("orders did not print its API's URL in 60s:\n%s", orders)
	}
	for _, name := range []string{"inventory", "shipping", "notifications"} {
		startService(t, bin, name, p, testTuning)
	}
	payments := startService(t, bin, "payments", p, testTuning)
	killed := make(chan struct{})
	ids := placeOrders(t, url, orderCount, func(n int64) {
		if n == orderCount*3/10 {
			if err := payments.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Error(err)
			}
			_ = payments.cmd.Wait()
			close(killed)
		}
	})
	<-killed
	startService(t, bin, "payments", p, testTuning)
	verify(t, p, ids, testTuning)
}
