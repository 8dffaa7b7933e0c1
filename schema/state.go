package schema

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
)

// The store layout. Every key holds one JSON document; the registry's
// whole state is the set of keys, so a new Registry on the same store
// rebuilds it exactly.
//
//	ids.next                   {"id":N}  the last id handed out (ids only grow)
//	schemas.<id>               schemaDoc: type, text, references, fingerprint
//	fp.<sha256 hex>            {"id":N}  which id a schema fingerprint has
//	subjects.<b64 subject>.<v> versionDoc: subject, version, id, deleted
//	config.global              {"compatibilityLevel":"BACKWARD"}
//	config.subjects.<b64>      {"compatibilityLevel":"FULL"}
//	mode.global                {"mode":"READWRITE"}
//	mode.subjects.<b64>        {"mode":"READONLY"}
//
// Subjects are base64url-encoded (no padding) because subject names may
// hold characters keys cannot.
const (
	keyNextID       = "ids.next"
	keyGlobalConfig = "config.global"
	keyGlobalMode   = "mode.global"
)

func keySchema(id int) string    { return "schemas." + strconv.Itoa(id) }
func keyFP(fp string) string     { return "fp." + fp }
func encSubject(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
func keyVersion(subject string, v int) string {
	return "subjects." + encSubject(subject) + "." + strconv.Itoa(v)
}
func keySubjectConfig(subject string) string { return "config.subjects." + encSubject(subject) }
func keySubjectMode(subject string) string   { return "mode.subjects." + encSubject(subject) }

type idDoc struct {
	ID int `json:"id"`
}

type schemaDoc struct {
	ID          int         `json:"id"`
	Type        Type        `json:"schemaType"`
	Text        string      `json:"schema"`
	References  []Reference `json:"references,omitempty"`
	Fingerprint string      `json:"fingerprint"`
}

type versionDoc struct {
	Subject string `json:"subject"`
	Version int    `json:"version"`
	ID      int    `json:"id"`
	Deleted bool   `json:"deleted,omitempty"`
}

type configDoc struct {
	Level Level `json:"compatibilityLevel"`
}

type modeDoc struct {
	Mode Mode `json:"mode"`
}

// record is a schema by id.
type record struct {
	id   int
	typ  Type
	text string
	refs []Reference
	fp   string
}

func (r *record) schema() Schema {
	return Schema{Type: r.typ, Text: r.text, References: r.refs}
}

type subjectState struct {
	versions map[int]*versionDoc
	level    Level
	mode     Mode
}

// state is the registry's in-memory copy of the store.
type state struct {
	revs        map[string]uint64
	nextID      int
	maxID       int
	schemas     map[int]*record
	fps         map[string]int
	subjects    map[string]*subjectState
	usage       map[int]int // versions (live or soft-deleted) using each id
	globalLevel Level
	globalMode  Mode
}

func newState() *state {
	return &state{
		revs:     map[string]uint64{},
		schemas:  map[int]*record{},
		fps:      map[string]int{},
		subjects: map[string]*subjectState{},
		usage:    map[int]int{},
	}
}

func (st *state) subject(name string, create bool) *subjectState {
	s := st.subjects[name]
	if s == nil && create {
		s = &subjectState{versions: map[int]*versionDoc{}}
		st.subjects[name] = s
	}
	return s
}

func (st *state) dropSubjectIfEmpty(name string) {
	if s := st.subjects[name]; s != nil && len(s.versions) == 0 && s.level == "" && s.mode == "" {
		delete(st.subjects, name)
	}
}

func decodeSubject(enc string) (string, bool) {
	b, err := base64.RawURLEncoding.DecodeString(enc)
	return string(b), err == nil
}

// apply folds one store entry into the state. Entries older than what the
// state already holds for the key are ignored, so the registry can apply
// its own writes at once and again when the watch delivers them.
func (st *state) apply(e Entry) {
	if e.Key == "" {
		return
	}
	if e.Revision != 0 && e.Revision <= st.revs[e.Key] {
		return
	}
	st.revs[e.Key] = e.Revision
	parts := strings.Split(e.Key, ".")
	switch {
	case e.Key == keyNextID:
		var d idDoc
		if !e.Deleted && json.Unmarshal(e.Value, &d) == nil && d.ID > st.nextID {
			st.nextID = d.ID
		}
	case len(parts) == 2 && parts[0] == "schemas":
		id, err := strconv.Atoi(parts[1])
		if err != nil {
			return
		}
		if e.Deleted {
			delete(st.schemas, id)
			return
		}
		var d schemaDoc
		if json.Unmarshal(e.Value, &d) != nil {
			return
		}
		st.schemas[id] = &record{id: id, typ: d.Type, text: d.Text, refs: d.References, fp: d.Fingerprint}
		if id > st.maxID {
			st.maxID = id
		}
	case len(parts) == 2 && parts[0] == "fp":
		var d idDoc
		if e.Deleted {
			delete(st.fps, parts[1])
		} else if json.Unmarshal(e.Value, &d) == nil {
			st.fps[parts[1]] = d.ID
		}
	case len(parts) == 3 && parts[0] == "subjects":
		name, ok := decodeSubject(parts[1])
		v, err := strconv.Atoi(parts[2])
		if !ok || err != nil {
			return
		}
		s := st.subject(name, !e.Deleted)
		if s == nil {
			return
		}
		if old := s.versions[v]; old != nil {
			st.usage[old.ID]--
			delete(s.versions, v)
		}
		if e.Deleted {
			st.dropSubjectIfEmpty(name)
			return
		}
		var d versionDoc
		if json.Unmarshal(e.Value, &d) != nil {
			return
		}
		d.Subject, d.Version = name, v
		s.versions[v] = &d
		st.usage[d.ID]++
	case e.Key == keyGlobalConfig:
		var d configDoc
		st.globalLevel = ""
		if !e.Deleted && json.Unmarshal(e.Value, &d) == nil {
			st.globalLevel = d.Level
		}
	case e.Key == keyGlobalMode:
		var d modeDoc
		st.globalMode = ""
		if !e.Deleted && json.Unmarshal(e.Value, &d) == nil {
			st.globalMode = d.Mode
		}
	case len(parts) == 3 && (parts[0] == "config" || parts[0] == "mode") && parts[1] == "subjects":
		name, ok := decodeSubject(parts[2])
		if !ok {
			return
		}
		s := st.subject(name, !e.Deleted)
		if s == nil {
			return
		}
		if parts[0] == "config" {
			var d configDoc
			s.level = ""
			if !e.Deleted && json.Unmarshal(e.Value, &d) == nil {
				s.level = d.Level
			}
		} else {
			var d modeDoc
			s.mode = ""
			if !e.Deleted && json.Unmarshal(e.Value, &d) == nil {
				s.mode = d.Mode
			}
		}
		st.dropSubjectIfEmpty(name)
	}
}
