package testenv

import (
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Kafka starts a one-broker kfake cluster in this process for the test
// and returns its kafka:// URL; the cluster stops when the test ends.
func Kafka(t testing.TB) string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return "kafka://" + strings.Join(c.ListenAddrs(), ",")
}

// KafkaSeeds returns the broker addresses of a kafka:// URL, for a raw
// client beside the one under test.
func KafkaSeeds(url string) []string {
	return strings.Split(strings.TrimPrefix(url, "kafka://"), ",")
}
