package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// APIClient speaks the subscriptions API (`herald subscribe` uses it). It
// is safe for concurrent use.
type APIClient struct {
	base string
	hc   *http.Client
}

// NewAPIClient returns a client for the admin API at baseURL
// ("http://127.0.0.1:8080"). hc nil uses a client with a 30s timeout.
func NewAPIClient(baseURL string, hc *http.Client) (*APIClient, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("admin URL %q: want http://host:port", baseURL)
	}
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &APIClient{base: strings.TrimRight(baseURL, "/"), hc: hc}, nil
}

// Create creates s and returns it with its defaults and secret.
func (c *APIClient) Create(ctx context.Context, s Subscription) (SubscriptionStatus, error) {
	var out SubscriptionStatus
	err := c.do(ctx, http.MethodPost, "/api/v1/subscriptions", s, &out)
	return out, err
}

// List returns every subscription.
func (c *APIClient) List(ctx context.Context) ([]SubscriptionStatus, error) {
	var out []SubscriptionStatus
	err := c.do(ctx, http.MethodGet, "/api/v1/subscriptions", nil, &out)
	return out, err
}

// Get returns the subscription of group.
func (c *APIClient) Get(ctx context.Context, group string) (SubscriptionStatus, error) {
	var out SubscriptionStatus
	err := c.do(ctx, http.MethodGet, "/api/v1/subscriptions/"+url.PathEscape(group), nil, &out)
	return out, err
}

// Delete removes the subscription of group.
func (c *APIClient) Delete(ctx context.Context, group string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/subscriptions/"+url.PathEscape(group), nil, nil)
}

// do sends a request and decodes a 2xx answer into out; other answers
// become a *Problem.
func (c *APIClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin API %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("admin API %s: read answer: %w", c.base, err)
	}
	if resp.StatusCode/100 != 2 {
		p := &Problem{Status: resp.StatusCode}
		var e struct {
			Error string `json:"error"`
		}
		switch {
		case json.Unmarshal(b, p) == nil && p.Detail != "":
		case json.Unmarshal(b, &e) == nil && e.Error != "":
			p.Detail = e.Error
		default:
			p.Detail = fmt.Sprintf("%s %s: %d %s", method, path, resp.StatusCode, bytes.TrimSpace(b))
		}
		return p
	}
	if out == nil || len(b) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("admin API %s: answer does not decode: %w", c.base, err)
	}
	return nil
}
