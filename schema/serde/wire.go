package serde

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Magic is the first byte of every payload in the Confluent wire format.
const Magic byte = 0

// HeaderSize is the size of the magic byte and the schema id.
const HeaderSize = 5

// ErrNotFramed is returned (wrapped) for a payload that does not start
// with the Confluent wire format header.
var ErrNotFramed = errors.New("serde: payload is not in the Confluent wire format")

// AppendHeader appends the wire format header for schema id to dst.
func AppendHeader(dst []byte, id int) []byte {
	return append(dst, Magic, byte(id>>24), byte(id>>16), byte(id>>8), byte(id))
}

// ParseHeader returns the schema id a payload was written with and the
// bytes after the header.
func ParseHeader(b []byte) (id int, rest []byte, err error) {
	if len(b) < HeaderSize {
		return 0, nil, fmt.Errorf("%w: %d bytes, want at least %d", ErrNotFramed, len(b), HeaderSize)
	}
	if b[0] != Magic {
		return 0, nil, fmt.Errorf("%w: magic byte %d, want %d", ErrNotFramed, b[0], Magic)
	}
	id = int(binary.BigEndian.Uint32(b[1:5]))
	if id <= 0 || id > 1<<31-1 {
		return 0, nil, fmt.Errorf("%w: schema id %d out of range", ErrNotFramed, int32(binary.BigEndian.Uint32(b[1:5])))
	}
	return id, b[5:], nil
}

// maxIndexes bounds the message index path a payload may claim.
const maxIndexes = 64

// AppendIndexes appends a Protobuf message index path: the count, then
// each index, as zig-zag varints; the common path [0] is the single byte 0.
func AppendIndexes(dst []byte, idx []int) []byte {
	if len(idx) == 0 || (len(idx) == 1 && idx[0] == 0) {
		return append(dst, 0)
	}
	dst = binary.AppendVarint(dst, int64(len(idx)))
	for _, i := range idx {
		dst = binary.AppendVarint(dst, int64(i))
	}
	return dst
}

// ParseIndexes reads a Protobuf message index path and returns it with the
// bytes after it.
func ParseIndexes(b []byte) ([]int, []byte, error) {
	n, k := binary.Varint(b)
	if k <= 0 {
		return nil, nil, fmt.Errorf("%w: truncated message index count", ErrNotFramed)
	}
	b = b[k:]
	if n == 0 {
		return []int{0}, b, nil
	}
	if n < 0 || n > maxIndexes {
		return nil, nil, fmt.Errorf("%w: message index count %d out of range", ErrNotFramed, n)
	}
	idx := make([]int, n)
	for i := range idx {
		v, k := binary.Varint(b)
		if k <= 0 || v < 0 || v > 1<<31-1 {
			return nil, nil, fmt.Errorf("%w: bad message index %d", ErrNotFramed, i)
		}
		idx[i] = int(v)
		b = b[k:]
	}
	return idx, b, nil
}
