// Package saga runs orchestrated sagas: a Definition lists ordered steps,
// each sending a command event and waiting for a reply; when a step fails
// or times out, the compensations of the steps done so far run in reverse
// order. Instance state lives in a Store (a JetStream KV bucket) with a
// version per instance, so concurrent updates are detected, and every
// emitted command has an id derived from the instance, the step and the
// attempt, so a command re-sent after a crash is deduplicated by the
// broker and by the receiving service's inbox.
//
// Replies are correlated by the reply's correlation id (the instance id,
// which every command carries) and its causation id (the command's id):
// a service built on herald gets both for free when it publishes the reply
// from the command's handler.
//
//	def := saga.Definition{Name: "order", Steps: []saga.Step{
//		{Name: "reserve", Command: reserveCmd, Done: []string{"stock.reserved.v1"}, Failed: []string{"stock.out.v1"},
//			Compensate: releaseCmd, Compensated: []string{"stock.released.v1"}, Timeout: 30 * time.Second},
//		...
//	}}
//	eng, _ := saga.New(ctx, store, client, []saga.Definition{def})
//	go eng.Run(ctx)                          // timers and resumption
//	_ = eng.Start(ctx, "order", orderID, data)
//	r.HandleAll(func(ctx context.Context, m *consumer.Message) error { return eng.HandleReply(ctx, m.Event) })
package saga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald/event"
)

// State is where an instance is in its life.
type State string

// Instance states. Completed, Compensated and Failed are terminal.
const (
	// Running: steps are being done, in order.
	Running State = "running"
	// Compensating: a step failed or timed out; compensations run in
	// reverse order.
	Compensating State = "compensating"
	// Completed: every step was done.
	Completed State = "completed"
	// Compensated: every done step was compensated.
	Compensated State = "compensated"
	// Failed: a compensation kept failing; the instance went to the
	// dead-letter topic and needs a person.
	Failed State = "failed"
)

// Terminal reports whether s is a final state.
func (s State) Terminal() bool { return s == Completed || s == Compensated || s == Failed }

// ParseState reads a state name.
func ParseState(s string) (State, error) {
	switch st := State(s); st {
	case Running, Compensating, Completed, Compensated, Failed:
		return st, nil
	}
	return "", fmt.Errorf("saga: state %q: want running, compensating, completed, compensated or failed", s)
}

// Errors callers branch on.
var (
	// ErrNotFound: no instance has the id.
	ErrNotFound = errors.New("saga: instance not found")
	// ErrExists: Start with an id already used.
	ErrExists = errors.New("saga: instance already exists")
	// ErrConflict: the instance changed since it was read (its version
	// moved on).
	ErrConflict = errors.New("saga: instance changed concurrently")
)

// CommandFunc builds the command event of a step (or of its
// compensation) for instance in. The engine sets its id, correlation id
// and, if empty, subject (the instance id) and source.
type CommandFunc func(ctx context.Context, in *Instance) (*event.Event, error)

// Step is one step of a saga.
type Step struct {
	// Name identifies the step in history and logs. Required, unique in
	// the definition.
	Name string
	// Command builds the step's command. Required.
	Command CommandFunc
	// Done lists the reply types that mean the step succeeded. Required.
	Done []string
	// Failed lists the reply types that mean the step failed: the saga
	// compensates the steps before it.
	Failed []string
	// Timeout bounds the wait for the reply; after it the step counts as
	// failed, and since its effect is unknown it is compensated too.
	// Default DefaultStepTimeout.
	Timeout time.Duration
	// Compensate builds the command undoing the step. Required unless
	// NoCompensation is set.
	Compensate CommandFunc
	// Compensated lists the reply types confirming the compensation.
	// Required with Compensate.
	Compensated []string
	// NoCompensation declares that the step has nothing to undo (a
	// notification, a read). It must be said: a missing Compensate is
	// otherwise an error.
	NoCompensation bool
}

// Definition is a saga type: its name and ordered steps.
type Definition struct {
	// Name identifies the saga type. Required.
	Name  string
	Steps []Step
}

// DefaultStepTimeout is a step's timeout unless it sets one.
const DefaultStepTimeout = 30 * time.Second

