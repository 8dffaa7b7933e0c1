// Package admin is Herald's operations API: dead-letter queues (list,
// show, redrive, purge), replay (rewind a group, replay into a new group),
// consumer lag and topic retention, over the JetStream layout of
// broker/natsjs, served as JSON over HTTP by [Handler] and spoken to by
// [Client].
//
//	svc, err := admin.New(b) // b is the server's *natsjs.Broker
//	mux.Handle("/api/v1/", admin.Handler(svc, auditIndex))
//
// Identifiers: a dead-letter entry is "<dead-letter topic>:<stream
// sequence>", for example "orders.dlq:42". A group is the name the
// services gave it; its key-ordered partition consumers are one group.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker/natsjs"
)

// Sentinel errors the service returns (wrapped); the HTTP handler maps
// them to status codes.
var (
	// ErrNotFound: the topic, group or entry does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: the request is malformed (400).
	ErrInvalid = errors.New("invalid request")
	// ErrConflict: the request conflicts with the current state (409), for
	// example a replay into a group that already exists.
	ErrConflict = errors.New("conflict")
)

// Metadata keys natsjs writes on streams and consumers.
const (
	metaTopic      = "herald.topic"
	metaPartitions = "herald.partitions"
	metaGroup      = "herald.group"
)

// Service performs the operations. It is safe for concurrent use.
type Service struct {
	b           *natsjs.Broker
	js          jetstream.JetStream
	nc          *nats.Conn
	log         *slog.Logger
	pauseBound  time.Duration
	now         func() time.Time
	es          eventStore
	projections *pgxpool.Pool
	// ev, when set, performs the operations on the Kafka or RabbitMQ
	// broker events live on (WithEvents).
	ev *events
}

// Option configures a Service.
type Option func(*Service)

// WithLogger sets the logger. Default slog.Default().
func WithLogger(l *slog.Logger) Option { return func(s *Service) { s.log = l } }

// WithPauseBound sets how long a rewind pauses a group at most: the pause
// is lifted when the rewind ends, and expires on its own after this long
// if the process performing it dies. Default 30s.
func WithPauseBound(d time.Duration) Option { return func(s *Service) { s.pauseBound = d } }

// New returns a service over b's JetStream.
func New(b *natsjs.Broker, opts ...Option) (*Service, error) {
	if b == nil {
		return nil, errors.New("admin: broker is nil")
	}
	s := &Service{b: b, js: b.JetStream(), nc: b.Conn(), log: slog.Default(), pauseBound: 30 * time.Second, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	if s.pauseBound <= 0 {
		return nil, fmt.Errorf("admin: pause bound %v must be positive", s.pauseBound)
	}
	if s.ev != nil {
		if err := s.ev.init(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// topicStream is a Herald topic's stream.
type topicStream struct {
	topic      string
	stream     string
	partitions int
	info       *jetstream.StreamInfo
}

func fromInfo(si *jetstream.StreamInfo) (topicStream, bool) {
	topic, ok := si.Config.Metadata[metaTopic]
	if !ok {
		return topicStream{}, false
	}
	p, err := strconv.Atoi(si.Config.Metadata[metaPartitions])
	if err != nil || p < 1 {
		p = 1
	}
	return topicStream{topic: topic, stream: si.Config.Name, partitions: p, info: si}, true
}

// topics lists the streams that hold Herald topics.
func (s *Service) topics(ctx context.Context) ([]topicStream, error) {
	l := s.js.ListStreams(ctx)
	var out []topicStream
	for si := range l.Info() {
		if t, ok := fromInfo(si); ok {
			out = append(out, t)
		}
	}
	if err := l.Err(); err != nil {
		return nil, fmt.Errorf("admin: list streams: %w", err)
	}
	return out, nil
}

// streamGone reports whether err says a stream does not exist. Scans over
// every topic use it to pass over a topic deleted while they ran: a topic
// that is gone has no groups, lag or dead letters to report.
func streamGone(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrStreamNotFound) ||
		errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamNotFound
}

// topic returns topic's stream, or an error wrapping ErrNotFound.
func (s *Service) topic(ctx context.Context, topic string) (topicStream, jetstream.Stream, error) {
	name := natsjs.StreamName(topic)
	st, err := s.js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return topicStream{}, nil, fmt.Errorf("admin: topic %q: %w", topic, ErrNotFound)
	}
	if err != nil {
		return topicStream{}, nil, fmt.Errorf("admin: topic %q: %w", topic, err)
	}
	ts, ok := fromInfo(st.CachedInfo())
	if !ok || ts.topic != topic {
		return topicStream{}, nil, fmt.Errorf("admin: topic %q: %w: stream %q does not hold it", topic, ErrNotFound, name)
	}
	return ts, st, nil
}

// seqForTime returns the sequence of the first message of stream stored at
// or after t, or the stream's last sequence + 1 when there is none. It uses
// the stream message get API with start_time, which nats.go does not wrap.
func (s *Service) seqForTime(ctx context.Context, st jetstream.Stream, t time.Time) (uint64, error) {
	info := st.CachedInfo()
	req := fmt.Sprintf(`{"start_time":%q,"next_by_subj":">"}`, t.UTC().Format(time.RFC3339Nano))
	var resp struct {
		Message *struct {
			Seq uint64 `json:"seq"`
		} `json:"message"`
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := s.request(ctx, "$JS.API.STREAM.MSG.GET."+info.Config.Name, []byte(req), &resp); err != nil {
		return 0, err
	}
	if resp.Error != nil {
		if resp.Error.ErrCode == int(jetstream.JSErrCodeMessageNotFound) {
			fresh, err := st.Info(ctx)
			if err != nil {
				return 0, err
			}
			return fresh.State.LastSeq + 1, nil
		}
		return 0, fmt.Errorf("message at time %s: %s", t.Format(time.RFC3339), resp.Error.Description)
	}
	if resp.Message == nil {
		return 0, fmt.Errorf("message at time %s: empty answer", t.Format(time.RFC3339))
	}
	return resp.Message.Seq, nil
}

// request sends a JetStream API request and decodes the answer into v.
func (s *Service) request(ctx context.Context, subject string, body []byte, v any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	m, err := s.nc.RequestWithContext(ctx, subject, body)
	if err != nil {
		return fmt.Errorf("jetstream api %s: %w", subject, err)
	}
	if err := json.Unmarshal(m.Data, v); err != nil {
		return fmt.Errorf("jetstream api %s: answer: %w", subject, err)
	}
	return nil
}
