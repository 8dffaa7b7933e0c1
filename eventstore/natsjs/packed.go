package natsjs

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/heraldhq/herald/event"
)

// A multi-event append is stored as one JetStream message, "packed": one
// message is one write, one acknowledgement and, with durability sync, one
// fsync, where a JetStream atomic batch on a single server stages every
// batch in a file store of its own first. The message's headers say how
// many events it holds (Herald-Events) and the version of its last event
// (Herald-Version); its body is the events, each framed as
//
//	uvarint  number of attributes
//	         per attribute: uvarint length, name, uvarint length, value
//	uvarint  length of the data, the data
//
// after a format byte (packedFormat). The attributes are the event's
// binary-mode CloudEvents headers (event.NATS), exactly what a message of
// one event carries, so both layouts decode to the same envelope.
const (
	hdrEvents    = "Herald-Events"
	hdrVersion   = "Herald-Version"
	packedFormat = 1
)

// posBits is how many low bits of a position number an event inside its
// message: position = sequence<<posBits | index. MaxBatch must fit.
const posBits = 10

func position(seq uint64, index int) uint64 { return seq<<posBits | uint64(index) }

// seqOf returns the JetStream sequence of the message holding position p.
func seqOf(p uint64) uint64 { return p >> posBits }

var errPacked = errors.New("packed events are truncated or malformed")

// pack frames evs (their Sequence already set) into a packed body.
func pack(evs []*event.Event) []byte {
	size := 1
	for _, e := range evs {
		size += 64 + len(e.Data) + 24*event.NATS.HeaderCount(e) + len(e.ID) + len(e.Source) + len(e.Type) + len(e.Subject)
	}
	b := make([]byte, 1, size)
	b[0] = packedFormat
	hdr := make(map[string]string, 16)
	for _, e := range evs {
		clear(hdr)
		event.NATS.Encode(e, hdr)
		b = binary.AppendUvarint(b, uint64(len(hdr)))
		for k, v := range hdr {
			b = appendString(b, k)
			b = appendString(b, v)
		}
		b = binary.AppendUvarint(b, uint64(len(e.Data)))
		b = append(b, e.Data...)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// unpacker reads a packed body event by event.
type unpacker struct {
	b   []byte
	hdr map[string]string
}

func newUnpacker(body []byte) (*unpacker, error) {
	if len(body) == 0 || body[0] != packedFormat {
		return nil, fmt.Errorf("%w: unknown format", errPacked)
	}
	return &unpacker{b: body[1:], hdr: make(map[string]string, 16)}, nil
}

func (u *unpacker) bytes() ([]byte, error) {
	n, k := binary.Uvarint(u.b)
	if k <= 0 || n > uint64(len(u.b)-k) {
		return nil, errPacked
	}
	v := u.b[k : k+int(n)]
	u.b = u.b[k+int(n):]
	return v, nil
}

// next returns the next event's attributes (valid until the following
// call) and data (a slice of the body), or ok false at the end.
func (u *unpacker) next() (hdr map[string]string, data []byte, ok bool, err error) {
	if len(u.b) == 0 {
		return nil, nil, false, nil
	}
	n, k := binary.Uvarint(u.b)
	if k <= 0 || n > uint64(len(u.b)) {
		return nil, nil, false, errPacked
	}
	u.b = u.b[k:]
	clear(u.hdr)
	for range n {
		key, err := u.bytes()
		if err != nil {
			return nil, nil, false, err
		}
		val, err := u.bytes()
		if err != nil {
			return nil, nil, false, err
		}
		u.hdr[string(key)] = string(val)
	}
	data, err = u.bytes()
	if err != nil {
		return nil, nil, false, err
	}
	return u.hdr, data, true, nil
}

// unpack decodes every event of a packed body, which must hold n.
func unpack(body []byte, n int) ([]*event.Event, error) {
	if n < 1 || n > MaxBatch {
		return nil, fmt.Errorf("%w: the header says %d events", errPacked, n)
	}
	u, err := newUnpacker(body)
	if err != nil {
		return nil, err
	}
	evs := make([]*event.Event, 0, n)
	for {
		hdr, data, ok, err := u.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		e, err := event.NATS.Decode(hdr, data)
		if err != nil {
			return nil, fmt.Errorf("event %d of %d: %w", len(evs)+1, n, err)
		}
		evs = append(evs, e)
	}
	if len(evs) != n {
		return nil, fmt.Errorf("%w: %d events, the header says %d", errPacked, len(evs), n)
	}
	return evs, nil
}

// packedIDs returns the event ids of a packed body without decoding the
// events.
func packedIDs(body []byte) ([]string, error) {
	u, err := newUnpacker(body)
	if err != nil {
		return nil, err
	}
	var ids []string
	for len(u.b) > 0 {
		n, k := binary.Uvarint(u.b)
		if k <= 0 || n > uint64(len(u.b)) {
			return nil, errPacked
		}
		u.b = u.b[k:]
		id := ""
		for range n {
			key, err := u.bytes()
			if err != nil {
				return nil, err
			}
			val, err := u.bytes()
			if err != nil {
				return nil, err
			}
			if string(key) == "ce-id" {
				id = string(val)
			}
		}
		if _, err := u.bytes(); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}
