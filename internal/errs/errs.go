// Package errs classifies bootlace failures so the CLI can map them to the
// documented exit codes and stable error-code strings.
package errs

import (
	"errors"
	"fmt"
)

// Kind is the class of a failure; each kind has one exit code.
type Kind int

const (
	// Internal is a bug or an unexpected environment failure (exit 1).
	Internal Kind = iota
	// Usage is a bad command line (exit 2).
	Usage
	// Image means the image is not installable: not bootable, bad config (exit 3).
	Image
	// Target means the target is unusable: busy, mounted, not empty, too small (exit 4).
	Target
	// Fetch is a fetch, auth or signature failure (exit 5).
	Fetch
	// Interrupted means the install was stopped by a signal (exit 130).
	Interrupted
)

// ExitCode returns the process exit code documented for the kind.
func (k Kind) ExitCode() int {
	switch k {
	case Usage:
		return 2
	case Image:
		return 3
	case Target:
		return 4
	case Fetch:
		return 5
	case Interrupted:
		return 130
	default:
		return 1
	}
}

// String returns the stable code string used in JSON events.
func (k Kind) String() string {
	switch k {
	case Usage:
		return "usage"
	case Image:
		return "image-not-installable"
	case Target:
		return "target-unusable"
	case Fetch:
		return "fetch-failed"
	case Interrupted:
		return "interrupted"
	default:
		return "internal"
	}
}

// Error is a classified error: what failed (Op), where (Path), why (Err),
// and what the user can do about it (Hint).
type Error struct {
	Kind Kind
	Op   string
	Path string
	Hint string
	Err  error
}

func (e *Error) Error() string {
	msg := e.Op
	if e.Path != "" {
		msg += " " + e.Path
	}
	if e.Err != nil {
		if msg != "" {
			msg += ": "
		}
		msg += e.Err.Error()
	}
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// New returns a classified error. err may be nil.
func New(kind Kind, op, path string, err error, hint string) *Error {
	return &Error{Kind: kind, Op: op, Path: path, Err: err, Hint: hint}
}

// Newf returns a classified error with a formatted cause and no path.
func Newf(kind Kind, hint, format string, args ...any) *Error {
	return &Error{Kind: kind, Err: fmt.Errorf(format, args...), Hint: hint}
}

// KindOf returns the kind of the first classified error in err's chain,
// or Internal when there is none.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}

// HintOf returns the first hint in err's chain, if any.
func HintOf(err error) string {
	for err != nil {
		var e *Error
		if !errors.As(err, &e) {
			return ""
		}
		if e.Hint != "" {
			return e.Hint
		}
		err = e.Err
	}
	return ""
}
