package mongolock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

var (
	// ErrLocked is matched by the error of TryAcquire, Acquire and Do when
	// every document that matches the filter is locked by another holder.
	// The error is a *LockedDocumentError that names the holder.
	ErrLocked = errors.New("mongolock: document is locked")

	// ErrNotFound is returned by TryAcquire, Acquire and Do when no document
	// matches the filter. Acquire does not wait for one to appear.
	ErrNotFound = errors.New("mongolock: no document matches the filter")

	// ErrLockLost is matched by the error of Release, ReleaseWithUpdate,
	// ReleaseAndDelete, Refresh and Do when the lock is no longer held: it was
	// broken, taken over after its lease ran out, unlocked by an administrator,
	// the document was deleted, or the lock was already released. Nothing in
	// the database is changed.
	ErrLockLost = errors.New("mongolock: lock lost")

	// ErrInvalidOption is matched by the error of any call given bad input: a
	// nil collection, a filter, update or projection that is not a document,
	// a negative duration, an update that writes the lock fields, or both an
	// update and a delete on release. Nothing is sent to the server.
	ErrInvalidOption = errors.New("mongolock: invalid option")
)

// timeLayout is Python's isoformat(timespec="seconds") of a naive UTC time.
const timeLayout = "2006-01-02T15:04:05"

// formatTime renders t as the messages of jobflow-remote do, in UTC.
func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) + " UTC" }

// LockedDocumentError reports that a document is locked by another holder.
// TryAcquire, Acquire and Do return it (possibly wrapped) when they cannot take
// the lock; errors.Is(err, ErrLocked) is true.
type LockedDocumentError struct {
	LockID   string
	LockTime time.Time
	// Document is the holder's document: its _id and lock fields, or all of it
	// with WithLockedDocument.
	Document bson.Raw
}

// Error names the document, the lock id and the lock time, leaving out what
// the error does not know (a value built by hand, or nil).
func (e *LockedDocumentError) Error() string {
	return "document" + e.details(" ", "_id") + " is locked" + e.holder()
}

// details is sep and the value of e.Document's field, or "" when e has none.
func (e *LockedDocumentError) details(sep, field string) string {
	if e == nil || len(e.Document) == 0 {
		return ""
	}
	v, err := e.Document.LookupErr(field)
	if err != nil {
		return ""
	}
	return sep + idString(v)
}

// holder is " with lock_id X since T", each part only when known.
func (e *LockedDocumentError) holder() string {
	if e == nil {
		return ""
	}
	s := ""
	if e.LockID != "" {
		s += " with lock_id " + e.LockID
	}
	if !e.LockTime.IsZero() {
		s += " since " + formatTime(e.LockTime)
	}
	return s
}

// Is makes errors.Is(err, ErrLocked) true.
func (e *LockedDocumentError) Is(target error) bool { return target == ErrLocked }

// JobLockedError reports that a jobflow-remote Job document is locked. It
// wraps the *LockedDocumentError built from the document.
type JobLockedError struct {
	*LockedDocumentError
	// Msg is appended to the message, after a space, when not empty.
	Msg string
}

// JobLockedErrorFromDoc builds a *JobLockedError from a locked Job document
// (with its db_id and lock fields); msg, when not empty, ends the message.
func JobLockedErrorFromDoc(doc bson.Raw, msg string) *JobLockedError {
	return &JobLockedError{LockedDocumentError: lockedErrorFromDoc(doc, LockKey, LockTimeKey), Msg: msg}
}

func (e *JobLockedError) Error() string {
	if e == nil {
		return jobflowMessage("Job", "db_id", nil, "")
	}
	return jobflowMessage("Job", "db_id", e.LockedDocumentError, e.Msg)
}

// Is makes errors.Is(err, ErrLocked) true, also for a value built from a
// message alone.
func (e *JobLockedError) Is(target error) bool { return target == ErrLocked }

// Unwrap returns the *LockedDocumentError, or nil when there is none.
func (e *JobLockedError) Unwrap() error {
	if e == nil || e.LockedDocumentError == nil {
		return nil
	}
	return e.LockedDocumentError
}

