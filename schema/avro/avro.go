// Package avro parses Avro schemas for the registry and checks whether data
// written with one schema can be read with another, following the schema
// resolution rules of the Avro specification: field defaults, numeric and
// string/bytes promotions, enum symbols and defaults, record and field
// aliases, fixed sizes, and union branch matching.
//
// Parsing uses github.com/hamba/avro/v2 with a fresh name cache for every
// schema, so names never leak from one subject into another.
package avro

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	havro "github.com/hamba/avro/v2"

	"github.com/heraldhq/herald/schema/internal/compat"
)

// Schema is a parsed Avro schema. It is immutable and safe for concurrent
// use.
type Schema struct {
	root havro.Schema
	text string
}

// Parse parses text, resolving named types from refs first (each ref is a
// complete Avro schema text whose named types text may use). Refs must be
// ordered so that a ref comes after the refs it uses itself.
func Parse(text string, refs ...Ref) (*Schema, error) {
	cache := &havro.SchemaCache{}
	for _, r := range refs {
		if _, err := havro.ParseWithCache(r.Text, "", cache); err != nil {
			return nil, fmt.Errorf("avro: reference %q: %w", r.Name, err)
		}
	}
	s, err := havro.ParseWithCache(text, "", cache)
	if err != nil {
		return nil, fmt.Errorf("avro: %w", err)
	}
	return &Schema{root: s, text: text}, nil
}

// Avro returns the parsed hamba/avro schema, for encoding and decoding.
func (s *Schema) Avro() havro.Schema { return s.root }

// Text returns the schema text as given to Parse.
func (s *Schema) Text() string { return s.text }

// Canonical returns the Parsing Canonical Form of the schema (names fully
// qualified, attributes that do not affect the binary encoding removed).
func (s *Schema) Canonical() string { return s.root.String() }

// Normalize returns text with insignificant whitespace removed, so that two
// spellings of one schema compare equal without dropping docs or custom
// attributes.
func Normalize(text string) string {
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(text)); err != nil {
		return strings.TrimSpace(text)
	}
	return b.String()
}

// Check returns every reason data written with writer cannot be read with
// reader (nil when it can). dir only changes the wording.
func Check(reader, writer *Schema, dir compat.Direction) []compat.Incompatibility {
	c := &checker{dir: dir, inProgress: map[pair]bool{}}
	c.check(reader.root, writer.root, rootPath(reader.root))
	return c.out
}

type pair struct{ r, w string }

type checker struct {
	dir        compat.Direction
	out        []compat.Incompatibility
	inProgress map[pair]bool
}

func (c *checker) add(path, format string, args ...any) {
	c.out = append(c.out, compat.Incompatibility{Path: path, Message: fmt.Sprintf(format, args...)})
}

// try runs check in a scratch checker and returns what it found.
func (c *checker) try(r, w havro.Schema, path string) []compat.Incompatibility {
	sub := &checker{dir: c.dir, inProgress: c.inProgress}
	sub.check(r, w, path)
	return sub.out
}

func deref(s havro.Schema) havro.Schema {
	for {
		ref, ok := s.(*havro.RefSchema)
		if !ok {
			return s
		}
		s = ref.Schema()
	}
}

func rootPath(s havro.Schema) string {
	if n, ok := deref(s).(havro.NamedSchema); ok {
		return n.Name()
	}
	return ""
}

// describe names a schema for a message: a full name for named types, the
// type otherwise.
func describe(s havro.Schema) string {
	s = deref(s)
	switch t := s.(type) {
	case havro.NamedSchema:
		return fmt.Sprintf("%s %q", t.Type(), t.FullName())
	case *havro.UnionSchema:
		names := make([]string, 0, len(t.Types()))
		for _, b := range t.Types() {
			names = append(names, branchName(b))
		}
		return "union [" + strings.Join(names, ", ") + "]"
	case *havro.ArraySchema:
		return "array of " + branchName(t.Items())
	case *havro.MapSchema:
		return "map of " + branchName(t.Values())
	default:
		return fmt.Sprintf("%q", string(s.Type()))
	}
}

func branchName(s havro.Schema) string {
	s = deref(s)
	if n, ok := s.(havro.NamedSchema); ok {
		return n.FullName()
	}
	return string(s.Type())
}

// promotable reports whether the spec lets a reader of type r read a value
// written as type w.
func promotable(w, r havro.Type) bool {
	switch w {
	case havro.Int:
		return r == havro.Long || r == havro.Float || r == havro.Double
	case havro.Long:
		return r == havro.Float || r == havro.Double
	case havro.Float:
		return r == havro.Double
	case havro.String:
		return r == havro.Bytes
	case havro.Bytes:
		return r == havro.String
	}
	return false
}

// changed words a type change in the direction old -> new.
func (c *checker) changed(path string, r, w havro.Schema) {
	from, to := describe(w), describe(r)
	if c.dir == compat.ReaderIsOld {
		from, to = to, from
	}
	c.add(path, "type changed from %s to %s", from, to)
}

