package gateway

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks headers (https://www.standardwebhooks.com) on every
// push delivery.
const (
	// HeaderWebhookID is the event id: the same on every retry, so a
	// receiver deduplicates by it.
	HeaderWebhookID = "Webhook-Id"
	// HeaderWebhookTimestamp is when the request was signed, in Unix
	// seconds.
	HeaderWebhookTimestamp = "Webhook-Timestamp"
	// HeaderWebhookSignature is "v1," and the base64 HMAC-SHA256 of
	// "<id>.<timestamp>.<body>" under the subscription's secret.
	HeaderWebhookSignature = "Webhook-Signature"
)

// secretPrefix starts the text form of a webhook secret: "whsec_" and the
// key in base64.
const secretPrefix = "whsec_"

// ErrBadSignature is returned by Verify for a request the secret did not
// sign, or signed too long ago.
var ErrBadSignature = errors.New("webhook signature does not verify")

// NewSecret returns a random webhook secret ("whsec_" + 32 bytes in
// base64).
func NewSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return secretPrefix + base64.StdEncoding.EncodeToString(b[:])
}

// SecretKey returns the HMAC key of a secret: the base64 after "whsec_",
// or the text itself for a secret without the prefix (at least 16
// bytes).
func SecretKey(secret string) ([]byte, error) {
	if rest, ok := strings.CutPrefix(secret, secretPrefix); ok {
		k, err := base64.StdEncoding.DecodeString(rest)
		if err != nil || len(k) < 16 {
			return nil, fmt.Errorf("secret %s…: after %q want at least 16 bytes in base64", secretPrefix, secretPrefix)
		}
		return k, nil
	}
	if len(secret) < 16 {
		return nil, fmt.Errorf("secret of %d characters: want at least 16 (or whsec_ and base64)", len(secret))
	}
	return []byte(secret), nil
}

// Sign returns the Webhook-Signature value of a delivery: "v1," and the
// base64 HMAC-SHA256 of "<id>.<unix seconds>.<body>" under key.
func Sign(key []byte, id string, ts time.Time, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write(strconv.AppendInt(nil, ts.Unix(), 10))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Verify checks the Standard Webhooks headers of a push delivery against
// secret: one of the signatures must match and the timestamp be within
// tolerance of now (5 minutes if zero), which bounds replays.
func Verify(secret string, h http.Header, body []byte, tolerance time.Duration) error {
	key, err := SecretKey(secret)
	if err != nil {
		return err
	}
	if tolerance <= 0 {
		tolerance = 5 * time.Minute
	}
	id, tsText, sigs := h.Get(HeaderWebhookID), h.Get(HeaderWebhookTimestamp), h.Get(HeaderWebhookSignature)
	if id == "" || tsText == "" || sigs == "" {
		return fmt.Errorf("%w: missing %s, %s or %s", ErrBadSignature, HeaderWebhookID, HeaderWebhookTimestamp, HeaderWebhookSignature)
	}
	sec, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: timestamp %q", ErrBadSignature, tsText)
	}
	ts := time.Unix(sec, 0)
	if d := time.Since(ts); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: timestamp %s is more than %v away", ErrBadSignature, ts.UTC().Format(time.RFC3339), tolerance)
	}
	want := Sign(key, id, ts, body)
	for _, s := range strings.Fields(sigs) {
		if hmac.Equal([]byte(s), []byte(want)) {
			return nil
		}
	}
	return ErrBadSignature
}
