package shop

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
)

// Handler returns the orders HTTP API:
//
//	POST /orders           place an order: {"customer","sku","quantity","total_cents"}
//	                       -> 201 {"id","correlation_id","status"}
//	GET  /orders/{id}      the order's summary (the read model), 404 if unknown
//	GET  /orders?status=S  orders of status placed, shipped or cancelled (all without),
//	                       newest first; limit=N (default 100, at most 1000)
//
// Errors are JSON {"error": "..."} with a 4xx status for bad requests.
func (o *Orders) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		var req PlaceRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, "body: want a JSON object {\"customer\",\"sku\",\"quantity\",\"total_cents\"}: "+err.Error())
			return
		}
		p, err := o.Place(r.Context(), req)
		switch {
		case errors.Is(err, ErrInvalidOrder):
			writeError(w, http.StatusBadRequest, err.Error())
		case err != nil:
			o.env.Logger.Error("shop: place order", "error", err)
			writeError(w, http.StatusServiceUnavailable, "the order could not be stored; try again")
		default:
			w.Header().Set("Location", "/orders/"+p.ID)
			writeJSON(w, http.StatusCreated, p)
		}
	})
	mux.HandleFunc("GET /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		s, err := o.Summary(r.Context(), r.PathValue("id"))
		switch {
		case errors.Is(err, ErrNoOrder):
			writeError(w, http.StatusNotFound, "no order "+strconv.Quote(r.PathValue("id"))+" (yet: the summary follows the order within a moment)")
		case err != nil:
			o.env.Logger.Error("shop: read order", "error", err)
			writeError(w, http.StatusServiceUnavailable, "the read model is unavailable; try again")
		default:
			writeJSON(w, http.StatusOK, s)
		}
	})
	mux.HandleFunc("GET /orders", func(w http.ResponseWriter, r *http.Request) {
		status := r.URL.Query().Get("status")
		switch status {
		case "", StatusPlaced, StatusShipped, StatusCancelled:
		default:
			writeError(w, http.StatusBadRequest, "status "+strconv.Quote(status)+": want placed, shipped or cancelled")
			return
		}
		limit := 100
		if v := r.URL.Query().Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 1000 {
				writeError(w, http.StatusBadRequest, "limit "+strconv.Quote(v)+": want 1 to 1000")
				return
			}
			limit = n
		}
		list, err := o.List(r.Context(), status, limit)
		if err != nil {
			o.env.Logger.Error("shop: list orders", "error", err)
			writeError(w, http.StatusServiceUnavailable, "the read model is unavailable; try again")
			return
		}
		writeJSON(w, http.StatusOK, list)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
