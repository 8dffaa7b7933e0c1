package saga_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/saga"
)

var emb *natsjs.Embedded

func TestMain(m *testing.M) {
	if base := os.Getenv(childBaseEnv); base != "" {
		os.Exit(runEngineChild(base))
	}
	testenv.MainWithNATS(m, natsjs.EmbeddedConfig{Addr: "127.0.0.1:0"}, func(e *natsjs.Embedded) { emb = e })
}

func unique(prefix string) string { return prefix + strings.ToLower(rand.Text()) }

var stepNames = []string{"reserve", "charge", "ship"}

// orderData drives the test services: which step fails, which never
// answers, whether every reply is sent twice, which compensation never
// answers.
type orderData struct {
	Fail     string `json:"fail,omitempty"`
	Hang     string `json:"hang,omitempty"`
	HangUndo string `json:"hang_undo,omitempty"`
	Twice    bool   `json:"twice,omitempty"`
}

func command(typ string) saga.CommandFunc {
	return func(_ context.Context, in *saga.Instance) (*event.Event, error) {
		return &event.Event{Type: typ, Data: in.Data, DataContentType: "application/json"}, nil
	}
}

func definition(timeout time.Duration) saga.Definition {
	d := saga.Definition{Name: "order"}
	for _, s := range stepNames {
		d.Steps = append(d.Steps, saga.Step{
			Name: s, Command: command("t." + s + ".v1"), Done: []string{"t." + s + ".done.v1"}, Failed: []string{"t." + s + ".failed.v1"},
			Compensate: command("t." + s + ".undo.v1"), Compensated: []string{"t." + s + ".undone.v1"}, Timeout: timeout,
		})
	}
	return d
}

// harness is an engine on a fresh KV bucket plus test services answering
// its commands over the embedded broker.
type harness struct {
	eng    *saga.Engine
	client *herald.Client
	reg    *prometheus.Registry
	dlq    string
	b      *natsjs.Broker

	mu  sync.Mutex
	log map[string][]string // instance -> command types received, in order
	ids map[string]bool     // command ids received
	// onUndo, if set, is called on each compensation command received.
	onUndo func()
}

// names are the topics and bucket of one test, derived from a base.
type names struct{ cmds, replies, dlq, bucket string }

func namesOf(base string) names {
	return names{base + "_cmd", base + "_reply", base + "_dlq", base + "_kv"}
}

// wire connects a client mapping the test's types to n's topics, and
// opens n's saga store.
func wire(ctx context.Context, b *natsjs.Broker, n names) (*herald.Client, *saga.KVStore, error) {
	topics := map[string]string{saga.DeadLetterType: n.dlq}
	for _, s := range stepNames {
		topics["t."+s+".v1"], topics["t."+s+".undo.v1"] = n.cmds, n.cmds
		for _, r := range []string{"done", "failed", "undone"} {
			topics["t."+s+"."+r+".v1"] = n.replies
		}
	}
	c, err := herald.Connect(ctx, herald.Config{Broker: b, Source: "saga-test", Topics: topics})
	if err != nil {
		return nil, nil, err
	}
	for _, topic := range []string{n.cmds, n.replies, n.dlq} {
		if err := b.EnsureTopic(ctx, topic, broker.TopicConfig{DedupWindow: 10 * time.Minute}); err != nil {
			return nil, nil, err
		}
	}
	store, err := saga.NewKVStore(ctx, b.JetStream(), n.bucket)
	return c, store, err
}

func newHarness(t testing.TB, timeout time.Duration, opts ...saga.Option) *harness {
	return newHarnessDef(t, definition(timeout), opts...)
}

// newHarnessDef is newHarness running def.
func newHarnessDef(t testing.TB, def saga.Definition, opts ...saga.Option) *harness {
	return newHarnessConc(t, unique("saga_"), true, nil, def, 0, opts...)
}

// withTimeout sets step's timeout in d (its compensation's too): a test
// that waits for one step to time out keeps the others from timing out on
// a loaded machine.
func withTimeout(d saga.Definition, step string, timeout time.Duration) saga.Definition {
	d.Steps = slices.Clone(d.Steps)
	for i := range d.Steps {
		if d.Steps[i].Name == step {
			d.Steps[i].Timeout = timeout
		}
	}
	return d
}

// newHarnessOn builds a harness on base's topics; without runEngine the
// engine only starts and reads instances, and another process runs them.
// A non-nil store replaces the KV bucket.
func newHarnessOn(t testing.TB, base string, runEngine bool, store saga.Store, timeout time.Duration, opts ...saga.Option) *harness {
	return newHarnessConc(t, base, runEngine, store, definition(timeout), 0, opts...)
}

