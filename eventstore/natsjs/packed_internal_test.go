package natsjs

import (
	"bytes"
	"testing"
	"time"

	"github.com/heraldhq/herald/event"
)

func TestPackRoundTrip(t *testing.T) {
	a := event.New("orders", "shop.order.placed.v1", []byte(`{"total":30}`))
	a.Subject, a.Sequence, a.DataContentType = "order-1", 1, "application/json"
	a.Time = time.Date(2026, 12, 4, 10, 0, 0, 123456789, time.UTC)
	if err := a.SetExtension("correlationid", "c-1"); err != nil {
		t.Fatal(err)
	}
	b := event.New("orders", "shop.order.note.v1", []byte{0, 1, 2, 0xff})
	b.Sequence, b.DataContentType = 2, "application/octet-stream"
	c := event.New("orders", "shop.order.empty.v1", nil)
	c.Sequence = 3
	body := pack([]*event.Event{a, b, c})
	got, err := unpack(body, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []*event.Event{a, b, c} {
		g := got[i]
		if g.ID != want.ID || g.Type != want.Type || g.Source != want.Source || g.Subject != want.Subject ||
			g.Sequence != want.Sequence || !g.Time.Equal(want.Time) || g.DataContentType != want.DataContentType || !bytes.Equal(g.Data, want.Data) {
			t.Errorf("event %d: got %+v, want %+v", i, g, want)
		}
	}
	if v, _ := got[0].Extension("correlationid"); v != "c-1" {
		t.Errorf("correlation id %q, want c-1", v)
	}
	ids, err := packedIDs(body)
	if err != nil || len(ids) != 3 || ids[0] != a.ID || ids[2] != c.ID {
		t.Errorf("ids %v, %v; want the three ids", ids, err)
	}
	if _, err := unpack(body, 2); err == nil {
		t.Error("unpack with a wrong count: no error")
	}
	for n := range len(body) {
		if _, err := unpack(body[:n], 3); err == nil {
			t.Fatalf("unpack of the first %d of %d bytes: no error", n, len(body))
		}
	}
}

func FuzzUnpack(f *testing.F) {
	f.Add(pack([]*event.Event{event.New("s", "t.v1", []byte("x"))}), 1)
	f.Add([]byte{1, 2, 0}, 1)
	f.Fuzz(func(t *testing.T, body []byte, n int) {
		evs, err := unpack(body, n)
		if err == nil && len(evs) != n {
			t.Fatalf("%d events without error, want %d", len(evs), n)
		}
		_, _ = packedIDs(body)
	})
}
