// Package natskv is an idempotency.Store on a NATS JetStream key-value
// bucket, Herald's default on the embedded server. It needs a server with
// per-message TTLs (nats-server 2.11 or later).
//
// Keys are arbitrary strings, so each is stored under the base64url SHA-256
// of the key (a valid KV key whatever the input), with the original key
// kept in the value. A value records the state (claimed or done), the
// claiming store and how long the record lives; the record's deadline is
// the server's timestamp of the write plus that duration, so every reader
// measures expiry against one clock.
//
// Claim creates the key (KV Create fails if it exists); an expired record
// is taken over with a write conditioned on the revision that was read, so
// of two consumers taking over one expired claim exactly one wins. Every
// write carries a per-message TTL of the record's life rounded up to whole
// seconds plus one, so the server deletes dead records by itself; reads
// compare deadlines to the millisecond.
//
//	kv, err := natskv.New(ctx, js, "herald_idempotency")
//	err = kv.Claim(ctx, "billing/"+eventID, 30*time.Second)
package natskv

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/idempotency"
)

// markerTTL is how long the server keeps the marker it leaves when a key
// expires or is released; the minimum it accepts.
const markerTTL = time.Second

// maxAttempts bounds how often Claim and Complete re-read a key that
// changed under them before giving up with ErrInProgress or an error.
const maxAttempts = 8

// Store is an idempotency.Store on a JetStream KV bucket. It is safe for
// concurrent use. Each Store has its own owner identity: its Release drops
// only claims it made. The JetStream connection stays the caller's to
// close.
type Store struct {
	js        jetstream.JetStream
	kv        jetstream.KeyValue
	bucket    string
	putPrefix string // subject prefix of the bucket's keys for publishes
	owner     string

	replicas int
	storage  jetstream.StorageType
}

// Option configures a Store.
type Option func(*Store)

// WithReplicas sets how many servers keep the bucket when New creates it.
// Default 1. Ignored for a bucket that exists.
func WithReplicas(n int) Option { return func(s *Store) { s.replicas = n } }

// WithStorage sets where the server keeps the bucket when New creates it.
// Default jetstream.FileStorage, which survives a restart; MemoryStorage
// is faster and forgets every record when the server stops. Ignored for a
// bucket that exists.
func WithStorage(st jetstream.StorageType) Option { return func(s *Store) { s.storage = st } }

// New returns a Store on the KV bucket named bucket, creating the bucket
// (history 1, per-key TTLs on) if it does not exist. An existing bucket
// must allow per-message TTLs and must not be a mirror.
func New(ctx context.Context, js jetstream.JetStream, bucket string, opts ...Option) (*Store, error) {
	if js == nil {
		return nil, errors.New("natskv: JetStream is nil")
	}
	s := &Store{js: js, bucket: bucket, owner: rand.Text(), replicas: 1, storage: jetstream.FileStorage}
	for _, o := range opts {
		o(s)
	}
	if s.replicas < 1 {
		return nil, fmt.Errorf("natskv: bucket %q: replicas %d: want 1 or more", bucket, s.replicas)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         bucket,
		Description:    "Herald idempotency records",
		History:        1,
		Storage:        s.storage,
		Replicas:       s.replicas,
		LimitMarkerTTL: markerTTL,
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = js.KeyValue(ctx, bucket)
	}
	if errors.Is(err, jetstream.ErrLimitMarkerTTLNotSupported) {
		return nil, fmt.Errorf("natskv: bucket %q: the server has no per-message TTLs, which need nats-server 2.11 or later: %w", bucket, err)
	}
	if err != nil {
		return nil, fmt.Errorf("natskv: bucket %q: %w", bucket, err)
	}
	stream, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return nil, fmt.Errorf("natskv: bucket %q: stream: %w", bucket, err)
	}
	cfg := stream.CachedInfo().Config
	if !cfg.AllowMsgTTL {
		return nil, fmt.Errorf("natskv: bucket %q exists without per-message TTLs: delete it, or recreate it with LimitMarkerTTL set, or choose another bucket name", bucket)
	}
	if cfg.Mirror != nil {
		return nil, fmt.Errorf("natskv: bucket %q is a mirror of %q: use the origin bucket", bucket, cfg.Mirror.Name)
	}
	s.kv = kv
	s.putPrefix = putPrefix(js.Options(), bucket)
	return s, nil
}

