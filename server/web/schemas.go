package web

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/heraldhq/herald/schema"
)

type subjectRow struct {
	Subject  string
	Versions int
	Latest   schema.SubjectVersion
	Level    schema.Level
}

type schemasData struct {
	Subjects []subjectRow
	Global   schema.Level
}

func (h *Handler) registry(w http.ResponseWriter, r *http.Request) bool {
	if h.src.Registry == nil {
		h.fail(w, r, fmt.Errorf("%w: this server runs no schema registry", errBadInput))
		return false
	}
	return true
}

func (h *Handler) schemas(w http.ResponseWriter, r *http.Request) {
	if !h.registry(w, r) {
		return
	}
	reg := h.src.Registry
	global, _ := reg.Config("", true)
	d := schemasData{Global: global}
	for _, s := range reg.Subjects(false, "") {
		vs, err := reg.Versions(s, false)
		if err != nil {
			continue // deleted since it was listed
		}
		latest, err := reg.Version(s, schema.Latest, false)
		if err != nil {
			continue
		}
		level, _ := reg.Config(s, true)
		d.Subjects = append(d.Subjects, subjectRow{Subject: s, Versions: len(vs), Latest: latest, Level: level})
	}
	h.render(w, r, "schemas", page{Title: "Schemas", Nav: "schemas", Data: d})
}

type subjectData struct {
	Subject  string
	Level    schema.Level
	Own      bool
	Versions []schema.SubjectVersion
	// A and B are the versions compared (B the newer by default), Diff
	// their side-by-side lines.
	A, B schema.SubjectVersion
	Diff []diffRow
	// Added and Removed count the changed lines.
	Added, Removed int
}

func (h *Handler) subject(w http.ResponseWriter, r *http.Request) {
	if !h.registry(w, r) {
		return
	}
	reg := h.src.Registry
	subject := r.PathValue("subject")
	nums, err := reg.Versions(subject, false)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := subjectData{Subject: subject}
	d.Level, _ = reg.Config(subject, true)
	_, ownErr := reg.Config(subject, false)
	d.Own = ownErr == nil
	for _, n := range nums {
		v, err := reg.Version(subject, n, false)
		if err != nil {
			continue
		}
		d.Versions = append(d.Versions, v)
	}
	if len(d.Versions) == 0 {
		h.fail(w, r, fmt.Errorf("subject %q: %w", subject, schema.ErrSubjectNotFound))
		return
	}
	q := r.URL.Query()
	a, b := len(d.Versions)-2, len(d.Versions)-1
	pick := func(name string, def int) (int, error) {
		s := q.Get(name)
		if s == "" {
			return def, nil
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			return 0, badInput("%s %q: want a version number", name, s)
		}
		for i, v := range d.Versions {
			if v.Version == n {
				return i, nil
			}
		}
		return 0, fmt.Errorf("subject %q version %d: %w", subject, n, schema.ErrVersionNotFound)
	}
	if a, err = pick("a", max(a, 0)); err == nil {
		b, err = pick("b", b)
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d.A, d.B = d.Versions[a], d.Versions[b]
	d.Diff = diffLines(schemaLines(d.A.Schema.Text), schemaLines(d.B.Schema.Text))
	for _, row := range d.Diff {
		switch row.Kind {
		case "add":
			d.Added++
		case "del":
			d.Removed++
		case "change":
			d.Added++
			d.Removed++
		}
	}
	h.render(w, r, "subject", page{Title: "Schema " + subject, Nav: "schemas", Data: &d})
}

// schemaLines splits a schema into lines, indenting JSON (Avro, JSON
// Schema) so fields fall on lines of their own.
func schemaLines(text string) []string {
	var buf bytes.Buffer
	if json.Valid([]byte(text)) && json.Indent(&buf, []byte(text), "", "  ") == nil {
		text = buf.String()
	}
	return strings.Split(strings.TrimRight(text, "\n"), "\n")
}

// diffRow is one line of a side-by-side diff. Kind is "same", "del" (only
// on the left), "add" (only on the right) or "change" (both, different).
type diffRow struct {
	Kind        string
	Left, Right string
	// LeftN, RightN are line numbers, 0 where the side has no line.
	LeftN, RightN int
}

// maxDiffLines bounds the quadratic diff.
const maxDiffLines = 4000

// diffLines aligns a and b by their longest common subsequence.
func diffLines(a, b []string) []diffRow {
	if len(a) > maxDiffLines || len(b) > maxDiffLines {
		return []diffRow{{Kind: "change", Left: fmt.Sprintf("(%d lines: too long to compare here)", len(a)), Right: fmt.Sprintf("(%d lines)", len(b))}}
	}
	// lcs[i][j] is the LCS length of a[i:] and b[j:].
	lcs := make([][]int32, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int32, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var rows []diffRow
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			rows = append(rows, diffRow{Kind: "same", Left: a[i], Right: b[j], LeftN: i + 1, RightN: j + 1})
			i, j = i+1, j+1
		case j < len(b) && (i == len(a) || lcs[i][j+1] >= lcs[i+1][j]):
			rows = append(rows, diffRow{Kind: "add", Right: b[j], RightN: j + 1})
			j++
		default:
			rows = append(rows, diffRow{Kind: "del", Left: a[i], LeftN: i + 1})
			i++
		}
	}
	return pairChanges(rows)
}

// pairChanges shows a run of removed lines followed by added ones side by
// side, as changed lines.
func pairChanges(rows []diffRow) []diffRow {
	out := make([]diffRow, 0, len(rows))
	for k := 0; k < len(rows); {
		if rows[k].Kind != "del" {
			out = append(out, rows[k])
			k++
			continue
		}
		d := k
		for d < len(rows) && rows[d].Kind == "del" {
			d++
		}
		e := d
		for e < len(rows) && rows[e].Kind == "add" {
			e++
		}
		dels, adds := rows[k:d], rows[d:e]
		for n := 0; n < max(len(dels), len(adds)); n++ {
			switch {
			case n < len(dels) && n < len(adds):
				out = append(out, diffRow{Kind: "change", Left: dels[n].Left, LeftN: dels[n].LeftN, Right: adds[n].Right, RightN: adds[n].RightN})
			case n < len(dels):
				out = append(out, dels[n])
			default:
				out = append(out, adds[n])
			}
		}
		k = e
	}
	return out
}
