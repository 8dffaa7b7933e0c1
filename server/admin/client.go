package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/server/audit"
)

// Client speaks the admin API. It is safe for concurrent use.
type Client struct {
	base string
	hc   *http.Client
}

// APIError is an error answer of the admin API.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string { return e.Message }

// NewClient returns a client for the admin API at baseURL
// ("http://127.0.0.1:8080"). hc nil uses a client with a 5-minute timeout
// (a redrive of a large queue takes a while).
func NewClient(baseURL string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("admin URL %q: want http://host:port", baseURL)
	}
	if hc == nil {
		hc = &http.Client{Timeout: 5 * time.Minute}
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), hc: hc}, nil
}

// do sends a request and decodes a 2xx answer into out.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return fmt.Errorf("the admin API at %s did not answer %s %s within %v: %w (a server that is stuck or overloaded; raise --timeout for long operations)", c.base, method, path, c.hc.Timeout, err)
		}
		return fmt.Errorf("cannot reach the admin API at %s: %w (is `herald serve` running? set --admin-url or $HERALD_ADMIN_URL)", c.base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return fmt.Errorf("admin API %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var eb ErrorBody
		if json.Unmarshal(b, &eb) != nil || eb.Error == "" {
			eb.Error = fmt.Sprintf("admin API %s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
		}
		return &APIError{Status: resp.StatusCode, Message: eb.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("admin API %s %s: answer: %w", method, path, err)
	}
	return nil
}

// IsNotFound reports whether err is a 404 answer.
func IsNotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == http.StatusNotFound
}

// Topics lists the topics.
func (c *Client) Topics(ctx context.Context) ([]TopicInfo, error) {
	var out struct {
		Topics []TopicInfo `json:"topics"`
	}
	return out.Topics, c.do(ctx, http.MethodGet, "/api/v1/topics", nil, nil, &out)
}

// SetRetention changes a topic's retention.
func (c *Client) SetRetention(ctx context.Context, topic string, r RetentionRequest) (*TopicInfo, error) {
	var out TopicInfo
	if err := c.do(ctx, http.MethodPut, "/api/v1/topics/"+url.PathEscape(topic)+"/retention", nil, r, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DLQs summarises the dead-letter topics.
func (c *Client) DLQs(ctx context.Context) ([]DLQ, error) {
	var out struct {
		DLQs []DLQ `json:"dlqs"`
	}
	return out.DLQs, c.do(ctx, http.MethodGet, "/api/v1/dlq", nil, nil, &out)
}

// DLQEntries lists a page of topic's dead letters after sequence after.
func (c *Client) DLQEntries(ctx context.Context, topic string, after uint64, limit int) (*EntryPage, error) {
	q := url.Values{}
	if after > 0 {
		q.Set("after", strconv.FormatUint(after, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out EntryPage
	if err := c.do(ctx, http.MethodGet, "/api/v1/dlq/"+url.PathEscape(topic), q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DLQEntry returns one dead letter by id ("orders.dlq:42").
func (c *Client) DLQEntry(ctx context.Context, id string) (*Entry, error) {
	topic, seq, err := ParseEntryID(id)
	if err != nil {
		return nil, err
	}
	var out Entry
	path := "/api/v1/dlq/" + url.PathEscape(topic) + "/" + strconv.FormatUint(seq, 10)
	if err := c.do(ctx, http.MethodGet, path, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Redrive republishes dead letters.
func (c *Client) Redrive(ctx context.Context, req RedriveRequest) (*RedriveResult, error) {
	var out RedriveResult
	if err := c.do(ctx, http.MethodPost, "/api/v1/dlq/redrive", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Purge removes every dead letter of topic; confirm must repeat it.
func (c *Client) Purge(ctx context.Context, topic, confirm string) (*PurgeResult, error) {
	var out PurgeResult
	if err := c.do(ctx, http.MethodDelete, "/api/v1/dlq/"+url.PathEscape(topic), url.Values{"confirm": {confirm}}, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Lag reports the groups' lag, optionally of one topic and/or group.
func (c *Client) Lag(ctx context.Context, topic, group string) ([]GroupLag, error) {
	q := url.Values{}
	if topic != "" {
		q.Set("topic", topic)
	}
	if group != "" {
		q.Set("group", group)
	}
	var out struct {
		Groups []GroupLag `json:"groups"`
	}
	return out.Groups, c.do(ctx, http.MethodGet, "/api/v1/groups", q, nil, &out)
}

// Replay rewinds a group or replays a topic into a new group.
func (c *Client) Replay(ctx context.Context, req ReplayRequest) (*ReplayResult, error) {
	var out ReplayResult
	if err := c.do(ctx, http.MethodPost, "/api/v1/replay", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Audit returns a page of the audit log.
func (c *Client) Audit(ctx context.Context, q audit.Query) (*AuditPage, error) {
	var out AuditPage
	if err := c.do(ctx, http.MethodGet, "/api/v1/audit", AuditQueryValues(q), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Trace returns the causation tree of a correlation id: up to 10,000
// events without payloads, or 1,000 with.
func (c *Client) Trace(ctx context.Context, correlation string, payload bool) (*Trace, error) {
	var q url.Values
	if payload {
		q = url.Values{"payload": {"true"}}
	}
	var out Trace
	if err := c.do(ctx, http.MethodGet, "/api/v1/trace/"+url.PathEscape(correlation), q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