// putPrefix returns the subject prefix writes to the bucket go to, as
// nats.go's KV does: behind a JetStream domain or API prefix the subject
// carries that prefix.
func putPrefix(o jetstream.JetStreamOptions, bucket string) string {
	pre := "$KV." + bucket + "."
	switch {
	case o.Domain != "":
		return "$JS." + o.Domain + ".API." + pre
	case o.APIPrefix != "" && o.APIPrefix != jetstream.DefaultAPIPrefix:
		return strings.TrimSuffix(o.APIPrefix, ".") + "." + pre
	}
	return pre
}

var _ idempotency.Store = (*Store)(nil)

// Key returns the KV key under which the store keeps key: the unpadded
// base64url SHA-256 of key. Operators use it to find a record with the
// nats CLI.
func Key(key string) string {
	sum := sha256.Sum256([]byte(key))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Claim implements idempotency.Store. A new key takes one round trip; an
// existing one a read more, and an expired one a conditional write more.
func (s *Store) Claim(ctx context.Context, key string, lease time.Duration) error {
	if err := check(ctx, "claim", key, "lease", lease); err != nil {
		return err
	}
	kk := Key(key)
	val := encode(stateClaimed, s.owner, lease, key)
	for range maxAttempts {
		_, err := s.kv.Create(ctx, kk, val, jetstream.KeyTTL(serverTTL(lease)))
		if err == nil {
			return nil
		}
		if !isConflict(err) {
			return fmt.Errorf("natskv: claim %q: %w", key, err)
		}
		e, r, err := s.get(ctx, kk, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // gone since Create saw it: create again
		}
		if err != nil {
			return fmt.Errorf("natskv: claim %q: %w", key, err)
		}
		if r.live(e.Created(), time.Now()) {
			if r.state == stateDone {
				return idempotency.ErrDuplicate
			}
			return idempotency.ErrInProgress
		}
		// Expired: take it over only if nobody wrote it since we read it.
		err = s.put(ctx, kk, val, lease, e.Revision())
		if err == nil {
			return nil
		}
		if !isConflict(err) {
			return fmt.Errorf("natskv: claim %q: take over expired record: %w", key, err)
		}
	}
	// The key changed under every attempt: others are busy with it.
	return idempotency.ErrInProgress
}

// Complete implements idempotency.Store with one unconditional write of a
// done record. It records the key as done whatever it held, even when
// this store's claim had expired or another store had taken it over: the
// work is done, and recording it keeps the next redelivery from repeating
// it. A revision check here would cost a read and change no outcome.
func (s *Store) Complete(ctx context.Context, key string, ttl time.Duration) error {
	if err := check(ctx, "complete", key, "ttl", ttl); err != nil {
		return err
	}
	if err := s.put(ctx, Key(key), encode(stateDone, "", ttl, key), ttl, 0); err != nil {
		return fmt.Errorf("natskv: complete %q: %w", key, err)
	}
	return nil
}

// Release implements idempotency.Store. It purges the key only while it
// holds this store's claim, conditioned on the revision it read, so a
// claim taken over or completed meanwhile stays.
func (s *Store) Release(ctx context.Context, key string) error {
	if err := check(ctx, "release", key, "", 0); err != nil {
		return err
	}
	kk := Key(key)
	e, r, err := s.get(ctx, kk, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("natskv: release %q: %w", key, err)
	}
	if r.state != stateClaimed || r.owner != s.owner {
		return nil
	}
	err = s.kv.Purge(ctx, kk, jetstream.LastRevision(e.Revision()), jetstream.PurgeTTL(markerTTL))
	if err != nil && !isConflict(err) {
		return fmt.Errorf("natskv: release %q: %w", key, err)
	}
	return nil
}

// get reads and decodes the record under kk, checking it is key's.
func (s *Store) get(ctx context.Context, kk, key string) (jetstream.KeyValueEntry, record, error) {
	e, err := s.kv.Get(ctx, kk)
	if err != nil {
		return nil, record{}, err
	}
	r, err := decode(e.Value())
	if err != nil {
		return nil, record{}, fmt.Errorf("bucket %q key %q revision %d: %w", s.bucket, kk, e.Revision(), err)
	}
	if r.key != key {
		return nil, record{}, fmt.Errorf("bucket %q key %q holds the record of another key (%q)", s.bucket, kk, r.key)
	}
	return e, r, nil
}

// put writes val under kk with a server TTL covering life. A revision
// above 0 makes the write conditional on it being the key's last; 0 writes
// unconditionally. (KV Update has no TTL option, so the store publishes
// to the bucket's subject as KV does, with the TTL header.)
func (s *Store) put(ctx context.Context, kk string, val []byte, life time.Duration, revision uint64) error {
	msg := &nats.Msg{Subject: s.putPrefix + kk, Data: val, Header: nats.Header{}}
	opts := []jetstream.PublishOpt{jetstream.WithMsgTTL(serverTTL(life))}
	if revision > 0 {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(revision))
	}
	_, err := s.js.PublishMsg(ctx, msg, opts...)
	return err
}

