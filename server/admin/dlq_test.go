package admin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/internal/testenv"
)

// failingGroup dead-letters every event of topic through a real router:
// type a fails with a timeout, any other type with "invalid total".
func (e *env) failingGroup(t *testing.T, topic, group string) *recorder {
	t.Helper()
	r, err := consumer.NewRouter(e.b, e.b, group, []string{topic}, consumer.WithoutRetry(), consumer.WithStart(broker.FromFirst))
	if err != nil {
		t.Fatal(err)
	}
	r.HandleAll(func(ctx context.Context, m *consumer.Message) error {
		if m.Event.Type == "shop.a.v1" {
			return errors.New("timeout calling payments")
		}
		return fmt.Errorf("invalid total in %s", m.Event.Subject)
	})
	ctx, stop := context.WithCancel(context.Background())
	rec := &recorder{stop: stop}
	rec.wg.Go(func() { _ = r.Run(ctx) })
	t.Cleanup(rec.close)
	return rec
}

func (e *env) depth(t *testing.T, topic string) uint64 {
	t.Helper()
	st, err := e.b.JetStream().Stream(t.Context(), natsjs.StreamName(topic))
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().State.Msgs
}

func TestDeadLetters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	topic := testenv.Unique("orders")
	e.dropTopic(t, topic)
	as := e.publishEvents(t, topic, "shop.a.v1", 6, 3)
	bs := e.publishEvents(t, topic, "shop.b.v1", 4, 4)
	g := e.failingGroup(t, topic, "billing")
	eventually(t, 30*time.Second, "10 dead letters", func() (bool, string) {
		ds, err := e.svc.DLQs(ctx)
		if err != nil {
			return false, err.Error()
		}
		for _, d := range ds {
			if d.Topic == topic {
				return d.Depth == 10 && d.DLQTopic == topic+".dlq" && d.Oldest != nil, fmt.Sprintf("%+v", d)
			}
		}
		return false, fmt.Sprintf("no DLQ for %s in %+v", topic, ds)
	})
	g.close()

	// Paging, oldest first.
	page1, next, err := e.svc.DLQEntries(ctx, topic, 0, 4)
	if err != nil {
		t.Fatal(err)
	}
	page2, next2, err := e.svc.DLQEntries(ctx, topic+".dlq", next, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(page1) != 4 || next != page1[3].Seq || len(page2) != 6 || next2 != 0 {
		t.Fatalf("pages of %d (next %d) and %d (next %d)", len(page1), next, len(page2), next2)
	}
	all := append(page1, page2...)
	byID := map[string]Entry{}
	for i, en := range all {
		if i > 0 && en.Seq <= all[i-1].Seq {
			t.Fatalf("entries out of order: %d after %d", en.Seq, all[i-1].Seq)
		}
		if en.ID != FormatEntryID(topic+".dlq", en.Seq) || en.Topic != topic || en.Group != "billing" || en.Attempts != 1 || en.Headers != nil {
			t.Fatalf("entry %+v", en)
		}
		byID[en.EventID] = en
	}
	for _, ev := range as {
		en := byID[ev.ID]
		if en.Type != "shop.a.v1" || !strings.HasSuffix(en.Error, "timeout calling payments") || en.Subject != ev.Subject || en.Key != ev.Subject || en.Route != "shop.a.v1" {
			t.Fatalf("dead letter of %s: %+v", ev.ID, en)
		}
	}
	full, err := e.svc.DLQEntry(ctx, byID[bs[0].ID].ID)
	if err != nil {
		t.Fatal(err)
	}
	if string(full.Data) != `{"n":0}` || full.Headers["ce-id"] != bs[0].ID || !strings.HasSuffix(full.Headers[consumer.HeaderError], "invalid total in s-0") {
		t.Fatalf("full entry: data %s headers %v", full.Data, full.Headers)
	}
	if _, err := e.svc.DLQEntry(ctx, topic+":999999"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing entry: %v", err)
	}

	// A dry run changes nothing.
	dry, err := e.svc.Redrive(ctx, RedriveRequest{Topic: topic, Filter: "type=shop.a.*,error~=time(out|d out)", DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if dry.Matched != 6 || dry.Redriven != 0 || len(dry.Items) != 6 || e.depth(t, topic+".dlq") != 10 {
		t.Fatalf("dry run: %+v, depth %d", dry, e.depth(t, topic+".dlq"))
	}

	// A redrive that crashed after republishing one entry and before
	// removing it: running it again must not deliver that event twice.
	crashed := byID[as[0].ID]
	m, err := e.stream(t, topic+".dlq").GetMsg(ctx, crashed.Seq)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := redriveMessage(topic+".dlq", natsjs.StreamName(topic+".dlq"), m)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.b.Publish(ctx, msg); err != nil {
		t.Fatal(err)
	}
	res, err := e.svc.Redrive(ctx, RedriveRequest{Topic: topic, Filter: "type=shop.a.v1"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Matched != 6 || res.Redriven != 6 || res.Failed != 0 {
		t.Fatalf("redrive: %+v", res)
	}
	if d := e.depth(t, topic+".dlq"); d != 4 {
		t.Fatalf("dlq depth %d after redriving 6 of 10", d)
	}
	if n := e.depth(t, topic); n != 16 {
		t.Fatalf("topic holds %d messages after redriving 6 of 10, want 16 (a redrive repeated after a crash must be deduplicated)", n)
	}

	// The republished events are the originals with a redrive count.
	st := e.stream(t, topic)
	for seq := uint64(11); seq <= 16; seq++ {
		rm, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		h := rm.Header
		// The last three are set again on a redriven message.
		for _, k := range failureHeaders[:len(failureHeaders)-3] {
			if h.Get(k) != "" {
				t.Fatalf("redriven message keeps failure header %s", k)
			}
		}
		if h.Get(consumer.HeaderRedrives) != "1" || !strings.HasPrefix(h.Get("Nats-Msg-Id"), "redrive:") || h.Get("ce-type") != "shop.a.v1" {
			t.Fatalf("redriven message headers %v", h)
		}
		subj := h.Get("ce-subject")
		if h.Get(natsjs.HeaderKey) != subj {
			t.Fatalf("redriven message key %q, want %q", h.Get(natsjs.HeaderKey), subj)
		}
		if want := fmt.Sprintf("%s.%d.shop.a.v1", natsjs.StreamName(topic), broker.Partition(subj, 4)); rm.Subject != want {
			t.Fatalf("redriven to subject %s, want %s (its key's partition)", rm.Subject, want)
		}
	}

	// By id; ids of another topic and unknown ids are refused.
	one := byID[bs[1].ID].ID
	res, err = e.svc.Redrive(ctx, RedriveRequest{IDs: []string{one}})
	if err != nil || res.Redriven != 1 {
		t.Fatalf("redrive by id: %+v %v", res, err)
	}
	if _, err := e.svc.Redrive(ctx, RedriveRequest{Topic: "other", IDs: []string{byID[bs[2].ID].ID}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("id of another topic: %v", err)
	}
	if _, err := e.svc.Redrive(ctx, RedriveRequest{IDs: []string{one}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("redriven id again: %v", err)
	}
	if _, err := e.svc.Redrive(ctx, RedriveRequest{Topic: topic, Filter: "colour=red"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad filter: %v", err)
	}

	// Something that is not a Herald dead letter stays, reported.
	if err := e.b.Publish(ctx, &broker.Message{Topic: topic + ".dlq", Route: "junk.v1", Data: []byte("?")}); err != nil {
		t.Fatal(err)
	}
	res, err = e.svc.Redrive(ctx, RedriveRequest{Topic: topic, Filter: "type=junk.v1"})
	if err != nil || res.Matched != 1 || res.Failed != 1 || !strings.Contains(res.Items[0].Failed, "not a Herald dead letter") {
		t.Fatalf("junk redrive: %+v %v", res, err)
	}

	// Purge asks for the topic name.
	if _, err := e.svc.PurgeDLQ(ctx, topic, "orders"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("purge without confirmation: %v", err)
	}
	n, err := e.svc.PurgeDLQ(ctx, topic, topic)
	if err != nil || n != 4 || e.depth(t, topic+".dlq") != 0 {
		t.Fatalf("purge: %d %v, depth %d", n, err, e.depth(t, topic+".dlq"))
	}
	if _, err := e.svc.PurgeDLQ(ctx, "nothing-here", "nothing-here"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("purge of an unknown topic: %v", err)
	}
}

func (e *env) stream(t *testing.T, topic string) jetstream.Stream {
	t.Helper()
	st, err := e.b.JetStream().Stream(t.Context(), natsjs.StreamName(topic))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// A dead-letter topic longer than a page is read in one pass, skipping
// deleted entries, and pages the same as one read message by message.
func TestDeadLetterScanStreams(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	topic := testenv.Unique("orders")
	e.dropTopic(t, topic)
	const n = 1500
	e.publishEvents(t, topic+".dlq", "shop.a.v1", n, 10)
	st := e.stream(t, topic+".dlq")
	deleted := map[uint64]bool{n: true}
	for seq := uint64(10); seq < 20; seq++ {
		deleted[seq] = true
	}
	for seq := range deleted {
		if err := st.DeleteMsg(ctx, seq); err != nil {
			t.Fatal(err)
		}
	}

	var all []Entry
	var next uint64
	for page := 0; ; page++ {
		es, nx, err := e.svc.DLQEntries(ctx, topic, next, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if page == 0 && (len(es) != 1000 || nx != es[999].Seq) {
			t.Fatalf("first page: %d entries, next %d", len(es), nx)
		}
		all = append(all, es...)
		if nx == 0 {
			break
		}
		next = nx
	}
	if len(all) != n-len(deleted) {
		t.Fatalf("%d entries, want %d", len(all), n-len(deleted))
	}
	for i, en := range all {
		if deleted[en.Seq] || i > 0 && en.Seq <= all[i-1].Seq || en.Type != "shop.a.v1" || en.ID != FormatEntryID(topic+".dlq", en.Seq) {
			t.Fatalf("entry %d: %+v", i, en)
		}
	}
	// A short page near the end is read message by message.
	tail, nx, err := e.svc.DLQEntries(ctx, topic, n-5, 10)
	if err != nil || len(tail) != 4 || nx != 0 || tail[0].Seq != n-4 {
		t.Fatalf("tail: %d entries, next %d, %v", len(tail), nx, err)
	}
	// Stopping early, the redrive's scan counts as much as was asked.
	dry, err := e.svc.Redrive(ctx, RedriveRequest{Topic: topic, DryRun: true, Limit: 1200})
	if err != nil || dry.Matched != 1200 {
		t.Fatalf("dry run with limit 1200: %+v, %v", dry, err)
	}
	dry, err = e.svc.Redrive(ctx, RedriveRequest{Topic: topic, DryRun: true})
	if err != nil || dry.Matched != n-len(deleted) {
		t.Fatalf("dry run: matched %+v, %v; want %d", dry.Matched, err, n-len(deleted))
	}
}