// FlowLockedError reports that a jobflow-remote Flow document is locked. It
// wraps the *LockedDocumentError built from the document.
type FlowLockedError struct {
	*LockedDocumentError
	// Msg is appended to the message, after a space, when not empty.
	Msg string
}

// FlowLockedErrorFromDoc builds a *FlowLockedError from a locked Flow document
// (with its uuid and lock fields); msg, when not empty, ends the message.
func FlowLockedErrorFromDoc(doc bson.Raw, msg string) *FlowLockedError {
	return &FlowLockedError{LockedDocumentError: lockedErrorFromDoc(doc, LockKey, LockTimeKey), Msg: msg}
}

func (e *FlowLockedError) Error() string {
	if e == nil {
		return jobflowMessage("Flow", "uuid", nil, "")
	}
	return jobflowMessage("Flow", "uuid", e.LockedDocumentError, e.Msg)
}

// Is makes errors.Is(err, ErrLocked) true, also for a value built from a
// message alone.
func (e *FlowLockedError) Is(target error) bool { return target == ErrLocked }

// Unwrap returns the *LockedDocumentError, or nil when there is none.
func (e *FlowLockedError) Unwrap() error {
	if e == nil || e.LockedDocumentError == nil {
		return nil
	}
	return e.LockedDocumentError
}

// jobflowMessage is jobflow-remote's message for a locked document of kind
// what, named by its idField; msg, when not empty, ends it. What e does not
// know (it may be nil) is left out.
func jobflowMessage(what, idField string, e *LockedDocumentError, msg string) string {
	s := what + e.details(" with "+idField+" ", idField) + " is locked" + e.holder() + "."
	if msg != "" {
		s += " " + msg
	}
	return s
}

// lockedErrorFromDoc reads the holder out of a locked document.
func lockedErrorFromDoc(doc bson.Raw, lockKey, lockTimeKey string) *LockedDocumentError {
	e := &LockedDocumentError{Document: doc}
	if v := lookup(doc, lockKey); v.Type != 0 {
		e.LockID = idString(v)
	}
	if dt, ok := lookup(doc, lockTimeKey).DateTimeOK(); ok {
		e.LockTime = time.UnixMilli(dt).UTC()
	}
	return e
}

// idString renders a BSON value as it reads in a message: strings bare,
// ObjectIDs as hex, other values as Extended JSON.
func idString(v bson.RawValue) string {
	if s, ok := v.StringValueOK(); ok {
		return s
	}
	if oid, ok := v.ObjectIDOK(); ok {
		return oid.Hex()
	}
	if n, ok := v.AsInt64OK(); ok && v.Type != bson.TypeDouble {
		return strconv.FormatInt(n, 10)
	}
	if v.Type == 0 {
		return "<none>"
	}
	return v.String()
}

// waitError ends a wait that ran out: it matches the holder's
// *LockedDocumentError (and so ErrLocked) and the context error.
type waitError struct {
	locked *LockedDocumentError
	ctxErr error
	waited time.Duration
}

func (e *waitError) Error() string {
	return fmt.Sprintf("mongolock: gave up after waiting %s: %v: %v", e.waited.Round(time.Millisecond), e.locked, e.ctxErr)
}

func (e *waitError) Unwrap() []error { return []error{e.locked, e.ctxErr} }

// ioError wraps the driver's error of an operation; when ctx has ended it
// wraps ctx's error too, so that callers can match context.DeadlineExceeded
// or context.Canceled whatever the driver or the server made of it.
func ioError(ctx context.Context, what string, err error) error {
	if cerr := endedBy(ctx, err); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("mongolock: %s: %w (%w)", what, err, cerr)
	}
	return fmt.Errorf("mongolock: %s: %w", what, err)
}

// endedBy returns ctx's error when err is due to ctx's end: ctx has ended,
// or its deadline was about to pass (the driver does not send a command
// that cannot finish in time) or passed on the server (maxTimeMS, which
// the driver derives from the deadline). Otherwise it returns nil.
func endedBy(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if _, deadline := ctx.Deadline(); deadline && (errors.Is(err, context.DeadlineExceeded) || mongo.IsTimeout(err)) {
		return context.DeadlineExceeded
	}
	return nil
}

// invalid returns an error matching ErrInvalidOption.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidOption}, args...)...)
}
