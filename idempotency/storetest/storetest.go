// Package storetest is the conformance suite of idempotency.Store. Every
// store runs it with one call:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) idempotency.Store { return newStore(t) })
//	}
//
// The suite uses short leases and TTLs (hundreds of milliseconds) and polls
// with deadlines, so a store must honour expiry to the millisecond, not to
// the second; stores whose backend expires coarsely check deadlines when
// they read.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/idempotency"
)

// Names of the suite's tests, for Skip.
const (
	TestClaimCompleteDuplicate = "ClaimCompleteDuplicate"
	TestClaimReleaseClaim      = "ClaimReleaseClaim"
	TestInProgress             = "InProgress"
	TestCompleteWithoutClaim   = "CompleteWithoutClaim"
	TestExpiredClaimTakenOver  = "ExpiredClaimTakenOver"
	TestReleaseAfterTakeover   = "ReleaseAfterTakeover"
	TestCompletionExpiry       = "CompletionExpiry"
	TestConcurrentClaims       = "ConcurrentClaims"
	TestConcurrentTakeover     = "ConcurrentTakeover"
	TestDistinctKeys           = "DistinctKeys"
	TestOddKeys                = "OddKeys"
	TestInvalidArguments       = "InvalidArguments"
	TestCanceledContext        = "CanceledContext"
)

// NewStore returns a Store for one test. Every call during one Run must
// return a Store over the same records, as separate processes sharing a
// backend would see them: the suite calls it more than once to play
// several consumers. Give each Store a connection of its own where the
// backend has connections, so the contention tests race in the backend
// and not in one client's queue. Whatever it opens, it closes with
// t.Cleanup.
type NewStore func(t *testing.T) idempotency.Store

// Option tunes the suite to a store.
type Option func(*config)

type config struct {
	skip map[string]string
}

// Skip skips the named test, reporting reason. Use it only for a guarantee
// the store documents it does not give.
func Skip(test, reason string) Option {
	return func(c *config) { c.skip[test] = reason }
}

// Timing of the suite. Leases and TTLs are short so the suite is quick;
// waits are long so a loaded machine does not fail it.
const (
	shortLease = 400 * time.Millisecond
	longLease  = time.Minute
	shortTTL   = 400 * time.Millisecond
	longTTL    = time.Hour
	waitFor    = 15 * time.Second
	pollEvery  = 20 * time.Millisecond
	// clockSlack absorbs the difference between the test's monotonic clock
	// and the wall clock a backend measures expiry with.
	clockSlack = 25 * time.Millisecond
	contenders = 50
)

// Run runs the whole suite as parallel subtests of t.
func Run(t *testing.T, newStore NewStore, opts ...Option) {
	t.Helper()
	c := &config{skip: map[string]string{}}
	for _, o := range opts {
		o(c)
	}
	tests := []struct {
		name string
		fn   func(*testing.T, NewStore)
	}{
		{TestClaimCompleteDuplicate, testClaimCompleteDuplicate},
		{TestClaimReleaseClaim, testClaimReleaseClaim},
		{TestInProgress, testInProgress},
		{TestCompleteWithoutClaim, testCompleteWithoutClaim},
		{TestExpiredClaimTakenOver, testExpiredClaimTakenOver},
		{TestReleaseAfterTakeover, testReleaseAfterTakeover},
		{TestCompletionExpiry, testCompletionExpiry},
		{TestConcurrentClaims, testConcurrentClaims},
		{TestConcurrentTakeover, testConcurrentTakeover},
		{TestDistinctKeys, testDistinctKeys},
		{TestOddKeys, testOddKeys},
		{TestInvalidArguments, testInvalidArguments},
		{TestCanceledContext, testCanceledContext},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if reason, ok := c.skip[tc.name]; ok {
				t.Skip(reason)
			}
			t.Parallel()
			tc.fn(t, newStore)
		})
	}
}

// uniqueKey returns a key no other test uses, with a readable tail.
func uniqueKey(t *testing.T, tail string) string {
	t.Helper()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("random key: %v", err)
	}
	return "storetest-" + hex.EncodeToString(b[:]) + "/" + tail
}

// want fails the test unless err matches target; a nil target wants nil.
func want(t *testing.T, what string, err, target error) {
	t.Helper()
	switch {
	case target == nil && err != nil:
		t.Fatalf("%s: got error %v, want nil", what, err)
	case target != nil && !errors.Is(err, target):
		t.Fatalf("%s: got %v, want %v", what, err, target)
	}
}

