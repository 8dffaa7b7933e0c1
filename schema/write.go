package schema

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/heraldhq/herald/schema/internal/compat"
)

// maxRefDepth bounds reference chains (a references b references c...).
const maxRefDepth = 32

// maxAttempts bounds retries after a conflicting write by another registry.
const maxAttempts = 16

// MaxID is the largest schema id, and MaxVersion the largest version
// number: the Confluent API and its clients read both as 32-bit integers,
// so larger ones could be stored but never read back.
const (
	MaxID      = math.MaxInt32
	MaxVersion = math.MaxInt32
)

// MaxNesting bounds how deeply the objects and arrays of a schema's text
// nest. Real schemas stay far below it; a much deeper one costs seconds to
// minutes of CPU to compile, so it is refused before it is parsed.
const MaxNesting = 128

// nestingDepth returns the deepest nesting of '{' and '[' in text outside
// double-quoted strings, giving up once it passes limit.
func nestingDepth(text string, limit int) int {
	depth, deepest := 0, 0
	inString, escaped := false, false
	for i := 0; i < len(text); i++ {
		c := text[i]
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			depth++
			if depth > deepest {
				deepest = depth
				if deepest > limit {
					return deepest
				}
			}
		case '}', ']':
			if depth > 0 {
				depth--
			}
		}
	}
	return deepest
}

// resolveRefsLocked appends the transitive references of refs to out,
// dependencies first, and returns refs with "latest" (-1) resolved to a
// version number. r.mu is held.
func (r *Registry) resolveRefsLocked(refs []Reference, allowDeleted bool, depth int, seen map[string]bool, out *[]compat.Ref) ([]Reference, error) {
	if depth > maxRefDepth {
		return nil, newError(ErrInvalidSchema, "invalid schema: references nest deeper than %d levels", maxRefDepth)
	}
	resolved := make([]Reference, 0, len(refs))
	for _, ref := range refs {
		if ref.Name == "" || ref.Subject == "" {
			return nil, newError(ErrInvalidSchema, "invalid schema: reference %+v: name and subject are required", ref)
		}
		v, err := r.findVersionLocked(ref.Subject, ref.Version, allowDeleted)
		if err != nil {
			return nil, &Error{Code: ErrInvalidSchema.Code, Message: fmt.Sprintf("invalid schema: reference %q: %v", ref.Name, err), Err: err}
		}
		ref.Version = v.Version
		resolved = append(resolved, ref)
		if seen[ref.Name] {
			continue
		}
		seen[ref.Name] = true
		rec := r.st.schemas[v.ID]
		if rec == nil {
			return nil, newError(ErrInvalidSchema, "invalid schema: reference %q: schema id %d not found", ref.Name, v.ID)
		}
		if _, err := r.resolveRefsLocked(rec.refs, true, depth+1, seen, out); err != nil {
			return nil, err
		}
		*out = append(*out, compat.Ref{Name: ref.Name, Text: rec.text})
	}
	return resolved, nil
}

// prepared is a submitted schema, parsed, with its references resolved.
type prepared struct {
	schema Schema
	parsed Parsed
	fp     string
}

