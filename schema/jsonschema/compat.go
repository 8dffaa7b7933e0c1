package jsonschema

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"

	sj "github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/heraldhq/herald/schema/internal/compat"
)

// Check returns every reason a document valid under writer may be invalid
// under reader (nil when reader accepts everything writer accepts). dir
// only changes the wording. Comparisons are memoised per pair of
// sub-schemas, recursive schemas terminate, and the check stops with
// ctx's error when ctx is done.
func Check(ctx context.Context, reader, writer *Schema, dir compat.Direction) ([]compat.Incompatibility, error) {
	c := &checker{ctx: ctx, dir: dir, done: map[pair][]compat.Incompatibility{}, inProgress: map[pair]bool{}}
	out := c.check(reader.root, writer.root, "#", 0)
	if c.err != nil {
		return nil, c.err
	}
	return out, nil
}

type pair struct{ r, w *sj.Schema }

type checker struct {
	ctx        context.Context
	dir        compat.Direction
	done       map[pair][]compat.Incompatibility
	inProgress map[pair]bool
	steps      int
	err        error
}

const maxDepth = 256

// anything is the schema that accepts every document.
var anything = &sj.Schema{}

func inc(path, format string, args ...any) compat.Incompatibility {
	return compat.Incompatibility{Path: path, Message: fmt.Sprintf(format, args...)}
}

// fromTo orders two descriptions old -> new.
func (c *checker) fromTo(readerSide, writerSide string) (string, string) {
	if c.dir == compat.ReaderIsNew {
		return writerSide, readerSide
	}
	return readerSide, writerSide
}

// tightened words a constraint that the reader applies more strictly.
func (c *checker) tightened(path, kw string, r, w string) compat.Incompatibility {
	from, to := c.fromTo(r, w)
	if c.dir == compat.ReaderIsNew {
		return inc(path, "%s tightened from %s to %s", kw, from, to)
	}
	return inc(path, "%s loosened from %s to %s", kw, from, to)
}

func (c *checker) check(r, w *sj.Schema, path string, depth int) []compat.Incompatibility {
	if c.err != nil {
		return nil
	}
	c.steps++
	if c.steps%256 == 1 {
		if err := c.ctx.Err(); err != nil {
			c.err = err
			return nil
		}
	}
	if depth > maxDepth {
		return []compat.Incompatibility{inc(path, "schemas nest deeper than %d levels", maxDepth)}
	}
	if r == nil {
		r = anything
	}
	if w == nil {
		w = anything
	}
	key := pair{r, w}
	if out, ok := c.done[key]; ok {
		return rebase(out, path)
	}
	if c.inProgress[key] {
		return nil // coinductive: assumed compatible while being compared
	}
	c.inProgress[key] = true
	out := c.compare(r, w, path, depth+1)
	delete(c.inProgress, key)
	if c.err == nil {
		c.done[key] = relative(out, path)
	}
	return out
}

// relative and rebase store memoised results with paths relative to the
// pair, so one comparison reached from two places reports both places.
func relative(out []compat.Incompatibility, path string) []compat.Incompatibility {
	rel := make([]compat.Incompatibility, len(out))
	for i, o := range out {
		o.Path = strings.TrimPrefix(o.Path, path)
		rel[i] = o
	}
	return rel
}

func rebase(out []compat.Incompatibility, path string) []compat.Incompatibility {
	abs := make([]compat.Incompatibility, len(out))
	for i, o := range out {
		o.Path = path + o.Path
		abs[i] = o
	}
	return abs
}

func isTrue(s *sj.Schema) bool  { return s.Bool != nil && *s.Bool }
func isFalse(s *sj.Schema) bool { return s.Bool != nil && !*s.Bool }