// serverTTL is the per-message TTL for a record that lives d: the server
// counts whole seconds, so round up and add one, keeping the record past
// its deadline until reads have seen it expire.
func serverTTL(d time.Duration) time.Duration {
	return (d+time.Second-1)/time.Second*time.Second + time.Second
}

// isConflict reports whether err is a failed revision expectation: the key
// exists (Create) or changed since it was read (conditional write).
func isConflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var api *jetstream.APIError
	return errors.As(err, &api) &&
		(api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

const (
	stateClaimed = 'c'
	stateDone    = 'd'
	formatV1     = "herald-idem-1"
)

// record is a decoded value: formatV1 \n state \n owner \n life-ns \n key.
// The key comes last so it may hold newlines.
type record struct {
	state byte
	owner string
	life  time.Duration
	key   string
}

func encode(state byte, owner string, life time.Duration, key string) []byte {
	b := make([]byte, 0, len(formatV1)+len(owner)+len(key)+26)
	b = append(b, formatV1...)
	b = append(b, '\n', state, '\n')
	b = append(b, owner...)
	b = append(b, '\n')
	b = strconv.AppendInt(b, int64(life), 10)
	b = append(b, '\n')
	return append(b, key...)
}

func decode(v []byte) (record, error) {
	bad := func(why string) (record, error) {
		return record{}, fmt.Errorf("not an idempotency record (%s); is the bucket shared with something else?", why)
	}
	parts := bytes.SplitN(v, []byte{'\n'}, 5)
	if len(parts) != 5 || string(parts[0]) != formatV1 {
		return bad("unknown format")
	}
	if len(parts[1]) != 1 || (parts[1][0] != stateClaimed && parts[1][0] != stateDone) {
		return bad(fmt.Sprintf("state %q", parts[1]))
	}
	life, err := strconv.ParseInt(string(parts[3]), 10, 64)
	if err != nil || life <= 0 || strconv.FormatInt(life, 10) != string(parts[3]) {
		return bad(fmt.Sprintf("life %q", parts[3]))
	}
	if len(parts[4]) == 0 {
		return bad("empty key")
	}
	return record{state: parts[1][0], owner: string(parts[2]), life: time.Duration(life), key: string(parts[4])}, nil
}

// live reports whether a record written at created is still in force.
func (r record) live(created, now time.Time) bool {
	return now.Before(created.Add(r.life))
}

// check validates the arguments: a non-empty key, a positive duration
// (unless name is ""), a live context.
func check(ctx context.Context, op, key, name string, d time.Duration) error {
	if key == "" {
		return fmt.Errorf("natskv: %s: empty key", op)
	}
	if name != "" && d <= 0 {
		return fmt.Errorf("natskv: %s %q: %s %v must be positive", op, key, name, d)
	}
	return ctx.Err()
}