// claimUntil polls Claim until it succeeds, failing after waitFor. It
// returns when the claim succeeded. Every failed attempt must be one of
// the errors in allowed.
func claimUntil(t *testing.T, s idempotency.Store, key string, lease time.Duration, awaited string, allowed ...error) time.Time {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	var last error
	for time.Now().Before(deadline) {
		err := s.Claim(t.Context(), key, lease)
		if err == nil {
			return time.Now()
		}
		ok := false
		for _, a := range allowed {
			ok = ok || errors.Is(err, a)
		}
		if !ok {
			t.Fatalf("waiting for %s: claim %q: unexpected error %v", awaited, key, err)
		}
		last = err
		time.Sleep(pollEvery)
	}
	t.Fatalf("waiting for %s: claim %q still fails after %v: %v", awaited, key, waitFor, last)
	return time.Time{}
}

func testClaimCompleteDuplicate(t *testing.T, newStore NewStore) {
	s := newStore(t)
	ctx := t.Context()
	key := uniqueKey(t, "order-1")
	want(t, "first claim", s.Claim(ctx, key, longLease), nil)
	want(t, "second claim while the first is live", s.Claim(ctx, key, longLease), idempotency.ErrInProgress)
	want(t, "complete", s.Complete(ctx, key, longTTL), nil)
	want(t, "claim after complete", s.Claim(ctx, key, longLease), idempotency.ErrDuplicate)
	want(t, "release of a completed key", s.Release(ctx, key), nil)
	want(t, "claim after releasing a completed key", s.Claim(ctx, key, longLease), idempotency.ErrDuplicate)
	want(t, "second complete", s.Complete(ctx, key, longTTL), nil)
	want(t, "claim after second complete", s.Claim(ctx, key, longLease), idempotency.ErrDuplicate)
	other := newStore(t)
	want(t, "claim of a completed key from another store", other.Claim(ctx, key, longLease), idempotency.ErrDuplicate)
}

func testClaimReleaseClaim(t *testing.T, newStore NewStore) {
	s := newStore(t)
	ctx := t.Context()
	key := uniqueKey(t, "release")
	want(t, "release of a key never claimed", s.Release(ctx, key), nil)
	for i := range 3 {
		want(t, fmt.Sprintf("claim %d", i), s.Claim(ctx, key, longLease), nil)
		want(t, fmt.Sprintf("release %d", i), s.Release(ctx, key), nil)
	}
	want(t, "release twice", s.Release(ctx, key), nil)
	want(t, "claim after releases", s.Claim(ctx, key, longLease), nil)
	want(t, "complete after releases", s.Complete(ctx, key, longTTL), nil)
	want(t, "claim after complete", s.Claim(ctx, key, longLease), idempotency.ErrDuplicate)
}

func testInProgress(t *testing.T, newStore NewStore) {
	a, b := newStore(t), newStore(t)
	ctx := t.Context()
	key := uniqueKey(t, "busy")
	want(t, "claim by a", a.Claim(ctx, key, longLease), nil)
	for i := range 3 {
		want(t, fmt.Sprintf("claim %d by b", i), b.Claim(ctx, key, longLease), idempotency.ErrInProgress)
		want(t, fmt.Sprintf("claim %d by a again", i), a.Claim(ctx, key, longLease), idempotency.ErrInProgress)
	}
	want(t, "release by a", a.Release(ctx, key), nil)
	want(t, "claim by b after a released", b.Claim(ctx, key, longLease), nil)
	want(t, "claim by a while b holds it", a.Claim(ctx, key, longLease), idempotency.ErrInProgress)
	want(t, "complete by b", b.Complete(ctx, key, longTTL), nil)
	want(t, "claim by a after b completed", a.Claim(ctx, key, longLease), idempotency.ErrDuplicate)
}

func testCompleteWithoutClaim(t *testing.T, newStore NewStore) {
	s := newStore(t)
	ctx := t.Context()
	key := uniqueKey(t, "unclaimed")
	want(t, "complete of a key never claimed", s.Complete(ctx, key, longTTL), nil)
	want(t, "claim after complete", s.Claim(ctx, key, longLease), idempotency.ErrDuplicate)
}

func testExpiredClaimTakenOver(t *testing.T, newStore NewStore) {
	a, b := newStore(t), newStore(t)
	ctx := t.Context()
	key := uniqueKey(t, "crashed-holder")
	start := time.Now()
	want(t, "claim by a", a.Claim(ctx, key, shortLease), nil)
	err := b.Claim(ctx, key, longLease)
	if time.Since(start) < shortLease-clockSlack {
		want(t, "claim by b within a's lease", err, idempotency.ErrInProgress)
	} else if err != nil && !errors.Is(err, idempotency.ErrInProgress) {
		t.Fatalf("claim by b: %v", err)
	}
	// a never completes nor releases: it "crashed". Once its lease ends, b
	// takes the key over.
	if err != nil {
		got := claimUntil(t, b, key, longLease, "a's "+shortLease.String()+" lease to expire", idempotency.ErrInProgress)
		if el := got.Sub(start); el < shortLease-clockSlack {
			t.Fatalf("b took the key over %v after a claimed it for %v", el, shortLease)
		}
	}
	want(t, "claim by a after b took over", a.Claim(ctx, key, longLease), idempotency.ErrInProgress)
	want(t, "complete by b", b.Complete(ctx, key, longTTL), nil)
	want(t, "claim by a after b completed", a.Claim(ctx, key, longLease), idempotency.ErrDuplicate)
}