func (c *checker) compare(r, w *sj.Schema, path string, depth int) []compat.Incompatibility {
	if isTrue(r) || isFalse(w) {
		return nil
	}
	if isFalse(r) {
		return []compat.Incompatibility{c.tightened(path, "schema", "false", "a schema accepting documents")}
	}

	// References: a $ref is one more conjunct of its schema.
	if w.Ref != nil {
		rest := *w
		rest.Ref = nil
		if isEmpty(&rest) {
			return c.check(r, w.Ref, path, depth)
		}
		// The writer's documents satisfy both; the reader is fine if it
		// accepts either set.
		if out := c.check(r, w.Ref, path, depth); len(out) == 0 {
			return nil
		}
		return c.check(r, &rest, path, depth)
	}
	if r.Ref != nil {
		rest := *r
		rest.Ref = nil
		out := c.check(r.Ref, w, path, depth)
		if !isEmpty(&rest) {
			out = append(out, c.check(&rest, w, path, depth)...)
		}
		return out
	}

	// Combinators.
	if len(r.AllOf) > 0 {
		rest := *r
		rest.AllOf = nil
		var out []compat.Incompatibility
		for i, b := range r.AllOf {
			out = append(out, c.check(b, w, path+"/allOf/"+strconv.Itoa(i), depth)...)
		}
		return append(out, c.check(&rest, w, path, depth)...)
	}
	if len(w.AllOf) > 0 {
		rest := *w
		rest.AllOf = nil
		best := c.check(r, &rest, path, depth)
		if len(best) == 0 {
			return nil
		}
		for _, b := range w.AllOf {
			out := c.check(r, b, path, depth)
			if len(out) == 0 {
				return nil
			}
			if len(out) < len(best) {
				best = out
			}
		}
		return best
	}
	if wb := branches(w); wb != nil {
		rest := *w
		rest.AnyOf, rest.OneOf = nil, nil
		if isEmpty(&rest) || len(c.check(r, &rest, path, depth)) > 0 {
			var out []compat.Incompatibility
			for i, b := range wb {
				out = append(out, c.check(r, b, path+"/"+branchKw(w)+"/"+strconv.Itoa(i), depth)...)
			}
			return out
		}
		return nil
	}
	if rb := branches(r); rb != nil {
		rest := *r
		rest.AnyOf, rest.OneOf = nil, nil
		out := c.check(&rest, w, path, depth)
		for _, b := range rb {
			if len(c.check(b, w, path, depth)) == 0 {
				return out
			}
		}
		return append(out, inc(path, "no branch of the reader's %s accepts the writer's documents (a %s branch was %s)", branchKw(r), branchKw(r), c.dir.Verb(false)))
	}
	if r.Not != nil {
		// The reader refuses r.Not; fine if the writer already refuses a
		// superset of it.
		if w.Not == nil || len(c.check(w.Not, r.Not, path+"/not", depth)) > 0 {
			return []compat.Incompatibility{inc(path+"/not", "\"not\" %s or widened", c.dir.Verb(true))}
		}
	}
	var out []compat.Incompatibility
	if r.If != nil || w.If != nil {
		out = append(out, c.conditional(r, w, path, depth)...)
	}

	out = append(out, c.types(r, w, path)...)
	out = append(out, c.values(r, w, path)...)
	out = append(out, c.strings(r, w, path)...)
	out = append(out, c.numbers(r, w, path)...)
	out = append(out, c.objects(r, w, path, depth)...)
	out = append(out, c.arrays(r, w, path, depth)...)
	return out
}

func branches(s *sj.Schema) []*sj.Schema {
	if len(s.AnyOf) > 0 {
		return s.AnyOf
	}
	if len(s.OneOf) > 0 {
		return s.OneOf
	}
	return nil
}

func branchKw(s *sj.Schema) string {
	if len(s.AnyOf) > 0 {
		return "anyOf"
	}
	return "oneOf"
}

// isEmpty reports whether s has no assertion at all (only annotations).
func isEmpty(s *sj.Schema) bool {
	if s.Bool != nil {
		return *s.Bool
	}
	return s.Ref == nil && s.RecursiveRef == nil && s.DynamicRef == nil && s.Types == nil && s.Enum == nil &&
		s.Const == nil && s.Not == nil && len(s.AllOf) == 0 && len(s.AnyOf) == 0 && len(s.OneOf) == 0 &&
		s.If == nil && s.Format == nil && s.MaxProperties == nil && s.MinProperties == nil &&
		len(s.Required) == 0 && s.PropertyNames == nil && len(s.Properties) == 0 &&
		len(s.PatternProperties) == 0 && s.AdditionalProperties == nil && len(s.Dependencies) == 0 &&
		len(s.DependentRequired) == 0 && len(s.DependentSchemas) == 0 && s.UnevaluatedProperties == nil &&
		s.MinItems == nil && s.MaxItems == nil && !s.UniqueItems && s.Contains == nil && s.Items == nil &&
		s.AdditionalItems == nil && len(s.PrefixItems) == 0 && s.Items2020 == nil && s.UnevaluatedItems == nil &&
		s.MinLength == nil && s.MaxLength == nil && s.Pattern == nil && s.Maximum == nil && s.Minimum == nil &&
		s.ExclusiveMaximum == nil && s.ExclusiveMinimum == nil && s.MultipleOf == nil && len(s.Extensions) == 0
}

