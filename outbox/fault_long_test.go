//go:build fault

package outbox_test

// faultEvents is the long fault run (-tags fault).
const faultEvents = 200_000
