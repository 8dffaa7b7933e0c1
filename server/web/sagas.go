package web

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"time"

	"github.com/heraldhq/herald/saga"
	"github.com/heraldhq/herald/server/admin"
)

// sagaShown is the most instances the saga list shows; the newest are
// kept.
const sagaShown = 500

// bucketRE is what a JetStream KV bucket name may hold.
var bucketRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,200}$`)

// sagaStates are the states the saga list filters by, in life order.
var sagaStates = []saga.State{saga.Running, saga.Compensating, saga.Completed, saga.Compensated, saga.Failed}

type sagasData struct {
	// Bucket is the bucket asked for, "" for the default.
	Bucket string
	State  saga.State
	States []saga.State
	Sagas  []admin.SagaSummary
	// Total is how many instances are in State; Sagas holds the newest
	// sagaShown of them, newest first.
	Total int
	// NoBucket says no saga has run on the server yet.
	NoBucket string
}

// sagaQuery reads the bucket and state parameters of the saga pages.
func sagaQuery(r *http.Request) (bucket string, state saga.State, err error) {
	q := r.URL.Query()
	if bucket = q.Get("bucket"); bucket != "" && !bucketRE.MatchString(bucket) {
		return "", "", badInput("bucket %q: want 1 to 200 letters, digits, '_' or '-'", bucket)
	}
	if s := q.Get("state"); s != "" {
		if state, err = saga.ParseState(s); err != nil {
			return "", "", fmt.Errorf("%w: %w", errBadInput, err)
		}
	}
	return bucket, state, nil
}

func (h *Handler) sagas(w http.ResponseWriter, r *http.Request) {
	bucket, state, err := sagaQuery(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := sagasData{Bucket: bucket, State: state, States: sagaStates}
	ss, err := h.src.Admin.Sagas(r.Context(), bucket, state)
	switch {
	case errors.Is(err, admin.ErrNotFound) && bucket == "":
		d.NoBucket = saga.DefaultBucket
	case err != nil:
		h.fail(w, r, err)
		return
	}
	d.Total = len(ss)
	for i := len(ss) - 1; i >= 0 && len(d.Sagas) < sagaShown; i-- {
		d.Sagas = append(d.Sagas, ss[i])
	}
	h.render(w, r, "sagas", page{Title: "Sagas", Nav: "sagas", Data: &d})
}

type sagaData struct {
	Bucket string
	Saga   *admin.SagaDetail
	// Now is when the page was made, for the running command's age.
	Now time.Time
}

func (h *Handler) saga(w http.ResponseWriter, r *http.Request) {
	bucket, _, err := sagaQuery(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	id := r.PathValue("id")
	sd, err := h.src.Admin.Saga(r.Context(), bucket, id)
	if errors.Is(err, admin.ErrNotFound) {
		err = fmt.Errorf("%w: no saga instance %q in bucket %q: see the saga list for the instances there are", admin.ErrNotFound, id, bucketOr(bucket))
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.render(w, r, "saga", page{Title: "Saga " + sd.ID, Nav: "sagas", Data: &sagaData{Bucket: bucket, Saga: sd, Now: h.now()}})
}

func bucketOr(b string) string {
	if b == "" {
		return saga.DefaultBucket
	}
	return b
}

// sagaURL links a saga instance, or the list (id "") filtered by state.
func sagaURL(bucket, id string, state saga.State) string {
	q := url.Values{}
	if bucket != "" {
		q.Set("bucket", bucket)
	}
	if state != "" {
		q.Set("state", string(state))
	}
	if id == "" {
		return link(q, "sagas")
	}
	return link(q, "sagas", id)
}
