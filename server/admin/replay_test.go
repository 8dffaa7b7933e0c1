package admin

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/internal/testenv"
)

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func sorted(s []uint64) []uint64 {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// idle waits until group has nothing pending or in flight on topic.
func (e *env) idle(t *testing.T, topic, group string) {
	t.Helper()
	eventually(t, 30*time.Second, "group "+group+" idle", func() (bool, string) {
		lags, err := e.svc.Lag(t.Context(), topic, group)
		if err != nil {
			return false, err.Error()
		}
		return len(lags) == 1 && lags[0].Pending == 0 && lags[0].InFlight == 0, fmt.Sprintf("%+v", lags)
	})
}

func TestRewindByTime(t *testing.T) {
	t.Parallel()
	for name, keyOrder := range map[string]bool{"key-ordered": true, "work queue": false} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			ctx := t.Context()
			topic := testenv.Unique("rewind")
			e.dropTopic(t, topic)
			e.publishEvents(t, topic, "t.v1", 5, 3)
			e.publishEvents(t, topic, "t.v1", 5, 3)
			g := testenv.Unique("g")
			rec := e.runGroup(t, topic, g, consumer.WithStart(broker.FromFirst), consumer.WithKeyOrder(keyOrder))
			if got := sorted(rec.waitCount(t, 10)); !slices.Equal(got, seqRange(1, 10)) {
				t.Fatalf("handled %v", got)
			}
			m, err := e.stream(t, topic).GetMsg(ctx, 6)
			if err != nil {
				t.Fatal(err)
			}
			// No topic: every topic of the group.
			res, err := e.svc.Rewind(ctx, g, "", broker.FromTime(m.Time))
			if err != nil {
				t.Fatal(err)
			}
			wantCons := 1
			if keyOrder {
				wantCons = 4
			}
			if len(res.Topics) != 1 || res.Topics[0].Topic != topic || res.Topics[0].Seq != 6 || res.Topics[0].Consumers != wantCons || res.Topics[0].Recreated {
				t.Fatalf("rewind: %+v", res)
			}
			rec.waitCount(t, 15)
			e.idle(t, topic, g)
			got := rec.handled()
			if len(got) != 15 || !slices.Equal(sorted(got[10:]), seqRange(6, 10)) {
				t.Fatalf("after the rewind to seq 6 the running group handled %v", got)
			}
			lags, err := e.svc.Lag(ctx, topic, g)
			if err != nil || lags[0].Paused {
				t.Fatalf("group still paused after the rewind: %+v %v", lags, err)
			}
		})
	}
}

// TestRewindGroupCreatedAtNew rewinds a group created at new messages (the
// router's default) below its start: refused while it runs, done by
// recreating its consumers once it stopped, and possible while running
// from then on.
func TestRewindGroupCreatedAtNew(t *testing.T) {
	t.Parallel()
	for name, keyOrder := range map[string]bool{"key-ordered": true, "work queue": false} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testRewindGroupCreatedAtNew(t, keyOrder)
		})
	}
}

func testRewindGroupCreatedAtNew(t *testing.T, keyOrder bool) {
	e := newEnv(t)
	ctx := t.Context()
	topic := testenv.Unique("rewind-new")
	e.dropTopic(t, topic)
	e.publishEvents(t, topic, "t.v1", 3, 3)
	g := testenv.Unique("g")
	rec := e.runGroup(t, topic, g, consumer.WithKeyOrder(keyOrder))
	eventually(t, 10*time.Second, "the group's consumers", func() (bool, string) {
		lags, err := e.svc.Lag(ctx, topic, g)
		return err == nil && len(lags) == 1 && lags[0].KeyOrdered == keyOrder, fmt.Sprintf("%+v %v", lags, err)
	})
	e.publishEvents(t, topic, "t.v1", 4, 3)
	if got := sorted(rec.waitCount(t, 4)); !slices.Equal(got, seqRange(4, 7)) {
		t.Fatalf("handled %v", got)
	}
	_, err := e.svc.Rewind(ctx, g, topic, broker.FromFirst)
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("rewinding a running group created at new messages below its start: %v, want a conflict", err)
	}
	rec.close()
	start := time.Now()
	var res *ReplayResult
	eventually(t, 45*time.Second, "the rewind of the stopped group", func() (bool, string) {
		res, err = e.svc.Rewind(ctx, g, topic, broker.FromFirst)
		if err != nil && !errors.Is(err, ErrConflict) {
			t.Fatal(err)
		}
		return err == nil, fmt.Sprint(err)
	})
	t.Logf("the stopped group could be rewound %v after its members stopped", time.Since(start).Round(time.Millisecond))
	if !res.Topics[0].Recreated || res.Topics[0].Seq != 1 {
		t.Fatalf("rewind: %+v", res)
	}
	rec2 := e.runGroup(t, topic, g, consumer.WithKeyOrder(keyOrder))
	if got := sorted(rec2.waitCount(t, 7)); !slices.Equal(got, seqRange(1, 7)) {
		t.Fatalf("after the rewind to first: handled %v", got)
	}
	e.idle(t, topic, g)
	// Recreated to deliver all, the group now moves while it runs.
	res, err = e.svc.Rewind(ctx, g, topic, broker.FromSequence(5))
	if err != nil || res.Topics[0].Recreated {
		t.Fatalf("second rewind: %+v %v", res, err)
	}
	got := rec2.waitCount(t, 10)
	if !slices.Equal(sorted(got[7:]), seqRange(5, 7)) {
		t.Fatalf("after the rewind to seq 5: handled %v", got)
	}
}