func (d *Definition) validate() error {
	if d.Name == "" {
		return errors.New("saga: definition without a name")
	}
	if len(d.Steps) == 0 {
		return fmt.Errorf("saga %q: no steps", d.Name)
	}
	seen := map[string]bool{}
	for i := range d.Steps {
		s := &d.Steps[i]
		switch {
		case s.Name == "":
			return fmt.Errorf("saga %q: step %d has no name", d.Name, i)
		case seen[s.Name]:
			return fmt.Errorf("saga %q: step name %q used twice", d.Name, s.Name)
		case s.Command == nil:
			return fmt.Errorf("saga %q: step %q has no Command", d.Name, s.Name)
		case len(s.Done) == 0:
			return fmt.Errorf("saga %q: step %q: Done must list the reply types that mean success", d.Name, s.Name)
		case s.Compensate == nil && !s.NoCompensation:
			return fmt.Errorf("saga %q: step %q has no Compensate: give one, or set NoCompensation if the step has nothing to undo", d.Name, s.Name)
		case s.Compensate != nil && s.NoCompensation:
			return fmt.Errorf("saga %q: step %q sets both Compensate and NoCompensation", d.Name, s.Name)
		case s.Compensate != nil && len(s.Compensated) == 0:
			return fmt.Errorf("saga %q: step %q: Compensated must list the reply types confirming the compensation", d.Name, s.Name)
		case s.Timeout < 0:
			return fmt.Errorf("saga %q: step %q: Timeout %v is negative", d.Name, s.Name, s.Timeout)
		}
		if s.Timeout == 0 {
			s.Timeout = DefaultStepTimeout
		}
		seen[s.Name] = true
	}
	return nil
}

// Phase says whether a history entry did a step or undid it.
type Phase string

// Phases.
const (
	Do   Phase = "do"
	Undo Phase = "undo"
)

// Entry is one command of an instance's history.
type Entry struct {
	Step    string    `json:"step"`
	Phase   Phase     `json:"phase"`
	Attempt int       `json:"attempt"`
	Command string    `json:"command_id"`
	Type    string    `json:"command_type"`
	Sent    time.Time `json:"sent"`
	// Ended is when the reply (or the timeout) settled the command.
	Ended   time.Time `json:"ended,omitzero"`
	Outcome string    `json:"outcome,omitempty"` // done, failed, timeout, compensated
	Reply   string    `json:"reply_type,omitempty"`
}

// Instance is one run of a saga. Values returned by the engine are
// copies the caller owns.
type Instance struct {
	ID   string `json:"id"`
	Saga string `json:"saga"`
	// State and Step say where the instance is: Step is the index of the
	// step being done (Running) or undone (Compensating).
	State State `json:"state"`
	Step  int   `json:"step"`
	// Data is the caller's data, given to Start.
	Data json.RawMessage `json:"data,omitempty"`
	// Version changes with every update; the store refuses an update
	// based on an older one.
	Version uint64 `json:"-"`
	// Deadline is when the current command times out (durable: it is
	// part of the stored state).
	Deadline time.Time `json:"deadline,omitzero"`
	History  []Entry   `json:"history"`
	// Error says why the saga compensated or failed.
	Error   string    `json:"error,omitempty"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// current is the entry of the command being waited for.
func (in *Instance) current() *Entry {
	if len(in.History) == 0 {
		return nil
	}
	return &in.History[len(in.History)-1]
}

func (in *Instance) clone() *Instance {
	c := *in
	c.Data = append(json.RawMessage(nil), in.Data...)
	c.History = append([]Entry(nil), in.History...)
	return &c
}

// Store keeps instances. Implementations are safe for concurrent use by
// several processes.
type Store interface {
	// Create stores a new instance and sets its Version; ErrExists if the
	// id is taken.
	Create(ctx context.Context, in *Instance) error
	// Get returns the instance, or ErrNotFound.
	Get(ctx context.Context, id string) (*Instance, error)
	// Update stores in if the stored version is still in.Version, and
	// sets the new Version; ErrConflict otherwise.
	Update(ctx context.Context, in *Instance) error
	// List returns the instances in state (every state if ""), oldest
	// first.
	List(ctx context.Context, state State) ([]*Instance, error)
}
