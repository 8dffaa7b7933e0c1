//go:build !fault

package outbox_test

// faultEvents is the CI-sized fault run; build with -tags fault for the
// long one.
const faultEvents = 10_000
