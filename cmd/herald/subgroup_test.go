package main

import (
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestSubPrivateGroupVanishesOnKafka runs herald sub without --group on
// Kafka and checks that its private consumer group and retry topic are
// gone when it exits, while a named group stays.
func TestSubPrivateGroupVanishesOnKafka(t *testing.T) {
	t.Parallel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	url := "kafka://" + strings.Join(c.ListenAddrs(), ",")
	if _, errOut, err := runHerald(t, "", "pub", "--url", url, "--topic", "orders", "--type", "shop.order.placed.v1", `{"total":1}`); err != nil {
		t.Fatalf("pub: %v\n%s", err, errOut)
	}
	for _, args := range [][]string{{}, {"--group", "audit"}} {
		all := append([]string{"sub", "--url", url, "--topic", "orders", "--from", "first", "--count", "1"}, args...)
		if out, errOut, err := runHerald(t, "", all...); err != nil || !strings.Contains(out, "shop.order.placed.v1") {
			t.Fatalf("herald %v: %v, printed %q\n%s", all, err, out, errOut)
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	groups, err := adm.ListGroups(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	topics, err := adm.ListTopics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var named bool
	for _, g := range groups.Groups() {
		if strings.HasPrefix(g, "orders:herald-sub-") {
			t.Errorf("private group %s is left behind", g)
		}
		named = named || g == "orders:audit"
	}
	for _, n := range topics.Names() {
		if strings.HasPrefix(n, "orders.retry.herald-sub-") {
			t.Errorf("private group's retry topic %s is left behind", n)
		}
	}
	if !named {
		t.Errorf("the named group orders:audit is gone too (groups %v): the listing does not show groups", groups.Groups())
	}
}