func (r *Registry) prepare(ctx context.Context, s Schema, deepNormalize bool) (*prepared, error) {
	t, err := ParseType(string(s.Type))
	if err != nil {
		return nil, &Error{Code: ErrInvalidSchema.Code, Message: err.Error(), Err: err}
	}
	s.Type = t
	if strings.TrimSpace(s.Text) == "" {
		return nil, newError(ErrInvalidSchema, "invalid schema: empty schema text")
	}
	if len(s.Text) > r.maxSchema {
		return nil, newError(ErrInvalidSchema, "invalid schema: %d bytes, more than the limit of %d", len(s.Text), r.maxSchema)
	}
	if d := nestingDepth(s.Text, MaxNesting); d > MaxNesting {
		return nil, newError(ErrInvalidSchema, "invalid schema: objects and arrays nest more than %d levels deep", MaxNesting)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var refs []compat.Ref
	r.mu.RLock()
	resolved, err := r.resolveRefsLocked(s.References, false, 0, map[string]bool{}, &refs)
	r.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	if len(resolved) == 0 {
		resolved = nil
	}
	s.References = resolved
	p, err := Parse(t, s.Text, refs...)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return &prepared{schema: s, parsed: p, fp: fingerprint(t, normalize(t, s.Text, deepNormalize), resolved)}, nil
}

// parsedByID returns the parsed schema with id, parsing it once.
func (r *Registry) parsedByID(id int) (Parsed, Type, error) {
	r.parsedMu.Lock()
	p, ok := r.parsed[id]
	r.parsedMu.Unlock()
	r.mu.RLock()
	rec := r.st.schemas[id]
	if rec == nil {
		r.mu.RUnlock()
		return nil, "", newError(ErrSchemaNotFound, "schema id %d not found", id)
	}
	if ok {
		r.mu.RUnlock()
		return p, rec.typ, nil
	}
	var refs []compat.Ref
	_, err := r.resolveRefsLocked(rec.refs, true, 0, map[string]bool{}, &refs)
	r.mu.RUnlock()
	if err != nil {
		return nil, "", err
	}
	p, err = Parse(rec.typ, rec.text, refs...)
	if err != nil {
		return nil, "", err
	}
	r.parsedMu.Lock()
	r.parsed[id] = p
	r.parsedMu.Unlock()
	return p, rec.typ, nil
}

// Parsed returns the parsed form of the schema with id (cached): an
// *avro.Schema, *jsonschema.Schema or *protobuf.Schema.
func (r *Registry) Parsed(id int) (Parsed, error) {
	if _, err := r.SchemaByID(id); err != nil {
		return nil, err
	}
	p, _, err := r.parsedByID(id)
	return p, err
}

// compare checks one direction between the new schema and an old id,
// memoised by fingerprint and id.
func (r *Registry) compare(ctx context.Context, t Type, p *prepared, oldID int, old Parsed, dir compat.Direction) ([]Incompatibility, error) {
	key := memoKey{newFP: p.fp, oldID: oldID, dir: dir}
	r.memoMu.Lock()
	incs, ok := r.memo[key]
	r.memoMu.Unlock()
	if ok {
		return incs, nil
	}
	cctx, cancel := context.WithTimeout(ctx, r.checkTimeout)
	defer cancel()
	var err error
	if dir == compat.ReaderIsNew {
		incs, err = check(cctx, t, p.parsed, old, dir)
	} else {
		incs, err = check(cctx, t, old, p.parsed, dir)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// Out of time: fail closed, and do not memoise.
		return []Incompatibility{{Message: fmt.Sprintf("comparison did not finish within %v", r.checkTimeout)}}, nil
	}
	r.memoMu.Lock()
	if len(r.memo) >= memoLimit {
		clear(r.memo)
	}
	r.memo[key] = incs
	r.memoMu.Unlock()
	return incs, nil
}

// compatMessages checks p against each version in against (newest first)
// as level asks and returns one message per incompatibility.
func (r *Registry) compatMessages(ctx context.Context, level Level, p *prepared, against []*versionDoc) ([]string, error) {
	var msgs []string
	for _, v := range against {
		old, typ, err := r.parsedByID(v.ID)
		if err != nil {
			msgs = append(msgs, fmt.Sprintf("version %d: stored schema id %d cannot be read: %v", v.Version, v.ID, err))
			continue
		}
		if typ != p.schema.Type {
			msgs = append(msgs, fmt.Sprintf("version %d: schema type changed from %s to %s", v.Version, typ, p.schema.Type))
			continue
		}
		for _, d := range []struct {
			on   bool
			dir  compat.Direction
			name string
		}{{level.backward(), compat.ReaderIsNew, "BACKWARD"}, {level.forward(), compat.ReaderIsOld, "FORWARD"}} {
			if !d.on {
				continue
			}
			incs, err := r.compare(ctx, typ, p, v.ID, old, d.dir)
			if err != nil {
				return nil, err
			}
			for _, inc := range incs {
				msgs = append(msgs, fmt.Sprintf("version %d (%s): %s", v.Version, d.name, inc))
			}
		}
	}
	return msgs, nil
}

// against returns the live versions a new schema is checked against at
// level, newest first.
func against(level Level, live []*versionDoc) []*versionDoc {
	if level == None || len(live) == 0 {
		return nil
	}
	if !level.transitive() {
		return live[len(live)-1:]
	}
	out := slices.Clone(live)
	slices.Reverse(out)
	return out
}

// RegisterOptions are the optional parts of a registration.
type RegisterOptions struct {
	// ID asks for a specific schema id. Only in IMPORT mode, or when the
	// schema already has that id.
	ID int
	// Version asks for a specific version number (IMPORT mode only).
	Version int
	// Normalize compares schemas in their normal form (the Avro Parsing
	// Canonical Form, JSON with sorted keys) when looking for an existing
	// id.
	Normalize bool
}

// Register adds s to subject as a new version and returns it, after
// checking it against the subject's earlier versions at the subject's
// compatibility level (ErrIncompatible with one message per problem). If
// s is already a live version of subject, that version is returned and
// nothing changes. A schema already registered under another subject keeps
// its id.
func (r *Registry) Register(ctx context.Context, subject string, s Schema, o RegisterOptions) (SubjectVersion, error) {
	if err := ValidateSubject(subject); err != nil {
		return SubjectVersion{}, err
	}
	if o.ID < 0 || o.Version < 0 {
		return SubjectVersion{}, newError(ErrInvalidSchema, "invalid id %d or version %d: must not be negative", o.ID, o.Version)
	}
	if o.ID > MaxID {
		return SubjectVersion{}, newError(ErrInvalidSchema, "invalid schema id %d: ids go from 1 to %d", o.ID, MaxID)
	}
	if o.Version > MaxVersion {
		return SubjectVersion{}, newError(ErrInvalidVersion, "invalid version %d: versions go from 1 to %d", o.Version, MaxVersion)
	}
	p, err := r.prepare(ctx, s, o.Normalize)
	if err != nil {
		return SubjectVersion{}, err
	}
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := ctx.Err(); err != nil {
			return SubjectVersion{}, err
		}
		sv, retry, err := r.registerOnce(ctx, subject, p, o)
		if !retry {
			return sv, err
		}
		if err != nil {
			return SubjectVersion{}, err
		}
	}
	return SubjectVersion{}, newError(ErrStore, "schema: subject %q: gave up after %d conflicting writes", subject, maxAttempts)
}

