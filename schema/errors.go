package schema

import (
	"errors"
	"fmt"
)

// Error is a registry error with a Confluent error code. Codes of five
// digits carry the HTTP status in their first three (40401 is a 404); 409
// is an incompatible schema.
//
// Errors match the sentinels below by code with errors.Is.
type Error struct {
	// Code is the Confluent error code.
	Code int
	// Message says what failed, naming the input.
	Message string
	// Err is the underlying cause, if any.
	Err error
}

// Error returns the message.
func (e *Error) Error() string { return e.Message }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is matches another *Error with the same code.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Code == e.Code && t.Message == "" && t.Err == nil
}

// Status returns the HTTP status for the error's code.
func (e *Error) Status() int {
	if e.Code >= 10000 {
		return e.Code / 100
	}
	return e.Code
}

// Sentinels for the Confluent error codes. Compare with errors.Is.
var (
	// ErrSubjectNotFound (40401): no such subject, or no live version in it.
	ErrSubjectNotFound = &Error{Code: 40401}
	// ErrVersionNotFound (40402): no such version of the subject.
	ErrVersionNotFound = &Error{Code: 40402}
	// ErrSchemaNotFound (40403): no such schema id, or the schema is not
	// registered under the subject.
	ErrSchemaNotFound = &Error{Code: 40403}
	// ErrSubjectSoftDeleted (40404): the subject was already soft-deleted.
	ErrSubjectSoftDeleted = &Error{Code: 40404}
	// ErrSubjectNotSoftDeleted (40405): a permanent delete needs a soft
	// delete first.
	ErrSubjectNotSoftDeleted = &Error{Code: 40405}
	// ErrVersionSoftDeleted (40406): the version was already soft-deleted.
	ErrVersionSoftDeleted = &Error{Code: 40406}
	// ErrVersionNotSoftDeleted (40407): a permanent delete needs a soft
	// delete first.
	ErrVersionNotSoftDeleted = &Error{Code: 40407}
	// ErrSubjectLevelConfigMissing (40408): the subject has no level of its
	// own (ask with defaultToGlobal).
	ErrSubjectLevelConfigMissing = &Error{Code: 40408}
	// ErrSubjectLevelModeMissing (40409): the subject has no mode of its own.
	ErrSubjectLevelModeMissing = &Error{Code: 40409}
	// ErrIncompatible (409): the schema breaks the subject's compatibility
	// level; the message lists every incompatibility.
	ErrIncompatible = &Error{Code: 409}
	// ErrInvalidSchema (42201): the schema does not parse, or a reference
	// does not resolve.
	ErrInvalidSchema = &Error{Code: 42201}
	// ErrInvalidVersion (42202): not a version number.
	ErrInvalidVersion = &Error{Code: 42202}
	// ErrInvalidCompatibilityLevel (42203): not one of the seven levels.
	ErrInvalidCompatibilityLevel = &Error{Code: 42203}
	// ErrInvalidMode (42204): not READWRITE, READONLY or IMPORT.
	ErrInvalidMode = &Error{Code: 42204}
	// ErrOperationNotPermitted (42205): refused by the mode (a write in
	// READONLY, an id chosen outside IMPORT...).
	ErrOperationNotPermitted = &Error{Code: 42205}
	// ErrReferenceExists (42206): other live schemas reference the version.
	ErrReferenceExists = &Error{Code: 42206}
	// ErrIDDoesNotMatch (42207): the requested id belongs to another schema.
	ErrIDDoesNotMatch = &Error{Code: 42207}
	// ErrInvalidSubject (42208): the subject name is refused.
	ErrInvalidSubject = &Error{Code: 42208}
	// ErrStore (50001): the store failed.
	ErrStore = &Error{Code: 50001}
	// ErrUnavailable (50301): the store does not answer or is gone (its
	// KV bucket was deleted, JetStream is down); the request may succeed
	// later. Herald's own code: Confluent has none for it.
	ErrUnavailable = &Error{Code: 50301}
)

func newError(kind *Error, format string, args ...any) *Error {
	return &Error{Code: kind.Code, Message: fmt.Sprintf(format, args...)}
}

func storeError(err error, format string, args ...any) *Error {
	if errors.Is(err, ErrStoreUnavailable) {
		return &Error{Code: ErrUnavailable.Code, Message: fmt.Sprintf(format, args...) + ": " + err.Error(), Err: err}
	}
	return &Error{Code: ErrStore.Code, Message: fmt.Sprintf(format, args...) + ": " + err.Error(), Err: err}
}
