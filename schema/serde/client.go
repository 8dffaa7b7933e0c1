package serde

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/schema"
	"github.com/heraldhq/herald/schema/internal/compat"
)

// Client talks to a Confluent-compatible schema registry (Herald's or
// another) over HTTP. Schemas fetched by id are cached for the life of the
// client: an id's schema never changes. Safe for concurrent use.
type Client struct {
	base string
	hc   *http.Client

	mu   sync.RWMutex
	byID map[int]schema.Schema
}

// ClientOption configures a Client.
type ClientOption func(*Client)

// WithHTTPClient sets the HTTP client. Default: a client with a 30s
// timeout and keep-alive connections.
func WithHTTPClient(hc *http.Client) ClientOption { return func(c *Client) { c.hc = hc } }

// NewClient returns a client for the registry at baseURL
// ("http://127.0.0.1:8081").
func NewClient(baseURL string, opts ...ClientOption) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("serde: registry URL %q: want http(s)://host:port", baseURL)
	}
	c := &Client{base: strings.TrimRight(baseURL, "/"), hc: &http.Client{Timeout: 30 * time.Second}, byID: map[int]schema.Schema{}}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// URL returns the registry's base URL.
func (c *Client) URL() string { return c.base }

type errorBody struct {
	Code    int    `json:"error_code"`
	Message string `json:"message"`
}

// do sends a request and decodes the answer into out. Registry errors come
// back as *schema.Error with the registry's code.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("serde: encode request for %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("serde: %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/vnd.schemaregistry.v1+json")
	if in != nil {
		req.Header.Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("serde: registry %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("serde: read answer to %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e errorBody
		if json.Unmarshal(b, &e) != nil || e.Code == 0 {
			e = errorBody{Code: resp.StatusCode, Message: strings.TrimSpace(string(b))}
		}
		return &schema.Error{Code: e.Code, Message: fmt.Sprintf("registry: %s %s: %s (error %d)", method, path, e.Message, e.Code)}
	}
	if out == nil {
		return nil
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = b
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("serde: decode answer to %s %s: %w", method, path, err)
	}
	return nil
}

func esc(subject string) string { return url.PathEscape(subject) }

func versionPath(v int) string {
	if v == schema.Latest {
		return "latest"
	}
	return strconv.Itoa(v)
}

type schemaWire struct {
	Schema     string             `json:"schema"`
	SchemaType string             `json:"schemaType,omitempty"`
	References []schema.Reference `json:"references,omitempty"`
}

func toWire(s schema.Schema) schemaWire {
	t := string(s.Type)
	if s.Type == schema.Avro {
		t = ""
	}
	return schemaWire{Schema: s.Text, SchemaType: t, References: s.References}
}

func (w schemaWire) toSchema() schema.Schema {
	t, err := schema.ParseType(w.SchemaType)
	if err != nil {
		t = schema.Type(w.SchemaType)
	}
	return schema.Schema{Type: t, Text: w.Schema, References: w.References}
}

type versionWire struct {
	Subject string `json:"subject"`
	Version int    `json:"version"`
	ID      int    `json:"id"`
	schemaWire
}

func (v versionWire) toVersion() schema.SubjectVersion {
	return schema.SubjectVersion{Subject: v.Subject, Version: v.Version, ID: v.ID, Schema: v.toSchema()}
}

// SchemaByID returns the schema with id, from the cache when it has it.
func (c *Client) SchemaByID(ctx context.Context, id int) (schema.Schema, error) {
	c.mu.RLock()
	s, ok := c.byID[id]
	c.mu.RUnlock()
	if ok {
		return s, nil
	}
	var w schemaWire
	if err := c.do(ctx, http.MethodGet, "/schemas/ids/"+strconv.Itoa(id), nil, &w); err != nil {
		return schema.Schema{}, err
	}
	s = w.toSchema()
	c.mu.Lock()
	c.byID[id] = s
	c.mu.Unlock()
	return s, nil
}

// Register registers s under subject and returns its id (the existing id
// if s is already registered there).
func (c *Client) Register(ctx context.Context, subject string, s schema.Schema, normalize bool) (int, error) {
	path := "/subjects/" + esc(subject) + "/versions"
	if normalize {
		path += "?normalize=true"
	}
	var out struct {
		ID int `json:"id"`
	}
	if err := c.do(ctx, http.MethodPost, path, toWire(s), &out); err != nil {
		return 0, err
	}
	c.mu.Lock()
	if _, ok := c.byID[out.ID]; !ok {
		c.byID[out.ID] = s
	}
	c.mu.Unlock()
	return out.ID, nil
}

