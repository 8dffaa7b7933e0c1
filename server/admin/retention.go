package admin

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/consumer"
)

// Retention changes a topic's retention limits. A nil field keeps the
// current limit; zero means unlimited. When a limit is reached the oldest
// messages go.
type Retention struct {
	MaxAge   *time.Duration
	MaxBytes *int64
	MaxMsgs  *int64
}

// RetentionRequest is Retention as text, as the HTTP API and the CLI take
// it: MaxAge a Go duration or a number of days ("72h", "7d"), MaxBytes a
// size ("1GB", "512MiB", "1000000"), MaxMsgs a count; "unlimited" (or 0)
// lifts a limit, "" keeps it.
type RetentionRequest struct {
	MaxAge   string `json:"max_age,omitempty"`
	MaxBytes string `json:"max_bytes,omitempty"`
	MaxMsgs  string `json:"max_msgs,omitempty"`
}

// Parse converts r, naming the field that does not parse.
func (r RetentionRequest) Parse() (Retention, error) {
	var out Retention
	if r.MaxAge != "" {
		d, err := parseAge(r.MaxAge)
		if err != nil {
			return Retention{}, err
		}
		out.MaxAge = &d
	}
	if r.MaxBytes != "" {
		n, err := parseLimit("max-bytes", r.MaxBytes, true)
		if err != nil {
			return Retention{}, err
		}
		out.MaxBytes = &n
	}
	if r.MaxMsgs != "" {
		n, err := parseLimit("max-msgs", r.MaxMsgs, false)
		if err != nil {
			return Retention{}, err
		}
		out.MaxMsgs = &n
	}
	if out.MaxAge == nil && out.MaxBytes == nil && out.MaxMsgs == nil {
		return Retention{}, fmt.Errorf("%w: retention: set at least one of max-age, max-bytes, max-msgs", ErrInvalid)
	}
	return out, nil
}

func unlimited(s string) bool { return s == "unlimited" || s == "none" || s == "0" || s == "-1" }

func parseAge(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if unlimited(s) {
		return 0, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseFloat(days, 64)
		if err == nil && n > 0 && n < 100*365 {
			return time.Duration(n * float64(24*time.Hour)), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < time.Second {
		return 0, fmt.Errorf("%w: max-age %q: want a duration of at least 1s (72h, 7d) or unlimited", ErrInvalid, s)
	}
	return d, nil
}

func parseLimit(name, s string, size bool) (int64, error) {
	s = strings.TrimSpace(s)
	if unlimited(s) {
		return 0, nil
	}
	var (
		n   uint64
		err error
	)
	if size {
		n, err = humanize.ParseBytes(s)
	} else {
		n, err = strconv.ParseUint(strings.ReplaceAll(s, "_", ""), 10, 64)
	}
	if err != nil || n == 0 || n > math.MaxInt64 {
		want := "a positive count"
		if size {
			want = "a size such as 1GB, 512MiB or 1000000"
		}
		return 0, fmt.Errorf("%w: %s %q: want %s, or unlimited", ErrInvalid, name, s, want)
	}
	return int64(n), nil
}

// ParseRetentionSpec reads "max-age:72h,max-bytes:1GB,max-msgs:1000000"
// (any subset, in any order).
func ParseRetentionSpec(spec string) (Retention, error) {
	var r RetentionRequest
	for _, part := range strings.Split(spec, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok || v == "" {
			return Retention{}, fmt.Errorf("%w: retention %q: want max-age:D,max-bytes:N,max-msgs:N", ErrInvalid, spec)
		}
		switch k {
		case "max-age":
			r.MaxAge = v
		case "max-bytes":
			r.MaxBytes = v
		case "max-msgs":
			r.MaxMsgs = v
		default:
			return Retention{}, fmt.Errorf("%w: retention %q: unknown limit %q (want max-age, max-bytes or max-msgs)", ErrInvalid, spec, k)
		}
	}
	return r.Parse()
}

// ParseTopicRetention reads "TOPIC=max-age:72h,max-msgs:1000000", the
// value of `herald serve --topic-retention`.
func ParseTopicRetention(s string) (string, Retention, error) {
	topic, spec, ok := strings.Cut(s, "=")
	if !ok {
		return "", Retention{}, fmt.Errorf("%w: topic retention %q: want TOPIC=max-age:72h,max-bytes:1GB,max-msgs:N", ErrInvalid, s)
	}
	if err := broker.ValidateName("topic", topic); err != nil {
		return "", Retention{}, fmt.Errorf("%w: topic retention %q: %w", ErrInvalid, s, err)
	}
	r, err := ParseRetentionSpec(spec)
	if err != nil {
		return "", Retention{}, err
	}
	return topic, r, nil
}

// SetRetention changes topic's retention, creating the topic with the
// default layout first if it does not exist. Limits r leaves nil are kept.
// Lowering a limit drops the messages beyond it at once.
func (s *Service) SetRetention(ctx context.Context, topic string, r Retention) (*TopicInfo, error) {
	if err := broker.ValidateName("topic", topic); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if s.ev != nil {
		return s.ev.setRetention(ctx, topic, r)
	}
	_, st, err := s.topic(ctx, topic)
	if errors.Is(err, ErrNotFound) {
		if err := s.b.EnsureTopic(ctx, topic, broker.TopicConfig{}); err != nil {
			return nil, fmt.Errorf("admin: create topic %q: %w", topic, err)
		}
		_, st, err = s.topic(ctx, topic)
	}
	if err != nil {
		return nil, err
	}
	cfg := st.CachedInfo().Config
	if r.MaxAge != nil {
		cfg.MaxAge = *r.MaxAge
	}
	if r.MaxBytes != nil {
		cfg.MaxBytes = limitOrUnlimited(*r.MaxBytes)
	}
	if r.MaxMsgs != nil {
		cfg.MaxMsgs = limitOrUnlimited(*r.MaxMsgs)
	}
	if cfg.Duplicates > cfg.MaxAge && cfg.MaxAge > 0 {
		// JetStream refuses a dedup window longer than the max age.
		cfg.Duplicates = cfg.MaxAge
	}
	st2, err := s.js.UpdateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("admin: retention of topic %q: %w", topic, err)
	}
	s.log.Info("topic retention set", "topic", topic, "max_age", cfg.MaxAge, "max_bytes", cfg.MaxBytes, "max_msgs", cfg.MaxMsgs)
	ts, _ := fromInfo(st2.CachedInfo())
	var depth uint64
	if !consumer.IsDeadLetterTopic(topic) {
		if d, err := s.js.Stream(ctx, natsjs.StreamName(DeadLetterTopicOf(topic))); err == nil {
			depth = d.CachedInfo().State.Msgs
		}
	}
	info := topicInfo(ts, depth)
	return &info, nil
}

func limitOrUnlimited(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}
