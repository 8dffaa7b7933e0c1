package natskv

import (
	"testing"
	"time"
)

// FuzzDecode feeds arbitrary bucket values to the record decoder: it must
// never panic, and every record it accepts must encode back to the same
// bytes.
func FuzzDecode(f *testing.F) {
	f.Add(encode(stateClaimed, "OWNER", time.Minute, "billing/evt-1"))
	f.Add(encode(stateDone, "", time.Hour, "a\nb\nc"))
	f.Add([]byte("herald-idem-1\nx\n\n5\nk"))
	f.Add([]byte("herald-idem-1\nc\no\n-1\nk"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, v []byte) {
		r, err := decode(v)
		if err != nil {
			return
		}
		if got := encode(r.state, r.owner, r.life, r.key); string(got) != string(v) {
			t.Fatalf("decode(%q) = %+v, which encodes to %q", v, r, got)
		}
	})
}

func TestEncodeDecode(t *testing.T) {
	tests := []struct {
		name  string
		state byte
		owner string
		life  time.Duration
		key   string
	}{
		{"claim", stateClaimed, "O1", 400 * time.Millisecond, "billing/evt-1"},
		{"done", stateDone, "", 24 * time.Hour, "x"},
		{"newlines in key", stateDone, "O2", time.Nanosecond, "\n\na\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := decode(encode(tc.state, tc.owner, tc.life, tc.key))
			if err != nil {
				t.Fatal(err)
			}
			if r.state != tc.state || r.owner != tc.owner || r.life != tc.life || r.key != tc.key {
				t.Fatalf("round trip: got %+v", r)
			}
		})
	}
}

func TestServerTTL(t *testing.T) {
	tests := []struct{ in, want time.Duration }{
		{time.Nanosecond, 2 * time.Second},
		{400 * time.Millisecond, 2 * time.Second},
		{time.Second, 2 * time.Second},
		{time.Second + time.Nanosecond, 3 * time.Second},
		{24 * time.Hour, 24*time.Hour + time.Second},
	}
	for _, tc := range tests {
		if got := serverTTL(tc.in); got != tc.want {
			t.Errorf("serverTTL(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