// Lookup returns the version of subject holding s.
func (c *Client) Lookup(ctx context.Context, subject string, s schema.Schema, normalize bool) (schema.SubjectVersion, error) {
	path := "/subjects/" + esc(subject)
	if normalize {
		path += "?normalize=true"
	}
	var out versionWire
	if err := c.do(ctx, http.MethodPost, path, toWire(s), &out); err != nil {
		return schema.SubjectVersion{}, err
	}
	return out.toVersion(), nil
}

// Check tells whether s is compatible with subject's versions as its level
// asks (version schema.CheckAll) or with one version; it returns every
// incompatibility.
func (c *Client) Check(ctx context.Context, subject string, version int, s schema.Schema) (schema.CheckResult, error) {
	path := "/compatibility/subjects/" + esc(subject) + "/versions"
	if version != schema.CheckAll {
		path += "/" + versionPath(version)
	}
	var out struct {
		Compatible bool     `json:"is_compatible"`
		Messages   []string `json:"messages"`
	}
	if err := c.do(ctx, http.MethodPost, path+"?verbose=true", toWire(s), &out); err != nil {
		return schema.CheckResult{}, err
	}
	return schema.CheckResult{Compatible: out.Compatible, Messages: out.Messages}, nil
}

// Subjects lists the subjects.
func (c *Client) Subjects(ctx context.Context, deleted bool) ([]string, error) {
	var out []string
	err := c.do(ctx, http.MethodGet, "/subjects?deleted="+strconv.FormatBool(deleted), nil, &out)
	return out, err
}

// Versions lists a subject's versions.
func (c *Client) Versions(ctx context.Context, subject string, deleted bool) ([]int, error) {
	var out []int
	err := c.do(ctx, http.MethodGet, "/subjects/"+esc(subject)+"/versions?deleted="+strconv.FormatBool(deleted), nil, &out)
	return out, err
}

// Version returns one version of subject (schema.Latest for the newest).
func (c *Client) Version(ctx context.Context, subject string, version int) (schema.SubjectVersion, error) {
	var out versionWire
	err := c.do(ctx, http.MethodGet, "/subjects/"+esc(subject)+"/versions/"+versionPath(version), nil, &out)
	return out.toVersion(), err
}

// Config returns subject's compatibility level ("" for the global one),
// falling back to the global level.
func (c *Client) Config(ctx context.Context, subject string) (schema.Level, error) {
	path := "/config"
	if subject != "" {
		path += "/" + esc(subject) + "?defaultToGlobal=true"
	}
	var out struct {
		Level schema.Level `json:"compatibilityLevel"`
	}
	err := c.do(ctx, http.MethodGet, path, nil, &out)
	return out.Level, err
}

// SetConfig sets subject's compatibility level ("" for the global one).
func (c *Client) SetConfig(ctx context.Context, subject string, level schema.Level) error {
	path := "/config"
	if subject != "" {
		path += "/" + esc(subject)
	}
	return c.do(ctx, http.MethodPut, path, map[string]string{"compatibility": string(level)}, nil)
}

// Resolve returns the transitive references of s, fetched from the
// registry, ordered so that each comes after the ones it uses: what
// schema.Parse needs.
func (c *Client) Resolve(ctx context.Context, s schema.Schema) ([]compat.Ref, error) {
	var out []compat.Ref
	seen := map[string]bool{}
	var walk func(refs []schema.Reference, depth int) error
	walk = func(refs []schema.Reference, depth int) error {
		if depth > 32 {
			return errors.New("serde: references nest deeper than 32 levels")
		}
		for _, r := range refs {
			if seen[r.Name] {
				continue
			}
			seen[r.Name] = true
			sv, err := c.Version(ctx, r.Subject, r.Version)
			if err != nil {
				return fmt.Errorf("serde: reference %q: %w", r.Name, err)
			}
			if err := walk(sv.Schema.References, depth+1); err != nil {
				return err
			}
			out = append(out, compat.Ref{Name: r.Name, Text: sv.Schema.Text})
		}
		return nil
	}
	return out, walk(s.References, 0)
}

// Parse resolves s's references through the registry and parses it.
func (c *Client) Parse(ctx context.Context, s schema.Schema) (schema.Parsed, error) {
	refs, err := c.Resolve(ctx, s)
	if err != nil {
		return nil, err
	}
	return schema.Parse(s.Type, s.Text, refs...)
}
