package saga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald/event"
)

// Publisher publishes events and returns once the broker confirmed them,
// deduplicating by event id. *herald.Client is one.
type Publisher interface {
	Publish(ctx context.Context, events ...*event.Event) error
}

// DeadLetterType is the type of the event the engine publishes when an
// instance fails: its data is the instance (JSON), with the error.
const DeadLetterType = "herald.saga.failed.v1"

// Defaults of an Engine.
const (
	DefaultTick              = time.Second
	DefaultResendAfter       = 5 * time.Second
	DefaultMaxUndoAttempts   = 5
	maxConflictRetries       = 16
	ignoredUnknown           = "unknown_instance"
	ignoredTerminal          = "finished_instance"
	ignoredStale             = "stale_or_duplicate"
	ignoredUnexpected        = "unexpected_type"
	ignoredNoCorrelation     = "no_correlation_id"
	commandNamespaceUUIDName = "herald.saga.command"
)

var commandNS = uuid.NewSHA1(uuid.NameSpaceURL, []byte(commandNamespaceUUIDName))

// Engine runs the instances of its definitions. It is safe for concurrent
// use, and several engines (processes) can share one Store: updates are
// versioned, and the loser of a race re-reads and re-decides.
type Engine struct {
	store   Store
	pub     Publisher
	defs    map[string]*Definition
	log     *slog.Logger
	tick    time.Duration
	maxUndo int
	reg     prometheus.Registerer
	m       metrics
	resend  time.Duration

	known    knownInstances
	mu       sync.Mutex
	resentAt map[string]time.Time // command id -> last re-send by this engine
}

// Option configures an Engine.
type Option func(*Engine)

// WithTick sets how often Run checks deadlines and re-sends commands a
// crash left unconfirmed. Default DefaultTick.
func WithTick(d time.Duration) Option { return func(e *Engine) { e.tick = d } }

// WithResendAfter sets how long a command waits for its reply before Run
// sends it again (with the same id), and again after as long, until the
// step's timeout. Default DefaultResendAfter.
func WithResendAfter(d time.Duration) Option { return func(e *Engine) { e.resend = d } }

// WithMaxUndoAttempts sets how often a compensation is sent before the
// instance fails and goes to the dead-letter topic. Default
// DefaultMaxUndoAttempts.
func WithMaxUndoAttempts(n int) Option { return func(e *Engine) { e.maxUndo = n } }

// WithLogger sets the logger. Default slog.Default().
func WithLogger(l *slog.Logger) Option { return func(e *Engine) { e.log = l } }

// WithRegisterer registers the engine's metrics with reg:
// herald_saga_started_total, herald_saga_finished_total{state},
// herald_saga_dead_lettered_total (alert on any increase) and
// herald_saga_replies_ignored_total{reason}, each labelled by saga.
func WithRegisterer(reg prometheus.Registerer) Option { return func(e *Engine) { e.reg = reg } }

// New returns an engine for defs, checking each definition.
func New(store Store, pub Publisher, defs []Definition, opts ...Option) (*Engine, error) {
	if store == nil || pub == nil {
		return nil, errors.New("saga: New needs a store and a publisher")
	}
	e := &Engine{store: store, pub: pub, defs: map[string]*Definition{}, log: slog.Default(), tick: DefaultTick, maxUndo: DefaultMaxUndoAttempts, resend: DefaultResendAfter, resentAt: map[string]time.Time{}}
	for _, o := range opts {
		o(e)
	}
	if e.tick <= 0 || e.resend <= 0 || e.maxUndo < 1 {
		return nil, fmt.Errorf("saga: WithTick %v and WithResendAfter %v must be positive, WithMaxUndoAttempts %d at least 1", e.tick, e.resend, e.maxUndo)
	}
	for _, d := range defs {
		d.Steps = slices.Clone(d.Steps)
		if err := d.validate(); err != nil {
			return nil, err
		}
		if _, dup := e.defs[d.Name]; dup {
			return nil, fmt.Errorf("saga %q: defined twice", d.Name)
		}
		e.defs[d.Name] = &d
	}
	m, err := newMetrics(e.reg)
	if err != nil {
		return nil, err
	}
	e.m = m
	return e, nil
}

