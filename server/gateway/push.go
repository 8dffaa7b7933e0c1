package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
)

// pusher delivers one push subscription's group to its webhook.
type pusher struct {
	g       *Gateway
	sub     Subscription
	key     []byte
	hc      *http.Client
	backoff consumer.Backoff
	ctx     context.Context // ends when the pusher stops
	cancel  context.CancelFunc
	done    chan struct{}
}

func (g *Gateway) startPush(s Subscription) (*pusher, error) {
	key, err := SecretKey(s.Secret)
	if err != nil {
		return nil, err
	}
	start, err := broker.ParseStart(s.Start)
	if err != nil {
		return nil, err
	}
	opts := []consumer.Option{
		consumer.WithConcurrency(s.Concurrency),
		consumer.WithStart(start),
		consumer.WithLogger(g.log),
		// Retries happen inside the delivery, so later events of a key
		// wait for an earlier one; the broker redelivers only what a
		// stopped server did not finish.
		consumer.WithShutdownTimeout(time.Duration(s.Timeout) + 5*time.Second),
		consumer.WithMaxInFlight(max(4*s.Concurrency, 64)),
	}
	if g.cfg.observer != nil {
		opts = append(opts, consumer.WithObserver(g.cfg.observer))
	}
	r, err := g.c.Router(s.Group, []string{s.Topic}, opts...)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = s.Concurrency
	p := &pusher{
		g: g, sub: s, key: key,
		hc: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}},
		backoff: consumer.Backoff{Initial: time.Duration(s.RetryInitial), Max: time.Duration(s.RetryMax), Multiplier: 2, Jitter: 0.2},
		done:    make(chan struct{}),
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	r.HandleAll(p.deliver)
	go func() {
		defer close(p.done)
		defer tr.CloseIdleConnections()
		if err := r.Run(p.ctx); err != nil {
			g.log.Error("gateway: push subscription stopped", "group", s.Group, "topic", s.Topic, "error", err)
		}
	}()
	select {
	case <-r.Ready():
	case <-p.done:
		return nil, fmt.Errorf("gateway: push subscription %q could not join its group (see the log)", s.Group)
	case <-time.After(30 * time.Second):
		g.log.Warn("gateway: push subscription has not joined its group yet", "group", s.Group, "topic", s.Topic)
	}
	return p, nil
}

// stop ends the deliveries and waits for those in flight.
func (p *pusher) stop() {
	p.cancel()
	<-p.done
}

// permanentError is a webhook answer that retrying cannot fix.
type permanentError struct{ error }

// deliver posts the event to the webhook, retrying 5xx answers, 408,
// 429, timeouts and connection failures with backoff, up to MaxAttempts;
// other answers, and retries exhausted, send it to the dead-letter queue.
func (p *pusher) deliver(ctx context.Context, m *consumer.Message) error {
	h, err := pushHeaders(m.Event)
	if err != nil {
		return consumer.Permanent(err)
	}
	for attempt := 1; ; attempt++ {
		wait, err := p.post(ctx, m.Event, h)
		if err == nil {
			return nil
		}
		var perm permanentError
		if errors.As(err, &perm) {
			return consumer.Permanent(err)
		}
		if attempt >= p.sub.MaxAttempts {
			return consumer.Permanent(fmt.Errorf("%w after %d attempts: %w", consumer.ErrRetriesExhausted, attempt, err))
		}
		wait = max(wait, p.backoff.Delay(attempt))
		select {
		case <-p.ctx.Done():
			return consumer.RetryAfter(err, 0) // stopping: another run delivers it
		case <-time.After(wait):
		}
	}
}

// post makes one delivery. It returns how long the webhook asked to wait
// (Retry-After) with a retryable error.
func (p *pusher) post(ctx context.Context, e *event.Event, h http.Header) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(p.sub.Timeout))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.sub.Push, bytes.NewReader(e.Data))
	if err != nil {
		return 0, permanentError{fmt.Errorf("push URL %q: %w", p.sub.Push, err)}
	}
	req.Header = h.Clone()
	now := time.Now()
	req.Header.Set(HeaderWebhookTimestamp, strconv.FormatInt(now.Unix(), 10))
	req.Header.Set(HeaderWebhookSignature, Sign(p.key, e.ID, now, e.Data))
	resp, err := p.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("webhook %s: %w", p.sub.Push, err)
	}
	defer resp.Body.Close()
	excerpt, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	code := resp.StatusCode
	if code >= 200 && code < 300 {
		return 0, nil
	}
	err = fmt.Errorf("webhook %s answered %d %s: %s", p.sub.Push, code, http.StatusText(code), bytes.TrimSpace(excerpt))
	switch {
	case code >= 500, code == http.StatusRequestTimeout, code == http.StatusTooManyRequests:
		return min(retryAfter(resp.Header.Get("Retry-After")), time.Duration(p.sub.RetryMax)), err
	}
	return 0, permanentError{err}
}

func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// pushHeaders returns the CloudEvents binary-mode headers of e:
// attributes as ce- headers (values percent-encoded where the HTTP
// binding requires), datacontenttype as Content-Type, and Webhook-Id.
func pushHeaders(e *event.Event) (http.Header, error) {
	if e == nil {
		return nil, errors.New("no event to push")
	}
	m := make(map[string]string, event.NATS.HeaderCount(e))
	event.NATS.Encode(e, m)
	h := make(http.Header, len(m)+4)
	for k, v := range m {
		if k == "ce-datacontenttype" {
			h.Set("Content-Type", v)
			continue
		}
		h.Set(k, percentEncode(v))
	}
	h.Set(HeaderWebhookID, e.ID)
	h.Set("User-Agent", "herald-push")
	return h, nil
}

// percentEncode encodes a header value the way the CloudEvents HTTP
// binding specifies (space, '"', '%' and anything outside printable ASCII
// as %XX of its UTF-8 bytes) when it holds characters a header cannot
// carry as they are (control characters, non-ASCII); printable ASCII
// values go unchanged, which is what receivers that do not decode (such
// as sdk-go) read back correctly.
func percentEncode(v string) string {
	clean := true
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' || c > '~' {
			clean = false
			break
		}
	}
	if clean {
		return v
	}
	var b strings.Builder
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c <= ' ' || c > '~' || c == '"' || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
