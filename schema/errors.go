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
	ErrSubjectNotFound           = &Error{Code: 40401}
	ErrVersionNotFound           = &Error{Code: 40402}
	ErrSchemaNotFound            = &Error{Code: 40403}
	ErrSubjectSoftDeleted        = &Error{Code: 40404}
	ErrSubjectNotSoftDeleted     = &Error{Code: 40405}
	ErrVersionSoftDeleted        = &Error{Code: 40406}
	ErrVersionNotSoftDeleted     = &Error{Code: 40407}
	ErrSubjectLevelConfigMissing = &Error{Code: 40408}
	ErrSubjectLevelModeMissing   = &Error{Code: 40409}
	ErrIncompatible              = &Error{Code: 409}
	ErrInvalidSchema             = &Error{Code: 42201}
	ErrInvalidVersion            = &Error{Code: 42202}
	ErrInvalidCompatibilityLevel = &Error{Code: 42203}
	ErrInvalidMode               = &Error{Code: 42204}
	ErrOperationNotPermitted     = &Error{Code: 42205}
	ErrReferenceExists           = &Error{Code: 42206}
	ErrIDDoesNotMatch            = &Error{Code: 42207}
	ErrInvalidSubject            = &Error{Code: 42208}
	ErrStore                     = &Error{Code: 50001}
)

func newError(kind *Error, format string, args ...any) *Error {
	return &Error{Code: kind.Code, Message: fmt.Sprintf(format, args...)}
}

func storeError(err error, format string, args ...any) *Error {
	return &Error{Code: ErrStore.Code, Message: fmt.Sprintf(format, args...) + ": " + err.Error(), Err: err}
}
