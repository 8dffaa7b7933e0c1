package admin

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/testenv"
)

func TestLag(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	topic := testenv.Unique("lag")
	e.dropTopic(t, topic)
	e.publishEvents(t, topic, "t.v1", 5, 5)
	if err := e.b.Publish(ctx, &broker.Message{Topic: topic + ".dlq", Route: "t.v1", Data: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.ReplayInto(ctx, ReplayIntoRequest{Topic: topic, From: broker.FromFirst, Group: "slow"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.ReplayInto(ctx, ReplayIntoRequest{Topic: topic, From: broker.FromSequence(3), Group: "ko", KeyOrder: true}); err != nil {
		t.Fatal(err)
	}
	st := e.stream(t, topic)
	msgTime := func(seq uint64) time.Time {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		return m.Time
	}

	// check asserts the row of group: counts, and ages measured around
	// the call (the oldest unacked message is at unacked, the oldest
	// undelivered one at undelivered; 0 for none).
	check := func(group string, pending, inFlight uint64, consumers int, unacked, undelivered uint64) {
		t.Helper()
		var row GroupLag
		var lo, hi time.Time
		eventually(t, 10*time.Second, "lag of "+group, func() (bool, string) {
			lo = time.Now()
			lags, err := e.svc.Lag(ctx, topic, group)
			hi = time.Now()
			if err != nil {
				return false, err.Error()
			}
			if len(lags) != 1 {
				return false, fmt.Sprintf("%+v", lags)
			}
			row = lags[0]
			return row.Pending == pending && row.InFlight == inFlight, fmt.Sprintf("%+v", row)
		})
		if row.Topic != topic || row.Consumers != consumers || row.KeyOrdered != (consumers > 1) || row.DLQDepth != 1 {
			t.Fatalf("row %+v", row)
		}
		age := func(seq uint64, got float64) {
			t.Helper()
			if seq == 0 {
				if got != 0 {
					t.Fatalf("%s: age %v, want 0 (row %+v)", group, got, row)
				}
				return
			}
			at := msgTime(seq)
			if got < lo.Sub(at).Seconds() || got > hi.Sub(at).Seconds() {
				t.Fatalf("%s: age %v of seq %d, want between %v and %v", group, got, seq, lo.Sub(at).Seconds(), hi.Sub(at).Seconds())
			}
		}
		age(unacked, row.UnackedSeconds)
		age(undelivered, row.LagSeconds)
		if unacked > 0 && !row.OldestUnacked.Equal(msgTime(unacked)) {
			t.Fatalf("%s: oldest unacked %v, want the time of seq %d", group, row.OldestUnacked, unacked)
		}
	}
	check("slow", 5, 0, 1, 1, 1)
	check("ko", 3, 0, 4, 3, 3)

	// Two in flight (the group takes two at a time), three pending.
	sub, err := e.b.Subscribe(ctx, topic, broker.SubscribeOptions{Group: "slow", MaxInFlight: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	check("slow", 3, 2, 1, 1, 3)
	var ds []broker.Delivery
	for range 2 {
		d, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	if err := ds[1].Ack(ctx); err != nil {
		t.Fatal(err)
	}
	// Seq 1 still in flight keeps the unacked age at seq 1.
	check("slow", 2, 2, 1, 1, 4)
	if err := ds[0].Ack(ctx); err != nil {
		t.Fatal(err)
	}
	check("slow", 1, 2, 1, 3, 5)
	for range 3 {
		nctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		d, err := sub.Next(nctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		_ = d.Ack(ctx)
	}
	check("slow", 0, 0, 1, 0, 0)

	topics, err := e.svc.Topics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, ti := range topics {
		switch ti.Topic {
		case topic:
			found++
			if ti.Messages != 5 || ti.DLQDepth != 1 || ti.DeadLetter || ti.Partitions != 4 || ti.Retention.MaxAge != "168h0m0s" {
				t.Fatalf("topic %+v", ti)
			}
		case topic + ".dlq":
			found++
			if !ti.DeadLetter || ti.Messages != 1 {
				t.Fatalf("dead-letter topic %+v", ti)
			}
		}
	}
	if found != 2 {
		t.Fatalf("topics %+v", topics)
	}

	bs := BrokerStats{Service: e.svc}
	gs, err := bs.Groups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range gs {
		if g.Topic == topic {
			n++
			if g.Group == "ko" && (g.Pending != 3 || g.LagSeconds <= 0) {
				t.Fatalf("broker stats of ko: %+v", g)
			}
		}
	}
	if n != 2 {
		t.Fatalf("broker stats list %d groups of %s, want 2: %+v", n, topic, gs)
	}
	ts, err := bs.Topics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ts {
		if s.Topic == topic+".dlq" && (!s.IsDLQ || s.Messages != 1) || s.Topic == topic && s.IsDLQ {
			t.Fatalf("broker stats topic %+v", s)
		}
	}
}

func TestRetention(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	topic := testenv.Unique("retention")
	e.dropTopic(t, topic)
	r, err := RetentionRequest{MaxAge: "3d"}.Parse()
	if err != nil {
		t.Fatal(err)
	}
	info, err := e.svc.SetRetention(ctx, topic, r)
	if err != nil {
		t.Fatal(err)
	}
	if info.Retention != (RetentionConfig{MaxAge: "72h0m0s", MaxBytes: -1, MaxMsgs: -1}) || info.Partitions != 4 {
		t.Fatalf("new topic: %+v", info)
	}
	_, r, err = ParseTopicRetention(topic + "=max-msgs:3")
	if err != nil {
		t.Fatal(err)
	}
	if info, err = e.svc.SetRetention(ctx, topic, r); err != nil {
		t.Fatal(err)
	}
	if info.Retention != (RetentionConfig{MaxAge: "72h0m0s", MaxBytes: -1, MaxMsgs: 3}) {
		t.Fatalf("max-msgs only changed: %+v", info.Retention)
	}
	e.publishEvents(t, topic, "t.v1", 5, 1)
	if n := e.depth(t, topic); n != 3 {
		t.Fatalf("topic with max-msgs 3 holds %d", n)
	}
	r, err = ParseRetentionSpec("max-age:unlimited,max-bytes:1MB,max-msgs:unlimited")
	if err != nil {
		t.Fatal(err)
	}
	if info, err = e.svc.SetRetention(ctx, topic, r); err != nil {
		t.Fatal(err)
	}
	if info.Retention != (RetentionConfig{MaxAge: "unlimited", MaxBytes: 1_000_000, MaxMsgs: -1}) {
		t.Fatalf("unlimited: %+v", info.Retention)
	}
	// A max age below the dedup window (2m) shortens the window.
	r, _ = RetentionRequest{MaxAge: "30s"}.Parse()
	if info, err = e.svc.SetRetention(ctx, topic, r); err != nil || info.Retention.MaxAge != "30s" {
		t.Fatalf("30s: %+v %v", info, err)
	}
	if _, err := e.svc.SetRetention(ctx, "bad name", r); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad topic name: %v", err)
	}
}

func TestParseRetention(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in      string
		ok      bool
		age     time.Duration
		bytes   int64
		hasMsgs bool
	}{
		{"orders=max-age:72h", true, 72 * time.Hour, -2, false},
		{"orders=max-age:7d,max-bytes:1GiB", true, 7 * 24 * time.Hour, 1 << 30, false},
		{"a.b=max-msgs:1_000_000", true, -1, -2, true},
		{"orders=max-bytes:0", true, -1, 0, false},
		{"orders", false, 0, 0, false},
		{"=max-age:1h", false, 0, 0, false},
		{"orders=", false, 0, 0, false},
		{"orders=max-age:soon", false, 0, 0, false},
		{"orders=max-age:10ms", false, 0, 0, false},
		{"orders=max-bytes:lots", false, 0, 0, false},
		{"orders=max-msgs:-5", false, 0, 0, false},
		{"orders=max-msgs:1.5", false, 0, 0, false},
		{"orders=colour:red", false, 0, 0, false},
		{"bad topic=max-age:1h", false, 0, 0, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			_, r, err := ParseTopicRetention(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("err %v, want ok %v", err, tc.ok)
			}
			if !tc.ok {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("error %v does not wrap ErrInvalid", err)
				}
				return
			}
			if tc.age >= 0 && (r.MaxAge == nil || *r.MaxAge != tc.age) || tc.age < 0 && r.MaxAge != nil {
				t.Fatalf("max age %v", r.MaxAge)
			}
			if tc.bytes >= 0 && (r.MaxBytes == nil || *r.MaxBytes != tc.bytes) || tc.bytes == -2 && r.MaxBytes != nil {
				t.Fatalf("max bytes %v", r.MaxBytes)
			}
			if (r.MaxMsgs != nil) != tc.hasMsgs {
				t.Fatalf("max msgs %v", r.MaxMsgs)
			}
		})
	}
}

func FuzzParseTopicRetention(f *testing.F) {
	for _, s := range []string{"orders=max-age:72h,max-bytes:1GB,max-msgs:1000000", "x=max-age:7d", "a=max-bytes:1.5 MiB", "=:", "a=max-age:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		topic, r, err := ParseTopicRetention(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if topic == "" || r.MaxAge == nil && r.MaxBytes == nil && r.MaxMsgs == nil {
			t.Fatalf("accepted %q as %q %+v", s, topic, r)
		}
		for _, p := range []*int64{r.MaxBytes, r.MaxMsgs} {
			if p != nil && *p < 0 {
				t.Fatalf("negative limit from %q", s)
			}
		}
	})
}

// TestScansPassOverDeletedTopics deletes a topic between the listing of
// every topic and the look at its groups, as an operator (or another
// tool) can while `herald lag` or a rewind of every topic runs: the
// scans pass over it instead of failing.
func TestScansPassOverDeletedTopics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	topic := testenv.Unique("vanish")
	e.dropTopic(t, topic)
	e.publishEvents(t, topic, "t.v1", 2, 1)
	ts, _, err := e.svc.topic(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.b.JetStream().DeleteStream(ctx, ts.stream); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.topicLag(ctx, ts, "", 0, time.Now())
	if err == nil || !streamGone(err) {
		t.Fatalf("lag of a deleted topic: %v, want a stream-not-found error", err)
	}
	_, err = e.svc.groupPart(ctx, ts, "g")
	if err == nil || !streamGone(err) {
		t.Fatalf("groups of a deleted topic: %v, want a stream-not-found error", err)
	}
	if streamGone(errors.New("nats: timeout")) {
		t.Fatal("a timeout taken for a deleted stream")
	}
}