func (r *Registry) registerOnce(ctx context.Context, subject string, p *prepared, o RegisterOptions) (SubjectVersion, bool, error) {
	r.mu.RLock()
	mode := r.modeLocked(subject)
	level := r.levelLocked(subject)
	all := r.versionsLocked(subject, true)
	fpID := r.st.fps[p.fp]
	var live []*versionDoc
	for _, v := range all {
		if !v.Deleted {
			live = append(live, v)
		}
	}
	var existing *versionDoc
	for _, v := range live {
		if rec := r.st.schemas[v.ID]; rec != nil && rec.fp == p.fp {
			existing = v
		}
	}
	if existing != nil {
		sv := r.subjectVersion(existing)
		r.mu.RUnlock()
		if o.ID != 0 && o.ID != sv.ID {
			return SubjectVersion{}, false, newError(ErrIDDoesNotMatch, "subject %q already has this schema as version %d with id %d, not %d", subject, sv.Version, sv.ID, o.ID)
		}
		return sv, false, nil
	}
	nextVersion := 1
	if len(all) > 0 {
		nextVersion = all[len(all)-1].Version + 1
	}
	var idTaken *record
	if o.ID != 0 {
		idTaken = r.st.schemas[o.ID]
	}
	r.mu.RUnlock()

	if mode == ReadOnly {
		return SubjectVersion{}, false, newError(ErrOperationNotPermitted, "subject %q is in READONLY mode", subject)
	}
	id := fpID
	version := nextVersion
	if mode == Import {
		if o.ID != 0 {
			if idTaken != nil && idTaken.fp != p.fp {
				return SubjectVersion{}, false, newError(ErrIDDoesNotMatch, "schema id %d is already used by another schema", o.ID)
			}
			id = o.ID
		}
		if o.Version != 0 {
			for _, v := range all {
				if v.Version == o.Version {
					return SubjectVersion{}, false, newError(ErrInvalidVersion, "subject %q already has version %d", subject, o.Version)
				}
			}
			version = o.Version
		}
	} else {
		if o.ID != 0 && o.ID != fpID {
			return SubjectVersion{}, false, newError(ErrOperationNotPermitted, "a schema id can be chosen only in IMPORT mode (subject %q is %s)", subject, mode)
		}
		if o.Version != 0 && o.Version != nextVersion {
			return SubjectVersion{}, false, newError(ErrOperationNotPermitted, "a version number can be chosen only in IMPORT mode (subject %q is %s)", subject, mode)
		}
		msgs, err := r.compatMessages(ctx, level, p, against(level, live))
		if err != nil {
			return SubjectVersion{}, false, err
		}
		if len(msgs) > 0 {
			return SubjectVersion{}, false, &Error{Code: ErrIncompatible.Code, Message: fmt.Sprintf(
				"schema being registered is incompatible with an earlier schema for subject %q (%s): %s", subject, level, strings.Join(msgs, "; "))}
		}
	}

	var err error
	if id == 0 {
		if id, err = r.allocateID(ctx, 0); err != nil {
			return SubjectVersion{}, false, err
		}
	} else if mode == Import {
		if _, err = r.allocateID(ctx, id); err != nil {
			return SubjectVersion{}, false, err
		}
	}
	if id, err = r.storeSchema(ctx, id, p, mode == Import && o.ID != 0); err != nil {
		return SubjectVersion{}, false, err
	}
	doc := versionDoc{Subject: subject, Version: version, ID: id}
	b, _ := json.Marshal(doc)
	key := keyVersion(subject, version)
	rev, err := r.store.Create(ctx, key, b)
	if errors.Is(err, ErrKeyExists) {
		// Another registry took this version: learn it, then start over.
		if err := r.refresh(ctx, key); err != nil {
			return SubjectVersion{}, false, err
		}
		return SubjectVersion{}, true, nil
	}
	if err != nil {
		return SubjectVersion{}, false, storeError(err, "schema: write subject %q version %d", subject, version)
	}
	r.applyWrite(key, b, rev)
	return SubjectVersion{Subject: subject, Version: version, ID: id, Schema: p.schema}, false, nil
}

