package eventstore_test

import (
	"errors"
	"testing"
	"time"

	"github.com/heraldhq/herald/eventstore"
)

func TestExpectedCheck(t *testing.T) {
	cases := []struct {
		exp    eventstore.Expected
		actual uint64
		ok     bool
	}{
		{eventstore.Any, 0, true}, {eventstore.Any, 7, true},
		{eventstore.NoStream, 0, true}, {eventstore.NoStream, 1, false},
		{eventstore.StreamExists, 0, false}, {eventstore.StreamExists, 3, true},
		{eventstore.Exact(3), 3, true}, {eventstore.Exact(3), 2, false},
		{eventstore.Exact(0), 0, true},
	}
	for _, tc := range cases {
		err := tc.exp.Check("s", tc.actual)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, eventstore.ErrConflict)) {
			t.Errorf("%v at %d: %v, want ok=%v", tc.exp, tc.actual, err, tc.ok)
		}
	}
	if err := (eventstore.Expected{}).Validate(); !errors.Is(err, eventstore.ErrInvalid) {
		t.Errorf("zero Expected: %v, want ErrInvalid", err)
	}
}

func TestMetadataVisible(t *testing.T) {
	now := time.Now()
	old := now.Add(-2 * time.Hour)
	cases := []struct {
		name    string
		meta    eventstore.Metadata
		version uint64
		at      time.Time
		want    bool
	}{
		{"no limits", eventstore.Metadata{}, 1, old, true},
		{"within count", eventstore.Metadata{MaxCount: 2}, 9, now, true},
		{"beyond count", eventstore.Metadata{MaxCount: 2}, 8, now, false},
		{"too old", eventstore.Metadata{MaxAge: time.Hour}, 10, old, false},
		{"young enough", eventstore.Metadata{MaxAge: time.Hour}, 10, now, true},
		{"truncated", eventstore.Metadata{TruncateBefore: 5}, 4, now, false},
		{"after truncation", eventstore.Metadata{TruncateBefore: 5}, 5, now, true},
		{"tombstoned", eventstore.Metadata{Tombstoned: true}, 10, now, false},
	}
	for _, tc := range cases {
		if got := tc.meta.Visible(tc.version, tc.at, 10, now); got != tc.want {
			t.Errorf("%s: visible = %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := (eventstore.Metadata{MaxCount: 3, TruncateBefore: 2}).FirstVisible(10); got != 8 {
		t.Errorf("first visible = %d, want 8", got)
	}
}
