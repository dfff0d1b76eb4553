package mongolock_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/mongolock/mongolock"
)

func lockedDoc(t *testing.T, extra ...bson.E) bson.Raw {
	t.Helper()
	d := bson.D{
		{Key: "_id", Value: bson.ObjectID{0x65, 0x1a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}},
		{Key: mongolock.LockKey, Value: "8d68404f-c77a-461b-859c-40bb0af1979f"},
		{Key: mongolock.LockTimeKey, Value: bson.NewDateTimeFromTime(time.Date(2024, 3, 5, 14, 7, 9, 420e6, time.UTC))},
	}
	raw, err := bson.Marshal(append(d, extra...))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestErrorMessages(t *testing.T) {
	doc := lockedDoc(t, bson.E{Key: "db_id", Value: "1234"}, bson.E{Key: "uuid", Value: "5b84228b-d019-47fe-b0a0-564b36aa85ed"})
	job := mongolock.JobLockedErrorFromDoc(doc, "")
	cases := []struct {
		err  error
		want string
	}{
		{job.LockedDocumentError, "document 651a00000000000000000001 is locked with lock_id 8d68404f-c77a-461b-859c-40bb0af1979f since 2024-03-05T14:07:09 UTC"},
		{job, "Job with db_id 1234 is locked with lock_id 8d68404f-c77a-461b-859c-40bb0af1979f since 2024-03-05T14:07:09 UTC."},
		{mongolock.JobLockedErrorFromDoc(doc, "Retry later."), "Job with db_id 1234 is locked with lock_id 8d68404f-c77a-461b-859c-40bb0af1979f since 2024-03-05T14:07:09 UTC. Retry later."},
		{mongolock.FlowLockedErrorFromDoc(doc, ""), "Flow with uuid 5b84228b-d019-47fe-b0a0-564b36aa85ed is locked with lock_id 8d68404f-c77a-461b-859c-40bb0af1979f since 2024-03-05T14:07:09 UTC."},
		{&mongolock.LockedDocumentError{LockID: "x", LockTime: time.Date(2024, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600)), Document: mustRaw(t, bson.D{{Key: "_id", Value: 7}})},
			"document 7 is locked with lock_id x since 2024-01-02T02:04:05 UTC"},
		{mongolock.ErrLocked, "mongolock: document is locked"},
		{mongolock.ErrNotFound, "mongolock: no document matches the filter"},
		{mongolock.ErrLockLost, "mongolock: lock lost"},
		{mongolock.ErrInvalidOption, "mongolock: invalid option"},
	}
	for _, tc := range cases {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("message:\n got %q\nwant %q", got, tc.want)
		}
	}
}

func mustRaw(t *testing.T, v any) bson.Raw {
	raw, err := bson.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestErrorMatching(t *testing.T) {
	doc := lockedDoc(t, bson.E{Key: "db_id", Value: "1"})
	job := mongolock.JobLockedErrorFromDoc(doc, "")
	flow := mongolock.FlowLockedErrorFromDoc(doc, "")
	wrapped := fmt.Errorf("checking out: %w", job)

	if !errors.Is(wrapped, mongolock.ErrLocked) || !errors.Is(flow, mongolock.ErrLocked) {
		t.Error("JobLockedError and FlowLockedError must match ErrLocked")
	}
	var j *mongolock.JobLockedError
	if !errors.As(wrapped, &j) || j.LockID != "8d68404f-c77a-461b-859c-40bb0af1979f" {
		t.Errorf("errors.As to *JobLockedError: %v", j)
	}
	var l *mongolock.LockedDocumentError
	if !errors.As(wrapped, &l) || !l.LockTime.Equal(time.Date(2024, 3, 5, 14, 7, 9, 420e6, time.UTC)) {
		t.Errorf("errors.As to *LockedDocumentError: %+v", l)
	}
	var f *mongolock.FlowLockedError
	if errors.As(wrapped, &f) {
		t.Error("a JobLockedError is not a FlowLockedError")
	}
	if errors.Is(job, mongolock.ErrNotFound) || errors.Is(job, mongolock.ErrLockLost) {
		t.Error("a locked error matches only ErrLocked")
	}
}

// Error values built by hand (zero, nil, or from a message alone, as Python
// builds JobLockedError("...")) print a message, unwrap and match ErrLocked
// without panicking.
func TestErrorValuesNeverPanic(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"LockedDocumentError zero", &mongolock.LockedDocumentError{}, "document is locked"},
		{"LockedDocumentError nil", (*mongolock.LockedDocumentError)(nil), "document is locked"},
		{"LockedDocumentError id only", &mongolock.LockedDocumentError{LockID: "x"}, "document is locked with lock_id x"},
		{"JobLockedError zero", &mongolock.JobLockedError{}, "Job is locked."},
		{"JobLockedError message only", &mongolock.JobLockedError{Msg: "m"}, "Job is locked. m"},
		{"JobLockedError nil", (*mongolock.JobLockedError)(nil), "Job is locked."},
		{"FlowLockedError zero", &mongolock.FlowLockedError{}, "Flow is locked."},
		{"FlowLockedError message only", &mongolock.FlowLockedError{Msg: "m"}, "Flow is locked. m"},
		{"FlowLockedError nil", (*mongolock.FlowLockedError)(nil), "Flow is locked."},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("panic: %v", p)
				}
			}()
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("Error() = %q, want %q", got, tc.want)
			}
			if !errors.Is(tc.err, mongolock.ErrLocked) {
				t.Errorf("does not match ErrLocked")
			}
			if errors.Is(tc.err, mongolock.ErrNotFound) {
				t.Errorf("matches ErrNotFound")
			}
			var ld *mongolock.LockedDocumentError
			_ = errors.As(tc.err, &ld)
			if u, ok := tc.err.(interface{ Unwrap() error }); ok {
				if w := u.Unwrap(); w != nil {
					_ = w.Error()
				}
			}
			_ = fmt.Sprintf("%v %+v", tc.err, tc.err)
		})
	}
}