func testReleaseAfterTakeover(t *testing.T, newStore NewStore) {
	a, b := newStore(t), newStore(t)
	ctx := t.Context()
	key := uniqueKey(t, "late-release")
	start := time.Now()
	want(t, "claim by a", a.Claim(ctx, key, shortLease), nil)
	got := claimUntil(t, b, key, longLease, "a's "+shortLease.String()+" lease to expire", idempotency.ErrInProgress)
	if el := got.Sub(start); el < shortLease-clockSlack {
		t.Fatalf("b took the key over %v after a claimed it for %v", el, shortLease)
	}
	// a's handler fails late and releases: that must not drop b's claim.
	want(t, "late release by a", a.Release(ctx, key), nil)
	want(t, "claim by a after its late release", a.Claim(ctx, key, longLease), idempotency.ErrInProgress)
	want(t, "release by b", b.Release(ctx, key), nil)
	want(t, "claim by a after b released", a.Claim(ctx, key, longLease), nil)
}

func testCompletionExpiry(t *testing.T, newStore NewStore) {
	s := newStore(t)
	ctx := t.Context()
	key := uniqueKey(t, "short-ttl")
	want(t, "claim", s.Claim(ctx, key, longLease), nil)
	start := time.Now()
	want(t, "complete", s.Complete(ctx, key, shortTTL), nil)
	err := s.Claim(ctx, key, longLease)
	if time.Since(start) < shortTTL-clockSlack {
		want(t, "claim within the completion's TTL", err, idempotency.ErrDuplicate)
	} else if err != nil && !errors.Is(err, idempotency.ErrDuplicate) {
		t.Fatalf("claim after complete: %v", err)
	}
	if err != nil {
		got := claimUntil(t, s, key, longLease, "the completion's "+shortTTL.String()+" TTL to expire", idempotency.ErrDuplicate)
		if el := got.Sub(start); el < shortTTL-clockSlack {
			t.Fatalf("key claimable %v after completion with TTL %v", el, shortTTL)
		}
	}
	want(t, "claim right after the expired completion was reclaimed", s.Claim(ctx, key, longLease), idempotency.ErrInProgress)
}

// race makes n claims on key at once over the given stores (round robin)
// and returns how many succeeded and the errors of the others.
func race(t *testing.T, stores []idempotency.Store, key string, n int) (int, []error) {
	t.Helper()
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make([]error, n)
	)
	for i := range n {
		s := stores[i%len(stores)]
		wg.Go(func() {
			<-start
			errs[i] = s.Claim(t.Context(), key, longLease)
		})
	}
	close(start)
	wg.Wait()
	won, lost := 0, []error(nil)
	for _, err := range errs {
		if err == nil {
			won++
		} else {
			lost = append(lost, err)
		}
	}
	return won, lost
}

func someStores(t *testing.T, newStore NewStore) []idempotency.Store {
	stores := make([]idempotency.Store, 5)
	for i := range stores {
		stores[i] = newStore(t)
	}
	return stores
}

func testConcurrentClaims(t *testing.T, newStore NewStore) {
	stores := someStores(t, newStore)
	key := uniqueKey(t, "contended")
	won, lost := race(t, stores, key, contenders)
	if won != 1 {
		t.Fatalf("%d of %d concurrent claims won, want exactly 1", won, contenders)
	}
	for _, err := range lost {
		want(t, "losing claim", err, idempotency.ErrInProgress)
	}
	want(t, "complete", stores[0].Complete(t.Context(), key, longTTL), nil)
	won, lost = race(t, stores, key, contenders)
	if won != 0 {
		t.Fatalf("%d claims of a completed key won, want 0", won)
	}
	for _, err := range lost {
		want(t, "claim of a completed key", err, idempotency.ErrDuplicate)
	}
}

func testConcurrentTakeover(t *testing.T, newStore NewStore) {
	stores := someStores(t, newStore)
	key := uniqueKey(t, "contended-expired")
	want(t, "claim", stores[0].Claim(t.Context(), key, shortLease), nil)
	// Wait out the lease so every contender below finds an expired claim.
	time.Sleep(shortLease + 50*time.Millisecond)
	won, lost := race(t, stores, key, contenders)
	if won != 1 {
		t.Fatalf("%d of %d concurrent takeovers of an expired claim won, want exactly 1", won, contenders)
	}
	for _, err := range lost {
		want(t, "losing takeover", err, idempotency.ErrInProgress)
	}
}