var idRE = regexp.MustCompile(`^[A-Za-z0-9_=-][A-Za-z0-9_=.-]{0,199}$`)

// Start creates instance id of saga name with data (marshalled as JSON)
// and sends its first command. It returns ErrExists if id is taken, so a
// retried Start does not run a saga twice.
func (e *Engine) Start(ctx context.Context, name, id string, data any) error {
	def, ok := e.defs[name]
	if !ok {
		return fmt.Errorf("saga: start %q: no saga %q is defined", id, name)
	}
	if !idRE.MatchString(id) {
		return fmt.Errorf("saga: start %q: an id is 1 to 200 letters, digits, '_', '=', '-' and '.', not starting with '.'", id)
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("saga: start %q: data: %w", id, err)
	}
	now := time.Now().UTC()
	in := &Instance{ID: id, Saga: name, State: Running, Data: raw, Created: now, Updated: now}
	cmd, err := e.next(ctx, def, in, 0, Do, 1, now)
	if err != nil {
		return err
	}
	if err := e.store.Create(ctx, in); err != nil {
		return err
	}
	e.known.put(in)
	e.m.started.WithLabelValues(name).Inc()
	return e.send(ctx, in.ID, cmd)
}

// next appends the entry of a command (step, phase, attempt) to in, moves
// in there and returns the command to send.
func (e *Engine) next(ctx context.Context, def *Definition, in *Instance, step int, phase Phase, attempt int, now time.Time) (*event.Event, error) {
	s := &def.Steps[step]
	cmd, err := e.build(ctx, def, in, step, phase, attempt)
	if err != nil {
		return nil, err
	}
	in.Step, in.Deadline = step, now.Add(s.Timeout)
	in.History = append(in.History, Entry{Step: s.Name, Phase: phase, Attempt: attempt, Command: cmd.ID, Type: cmd.Type, Sent: now})
	return cmd, nil
}

// build calls the step's command function and stamps the event.
func (e *Engine) build(ctx context.Context, def *Definition, in *Instance, step int, phase Phase, attempt int) (*event.Event, error) {
	s := &def.Steps[step]
	fn := s.Command
	if phase == Undo {
		fn = s.Compensate
	}
	cmd, err := fn(ctx, in.clone())
	if err != nil {
		return nil, fmt.Errorf("saga %q %q: step %q %s: build command: %w", def.Name, in.ID, s.Name, phase, err)
	}
	if cmd == nil {
		return nil, fmt.Errorf("saga %q %q: step %q %s: the command function returned no event", def.Name, in.ID, s.Name, phase)
	}
	cmd.ID = CommandID(in.ID, s.Name, phase, attempt)
	cmd.CorrelationID = in.ID
	if cmd.Subject == "" {
		cmd.Subject = in.ID
	}
	if cmd.Source == "" {
		cmd.Source = "saga." + def.Name
	}
	if cmd.Time.IsZero() {
		cmd.Time = time.Now().UTC()
	}
	return cmd, nil
}

// CommandID is the id of the command an instance sends for a step's phase
// and attempt: a UUIDv5 of the four, so a re-sent command keeps its id.
func CommandID(instance, step string, phase Phase, attempt int) string {
	return uuid.NewSHA1(commandNS, []byte(instance+"\x00"+step+"\x00"+string(phase)+"\x00"+strconv.Itoa(attempt))).String()
}

// send publishes cmd. A failure is returned; Run re-sends the command
// later either way, until its reply comes or it times out.
func (e *Engine) send(ctx context.Context, id string, cmd *event.Event) error {
	if err := e.pub.Publish(ctx, cmd); err != nil {
		return fmt.Errorf("saga %q: send command %s: %w", id, cmd.Type, err)
	}
	return nil
}

