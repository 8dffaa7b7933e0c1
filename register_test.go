package herald_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
)

// TestNATSOnlyServiceLinksNoOtherClient lists the packages a service that
// imports only herald and broker/natsjs links: the Kafka and RabbitMQ
// clients must not be among them.
func TestNATSOnlyServiceLinksNoOtherClient(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("the go command is not on PATH: %v", err)
	}
	for _, pkg := range []string{"./testdata/natsonly", "."} {
		out, err := exec.CommandContext(t.Context(), goBin, "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 10 || !strings.Contains(string(out), "github.com/heraldhq/herald/broker/natsjs") {
			t.Fatalf("go list -deps %s listed %d packages without broker/natsjs: the listing is not the program's", pkg, len(deps))
		}
		for _, d := range deps {
			for _, banned := range []string{"github.com/twmb/franz-go", "github.com/rabbitmq/amqp091-go", "github.com/heraldhq/herald/broker/kafka", "github.com/heraldhq/herald/broker/rabbitmq"} {
				if d == banned || strings.HasPrefix(d, banned+"/") {
					t.Errorf("go list -deps %s contains %s", pkg, d)
				}
			}
		}
	}
}

// TestOpenBrokerSchemes opens brokers by the schemes the imported
// adapters registered and names the import to add for one that is not.
func TestOpenBrokerSchemes(t *testing.T) {
	for _, s := range []string{"nats", "tls", "memory", "kafka", "amqp", "amqps"} {
		if _, ok := broker.Lookup(s); !ok {
			t.Errorf("scheme %s is not registered (registered: %v)", s, broker.Schemes())
		}
	}
	b, binding, err := herald.OpenBroker(t.Context(), "memory://", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
	if binding.String() != "nats" {
		t.Errorf("memory:// binding = %s, want nats", binding)
	}
	for url, want := range map[string]string{
		"redis://127.0.0.1:6379": `unsupported scheme "redis"`,
		"":                       "Config.URL or Config.Broker is required",
		"kafka://":               "no broker address",
		"kafka://h:1/path":       `unexpected "/"`,
	} {
		_, _, err := herald.OpenBroker(t.Context(), url, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("OpenBroker(%q) = %v, want an error containing %q", url, err, want)
		}
	}
}

// TestRegisterRejectsDuplicates checks the registry refuses a second
// driver for a scheme instead of silently replacing the first.
func TestRegisterRejectsDuplicates(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Register of an already registered scheme did not panic")
		}
	}()
	d, _ := broker.Lookup("memory")
	broker.Register("memory", d)
}