func testDistinctKeys(t *testing.T, newStore NewStore) {
	s := newStore(t)
	ctx := t.Context()
	k1, k2 := uniqueKey(t, "one"), uniqueKey(t, "two")
	want(t, "claim k1", s.Claim(ctx, k1, longLease), nil)
	want(t, "claim k2 while k1 is held", s.Claim(ctx, k2, longLease), nil)
	want(t, "complete k1", s.Complete(ctx, k1, longTTL), nil)
	want(t, "claim k2 after k1 completed", s.Claim(ctx, k2, longLease), idempotency.ErrInProgress)
	want(t, "release k2", s.Release(ctx, k2), nil)
	want(t, "claim k1 after k2 released", s.Claim(ctx, k1, longLease), idempotency.ErrDuplicate)
	want(t, "claim k2 after release", s.Claim(ctx, k2, longLease), nil)
	// Keys that share a prefix, or differ in case, are different keys.
	want(t, "claim k1+suffix", s.Claim(ctx, k1+"/x", longLease), nil)
	want(t, "claim upper-case k1", s.Claim(ctx, strings.ToUpper(k1), longLease), nil)
	want(t, "claim k1 prefix", s.Claim(ctx, k1[:len(k1)-1], longLease), nil)
}

func testOddKeys(t *testing.T, newStore NewStore) {
	s := newStore(t)
	odd := map[string]string{
		"unicode":        "événement/注文/🙂",
		"slashes":        "/a//b/c/",
		"nats wildcards": "orders.*.>",
		"dots":           "..a..b..",
		"whitespace":     " a b\tc\nd ",
		"quotes":         `'"\` + "`%;--",
		"1 KiB ascii":    strings.Repeat("k", 1024),
		"1 KiB unicode":  strings.Repeat("é", 512),
		"one byte":       "x",
	}
	for name, tail := range odd {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			key := uniqueKey(t, tail)
			want(t, "claim", s.Claim(ctx, key, longLease), nil)
			want(t, "claim again", s.Claim(ctx, key, longLease), idempotency.ErrInProgress)
			want(t, "claim of a longer key", s.Claim(ctx, key+"!", longLease), nil)
			want(t, "complete", s.Complete(ctx, key, longTTL), nil)
			want(t, "claim after complete", s.Claim(ctx, key, longLease), idempotency.ErrDuplicate)
			want(t, "claim of the longer key after complete", s.Claim(ctx, key+"!", longLease), idempotency.ErrInProgress)
			want(t, "release the longer key", s.Release(ctx, key+"!"), nil)
			want(t, "claim the longer key again", s.Claim(ctx, key+"!", longLease), nil)
		})
	}
}

func testInvalidArguments(t *testing.T, newStore NewStore) {
	s := newStore(t)
	ctx := t.Context()
	key := uniqueKey(t, "args")
	notOutcome := func(what string, err error) {
		t.Helper()
		if err == nil || errors.Is(err, idempotency.ErrDuplicate) || errors.Is(err, idempotency.ErrInProgress) {
			t.Fatalf("%s: got %v, want an argument error", what, err)
		}
	}
	notOutcome("claim of an empty key", s.Claim(ctx, "", longLease))
	notOutcome("complete of an empty key", s.Complete(ctx, "", longTTL))
	notOutcome("release of an empty key", s.Release(ctx, ""))
	notOutcome("claim with a zero lease", s.Claim(ctx, key, 0))
	notOutcome("claim with a negative lease", s.Claim(ctx, key, -time.Second))
	want(t, "claim after the invalid claims", s.Claim(ctx, key, longLease), nil)
	notOutcome("complete with a zero TTL", s.Complete(ctx, key, 0))
	want(t, "claim after the invalid complete", s.Claim(ctx, key, longLease), idempotency.ErrInProgress)
}

func testCanceledContext(t *testing.T, newStore NewStore) {
	s := newStore(t)
	key := uniqueKey(t, "canceled")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	want(t, "claim with a canceled context", s.Claim(ctx, key, longLease), context.Canceled)
	want(t, "claim after the canceled claim", s.Claim(t.Context(), key, longLease), nil)
	want(t, "complete with a canceled context", s.Complete(ctx, key, longTTL), context.Canceled)
	want(t, "release with a canceled context", s.Release(ctx, key), context.Canceled)
	want(t, "claim after the canceled release", s.Claim(t.Context(), key, longLease), idempotency.ErrInProgress)
}