// mutate reads instance id, lets fn change it and stores it, again from
// the read when another update came first. fn returns whether it changed
// the instance and a command to send once the change is stored.
func (e *Engine) mutate(ctx context.Context, id string, fn func(in *Instance, def *Definition) (bool, *event.Event, error)) (*Instance, error) {
	for range maxConflictRetries {
		in, guess := e.known.get(id)
		if !guess {
			var err error
			if in, err = e.store.Get(ctx, id); err != nil {
				return nil, err
			}
		}
		def, ok := e.defs[in.Saga]
		if !ok {
			return nil, fmt.Errorf("saga %q: instance of saga %q, which this engine does not define", id, in.Saga)
		}
		changed, cmd, err := fn(in, def)
		if guess && (err != nil || !changed) {
			// Leaving the instance alone, or failing, is decided on what
			// the store holds, never on a remembered copy.
			e.known.forget(id)
			continue
		}
		if err != nil || !changed {
			return in, err
		}
		in.Updated = time.Now().UTC()
		switch err := e.store.Update(ctx, in); {
		case errors.Is(err, ErrConflict):
			e.known.forget(id)
			continue
		case err != nil:
			e.known.forget(id)
			return nil, err
		}
		if in.State.Terminal() {
			e.known.forget(id)
			e.m.finished.WithLabelValues(in.Saga, string(in.State)).Inc()
		} else {
			e.known.put(in)
		}
		if cmd != nil {
			return in, e.send(ctx, id, cmd)
		}
		return in, nil
	}
	return nil, fmt.Errorf("saga %q: %d concurrent updates in a row: giving up this time", id, maxConflictRetries)
}

// maxKnown bounds the instances an engine remembers.
const maxKnown = 10_000

// knownInstances remembers the instances this engine stored last, so that
// a reply to an instance it has just moved on does not read it back from
// the store first. A remembered copy is only a guess: an update based on
// it is versioned (if another engine moved the instance meanwhile, the
// store refuses it and the update is redone from a fresh read), and a
// decision to leave an instance alone is never taken on a copy.
type knownInstances struct {
	mu sync.Mutex
	m  map[string]*Instance
}

func (k *knownInstances) get(id string) (*Instance, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	in, ok := k.m[id]
	if !ok {
		return nil, false
	}
	return in.clone(), true
}

func (k *knownInstances) put(in *Instance) {
	c := in.clone()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil || len(k.m) >= maxKnown {
		k.m = make(map[string]*Instance) // forget them all: the cost is one read each
	}
	k.m[in.ID] = c
}

func (k *knownInstances) forget(id string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.m, id)
}

// HandleReply applies a reply to its instance: the instance whose id is
// the reply's correlation id, if the reply's causation id is the command
// the instance waits for and its type is one the step expects. Any other
// reply (unknown instance, finished instance, duplicate or late reply,
// unexpected type) is logged, counted in herald_saga_replies_ignored_total
// and ignored: HandleReply returns nil, so the consumer acknowledges it.
// An error means the store or the broker failed; retry.
func (e *Engine) HandleReply(ctx context.Context, reply *event.Event) error {
	if reply == nil || reply.CorrelationID == "" {
		e.ignore("", reply, ignoredNoCorrelation)
		return nil
	}
	var why string
	_, err := e.mutate(ctx, reply.CorrelationID, func(in *Instance, def *Definition) (bool, *event.Event, error) {
		why = ""
		cur := in.current()
		switch {
		case in.State.Terminal():
			why = ignoredTerminal
			return false, nil, nil
		case cur == nil || cur.Command != reply.CausationID || cur.Ended.After(time.Time{}):
			why = ignoredStale
			return false, nil, nil
		}
		s := &def.Steps[in.Step]
		now := time.Now().UTC()
		outcome := ""
		switch {
		case cur.Phase == Do && slices.Contains(s.Done, reply.Type):
			outcome = "done"
		case cur.Phase == Do && slices.Contains(s.Failed, reply.Type):
			outcome = "failed"
		case cur.Phase == Undo && slices.Contains(s.Compensated, reply.Type):
			outcome = "compensated"
		default:
			why = ignoredUnexpected
			return false, nil, nil
		}
		cur.Ended, cur.Outcome, cur.Reply = now, outcome, reply.Type
		var cmd *event.Event
		var err error
		switch outcome {
		case "done":
			if in.Step+1 == len(def.Steps) {
				in.State, in.Deadline = Completed, time.Time{}
				return true, nil, nil
			}
			cmd, err = e.next(ctx, def, in, in.Step+1, Do, 1, now)
		case "failed":
			in.Error = fmt.Sprintf("step %q failed: %s", s.Name, reply.Type)
			cmd, err = e.compensateFrom(ctx, def, in, in.Step-1, now)
		case "compensated":
			cmd, err = e.compensateFrom(ctx, def, in, in.Step-1, now)
		}
		return err == nil, cmd, err
	})
	if errors.Is(err, ErrNotFound) {
		e.ignore("", reply, ignoredUnknown)
		return nil
	}
	if err != nil {
		return err
	}
	if why != "" {
		e.ignore(reply.CorrelationID, reply, why)
	}
	return nil
}