// allocateID returns a new id, larger than every id handed out so far. With
// atLeast > 0 (IMPORT) it only makes sure later ids are above atLeast and
// returns atLeast.
func (r *Registry) allocateID(ctx context.Context, atLeast int) (int, error) {
	for attempt := 0; attempt < maxAttempts*4; attempt++ {
		e, err := r.store.Get(ctx, keyNextID)
		var cur idDoc
		switch {
		case errors.Is(err, ErrKeyNotFound):
		case err != nil:
			return 0, storeError(err, "schema: read %s", keyNextID)
		default:
			if err := json.Unmarshal(e.Value, &cur); err != nil {
				return 0, storeError(err, "schema: decode %s", keyNextID)
			}
		}
		r.mu.RLock()
		last := max(cur.ID, r.st.maxID)
		r.mu.RUnlock()
		if last >= MaxID && atLeast == 0 {
			return 0, newError(ErrOperationNotPermitted, "schema ids exhausted: id %d is the largest there can be", MaxID)
		}
		next := last + 1
		if atLeast > 0 {
			if atLeast <= cur.ID {
				return atLeast, nil
			}
			next = atLeast
		}
		b, _ := json.Marshal(idDoc{ID: next})
		var rev uint64
		if errors.Is(err, ErrKeyNotFound) {
			rev, err = r.store.Create(ctx, keyNextID, b)
		} else {
			rev, err = r.store.Update(ctx, keyNextID, b, e.Revision)
		}
		if errors.Is(err, ErrKeyExists) || errors.Is(err, ErrRevisionMismatch) {
			continue
		}
		if err != nil {
			return 0, storeError(err, "schema: write %s", keyNextID)
		}
		r.applyWrite(keyNextID, b, rev)
		return next, nil
	}
	return 0, newError(ErrStore, "schema: could not allocate a schema id: too many concurrent writers")
}