func (c *checker) conditional(r, w *sj.Schema, path string, depth int) []compat.Incompatibility {
	if r.If == nil {
		return nil // the writer's condition only narrows its documents
	}
	if w.If == nil {
		return []compat.Incompatibility{inc(path+"/if", "conditional (if/then/else) %s", c.dir.Verb(true))}
	}
	same := len(c.check(r.If, w.If, path+"/if", depth)) == 0 && len(c.check(w.If, r.If, path+"/if", depth)) == 0
	if !same {
		return []compat.Incompatibility{inc(path+"/if", "condition (if) changed")}
	}
	var out []compat.Incompatibility
	if r.Then != nil {
		out = append(out, c.check(r.Then, w.Then, path+"/then", depth)...)
	}
	if r.Else != nil {
		out = append(out, c.check(r.Else, w.Else, path+"/else", depth)...)
	}
	return out
}

// typeSet returns the JSON types s allows, nil for any.
func typeSet(s *sj.Schema) []string {
	if s.Types == nil || s.Types.IsEmpty() {
		return nil
	}
	return s.Types.ToStrings()
}

func (c *checker) types(r, w *sj.Schema, path string) []compat.Incompatibility {
	rt := typeSet(r)
	if rt == nil {
		return nil
	}
	wt := typeSet(w)
	if wt == nil {
		if w.Enum != nil || w.Const != nil {
			return nil // checked value by value
		}
		from, to := c.fromTo(strings.Join(rt, ", "), "any")
		return []compat.Incompatibility{inc(path, "type changed from %s to %s", from, to)}
	}
	var missing []string
	for _, t := range wt {
		if slices.Contains(rt, t) || (t == "integer" && slices.Contains(rt, "number")) {
			continue
		}
		missing = append(missing, t)
	}
	if len(missing) == 0 {
		return nil
	}
	from, to := c.fromTo(strings.Join(rt, ", "), strings.Join(wt, ", "))
	return []compat.Incompatibility{inc(path, "type changed from [%s] to [%s]", from, to)}
}

func jsonEqual(a, b any) bool {
	an, aok := toRat(a)
	bn, bok := toRat(b)
	if aok && bok {
		return an.Cmp(bn) == 0
	}
	return reflect.DeepEqual(a, b)
}

func toRat(v any) (*big.Rat, bool) {
	switch n := v.(type) {
	case json.Number:
		r, ok := new(big.Rat).SetString(string(n))
		return r, ok
	case float64:
		return new(big.Rat).SetFloat64(n), true
	case int:
		return big.NewRat(int64(n), 1), true
	}
	return nil, false
}

func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// writerValues returns the finite set of values the writer allows, if it
// has one.
func writerValues(w *sj.Schema) ([]any, bool) {
	if w.Const != nil {
		return []any{*w.Const}, true
	}
	if w.Enum != nil {
		return w.Enum.Values, true
	}
	return nil, false
}

func (c *checker) values(r, w *sj.Schema, path string) []compat.Incompatibility {
	var allowed []any
	kw := ""
	switch {
	case r.Const != nil:
		allowed, kw = []any{*r.Const}, "const"
	case r.Enum != nil:
		allowed, kw = r.Enum.Values, "enum"
	default:
		return nil
	}
	wv, finite := writerValues(w)
	if !finite {
		return []compat.Incompatibility{inc(path, "%s %s", kw, c.dir.Verb(true))}
	}
	var out []compat.Incompatibility
	for _, v := range wv {
		if !slices.ContainsFunc(allowed, func(a any) bool { return jsonEqual(a, v) }) {
			out = append(out, inc(path, "%s value %s %s", kw, show(v), c.dir.Verb(false)))
		}
	}
	return out
}

func intp(p *int) string {
	if p == nil {
		return "none"
	}
	return strconv.Itoa(*p)
}

// maxTighter reports whether the reader's upper bound is stricter.
func maxTighter(r, w *int) bool { return r != nil && (w == nil || *r < *w) }

// minTighter reports whether the reader's lower bound is stricter.
func minTighter(r, w *int) bool { return r != nil && *r > 0 && (w == nil || *r > *w) }

