package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/heraldhq/herald/broker/rabbitmq"
	"github.com/heraldhq/herald/internal/testenv"
)

// TestSubPrivateGroupVanishesOnKafka runs herald sub without --group on
// Kafka and checks that its private consumer group and retry topic are
// gone when it exits, while a named group stays.
func TestSubPrivateGroupVanishesOnKafka(t *testing.T) {
	t.Parallel()
	url := testenv.Kafka(t)
	if _, errOut, err := runHerald(t, "", "pub", "--url", url, "--topic", "orders", "--type", "shop.order.placed.v1", `{"total":1}`); err != nil {
		t.Fatalf("pub: %v\n%s", err, errOut)
	}
	for _, args := range [][]string{{}, {"--group", "audit"}} {
		all := append([]string{"sub", "--url", url, "--topic", "orders", "--from", "first", "--count", "1"}, args...)
		if out, errOut, err := runHerald(t, "", all...); err != nil || !strings.Contains(out, "shop.order.placed.v1") {
			t.Fatalf("herald %v: %v, printed %q\n%s", all, err, out, errOut)
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(testenv.KafkaSeeds(url)...))
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

// TestSubPrivateGroupExpiresAfterSIGKILL kills a herald sub without
// --group while it holds an event and checks that its private group
// leaves herald lag within --expire-after (plus the server's sweep), while
// a group of a live sub stays.
func TestSubPrivateGroupExpiresAfterSIGKILL(t *testing.T) {
	t.Parallel()
	p := startServe(t, t.TempDir())
	url := p.state.NATSURL
	if _, errOut, err := runHerald(t, "", "pub", "--url", url, "--topic", "orders", "--type", "shop.order.placed.v1", `{"total":1}`); err != nil {
		t.Fatalf("pub: %v\n%s", err, errOut)
	}
	start := func(args ...string) (*exec.Cmd, *lockedBuffer) {
		return spawn(t, filepath.Join(t.TempDir(), "none.json"), append([]string{"sub", "--url", url, "--topic", "orders", "--from", "first"}, args...)...)
	}
	killed, kout := start("--expire-after", "10s")
	_, lout := start("--expire-after", "10s")
	poll(t, "both subs print the event", func() (bool, string) {
		return strings.Contains(kout.String(), "shop.order.placed.v1") && strings.Contains(lout.String(), "shop.order.placed.v1"), kout.String() + lout.String()
	})
	privateGroups := func() []string {
		out := p.herald(t, "", "lag", "--topic", "orders", "-o", "json")
		var lags []struct{ Group string }
		if err := json.Unmarshal([]byte(out), &lags); err != nil {
			t.Fatalf("lag -o json: %v\n%s", err, out)
		}
		var gs []string
		for _, l := range lags {
			if strings.HasPrefix(l.Group, "herald-sub-") {
				gs = append(gs, l.Group)
			}
		}
		return gs
	}
	if gs := privateGroups(); len(gs) != 2 {
		t.Fatalf("herald lag shows private groups %v, want the two subs'", gs)
	}
	if err := killed.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = killed.Wait()
	killedAt := time.Now()
	// 10s of inactivity; the server checks its consumers every few seconds.
	deadline := killedAt.Add(40 * time.Second)
	for {
		gs := privateGroups()
		if len(gs) == 1 {
			t.Logf("the killed sub's group was gone from herald lag %v after SIGKILL", time.Since(killedAt).Round(100*time.Millisecond))
			break
		}
		if len(gs) == 0 {
			t.Fatal("the live sub's private group vanished too")
		}
		if time.Now().After(deadline) {
			t.Fatalf("40s after SIGKILL herald lag still shows %v", gs)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if time.Since(killedAt) < 9*time.Second {
		t.Fatalf("the group vanished %v after SIGKILL, before --expire-after 10s", time.Since(killedAt))
	}
}

// TestSubExpireAfterTooShort refuses an --expire-after a live sub could
// not keep up with.
func TestSubExpireAfterTooShort(t *testing.T) {
	t.Parallel()
	_, errOut, err := runHerald(t, "", "sub", "--url", closedAddr(t), "--topic", "orders", "--expire-after", "1s")
	if err == nil || !strings.Contains(errOut, "--expire-after 1s: must be at least 10s") {
		t.Fatalf("err %v, stderr %q", err, errOut)
	}
}

// TestSubPrivateGroupVanishesOnRabbitMQ runs herald sub without --group
// on RabbitMQ, stops it with Ctrl-C and checks that its queue and
// dead-letter queue are gone, while the queue of a named group stays.
func TestSubPrivateGroupVanishesOnRabbitMQ(t *testing.T) {
	t.Parallel()
	testenv.Need(t, "RabbitMQ", testenv.HostPort(testenv.RabbitURL))
	url := testenv.RabbitURL
	topic := testenv.Unique("orders")
	rb, err := rabbitmq.New(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = rb.DeleteTopic(ctx, topic, "audit")
		_ = rb.Close()
	})
	if _, errOut, err := runHerald(t, "", "pub", "--url", url, "--topic", topic, "--type", "shop.order.placed.v1", `{"total":1}`); err != nil {
		t.Fatalf("pub: %v\n%s", err, errOut)
	}
	cmd, out := spawn(t, filepath.Join(t.TempDir(), "none.json"), "sub", "--url", url, "--topic", topic, "--from", "first")
	poll(t, "herald sub prints the event", func() (bool, string) {
		return strings.Contains(out.String(), "shop.order.placed.v1"), out.String()
	})
	var private string
	poll(t, "the private group listed by the broker", func() (bool, string) {
		gs, err := rb.GroupStates(t.Context(), topic)
		if err != nil {
			return false, err.Error()
		}
		for _, g := range gs {
			if strings.HasPrefix(g.Group, "herald-sub-") {
				private = g.Group
			}
		}
		return private != "", fmt.Sprintf("groups %+v", gs)
	})
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("herald sub after Ctrl-C: %v\n%s", err, out.String())
	}
	if out, errOut, err := runHerald(t, "", "sub", "--url", url, "--topic", topic, "--from", "first", "--count", "1", "--group", "audit"); err != nil {
		t.Fatalf("herald sub --group audit: %v, printed %q\n%s", err, out, errOut)
	}

	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	exists := func(queue string) bool {
		t.Helper()
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		defer ch.Close()
		_, err = ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.NotFound {
			return false
		}
		if err != nil {
			t.Fatalf("look up queue %s: %v", queue, err)
		}
		return true
	}
	gq := "herald/" + topic + "/g/" + private
	for _, q := range []string{gq, gq + "/dlq"} {
		if exists(q) {
			t.Errorf("queue %s of the private group is left behind", q)
		}
	}
	if !exists("herald/" + topic + "/g/audit") {
		t.Error("the named group's queue is gone too")
	}
	gs, err := rb.GroupStates(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gs {
		if g.Group == private {
			t.Errorf("the broker still lists the private group: %+v", gs)
		}
	}
}

// TestKafkaRecordsOfOtherClients plays a service that does not use Herald
// against herald serve --broker kafka://: its plain JSON record reaches
// herald sub as an event, its consumer group (with committed offsets)
// shows in herald lag, and herald topic list lists the topic.
func TestKafkaRecordsOfOtherClients(t *testing.T) {
	t.Parallel()
	url := testenv.Kafka(t)
	p := startServe(t, t.TempDir(), "--broker", url)
	cl, err := kgo.NewClient(kgo.SeedBrokers(testenv.KafkaSeeds(url)...), kgo.DefaultProduceTopic("payments"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(t.Context(), 1, 1, nil, "payments"); err != nil {
		t.Fatal(err)
	}
	rec := &kgo.Record{Key: []byte("order-9"), Value: []byte(`{"event_type":"payment.completed","order_id":9,"amount":25}`)}
	if err := cl.ProduceSync(t.Context(), rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// The other service's consumer group commits past the record.
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: "payments", Partition: rec.Partition, At: rec.Offset + 1})
	if resp, err := kadm.NewClient(cl).CommitOffsets(t.Context(), "payment-service", offs); err != nil || resp.Error() != nil {
		t.Fatalf("commit offsets: %v %v", err, resp.Error())
	}

	out, errOut, err := runHerald(t, "", "sub", "--url", url, "--topic", "payments", "--from", "first", "--count", "1", "-o", "json")
	if err != nil {
		t.Fatalf("sub: %v\n%s", err, errOut)
	}
	var e struct {
		ID, Type, Source, PartitionKey string
		Data                           json.RawMessage
	}
	if err := json.Unmarshal([]byte(out), &e); err != nil {
		t.Fatalf("sub printed %q: %v", out, err)
	}
	if e.Type != "payment.completed" || e.ID != fmt.Sprintf("kafka:payments/%d/%d", rec.Partition, rec.Offset) ||
		e.Source != "kafka:payments" || e.PartitionKey != "order-9" || !strings.Contains(string(e.Data), `"amount":25`) {
		t.Fatalf("sub printed %s", out)
	}

	poll(t, "herald lag lists the other service's group", func() (bool, string) {
		out := p.herald(t, "", "lag", "--topic", "payments", "-o", "json")
		return strings.Contains(out, `"payment-service"`), out
	})
	poll(t, "herald topic list lists the topic", func() (bool, string) {
		out := p.herald(t, "", "topic", "list", "-o", "json")
		return strings.Contains(out, `"payments"`), out
	})
}