// newHarnessConc is newHarnessOn with routers running concurrency
// handlers at once (0: the default).
func newHarnessConc(t testing.TB, base string, runEngine bool, store saga.Store, def saga.Definition, concurrency int, opts ...saga.Option) *harness {
	t.Helper()
	ctx := t.Context()
	b, err := natsjs.New(context.Background(), natsjs.WithEmbedded(emb))
	if err != nil {
		t.Fatal(err)
	}
	n := namesOf(base)
	t.Cleanup(func() {
		for _, s := range []string{n.cmds, n.replies, n.dlq} {
			_ = b.JetStream().DeleteStream(context.Background(), natsjs.StreamName(s))
		}
		_ = b.JetStream().DeleteKeyValue(context.Background(), n.bucket)
		_ = b.JetStream().DeleteKeyValue(context.Background(), n.bucket+"_active")
		_ = b.Close()
	})
	c, kv, err := wire(ctx, b, n)
	if err != nil {
		t.Fatal(err)
	}
	if store == nil {
		store = kv
	}
	h := &harness{client: c, reg: prometheus.NewRegistry(), dlq: n.dlq, b: b, log: map[string][]string{}, ids: map[string]bool{}}
	h.eng, err = saga.New(store, c, []saga.Definition{def}, append([]saga.Option{saga.WithTick(50 * time.Millisecond), saga.WithRegisterer(h.reg)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	cmds, replies := n.cmds, n.replies

	ropts := []consumer.Option{consumer.WithStart(broker.FromFirst)}
	if concurrency > 0 {
		ropts = append(ropts, consumer.WithConcurrency(concurrency))
	}
	svc, err := c.Router("services", []string{cmds}, ropts...)
	if err != nil {
		t.Fatal(err)
	}
	svc.HandleAll(func(ctx context.Context, m *consumer.Message) error { return h.serve(ctx, m) })
	testenv.RunRouter(t, svc)
	if !runEngine {
		return h
	}
	orch, err := c.Router("orchestrator", []string{replies}, ropts...)
	if err != nil {
		t.Fatal(err)
	}
	orch.HandleAll(func(ctx context.Context, m *consumer.Message) error { return h.eng.HandleReply(ctx, m.Event) })
	testenv.RunRouter(t, orch)

	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.eng.Run(rctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return h
}

// serve is the test services: it records the command and replies as the
// instance's data says, through the client, so the reply inherits the
// command's correlation id and takes its id as causation id.
func (h *harness) serve(ctx context.Context, m *consumer.Message) error {
	var d orderData
	if err := json.Unmarshal(m.Event.Data, &d); err != nil {
		return consumer.Permanent(err)
	}
	typ := m.Event.Type // t.<step>.v1 or t.<step>.undo.v1
	step := strings.Split(typ, ".")[1]
	undo := strings.HasSuffix(typ, ".undo.v1")
	h.mu.Lock()
	if !h.ids[m.Event.ID] { // a re-sent command: the receiver's inbox would drop it
		h.ids[m.Event.ID] = true
		h.log[m.Event.CorrelationID] = append(h.log[m.Event.CorrelationID], typ)
	}
	h.mu.Unlock()
	h.mu.Lock()
	onUndo := h.onUndo
	h.mu.Unlock()
	if undo && onUndo != nil {
		onUndo()
	}
	var reply string
	switch {
	case undo && d.HangUndo == step:
		return nil
	case undo:
		reply = "t." + step + ".undone.v1"
	case d.Hang == step:
		return nil
	case d.Fail == step:
		reply = "t." + step + ".failed.v1"
	default:
		reply = "t." + step + ".done.v1"
	}
	n := 1
	if d.Twice {
		n = 2
	}
	for range n {
		if err := h.client.Publish(ctx, event.New("svc", reply, nil)); err != nil {
			return err
		}
	}
	return nil
}

func (h *harness) commands(id string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.log[id]...)
}

func (h *harness) await(t *testing.T, id string, want saga.State) *saga.Instance {
	t.Helper()
	var in *saga.Instance
	testenv.Eventually(t, 60*time.Second, fmt.Sprintf("instance %s to be %s", id, want), func() bool {
		got, err := h.eng.Get(t.Context(), id)
		if err != nil {
			return false
		}
		in = got
		return got.State == want
	})
	return in
}

func (h *harness) counter(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	fams, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	metric:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; ok && v != l.GetValue() {
					continue metric
				}
			}
			total += m.GetCounter().GetValue()
		}
	}
	return total
}

