package event_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/heraldhq/herald/event"
)

// TestDecodeStructuredMode checks that every binding reads a message in
// structured mode (no attribute headers, content type
// application/cloudevents+json) as the event its body holds.
func TestDecodeStructuredMode(t *testing.T) {
	body := []byte(`{"specversion":"1.0","id":"e-1","source":"pika","type":"payment.done.v1","subject":"p-7",` +
		`"time":"2026-01-02T03:04:05Z","datacontenttype":"application/json","data":{"amount":5}}`)
	for _, tc := range []struct {
		b  event.Binding
		ct string
	}{
		{event.NATS, "content-type"},
		{event.NATS, "ce-datacontenttype"},
		{event.Kafka, "content-type"},
		{event.AMQP, "content-type"},
	} {
		t.Run(tc.b.String()+"/"+tc.ct, func(t *testing.T) {
			e, err := tc.b.Decode(map[string]string{tc.ct: "application/cloudevents+json; charset=utf-8", "x-other": "1"}, body)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if e.ID != "e-1" || e.Type != "payment.done.v1" || e.Subject != "p-7" || e.DataContentType != "application/json" ||
				e.Time.Year() != 2026 || string(e.Data) != `{"amount":5}` {
				t.Fatalf("decoded %+v (data %s)", e, e.Data)
			}
		})
	}
	_, err := event.Kafka.Decode(map[string]string{"content-type": event.ContentTypeJSON}, []byte(`{"id":"1"}`))
	if !errors.Is(err, event.ErrInvalid) || !strings.Contains(err.Error(), "structured-mode") {
		t.Errorf("a structured message without specversion: %v, want an ErrInvalid naming structured mode", err)
	}
	_, err = event.Kafka.Decode(map[string]string{"content-type": "application/json"}, body)
	if !errors.Is(err, event.ErrInvalid) {
		t.Errorf("a plain JSON record decoded as an event: %v", err)
	}
}

func FuzzDecodeStructured(f *testing.F) {
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"s","type":"t"}`))
	f.Add([]byte(`{"specversion":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := event.AMQP.Decode(map[string]string{"content-type": event.ContentTypeJSON}, data)
		if err == nil && e.Validate() != nil {
			t.Fatalf("Decode returned an invalid event without error: %+v", e)
		}
	})
}
