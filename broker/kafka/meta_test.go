package kafka

import (
	"math"
	"strings"
	"testing"
)

func TestMetaRoundTrip(t *testing.T) {
	const base = 100
	w := newMetaWriter(base)
	w.attempt(100, 2) // unsettled, delivered twice
	w.settled(101)
	w.settled(102)
	w.gap() // 103 fetched, never delivered
	w.settled(104)
	w.attempt(105, 1)
	meta, cover := w.finish()
	if meta != "h1 a0:2 s1-2 s4 a5:1" {
		t.Fatalf("meta %q", meta)
	}
	if cover != math.MaxInt64 {
		t.Fatalf("cover %d, want everything", cover)
	}
	p := decodeMeta(meta, base)
	if p == nil {
		t.Fatal("decode failed")
	}
	for off, want := range map[int64]bool{100: false, 101: true, 102: true, 103: false, 104: true, 105: false, 106: false} {
		if got := p.isSettled(off); got != want {
			t.Errorf("offset %d settled %v, want %v", off, got, want)
		}
	}
	if p.attempts[100] != 2 || p.attempts[105] != 1 || len(p.attempts) != 2 {
		t.Errorf("attempts %v", p.attempts)
	}
	if p.end != 106 {
		t.Errorf("end %d, want 106", p.end)
	}
}

func TestMetaCap(t *testing.T) {
	w := newMetaWriter(0)
	for off := int64(0); off < 5000; off += 2 {
		w.settled(off) // every other offset: one token each
	}
	meta, cover := w.finish()
	if len(meta) > maxMeta {
		t.Fatalf("meta is %d bytes, cap %d", len(meta), maxMeta)
	}
	if cover == math.MaxInt64 || cover <= 0 {
		t.Fatalf("cover %d: a truncated metadata must say where it stops", cover)
	}
	p := decodeMeta(meta, 0)
	for off := int64(0); off < cover; off++ {
		if p.isSettled(off) != (off%2 == 0) {
			t.Fatalf("offset %d below the cover is misdescribed", off)
		}
	}
}

func TestDecodeMetaRejects(t *testing.T) {
	for _, m := range []string{"", "h1", "h2 s1", "h1 x1", "h1 s", "h1 s3-1", "h1 s1 s1", "h1 a1", "h1 a1:0", "h1 s-1", "h1 s9223372036854775807", "consumer-1"} {
		if p := decodeMeta(m, 10); p != nil {
			t.Errorf("decodeMeta(%q) = %+v, want nil", m, p)
		}
	}
}

func FuzzDecodeMeta(f *testing.F) {
	f.Add("h1 a0:2 s1-2 s4 a5:1", int64(100))
	f.Add("h1 s0-99999", int64(0))
	f.Add("kgo-member-id", int64(7))
	f.Fuzz(func(t *testing.T, meta string, base int64) {
		p := decodeMeta(meta, base)
		if p == nil {
			return
		}
		if p.end <= base {
			t.Fatalf("end %d not past base %d", p.end, base)
		}
		last := int64(math.MinInt64)
		for _, s := range p.settled {
			if s.from < base || s.to < s.from || s.from <= last {
				t.Fatalf("bad spans %v", p.settled)
			}
			last = s.to
		}
		for off, n := range p.attempts {
			if off < base || n < 1 || off >= p.end {
				t.Fatalf("bad attempt %d:%d", off, n)
			}
		}
		if !strings.HasPrefix(meta, metaVersion) {
			t.Fatalf("accepted %q without the version prefix", meta)
		}
	})
}