func outcomes(in *saga.Instance) []string {
	var out []string
	for _, e := range in.History {
		out = append(out, e.Step+":"+string(e.Phase)+":"+e.Outcome)
	}
	return out
}

func TestHappyPath(t *testing.T) {
	h := newHarness(t, 30*time.Second)
	id := unique("o-")
	if err := h.eng.Start(t.Context(), "order", id, orderData{}); err != nil {
		t.Fatal(err)
	}
	in := h.await(t, id, saga.Completed)
	if got, want := fmt.Sprint(outcomes(in)), "[reserve:do:done charge:do:done ship:do:done]"; got != want {
		t.Fatalf("history %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(h.commands(id)), "[t.reserve.v1 t.charge.v1 t.ship.v1]"; got != want {
		t.Fatalf("services saw %s, want %s", got, want)
	}
	for _, e := range in.History {
		if e.Command != saga.CommandID(id, e.Step, e.Phase, e.Attempt) || e.Ended.Before(e.Sent) {
			t.Fatalf("entry %+v: command id not the deterministic one, or ended before sent", e)
		}
	}
	if err := h.eng.Start(t.Context(), "order", id, orderData{}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second Start with the same id: %v, want ErrExists", err)
	}
}

// A failure at each step compensates exactly the steps before it, in
// reverse order.
func TestFailureAtEachStepCompensatesInReverse(t *testing.T) {
	h := newHarness(t, 30*time.Second)
	want := map[string]string{
		"reserve": "[t.reserve.v1]",
		"charge":  "[t.reserve.v1 t.charge.v1 t.reserve.undo.v1]",
		"ship":    "[t.reserve.v1 t.charge.v1 t.ship.v1 t.charge.undo.v1 t.reserve.undo.v1]",
	}
	for _, step := range stepNames {
		t.Run(step, func(t *testing.T) {
			id := unique("o-")
			if err := h.eng.Start(t.Context(), "order", id, orderData{Fail: step}); err != nil {
				t.Fatal(err)
			}
			in := h.await(t, id, saga.Compensated)
			if got := fmt.Sprint(h.commands(id)); got != want[step] {
				t.Fatalf("services saw %s, want %s", got, want[step])
			}
			if !strings.Contains(in.Error, step) {
				t.Fatalf("error %q does not name step %s", in.Error, step)
			}
		})
	}
}

// A step that never answers times out; being of unknown effect, it is
// compensated too, then the ones before.
func TestTimeoutCompensatesTheTimedOutStepToo(t *testing.T) {
	h := newHarnessDef(t, withTimeout(definition(30*time.Second), "charge", 2*time.Second))
	id := unique("o-")
	if err := h.eng.Start(t.Context(), "order", id, orderData{Hang: "charge"}); err != nil {
		t.Fatal(err)
	}
	in := h.await(t, id, saga.Compensated)
	if got, want := fmt.Sprint(h.commands(id)), "[t.reserve.v1 t.charge.v1 t.charge.undo.v1 t.reserve.undo.v1]"; got != want {
		t.Fatalf("services saw %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(outcomes(in)), "[reserve:do:done charge:do:timeout charge:undo:compensated reserve:undo:compensated]"; got != want {
		t.Fatalf("history %s, want %s", got, want)
	}
}

// Every reply arrives twice: the second is ignored and counted.
func TestDuplicateRepliesAreIgnored(t *testing.T) {
	h := newHarness(t, 30*time.Second)
	id := unique("o-")
	if err := h.eng.Start(t.Context(), "order", id, orderData{Twice: true, Fail: "ship"}); err != nil {
		t.Fatal(err)
	}
	in := h.await(t, id, saga.Compensated)
	if got, want := fmt.Sprint(outcomes(in)), "[reserve:do:done charge:do:done ship:do:failed charge:undo:compensated reserve:undo:compensated]"; got != want {
		t.Fatalf("history %s, want %s", got, want)
	}
	testenv.Eventually(t, 30*time.Second, "5 duplicate replies to be counted as ignored", func() bool {
		return h.counter(t, "herald_saga_replies_ignored_total", map[string]string{"saga": "order"}) == 5
	})
}

func TestBadReplies(t *testing.T) {
	h := newHarness(t, 30*time.Second)
	ctx := t.Context()
	id := unique("o-")
	if err := h.eng.Start(ctx, "order", id, orderData{}); err != nil {
		t.Fatal(err)
	}
	h.await(t, id, saga.Completed)
	for name, tc := range map[string]struct {
		reply  *event.Event
		reason string
	}{
		"unknown instance": {&event.Event{ID: "r1", Source: "s", Type: "t.reserve.done.v1", CorrelationID: "nobody", CausationID: "x"}, "unknown_instance"},
		"no correlation":   {&event.Event{ID: "r2", Source: "s", Type: "t.reserve.done.v1"}, "no_correlation_id"},
		"late":             {&event.Event{ID: "r3", Source: "s", Type: "t.ship.done.v1", CorrelationID: id, CausationID: saga.CommandID(id, "ship", saga.Do, 1)}, "finished_instance"},
		"nil":              {nil, "no_correlation_id"},
	} {
		t.Run(name, func(t *testing.T) {
			before := h.counter(t, "herald_saga_replies_ignored_total", map[string]string{"reason": tc.reason})
			if err := h.eng.HandleReply(ctx, tc.reply); err != nil {
				t.Fatalf("HandleReply: %v, want nil (ignored)", err)
			}
			if got := h.counter(t, "herald_saga_replies_ignored_total", map[string]string{"reason": tc.reason}); got != before+1 {
				t.Fatalf("ignored{reason=%s} went from %v to %v, want one more", tc.reason, before, got)
			}
		})
	}
	// A reply of an unexpected type for the waiting command.
	id2 := unique("o-")
	if err := h.eng.Start(ctx, "order", id2, orderData{Hang: "reserve"}); err != nil {
		t.Fatal(err)
	}
	before := h.counter(t, "herald_saga_replies_ignored_total", map[string]string{"reason": "unexpected_type"})
	odd := &event.Event{ID: "r4", Source: "s", Type: "t.ship.done.v1", CorrelationID: id2, CausationID: saga.CommandID(id2, "reserve", saga.Do, 1)}
	if err := h.eng.HandleReply(ctx, odd); err != nil {
		t.Fatal(err)
	}
	if got := h.counter(t, "herald_saga_replies_ignored_total", map[string]string{"reason": "unexpected_type"}); got != before+1 {
		t.Fatalf("unexpected reply type not counted: %v -> %v", before, got)
	}
	if in, err := h.eng.Get(ctx, id2); err != nil || in.State != saga.Running || len(in.History) != 1 {
		t.Fatalf("instance after an unexpected reply: %+v, %v; want still running at its first step", in, err)
	}
}

// A compensation that is never confirmed is retried, then the instance
// fails, is dead-lettered and counted.
func TestCompensationThatKeepsFailingIsDeadLettered(t *testing.T) {
	h := newHarnessDef(t, withTimeout(definition(30*time.Second), "reserve", 2*time.Second), saga.WithMaxUndoAttempts(2))
	id := unique("o-")
	if err := h.eng.Start(t.Context(), "order", id, orderData{Fail: "charge", HangUndo: "reserve"}); err != nil {
		t.Fatal(err)
	}
	in := h.await(t, id, saga.Failed)
	if got, want := fmt.Sprint(outcomes(in)), "[reserve:do:done charge:do:failed reserve:undo:timeout reserve:undo:timeout]"; got != want {
		t.Fatalf("history %s, want %s", got, want)
	}
	if in.History[2].Command == in.History[3].Command {
		t.Fatal("a retried compensation kept its command id: the receiver's dedup would drop it")
	}
	testenv.Eventually(t, 30*time.Second, "the dead-letter event", func() bool {
		st, err := h.b.JetStream().Stream(t.Context(), natsjs.StreamName(h.dlq))
		if err != nil {
			return false
		}
		info, err := st.Info(t.Context())
		return err == nil && info.State.Msgs == 1
	})
	if got := h.counter(t, "herald_saga_dead_lettered_total", nil); got != 1 {
		t.Fatalf("herald_saga_dead_lettered_total = %v, want 1", got)
	}
}

func TestDefinitionErrors(t *testing.T) {
	noop := command("t.x.v1")
	ok := saga.Step{Name: "a", Command: noop, Done: []string{"d"}, Compensate: noop, Compensated: []string{"u"}}
	for name, tc := range map[string]struct {
		def  saga.Definition
		want string
	}{
		"no name":         {saga.Definition{Steps: []saga.Step{ok}}, "without a name"},
		"no steps":        {saga.Definition{Name: "s"}, "no steps"},
		"no compensation": {saga.Definition{Name: "s", Steps: []saga.Step{{Name: "a", Command: noop, Done: []string{"d"}}}}, "set NoCompensation"},
		"both":            {saga.Definition{Name: "s", Steps: []saga.Step{{Name: "a", Command: noop, Done: []string{"d"}, Compensate: noop, Compensated: []string{"u"}, NoCompensation: true}}}, "both"},
		"no done":         {saga.Definition{Name: "s", Steps: []saga.Step{{Name: "a", Command: noop, NoCompensation: true}}}, "Done must list"},
		"no command":      {saga.Definition{Name: "s", Steps: []saga.Step{{Name: "a", Done: []string{"d"}, NoCompensation: true}}}, "no Command"},
		"no compensated":  {saga.Definition{Name: "s", Steps: []saga.Step{{Name: "a", Command: noop, Done: []string{"d"}, Compensate: noop}}}, "Compensated must list"},
		"duplicate step":  {saga.Definition{Name: "s", Steps: []saga.Step{ok, ok}}, "used twice"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := saga.New(nopStore{}, nopPub{}, []saga.Definition{tc.def})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	eng, err := saga.New(nopStore{}, nopPub{}, []saga.Definition{{Name: "s", Steps: []saga.Step{ok}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ saga, id, want string }{
		{"nope", "i", "no saga"},
		{"s", "", "an id is"},
		{"s", "has space", "an id is"},
		{"s", ".dot", "an id is"},
	} {
		if err := eng.Start(t.Context(), tc.saga, tc.id, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Start(%q, %q) = %v, want an error containing %q", tc.saga, tc.id, err, tc.want)
		}
	}
}

// nopStore and nopPub stand in where validation fails before any I/O.
type nopStore struct{ saga.Store }
type nopPub struct{}

func (nopPub) Publish(context.Context, ...*event.Event) error { return nil }

// Two engines share a store. Engine a starts an instance (and remembers
// it), engine b moves it on; a reply to b's command then reaches a, whose
// copy is out of date: a must act on the stored instance, neither
// ignoring the reply as stale nor overwriting b's update.
func TestEnginesSharingAStoreActOnTheStoredInstance(t *testing.T) {
	ctx := t.Context()
	b, err := natsjs.New(context.Background(), natsjs.WithEmbedded(emb))
	if err != nil {
		t.Fatal(err)
	}
	n := namesOf(unique("saga_two_"))
	t.Cleanup(func() {
		for _, s := range []string{n.cmds, n.replies, n.dlq} {
			_ = b.JetStream().DeleteStream(context.Background(), natsjs.StreamName(s))
		}
		_ = b.JetStream().DeleteKeyValue(context.Background(), n.bucket)
		_ = b.JetStream().DeleteKeyValue(context.Background(), n.bucket+"_active")
		_ = b.Close()
	})
	c, store, err := wire(ctx, b, n)
	if err != nil {
		t.Fatal(err)
	}
	engine := func() *saga.Engine {
		e, err := saga.New(store, c, []saga.Definition{definition(time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	ea, eb := engine(), engine()
	id := unique("o-")
	if err := ea.Start(ctx, "order", id, orderData{}); err != nil {
		t.Fatal(err)
	}
	reply := func(e *saga.Engine, step string) {
		t.Helper()
		in, err := store.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		r := event.New("svc", "t."+step+".done.v1", nil)
		r.CorrelationID, r.CausationID = id, in.History[len(in.History)-1].Command
		if err := e.HandleReply(ctx, r); err != nil {
			t.Fatalf("reply %s: %v", step, err)
		}
	}
	reply(eb, "reserve") // b moves the instance to charge; a still remembers reserve
	reply(ea, "charge")  // a must see charge waiting, not ignore the reply
	in, err := store.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(outcomes(in)), "[reserve:do:done charge:do:done ship:do:]"; got != want {
		t.Fatalf("history %s, want %s", got, want)
	}
	// b remembers charge waiting; a duplicate of charge's reply looks
	// right on that copy, but the store has moved on: the update is
	// refused and the reply, re-decided on the stored instance, ignored.
	dup := event.New("svc", "t.charge.done.v1", nil)
	dup.CorrelationID, dup.CausationID = id, saga.CommandID(id, "charge", saga.Do, 1)
	if err := eb.HandleReply(ctx, dup); err != nil {
		t.Fatal(err)
	}
	if in, err = store.Get(ctx, id); err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(outcomes(in)), "[reserve:do:done charge:do:done ship:do:]"; got != want {
		t.Fatalf("after a duplicate reply: history %s, want %s", got, want)
	}
	reply(eb, "ship")
	in, err = store.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if in.State != saga.Completed {
		t.Fatalf("state %s, want completed; history %v", in.State, outcomes(in))
	}
}