func (c *checker) strings(r, w *sj.Schema, path string) []compat.Incompatibility {
	var out []compat.Incompatibility
	if maxTighter(r.MaxLength, w.MaxLength) {
		out = append(out, c.tightened(path, "maxLength", intp(r.MaxLength), intp(w.MaxLength)))
	}
	if minTighter(r.MinLength, w.MinLength) {
		out = append(out, c.tightened(path, "minLength", intp(r.MinLength), intp(w.MinLength)))
	}
	if r.Pattern != nil && (w.Pattern == nil || w.Pattern.String() != r.Pattern.String()) {
		if w.Pattern == nil {
			out = append(out, inc(path, "pattern %q %s", r.Pattern.String(), c.dir.Verb(true)))
		} else {
			from, to := c.fromTo(r.Pattern.String(), w.Pattern.String())
			out = append(out, inc(path, "pattern changed from %q to %q", from, to))
		}
	}
	if r.Format != nil && (w.Format == nil || w.Format.Name != r.Format.Name) {
		if w.Format == nil {
			out = append(out, inc(path, "format %q %s", r.Format.Name, c.dir.Verb(true)))
		} else {
			from, to := c.fromTo(r.Format.Name, w.Format.Name)
			out = append(out, inc(path, "format changed from %q to %q", from, to))
		}
	}
	return out
}

func ratp(p *big.Rat) string {
	if p == nil {
		return "none"
	}
	return p.RatString()
}

// upper returns the writer's effective upper bound and whether it is
// exclusive.
func bound(incl, excl *big.Rat, upper bool) (*big.Rat, bool) {
	switch {
	case incl == nil && excl == nil:
		return nil, false
	case incl == nil:
		return excl, true
	case excl == nil:
		return incl, false
	}
	if c := incl.Cmp(excl); (upper && c < 0) || (!upper && c > 0) {
		return incl, false
	}
	return excl, true
}

func (c *checker) numbers(r, w *sj.Schema, path string) []compat.Incompatibility {
	var out []compat.Incompatibility
	rMax, rMaxEx := bound(r.Maximum, r.ExclusiveMaximum, true)
	wMax, wMaxEx := bound(w.Maximum, w.ExclusiveMaximum, true)
	if rMax != nil {
		if wMax == nil || wMax.Cmp(rMax) > 0 || (wMax.Cmp(rMax) == 0 && rMaxEx && !wMaxEx) {
			out = append(out, c.tightened(path, "maximum", ratp(rMax), ratp(wMax)))
		}
	}
	rMin, rMinEx := bound(r.Minimum, r.ExclusiveMinimum, false)
	wMin, wMinEx := bound(w.Minimum, w.ExclusiveMinimum, false)
	if rMin != nil {
		if wMin == nil || wMin.Cmp(rMin) < 0 || (wMin.Cmp(rMin) == 0 && rMinEx && !wMinEx) {
			out = append(out, c.tightened(path, "minimum", ratp(rMin), ratp(wMin)))
		}
	}
	if r.MultipleOf != nil {
		ok := false
		if w.MultipleOf != nil {
			q := new(big.Rat).Quo(w.MultipleOf, r.MultipleOf)
			ok = q.IsInt()
		}
		if !ok {
			out = append(out, c.tightened(path, "multipleOf", ratp(r.MultipleOf), ratp(w.MultipleOf)))
		}
	}
	return out
}

// additional returns what a schema says of properties it does not name:
// nil schema for "anything" (open), a false schema for closed, or a schema.
func additional(s *sj.Schema) *sj.Schema {
	switch ap := s.AdditionalProperties.(type) {
	case bool:
		if !ap {
			f := false
			return &sj.Schema{Bool: &f}
		}
	case *sj.Schema:
		return ap
	}
	return nil
}