// storeSchema makes sure schemas.<id> and fp.<fp> exist and returns the id
// to use: the one the fingerprint maps to (another registry may have
// mapped it first), or with explicit (an IMPORT with a chosen id) id
// itself, after checking no other schema holds it.
func (r *Registry) storeSchema(ctx context.Context, id int, p *prepared, explicit bool) (int, error) {
	r.mu.RLock()
	rec := r.st.schemas[id]
	fpID := r.st.fps[p.fp]
	r.mu.RUnlock()
	if rec == nil {
		doc := schemaDoc{ID: id, Type: p.schema.Type, Text: p.schema.Text, References: p.schema.References, Fingerprint: p.fp}
		b, _ := json.Marshal(doc)
		key := keySchema(id)
		rev, err := r.store.Create(ctx, key, b)
		switch {
		case errors.Is(err, ErrKeyExists):
			if err := r.refresh(ctx, key); err != nil {
				return 0, err
			}
			r.mu.RLock()
			rec = r.st.schemas[id]
			r.mu.RUnlock()
		case err != nil:
			return 0, storeError(err, "schema: write schema id %d", id)
		default:
			r.applyWrite(key, b, rev)
		}
	}
	if rec != nil && rec.fp != p.fp {
		return 0, newError(ErrIDDoesNotMatch, "schema id %d is already used by another schema", id)
	}
	if fpID != 0 {
		if explicit {
			return id, nil
		}
		return fpID, nil
	}
	b, _ := json.Marshal(idDoc{ID: id})
	key := keyFP(p.fp)
	rev, err := r.store.Create(ctx, key, b)
	if errors.Is(err, ErrKeyExists) {
		if err := r.refresh(ctx, key); err != nil {
			return 0, err
		}
		r.mu.RLock()
		fpID = r.st.fps[p.fp]
		r.mu.RUnlock()
		if fpID == 0 {
			return 0, newError(ErrStore, "schema: fingerprint %s vanished while registering", p.fp)
		}
		if explicit {
			return id, nil
		}
		return fpID, nil
	}
	if err != nil {
		return 0, storeError(err, "schema: write fingerprint of schema id %d", id)
	}
	r.applyWrite(key, b, rev)
	return id, nil
}

// Lookup returns the version of subject that holds s (soft-deleted ones
// too with deleted): ErrSubjectNotFound or ErrSchemaNotFound otherwise.
func (r *Registry) Lookup(subject string, s Schema, normalize, deleted bool) (SubjectVersion, error) {
	return r.LookupContext(context.Background(), subject, s, normalize, deleted)
}

