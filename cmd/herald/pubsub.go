package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/event"
)

// openBroker connects to the broker at url (nats://, kafka://, amqp://),
// with a short readiness wait for interactive use.
func (a *app) openBroker(ctx context.Context, url string) (broker.Broker, event.Binding, error) {
	if !strings.Contains(url, "://") {
		url = "nats://" + url
	}
	if strings.HasPrefix(url, "nats://") || strings.HasPrefix(url, "tls://") {
		opts, err := a.natsOptions(url)
		if err != nil {
			return nil, event.Binding{}, err
		}
		b, err := natsjs.New(ctx, natsjs.WithURL(url, append(opts, nats.MaxReconnects(3), nats.RetryOnFailedConnect(false))...),
			natsjs.WithReadyTimeout(5*time.Second))
		if err != nil {
			return nil, event.Binding{}, fmt.Errorf("cannot reach the broker at %s: %w", url, err)
		}
		return b, event.NATS, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	b, binding, err := herald.OpenBroker(ctx, url, nil)
	if err != nil {
		return nil, event.Binding{}, fmt.Errorf("cannot reach the broker at %s: %w", url, err)
	}
	return b, binding, nil
}

// groupDeleter is implemented by brokers that can remove a group.
type groupDeleter interface {
	DeleteGroup(ctx context.Context, topic, group string) error
}

func newPubCmd(a *app) *cobra.Command {
	var (
		topic, typ, key, source, subject, id, contentType, correlation string
		headers                                                        []string
		structured                                                     bool
	)
	cmd := &cobra.Command{
		Use:   "pub [flags] DATA|-",
		Short: "Publish one event and wait for the broker to confirm it",
		Long: `Publish one event. DATA is the payload, or - to read it from standard input.
With --structured, DATA is a whole CloudEvent in structured JSON
(application/cloudevents+json) and the attribute flags override its fields.`,
		Example: `  herald pub --topic orders --type shop.order.placed.v1 --subject o-1 '{"total":42}'
  echo '{"total":42}' | herald pub --topic orders --type shop.order.placed.v1 -`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data := []byte(args[0])
			if args[0] == "-" {
				b, err := io.ReadAll(cmd.InOrStdin())
				if err != nil {
					return fmt.Errorf("read standard input: %w", err)
				}
				data = b
			}
			var ev *event.Event
			if structured {
				e, err := event.UnmarshalJSON(data)
				if err != nil {
					return fmt.Errorf("--structured: %w", err)
				}
				ev = e
			} else {
				ev = event.New(source, typ, data)
				if contentType == "" {
					contentType = "text/plain"
					if json.Valid(data) {
						contentType = "application/json"
					}
				}
			}
			set := func(dst *string, v string) {
				if v != "" {
					*dst = v
				}
			}
			set(&ev.Type, typ)
			set(&ev.Source, source)
			set(&ev.Subject, subject)
			set(&ev.ID, id)
			set(&ev.DataContentType, contentType)
			set(&ev.PartitionKey, key)
			set(&ev.CorrelationID, correlation)
			for _, h := range headers {
				k, v, ok := strings.Cut(h, "=")
				if !ok {
					return fmt.Errorf("--ext %q: want name=value", h)
				}
				if err := ev.SetExtension(k, v); err != nil {
					return fmt.Errorf("--ext %q: %w", h, err)
				}
			}
			if ev.Type == "" {
				return errors.New("--type is required (what happened, for example shop.order.placed.v1)")
			}
			if event.IsJSONContentType(ev.DataContentType) && len(ev.Data) > 0 && !json.Valid(ev.Data) {
				return fmt.Errorf("content type %s, but the data is not valid JSON (%s); fix the data or pass another --content-type", ev.DataContentType, preview(ev.Data))
			}
			if topic == "" {
				return errors.New("--topic is required")
			}
			if err := ev.Validate(); err != nil {
				return err
			}
			if c, err := a.credsFor(a.brokerURL()); err != nil {
				return err
			} else if c != nil && c.Restricted() && !c.MayPublish(natsjs.StreamName(topic)+".0."+ev.Type) {
				return fmt.Errorf("publish to topic %q: permission denied: the credentials of %s do not allow it", topic, c.Name())
			}
			b, binding, err := a.openBroker(cmd.Context(), a.brokerURL())
			if err != nil {
				return err
			}
			defer b.Close()
			h := make(map[string]string, binding.HeaderCount(ev))
			binding.Encode(ev, h)
			msg := &broker.Message{Topic: topic, Route: ev.Type, Key: ev.Key(), ID: ev.ID, Header: h, Data: ev.Data}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			if err := b.Publish(ctx, msg); err != nil {
				return fmt.Errorf("publish to topic %q: %w", topic, err)
			}
			if a.output == "json" {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(map[string]string{"id": ev.ID, "topic": topic, "type": ev.Type})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "published %s to topic %s (type %s)\n", ev.ID, topic, ev.Type)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&topic, "topic", "", "topic to publish to (required)")
	fl.StringVar(&typ, "type", "", "event type, for example shop.order.placed.v1 (required)")
	fl.StringVar(&key, "key", "", "partition key (default: the subject)")
	fl.StringVar(&source, "source", "herald-cli", "event source")
	fl.StringVar(&subject, "subject", "", "event subject: the aggregate id")
	fl.StringVar(&id, "id", "", "event id (default: a new UUIDv7); republishing an id is deduplicated")
	fl.StringVar(&contentType, "content-type", "", "datacontenttype (default: application/json for JSON data, else text/plain)")
	fl.StringVar(&correlation, "correlation-id", "", "correlation id")
	fl.StringArrayVar(&headers, "ext", nil, "extension attribute name=value (repeatable)")
	fl.BoolVar(&structured, "structured", false, "DATA is a structured-mode JSON CloudEvent")
	return cmd
}

func newSubCmd(a *app) *cobra.Command {
	var (
		topic, group, from string
		types              []string
		count              int
		idle, expireAfter  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "sub",
		Short: "Print the events of a topic as they arrive",
		Long: `Subscribe to a topic and print each event, acknowledging it once printed.
With --group, the subscription joins that consumer group (and resumes where
it left off); without, it uses a private group that is deleted on exit, and
that the broker deletes by itself --expire-after after its last member went
away even when herald sub was killed (NATS; on Kafka and RabbitMQ the private
group is deleted on exit only, see docs/operations.md).
-o json prints one structured CloudEvent (application/cloudevents+json) per line.`,
		Example: `  herald sub --topic orders --from first
  herald sub --topic orders --group audit --type shop.order.placed.v1 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if topic == "" {
				return errors.New("--topic is required")
			}
			start, err := broker.ParseStart(from)
			if err != nil {
				return fmt.Errorf("--from: %w", err)
			}
			if group == "" && expireAfter < minExpireAfter {
				return fmt.Errorf("--expire-after %v: must be at least %v (the subscription renews its pulls every few seconds)", expireAfter, minExpireAfter)
			}
			b, binding, err := a.openBroker(cmd.Context(), a.brokerURL())
			if err != nil {
				return err
			}
			defer b.Close()
			private := group == ""
			opts := broker.SubscribeOptions{Start: start, Routes: types}
			if private {
				var r [4]byte
				_, _ = rand.Read(r[:])
				group = "herald-sub-" + hex.EncodeToString(r[:])
				opts.InactiveAfter = expireAfter
			}
			opts.Group = group
			sub, err := b.Subscribe(cmd.Context(), topic, opts)
			if err != nil {
				return fmt.Errorf("subscribe to topic %q: %w", topic, err)
			}
			if gd, ok := b.(groupDeleter); ok && private {
				defer func() {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					_ = gd.DeleteGroup(ctx, topic, group)
				}()
			}
			defer sub.Close()
			w := bufio.NewWriter(cmd.OutOrStdout())
			defer w.Flush()
			for n := 0; count == 0 || n < count; n++ {
				ctx := cmd.Context()
				var cancel context.CancelFunc = func() {}
				if idle > 0 {
					ctx, cancel = context.WithTimeout(ctx, idle)
				}
				d, err := sub.Next(ctx)
				cancel()
				if err != nil {
					if errors.Is(err, context.DeadlineExceeded) && idle > 0 {
						return nil
					}
					if cmd.Context().Err() != nil {
						return nil // interrupted
					}
					return err
				}
				if err := printDelivery(w, d, binding, a.output); err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "herald: message %d of topic %s: %v\n", d.Sequence(), topic, err)
				}
				if err := w.Flush(); err != nil {
					return err
				}
				if err := d.Ack(cmd.Context()); err != nil {
					return fmt.Errorf("ack: %w", err)
				}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&topic, "topic", "", "topic to read (required)")
	fl.StringVar(&group, "group", "", "consumer group to join (default: a private group deleted on exit)")
	fl.StringVar(&from, "from", "new", "where a new group starts: new, first, seq:N or time:RFC3339")
	fl.StringArrayVar(&types, "type", nil, "only events of this type (repeatable)")
	fl.IntVar(&count, "count", 0, "exit after this many events (0: run until interrupted)")
	fl.DurationVar(&idle, "idle-timeout", 0, "exit when no event arrives for this long (0: wait forever)")
	fl.DurationVar(&expireAfter, "expire-after", 30*time.Second, "without --group: the broker deletes the private group this long after its member is gone, even if killed")
	return cmd
}

// minExpireAfter is the shortest --expire-after: a live subscription
// renews its pulls every 5s, and must not look gone between two.
const minExpireAfter = 10 * time.Second

// printDelivery writes one line for d. Messages that are not CloudEvents
// are printed raw.
func printDelivery(w io.Writer, d broker.Delivery, binding event.Binding, output string) error {
	m := d.Message()
	ev, err := binding.Decode(m.Header, m.Data)
	if err != nil {
		if output == "json" {
			b, _ := json.Marshal(map[string]any{"topic": m.Topic, "route": m.Route, "sequence": d.Sequence(), "data": string(m.Data), "error": err.Error()})
			fmt.Fprintf(w, "%s\n", b)
		} else {
			fmt.Fprintf(w, "#%d %s (not a CloudEvent: %v) %s\n", d.Sequence(), m.Route, err, m.Data)
		}
		return nil
	}
	if output == "json" {
		b, err := event.MarshalJSON(ev)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s\n", b)
		return nil
	}
	ts := ""
	if !ev.Time.IsZero() {
		ts = ev.Time.Format(time.RFC3339Nano) + " "
	}
	subj := ""
	if ev.Subject != "" {
		subj = " subject=" + ev.Subject
	}
	fmt.Fprintf(w, "#%d %s%s id=%s%s %s\n", d.Sequence(), ts, ev.Type, ev.ID, subj, printable(ev))
	return nil
}

func printable(ev *event.Event) string {
	if event.IsJSONContentType(ev.DataContentType) || strings.HasPrefix(ev.DataContentType, "text/") {
		return string(ev.Data)
	}
	return fmt.Sprintf("(%d bytes of %s)", len(ev.Data), ev.DataContentType)
}

// preview quotes the start of data for an error message.
func preview(data []byte) string {
	const n = 40
	if len(data) > n {
		return fmt.Sprintf("%q...", data[:n])
	}
	return fmt.Sprintf("%q", data)
}