// propertySchema returns the schema s applies to a property it does not
// list in properties: a matching patternProperties schema, else additional.
func propertySchema(s *sj.Schema, name string) *sj.Schema {
	for re, ps := range s.PatternProperties {
		if re.MatchString(name) {
			return ps
		}
	}
	return additional(s)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (c *checker) objects(r, w *sj.Schema, path string, depth int) []compat.Incompatibility {
	var out []compat.Incompatibility
	for _, req := range r.Required {
		if !slices.Contains(w.Required, req) {
			out = append(out, inc(path+"/required", "required property %q %s", req, c.dir.Verb(true)))
		}
	}
	for _, name := range sortedKeys(w.Properties) {
		wp := w.Properties[name]
		ppath := path + "/properties/" + name
		if rp, ok := r.Properties[name]; ok {
			out = append(out, c.check(rp, wp, ppath, depth)...)
			continue
		}
		rs := propertySchema(r, name)
		if rs == nil {
			continue // open reader: accepts it as it is
		}
		if isFalse(rs) {
			out = append(out, inc(ppath, "property %q %s while the content model is closed", name, c.dir.Verb(false)))
			continue
		}
		if sub := c.check(rs, wp, ppath, depth); len(sub) > 0 {
			out = append(out, inc(ppath, "property %q %s: the reader's additional properties schema does not accept it", name, c.dir.Verb(false)))
		}
	}
	for _, name := range sortedKeys(r.Properties) {
		if _, ok := w.Properties[name]; ok {
			continue
		}
		rp := r.Properties[name]
		ppath := path + "/properties/" + name
		ws := propertySchema(w, name)
		if ws != nil && isFalse(ws) {
			continue // the writer never writes it
		}
		if sub := c.check(rp, ws, ppath, depth); len(sub) > 0 {
			if ws == nil {
				out = append(out, inc(ppath, "property %q %s while the content model is open", name, c.dir.Verb(true)))
			} else {
				out = append(out, sub...)
			}
		}
	}
	rAP, wAP := additional(r), additional(w)
	switch {
	case rAP == nil:
	case isFalse(rAP) && (wAP == nil || !isFalse(wAP)):
		out = append(out, inc(path+"/additionalProperties", "content model closed (additionalProperties false)%s", c.closedWording()))
	case !isFalse(rAP):
		out = append(out, c.check(rAP, wAP, path+"/additionalProperties", depth)...)
	}
	for re, rps := range r.PatternProperties {
		var wps *sj.Schema
		for wre, s := range w.PatternProperties {
			if wre.String() == re.String() {
				wps = s
			}
		}
		if wps == nil {
			wps = wAP
		}
		if wps != nil && isFalse(wps) {
			continue
		}
		out = append(out, c.check(rps, wps, path+"/patternProperties/"+re.String(), depth)...)
	}
	if maxTighter(r.MaxProperties, w.MaxProperties) {
		out = append(out, c.tightened(path, "maxProperties", intp(r.MaxProperties), intp(w.MaxProperties)))
	}
	if minTighter(r.MinProperties, w.MinProperties) {
		out = append(out, c.tightened(path, "minProperties", intp(r.MinProperties), intp(w.MinProperties)))
	}
	for _, name := range sortedKeys(r.DependentRequired) {
		if !slices.Equal(r.DependentRequired[name], w.DependentRequired[name]) {
			out = append(out, inc(path+"/dependentRequired/"+name, "dependentRequired for %q changed", name))
		}
	}
	if r.PropertyNames != nil {
		out = append(out, c.check(r.PropertyNames, w.PropertyNames, path+"/propertyNames", depth)...)
	}
	return out
}

func (c *checker) closedWording() string {
	if c.dir == compat.ReaderIsNew {
		return " where it was open"
	}
	return " where it is now open"
}

// items returns an array schema's positional item schemas and the schema
// of the items after them (nil for anything, a false schema for none).
func items(s *sj.Schema) ([]*sj.Schema, *sj.Schema) {
	if len(s.PrefixItems) > 0 || s.Items2020 != nil {
		return s.PrefixItems, s.Items2020
	}
	switch it := s.Items.(type) {
	case *sj.Schema:
		return nil, it
	case []*sj.Schema:
		switch ai := s.AdditionalItems.(type) {
		case bool:
			if !ai {
				f := false
				return it, &sj.Schema{Bool: &f}
			}
		case *sj.Schema:
			return it, ai
		}
		return it, nil
	}
	return nil, nil
}

func (c *checker) arrays(r, w *sj.Schema, path string, depth int) []compat.Incompatibility {
	var out []compat.Incompatibility
	rp, rRest := items(r)
	wp, wRest := items(w)
	for i := 0; i < max(len(rp), len(wp)); i++ {
		ri, wi := rRest, wRest
		if i < len(rp) {
			ri = rp[i]
		}
		if i < len(wp) {
			wi = wp[i]
		}
		if ri == nil || (wi != nil && isFalse(wi)) {
			continue
		}
		out = append(out, c.check(ri, wi, path+"/items/"+strconv.Itoa(i), depth)...)
	}
	if rRest != nil && (wRest == nil || !isFalse(wRest)) {
		out = append(out, c.check(rRest, wRest, path+"/items", depth)...)
	}
	if maxTighter(r.MaxItems, w.MaxItems) {
		out = append(out, c.tightened(path, "maxItems", intp(r.MaxItems), intp(w.MaxItems)))
	}
	if minTighter(r.MinItems, w.MinItems) {
		out = append(out, c.tightened(path, "minItems", intp(r.MinItems), intp(w.MinItems)))
	}
	if r.UniqueItems && !w.UniqueItems {
		out = append(out, inc(path, "uniqueItems %s", c.dir.Verb(true)))
	}
	if r.Contains != nil {
		if w.Contains == nil || len(c.check(r.Contains, w.Contains, path+"/contains", depth)) > 0 {
			out = append(out, inc(path+"/contains", "contains %s or tightened", c.dir.Verb(true)))
		}
	}
	return out
}
