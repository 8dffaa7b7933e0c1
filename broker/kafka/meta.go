package kafka

import (
	"math"
	"strconv"
	"strings"
)

// Commit metadata.
//
// Kafka stores one offset per group and partition: everything below it is
// done. Deliveries settle out of order, so the adapter also writes, in the
// commit's metadata string, what it knows past that offset: which later
// records are already settled (a new owner skips them) and how many times
// unsettled ones were delivered (a new owner continues the attempt count).
//
// Format: "h1" then space-separated tokens, offsets relative to the
// committed offset:
//
//	sA     record A is settled
//	sA-B   records A..B are settled
//	aA:N   record A was delivered N times and is not settled
//
// The string is capped at maxMeta bytes; what does not fit is left out,
// which only costs a redelivery or a lower attempt count, never a loss.

const (
	metaVersion = "h1"
	// maxMeta stays under Kafka's default offset.metadata.max.bytes (4096).
	maxMeta = 3000
)

type span struct{ from, to int64 } // inclusive, absolute offsets

// prior is what a previous owner of a partition recorded past the
// committed offset.
type prior struct {
	settled  []span // sorted
	attempts map[int64]int
	end      int64 // one past the highest offset mentioned
}

func (p *prior) isSettled(off int64) bool {
	for _, s := range p.settled {
		if off < s.from {
			return false
		}
		if off <= s.to {
			return true
		}
	}
	return false
}

// decodeMeta reads metadata written by metaWriter for a partition whose
// committed offset is base. It returns nil for metadata it does not
// recognise (written by another tool), which is treated as no knowledge.
func decodeMeta(meta string, base int64) *prior {
	rest, ok := strings.CutPrefix(meta, metaVersion)
	if !ok || base < 0 {
		return nil
	}
	p := &prior{}
	last := int64(-1)
	for tok := range strings.FieldsSeq(rest) {
		if len(tok) < 2 {
			return nil
		}
		switch tok[0] {
		case 's':
			a, b, found := strings.Cut(tok[1:], "-")
			from, err := strconv.ParseInt(a, 10, 64)
			if err != nil || from < 0 {
				return nil
			}
			to := from
			if found {
				if to, err = strconv.ParseInt(b, 10, 64); err != nil || to < from {
					return nil
				}
			}
			if from <= last || to > math.MaxInt64-base {
				return nil
			}
			p.settled = append(p.settled, span{base + from, base + to})
			last = to
		case 'a':
			a, b, found := strings.Cut(tok[1:], ":")
			if !found {
				return nil
			}
			off, err1 := strconv.ParseInt(a, 10, 64)
			n, err2 := strconv.Atoi(b)
			if err1 != nil || err2 != nil || off < 0 || n < 1 || off <= last || off > math.MaxInt64-base {
				return nil
			}
			if p.attempts == nil {
				p.attempts = make(map[int64]int)
			}
			p.attempts[base+off] = n
			last = off
		default:
			return nil
		}
	}
	if last < 0 {
		return nil
	}
	p.end = base + last + 1
	return p
}

// metaWriter encodes a partition's state past its commit point. Offsets
// must be fed in increasing order.
type metaWriter struct {
	b        []byte
	base     int64
	runFrom  int64 // -1: no open run of settled offsets
	runTo    int64
	full     bool
	coverEnd int64 // records below this offset are fully described
}

func newMetaWriter(base int64) metaWriter {
	return metaWriter{b: append(make([]byte, 0, 64), metaVersion...), base: base, runFrom: -1, coverEnd: math.MaxInt64}
}

func (w *metaWriter) flushRun() {
	if w.runFrom < 0 || w.full {
		return
	}
	n := len(w.b)
	w.b = append(w.b, " s"...)
	w.b = strconv.AppendInt(w.b, w.runFrom-w.base, 10)
	if w.runTo > w.runFrom {
		w.b = append(w.b, '-')
		w.b = strconv.AppendInt(w.b, w.runTo-w.base, 10)
	}
	if len(w.b) > maxMeta {
		w.b = w.b[:n]
		w.full = true
		w.coverEnd = w.runFrom
	}
	w.runFrom = -1
}

// settled records that off is settled.
func (w *metaWriter) settled(off int64) {
	if w.full {
		return
	}
	if w.runFrom >= 0 && off == w.runTo+1 {
		w.runTo = off
		return
	}
	w.flushRun()
	if !w.full {
		w.runFrom, w.runTo = off, off
	}
}

// gap records that off is unsettled and was never delivered (nothing to
// write, but it breaks a run of settled offsets).
func (w *metaWriter) gap() { w.flushRun() }

// attempt records that off is unsettled after n deliveries.
func (w *metaWriter) attempt(off int64, n int) {
	w.flushRun()
	if w.full {
		return
	}
	k := len(w.b)
	w.b = append(w.b, " a"...)
	w.b = strconv.AppendInt(w.b, off-w.base, 10)
	w.b = append(w.b, ':')
	w.b = strconv.AppendInt(w.b, int64(n), 10)
	if len(w.b) > maxMeta {
		w.b = w.b[:k]
		w.full = true
		w.coverEnd = off
	}
}

// finish returns the metadata and the offset below which every record is
// described.
func (w *metaWriter) finish() (string, int64) {
	w.flushRun()
	if len(w.b) == len(metaVersion) {
		return "", w.coverEnd
	}
	return string(w.b), w.coverEnd
}