// LookupContext is Lookup that stops when ctx is done.
func (r *Registry) LookupContext(ctx context.Context, subject string, s Schema, normalize, deleted bool) (SubjectVersion, error) {
	p, err := r.prepare(ctx, s, normalize)
	if err != nil {
		return SubjectVersion{}, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	vs := r.versionsLocked(subject, deleted)
	if len(vs) == 0 {
		return SubjectVersion{}, newError(ErrSubjectNotFound, "subject %q not found", subject)
	}
	for i := len(vs) - 1; i >= 0; i-- {
		if rec := r.st.schemas[vs[i].ID]; rec != nil && rec.fp == p.fp {
			return r.subjectVersion(vs[i]), nil
		}
	}
	return SubjectVersion{}, newError(ErrSchemaNotFound, "schema not found under subject %q", subject)
}

// CheckAll is the version argument of Check that means "the versions the
// subject's compatibility level names".
const CheckAll = 0

// Check tells whether s could be registered under subject: against the
// versions the subject's level names (version CheckAll; no versions means
// compatible), or against one version (Latest or a number) in the
// direction(s) the level names. Messages holds every incompatibility.
func (r *Registry) Check(ctx context.Context, subject string, version int, s Schema, normalize bool) (CheckResult, error) {
	if err := ValidateSubject(subject); err != nil {
		return CheckResult{}, err
	}
	p, err := r.prepare(ctx, s, normalize)
	if err != nil {
		return CheckResult{}, err
	}
	r.mu.RLock()
	level := r.levelLocked(subject)
	var vs []*versionDoc
	if version == CheckAll {
		vs = against(level, r.versionsLocked(subject, false))
	} else {
		v, err := r.findVersionLocked(subject, version, false)
		if err != nil {
			r.mu.RUnlock()
			return CheckResult{}, err
		}
		if level != None {
			vs = []*versionDoc{v}
		}
	}
	r.mu.RUnlock()
	msgs, err := r.compatMessages(ctx, level, p, vs)
	if err != nil {
		return CheckResult{}, err
	}
	return CheckResult{Compatible: len(msgs) == 0, Messages: msgs}, nil
}

// DeleteVersion deletes one version of subject (Latest for the newest) and
// returns its number. A soft delete hides it but keeps its id readable;
// a permanent delete needs a soft delete first and removes it for good. A
// version other live schemas reference cannot be deleted.
func (r *Registry) DeleteVersion(ctx context.Context, subject string, version int, permanent bool) (int, error) {
	if err := r.writable(subject); err != nil {
		return 0, err
	}
	for attempt := 0; attempt < maxAttempts; attempt++ {
		r.mu.RLock()
		v, err := r.findVersionLocked(subject, version, permanent)
		var refs []int
		var rev uint64
		var doc versionDoc
		if err == nil {
			doc = *v
			refs = r.referencedByLocked(subject, v.Version)
			rev = r.st.revs[keyVersion(subject, v.Version)]
		}
		r.mu.RUnlock()
		if err != nil {
			if errors.Is(err, ErrVersionNotFound) && !permanent {
				if _, derr := r.Version(subject, version, true); derr == nil {
					return 0, newError(ErrVersionSoftDeleted, "subject %q version %d was soft-deleted (use permanent=true to delete it for good)", subject, version)
				}
			}
			return 0, err
		}
		if len(refs) > 0 {
			return 0, newError(ErrReferenceExists, "subject %q version %d is referenced by schema ids %v", subject, doc.Version, refs)
		}
		key := keyVersion(subject, doc.Version)
		if permanent {
			if !doc.Deleted {
				return 0, newError(ErrVersionNotSoftDeleted, "subject %q version %d must be soft-deleted before it is permanently deleted", subject, doc.Version)
			}
			if err := r.del(ctx, key); err != nil {
				return 0, err
			}
			r.forgetParsed(doc.ID)
			return doc.Version, nil
		}
		doc.Deleted = true
		b, _ := json.Marshal(doc)
		newRev, err := r.store.Update(ctx, key, b, rev)
		if errors.Is(err, ErrRevisionMismatch) {
			if err := r.refresh(ctx, key); err != nil {
				return 0, err
			}
			continue
		}
		if err != nil {
			return 0, storeError(err, "schema: soft-delete subject %q version %d", subject, doc.Version)
		}
		r.applyWrite(key, b, newRev)
		return doc.Version, nil
	}
	return 0, newError(ErrStore, "schema: subject %q: gave up after %d conflicting writes", subject, maxAttempts)
}

func (r *Registry) forgetParsed(id int) {
	r.mu.RLock()
	used := r.st.usage[id] > 0
	r.mu.RUnlock()
	if !used {
		r.parsedMu.Lock()
		delete(r.parsed, id)
		r.parsedMu.Unlock()
	}
}

// DeleteSubject deletes every version of subject and returns their
// numbers: soft (the live ones) or permanent (all of them, after a soft
// delete; the subject's own config and mode go too).
func (r *Registry) DeleteSubject(ctx context.Context, subject string, permanent bool) ([]int, error) {
	if err := r.writable(subject); err != nil {
		return nil, err
	}
	r.mu.RLock()
	all := r.versionsLocked(subject, true)
	var live []int
	var referenced []string
	for _, v := range all {
		if !v.Deleted {
			live = append(live, v.Version)
			if ids := r.referencedByLocked(subject, v.Version); len(ids) > 0 {
				referenced = append(referenced, fmt.Sprintf("version %d by schema ids %v", v.Version, ids))
			}
		}
	}
	r.mu.RUnlock()
	if len(all) == 0 {
		return nil, newError(ErrSubjectNotFound, "subject %q not found", subject)
	}
	if len(referenced) > 0 {
		return nil, newError(ErrReferenceExists, "subject %q is referenced: %s", subject, strings.Join(referenced, "; "))
	}
	if !permanent {
		if len(live) == 0 {
			return nil, newError(ErrSubjectSoftDeleted, "subject %q was soft-deleted (use permanent=true to delete it for good)", subject)
		}
		for _, v := range live {
			if _, err := r.DeleteVersion(ctx, subject, v, false); err != nil {
				return nil, err
			}
		}
		return live, nil
	}
	if len(live) > 0 {
		return nil, newError(ErrSubjectNotSoftDeleted, "subject %q must be soft-deleted before it is permanently deleted", subject)
	}
	out := make([]int, 0, len(all))
	for _, v := range all {
		if err := r.del(ctx, keyVersion(subject, v.Version)); err != nil {
			return nil, err
		}
		r.forgetParsed(v.ID)
		out = append(out, v.Version)
	}
	for _, key := range []string{keySubjectConfig(subject), keySubjectMode(subject)} {
		r.mu.RLock()
		_, known := r.st.revs[key]
		r.mu.RUnlock()
		if known {
			if err := r.del(ctx, key); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}
