package admin

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

// FilterKeys are the fields a dead-letter filter can test.
var FilterKeys = []string{"type", "error", "group", "handler", "subject", "source", "id", "key", "correlation"}

// Filter selects dead-letter entries. The zero value matches every entry.
type Filter struct {
	conds []cond
	text  string
}

type cond struct {
	key string
	re  *regexp.Regexp
}

// ParseFilter reads a comma-separated list of conditions, all of which
// must hold:
//
//	KEY=VALUE   the field equals VALUE; '*' in VALUE matches any run of characters
//	KEY~=REGEXP the field matches the regular expression (anywhere in it)
//
// KEY is one of [FilterKeys]: type (the event type), error (the last
// failure's text), group, handler, subject, source, id (the event id), key
// (the partition key), correlation. A comma that is not followed by
// "KEY=" or "KEY~=" belongs to the value before it, so regular
// expressions may contain commas. Example: "type=shop.order.*,error~=timeout".
func ParseFilter(s string) (Filter, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Filter{}, nil
	}
	if len(s) > 4096 {
		return Filter{}, fmt.Errorf("%w: filter is longer than 4096 characters", ErrInvalid)
	}
	if !utf8.ValidString(s) {
		return Filter{}, fmt.Errorf("%w: filter %q is not valid UTF-8", ErrInvalid, s)
	}
	var parts []string
	for _, p := range strings.Split(s, ",") {
		if len(parts) > 0 && !startsCond(p) {
			parts[len(parts)-1] += "," + p
			continue
		}
		parts = append(parts, p)
	}
	f := Filter{text: s}
	for _, p := range parts {
		c, err := parseCond(strings.TrimSpace(p))
		if err != nil {
			return Filter{}, err
		}
		f.conds = append(f.conds, c)
	}
	return f, nil
}

// startsCond reports whether p begins with a known "KEY=" or "KEY~=".
func startsCond(p string) bool {
	p = strings.TrimLeft(p, " ")
	i := strings.IndexAny(p, "=~")
	return i > 0 && slices.Contains(FilterKeys, p[:i])
}

func parseCond(p string) (cond, error) {
	i := strings.IndexAny(p, "=~")
	if i <= 0 {
		return cond{}, fmt.Errorf("%w: filter condition %q: want KEY=VALUE or KEY~=REGEXP with KEY one of %s", ErrInvalid, p, strings.Join(FilterKeys, ", "))
	}
	key := p[:i]
	if !slices.Contains(FilterKeys, key) {
		return cond{}, fmt.Errorf("%w: filter condition %q: unknown key %q (want one of %s)", ErrInvalid, p, key, strings.Join(FilterKeys, ", "))
	}
	rest := p[i:]
	switch {
	case strings.HasPrefix(rest, "~="):
		re, err := regexp.Compile(rest[2:])
		if err != nil {
			return cond{}, fmt.Errorf("%w: filter condition %q: %w", ErrInvalid, p, err)
		}
		return cond{key: key, re: re}, nil
	case strings.HasPrefix(rest, "="):
		re, err := globRegexp(rest[1:])
		if err != nil {
			return cond{}, fmt.Errorf("%w: filter condition %q: %w", ErrInvalid, p, err)
		}
		return cond{key: key, re: re}, nil
	}
	return cond{}, fmt.Errorf("%w: filter condition %q: want KEY=VALUE or KEY~=REGEXP", ErrInvalid, p)
}

// globRegexp compiles a value where '*' matches any run of characters.
func globRegexp(v string) (*regexp.Regexp, error) {
	parts := strings.Split(v, "*")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return regexp.Compile("^" + strings.Join(parts, ".*") + "$")
}

// Match reports whether e satisfies every condition.
func (f Filter) Match(e *Entry) bool {
	for _, c := range f.conds {
		if !c.re.MatchString(e.field(c.key)) {
			return false
		}
	}
	return true
}

// String returns the filter as it was parsed.
func (f Filter) String() string { return f.text }

func (e *Entry) field(key string) string {
	switch key {
	case "type":
		return e.Type
	case "error":
		return e.Error
	case "group":
		return e.Group
	case "handler":
		return e.Handler
	case "subject":
		return e.Subject
	case "source":
		return e.Source
	case "id":
		return e.EventID
	case "key":
		return e.Key
	case "correlation":
		return e.CorrelationID
	}
	return ""
}