// compensateFrom moves in to the compensation of the highest step at or
// below from that has one, or to Compensated when none is left.
func (e *Engine) compensateFrom(ctx context.Context, def *Definition, in *Instance, from int, now time.Time) (*event.Event, error) {
	in.State = Compensating
	for j := from; j >= 0; j-- {
		if def.Steps[j].Compensate != nil {
			return e.next(ctx, def, in, j, Undo, 1, now)
		}
	}
	in.State, in.Deadline = Compensated, time.Time{}
	return nil, nil
}

func (e *Engine) ignore(id string, reply *event.Event, why string) {
	saga := ""
	if d, ok := e.sagaOf(id); ok {
		saga = d
	}
	e.m.ignored.WithLabelValues(saga, why).Inc()
	attrs := []any{"reason", why, "instance", id}
	if reply != nil {
		attrs = append(attrs, "event_id", reply.ID, "type", reply.Type, "causation_id", reply.CausationID)
	}
	e.log.Info("saga: reply ignored", attrs...)
}

func (e *Engine) sagaOf(id string) (string, bool) {
	if id == "" {
		return "", false
	}
	in, err := e.store.Get(context.Background(), id)
	if err != nil {
		return "", false
	}
	return in.Saga, true
}

// Run checks the active instances every tick until ctx is done: it times
// out commands past their deadline (a step's timeout compensates it and
// the steps before; a compensation's re-sends it, up to the attempt limit)
// and re-sends commands a crash left unconfirmed. Deadlines are stored,
// so they survive a restart. Run returns nil when ctx is done.
func (e *Engine) Run(ctx context.Context) error {
	t := time.NewTicker(e.tick)
	defer t.Stop()
	for {
		if err := e.Tick(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("saga: checking instances failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Tick does one round of Run's checks.
func (e *Engine) Tick(ctx context.Context) error {
	var errs []error
	for _, st := range []State{Running, Compensating} {
		ins, err := e.store.List(ctx, st)
		if err != nil {
			return err
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		sem := make(chan struct{}, 16)
		for _, in := range ins {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if err := e.check(ctx, in); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	return errors.Join(errs...)
}

// check times out or re-sends in's current command.
func (e *Engine) check(ctx context.Context, seen *Instance) error {
	now := time.Now().UTC()
	cur := seen.current()
	if cur == nil {
		return nil
	}
	if now.Before(seen.Deadline) {
		// Not answered yet: the command may never have left (a crash
		// between storing the state and publishing). Re-send it now and
		// then; its id is the same, so the broker and the receiver's inbox
		// drop the copies.
		if !e.resendDue(cur.Command, cur.Sent, now) {
			return nil
		}
		def, ok := e.defs[seen.Saga]
		if !ok {
			return nil
		}
		step := slices.IndexFunc(def.Steps, func(s Step) bool { return s.Name == cur.Step })
		if step < 0 {
			return fmt.Errorf("saga %q: history names step %q, which saga %q does not have", seen.ID, cur.Step, seen.Saga)
		}
		cmd, err := e.build(ctx, def, seen, step, cur.Phase, cur.Attempt)
		if err != nil {
			return err
		}
		return e.send(ctx, seen.ID, cmd)
	}
	_, err := e.mutate(ctx, seen.ID, func(in *Instance, def *Definition) (bool, *event.Event, error) {
		c := in.current()
		if in.State.Terminal() || c == nil || c.Command != cur.Command || now.Before(in.Deadline) {
			return false, nil, nil // moved on meanwhile
		}
		c.Ended, c.Outcome = now, "timeout"
		s := &def.Steps[in.Step]
		if c.Phase == Do {
			in.Error = fmt.Sprintf("step %q timed out after %v", s.Name, s.Timeout)
			// The step's effect is unknown: compensate it too.
			cmd, err := e.compensateFrom(ctx, def, in, in.Step, now)
			return err == nil, cmd, err
		}
		if c.Attempt >= e.maxUndo {
			in.State, in.Deadline = Failed, time.Time{}
			in.Error = fmt.Sprintf("compensation of step %q not confirmed after %d attempts", s.Name, c.Attempt)
			if err := e.deadLetter(ctx, in); err != nil {
				return false, nil, err
			}
			return true, nil, nil
		}
		cmd, err := e.next(ctx, def, in, in.Step, Undo, c.Attempt+1, now)
		return err == nil, cmd, err
	})
	return err
}

// resendDue reports whether command, sent at sent, is due for a re-send,
// and if so notes that it is re-sent now.
func (e *Engine) resendDue(command string, sent, now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	last, ok := e.resentAt[command]
	if !ok {
		last = sent
	}
	if now.Sub(last) < e.resend {
		return false
	}
	if len(e.resentAt) > 100_000 {
		clear(e.resentAt) // forget old commands; the worst case is an early re-send
	}
	e.resentAt[command] = now
	return true
}

// deadLetter publishes the failed instance, before the failure is stored:
// a retry re-publishes it under the same id.
func (e *Engine) deadLetter(ctx context.Context, in *Instance) error {
	data, err := json.Marshal(in)
	if err != nil {
		return err
	}
	dl := &event.Event{
		ID: CommandID(in.ID, "dead-letter", Undo, 0), Source: "saga." + in.Saga, Type: DeadLetterType,
		Subject: in.ID, CorrelationID: in.ID, Time: time.Now().UTC(), DataContentType: "application/json", Data: data,
	}
	if err := e.pub.Publish(ctx, dl); err != nil {
		return fmt.Errorf("saga %q: dead-letter: %w", in.ID, err)
	}
	e.m.deadLettered.WithLabelValues(in.Saga).Inc()
	e.log.Error("saga: instance failed and was dead-lettered", "saga", in.Saga, "instance", in.ID, "err", in.Error)
	return nil
}

// Get returns instance id, or ErrNotFound.
func (e *Engine) Get(ctx context.Context, id string) (*Instance, error) { return e.store.Get(ctx, id) }

// List returns the instances in state ("" for all), oldest first.
func (e *Engine) List(ctx context.Context, state State) ([]*Instance, error) {
	return e.store.List(ctx, state)
}

type metrics struct {
	started, deadLettered *prometheus.CounterVec
	finished, ignored     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		started:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_saga_started_total", Help: "Saga instances started."}, []string{"saga"}),
		finished:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_saga_finished_total", Help: "Saga instances that reached a terminal state."}, []string{"saga", "state"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_saga_dead_lettered_total", Help: "Saga instances whose compensation kept failing; each needs a person."}, []string{"saga"}),
		ignored:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_saga_replies_ignored_total", Help: "Replies that matched no waiting command."}, []string{"saga", "reason"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []*prometheus.CounterVec{m.started, m.finished, m.deadLettered, m.ignored} {
		if err := reg.Register(c); err != nil {
			return m, fmt.Errorf("saga: metrics: %w", err)
		}
	}
	return m, nil
}