func TestReplayIntoNewGroup(t *testing.T) {
	t.Parallel()
	for name, keyOrder := range map[string]bool{"key-ordered": true, "work queue": false} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			ctx := t.Context()
			topic := testenv.Unique("replay")
			e.dropTopic(t, topic)
			e.publishEvents(t, topic, "t.v1", 10, 4)
			live := e.runGroup(t, topic, "live", consumer.WithStart(broker.FromFirst), consumer.WithKeyOrder(keyOrder))
			live.waitCount(t, 10)
			e.idle(t, topic, "live")
			before, err := e.svc.groupParts(ctx, "live", topic)
			if err != nil {
				t.Fatal(err)
			}

			res, err := e.svc.ReplayInto(ctx, ReplayIntoRequest{Topic: topic, From: broker.FromSequence(4), Group: "rebuild", KeyOrder: keyOrder})
			if err != nil {
				t.Fatal(err)
			}
			wantCons := 1
			if keyOrder {
				wantCons = 4
			}
			if res.Topics[0].Seq != 4 || res.Topics[0].Consumers != wantCons {
				t.Fatalf("replay: %+v", res)
			}
			_, err = e.svc.ReplayInto(ctx, ReplayIntoRequest{Topic: topic, From: broker.FromFirst, Group: "rebuild", KeyOrder: keyOrder})
			if !errors.Is(err, ErrConflict) {
				t.Fatalf("replay into an existing group: %v", err)
			}
			_, err = e.svc.ReplayInto(ctx, ReplayIntoRequest{Topic: topic, From: broker.FromFirst, Group: "live", KeyOrder: keyOrder})
			if !errors.Is(err, ErrConflict) {
				t.Fatalf("replay into the live group: %v", err)
			}

			rebuild := e.runGroup(t, topic, "rebuild", consumer.WithKeyOrder(keyOrder))
			rebuild.waitCount(t, 7)
			e.idle(t, topic, "rebuild")
			if got := rebuild.handled(); !slices.Equal(sorted(got), seqRange(4, 10)) {
				t.Fatalf("new group handled %v, want 4..10", got)
			}
			// The live group was not touched.
			after, err := e.svc.groupParts(ctx, "live", topic)
			if err != nil {
				t.Fatal(err)
			}
			for i, ci := range before[0].cons {
				a := after[0].cons[i]
				if a.Name != ci.Name || a.Delivered.Stream != ci.Delivered.Stream || a.AckFloor.Stream != ci.AckFloor.Stream || !a.Created.Equal(ci.Created) {
					t.Fatalf("live consumer %s moved: %+v -> %+v", ci.Name, ci.Delivered, a.Delivered)
				}
			}
			if n := len(live.handled()); n != 10 {
				t.Fatalf("the live group handled %d events, want 10", n)
			}
		})
	}
}

func TestReplayErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	topic := testenv.Unique("replay-errors")
	e.dropTopic(t, topic)
	e.publishEvents(t, topic, "t.v1", 3, 1)
	for name, tc := range map[string]struct {
		run  func() error
		want error
	}{
		"seq past the end": {func() error {
			_, err := e.svc.ReplayInto(ctx, ReplayIntoRequest{Topic: topic, From: broker.FromSequence(9), Group: "x"})
			return err
		}, ErrInvalid},
		"future time": {func() error {
			_, err := e.svc.ReplayInto(ctx, ReplayIntoRequest{Topic: topic, From: broker.FromTime(time.Now().Add(time.Hour)), Group: "x"})
			return err
		}, ErrInvalid},
		"unknown topic": {func() error {
			_, err := e.svc.ReplayInto(ctx, ReplayIntoRequest{Topic: testenv.Unique("none"), From: broker.FromFirst, Group: "x"})
			return err
		}, ErrNotFound},
		"bad group name": {func() error {
			_, err := e.svc.ReplayInto(ctx, ReplayIntoRequest{Topic: topic, From: broker.FromFirst, Group: "a b"})
			return err
		}, ErrInvalid},
		"unknown group": {func() error {
			_, err := e.svc.Rewind(ctx, "nobody", topic, broker.FromFirst)
			return err
		}, ErrNotFound},
	} {
		t.Run(name, func(t *testing.T) {
			if err := tc.run(); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}