func (c *checker) check(r, w havro.Schema, path string) {
	r, w = deref(r), deref(w)

	if wu, ok := w.(*havro.UnionSchema); ok {
		for _, wb := range wu.Types() {
			if ru, ok := r.(*havro.UnionSchema); ok {
				c.unionBranch(ru, wb, path)
				continue
			}
			if errs := c.try(r, wb, path); len(errs) > 0 {
				c.add(path, "union branch %q %s: the reader's %s cannot read it", branchName(wb), c.dir.Verb(false), describe(r))
			}
		}
		return
	}
	if ru, ok := r.(*havro.UnionSchema); ok {
		c.unionBranch(ru, w, path)
		return
	}

	if r.Type() != w.Type() {
		if promotable(w.Type(), r.Type()) {
			return
		}
		c.changed(path, r, w)
		return
	}

	switch rt := r.(type) {
	case *havro.RecordSchema:
		c.record(rt, w.(*havro.RecordSchema), path)
	case *havro.EnumSchema:
		c.enum(rt, w.(*havro.EnumSchema), path)
	case *havro.FixedSchema:
		wt := w.(*havro.FixedSchema)
		c.name(rt, wt, path)
		if rt.Size() != wt.Size() {
			from, to := wt.Size(), rt.Size()
			if c.dir == compat.ReaderIsOld {
				from, to = to, from
			}
			c.add(path, "fixed %q size changed from %d to %d", rt.FullName(), from, to)
		}
	case *havro.ArraySchema:
		c.check(rt.Items(), w.(*havro.ArraySchema).Items(), path+"[]")
	case *havro.MapSchema:
		c.check(rt.Values(), w.(*havro.MapSchema).Values(), path+"{}")
	}
}

// unionBranch checks that the reader union ru can read a value of the
// writer branch wb: the first reader branch of the same type and name is
// resolved against it; failing that, any branch that reads it (promotion).
func (c *checker) unionBranch(ru *havro.UnionSchema, wb havro.Schema, path string) {
	wb = deref(wb)
	var sameErrs []compat.Incompatibility
	sameFound := false
	for _, rb := range ru.Types() {
		rb = deref(rb)
		if rb.Type() != wb.Type() || !sameName(rb, wb) {
			continue
		}
		errs := c.try(rb, wb, path)
		if len(errs) == 0 {
			return
		}
		if !sameFound {
			sameFound, sameErrs = true, errs
		}
	}
	for _, rb := range ru.Types() {
		if len(c.try(rb, wb, path)) == 0 {
			return
		}
	}
	if sameFound {
		c.out = append(c.out, sameErrs...)
		return
	}
	c.add(path, "union branch %q %s: no branch of the reader's %s reads it", branchName(wb), c.dir.Verb(false), describe(ru))
}

func sameName(r, w havro.Schema) bool {
	rn, rok := r.(havro.NamedSchema)
	wn, wok := w.(havro.NamedSchema)
	if !rok || !wok {
		return rok == wok
	}
	return namesMatch(rn, wn)
}

// namesMatch applies the spec's naming rule: the unqualified names agree,
// or the writer's full name is one of the reader's aliases.
func namesMatch(r, w havro.NamedSchema) bool {
	return r.Name() == w.Name() || r.FullName() == w.FullName() || slices.Contains(r.Aliases(), w.FullName())
}

func (c *checker) name(r, w havro.NamedSchema, path string) bool {
	if namesMatch(r, w) {
		return true
	}
	from, to := w.FullName(), r.FullName()
	if c.dir == compat.ReaderIsOld {
		from, to = to, from
	}
	c.add(path, "%s name changed from %q to %q", r.Type(), from, to)
	return false
}

func (c *checker) record(r, w *havro.RecordSchema, path string) {
	if !c.name(r, w, path) {
		return
	}
	key := pair{r.FullName(), w.FullName()}
	if c.inProgress[key] {
		return // assumed compatible while it is being checked (recursive type)
	}
	c.inProgress[key] = true
	defer delete(c.inProgress, key)

	for _, rf := range r.Fields() {
		fpath := compat.Join(".", path, rf.Name())
		wf := findField(w, rf)
		if wf == nil {
			if !rf.HasDefault() {
				c.add(fpath, "field %q %s without a default", rf.Name(), c.dir.Verb(true))
			}
			continue
		}
		c.check(rf.Type(), wf.Type(), fpath)
	}
}

// findField returns the writer field the reader field rf reads: the one
// with the same name, else one named by an alias of rf (the spec applies
// the reader's aliases only).
func findField(w *havro.RecordSchema, rf *havro.Field) *havro.Field {
	for _, wf := range w.Fields() {
		if wf.Name() == rf.Name() {
			return wf
		}
	}
	for _, wf := range w.Fields() {
		if slices.Contains(rf.Aliases(), wf.Name()) {
			return wf
		}
	}
	return nil
}

func (c *checker) enum(r, w *havro.EnumSchema, path string) {
	if !c.name(r, w, path) {
		return
	}
	if r.HasDefault() {
		return
	}
	for _, sym := range w.Symbols() {
		if !slices.Contains(r.Symbols(), sym) {
			c.add(path, "enum %q symbol %q %s and the reader has no default symbol", r.FullName(), sym, c.dir.Verb(false))
		}
	}
}

// Ref is a referenced schema: Name is how the schema refers to it, Text
// its source.
type Ref = compat.Ref
