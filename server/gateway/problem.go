package gateway

import (
	"encoding/json"
	"net/http"
)

// ContentTypeProblem is the media type of error answers (RFC 9457).
const ContentTypeProblem = "application/problem+json"

// Problem is an error answer (RFC 9457 problem details).
type Problem struct {
	// Type is "about:blank": Title and Status say what kind of problem.
	Type string `json:"type"`
	// Title is the HTTP status text.
	Title string `json:"title"`
	// Status repeats the HTTP status code.
	Status int `json:"status"`
	// Detail says what was wrong and how to fix it.
	Detail string `json:"detail"`
	// Errors lists the bad events of a batch, by position.
	Errors []EventError `json:"errors,omitempty"`
}

// EventError is why one event of a request was refused.
type EventError struct {
	// Index is the event's position in the request, from 0.
	Index int `json:"index"`
	// ID is the event's id, when it has one.
	ID string `json:"id,omitempty"`
	// Detail says what is wrong.
	Detail string `json:"detail"`
}

func (p *Problem) Error() string { return p.Detail }

// WriteProblem writes a problem document with status and detail, as the
// gateway answers errors.
func WriteProblem(w http.ResponseWriter, status int, detail string) {
	writeProblem(w, status, detail)
}

func writeProblem(w http.ResponseWriter, status int, detail string) {
	writeProblemDoc(w, &Problem{Status: status, Detail: detail})
}

func writeProblemDoc(w http.ResponseWriter, p *Problem) {
	p.Type = "about:blank"
	p.Title = http.StatusText(p.Status)
	w.Header().Set("Content-Type", ContentTypeProblem)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
