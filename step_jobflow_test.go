package mongolock_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/mongolock/mongolock"
)

// pyJob is a job document as jobflow-remote's runner leaves it: lock_id and
// lock_time null (or a uuid string and a naive date, which pymongo stores as
// UTC), remote.step_attempts a Python int, remote.retry_time_limit a naive
// date, and updated_on.
func pyJob(id any, state string, attempts int32, rtl, updated time.Time) bson.D {
	return bson.D{{Key: "_id", Value: id}, {Key: "uuid", Value: fmt.Sprint("uuid-", id)}, {Key: "state", Value: state},
		{Key: "lock_id", Value: nil}, {Key: "lock_time", Value: nil},
		{Key: "remote", Value: bson.D{{Key: "step_attempts", Value: attempts}, {Key: "retry_time_limit", Value: bson.NewDateTimeFromTime(rtl)}, {Key: "error", Value: "earlier"}}},
		{Key: "updated_on", Value: bson.NewDateTimeFromTime(updated)}}
}

// Each outcome of a step writes what jobflow-remote's lock_job_for_update
// writes on a document a Python runner wrote: updated_on (the step's time)
// in every outcome that writes, the count unchanged on give-up, and nothing
// at all when the step is not an attempt (fn met a lock, or panicked).
func TestStepWritesAsJobflowRemote(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	flows := newColl(t)
	now := serverNow(t)
	past, old := now.Add(-time.Minute), now.Add(-time.Hour).Truncate(time.Millisecond)
	// A flow locked by a Python runner: a uuid string and a naive lock_time.
	insert(t, flows, bson.D{{Key: "_id", Value: "flow"}, {Key: "lock_id", Value: "4f1c2a7e-python"}, {Key: "lock_time", Value: bson.NewDateTimeFromTime(now)}})
	flowLk := mongolock.New(flows)
	lk := mongolock.New(coll)
	const rtl, upd = "remote.retry_time_limit", "updated_on"

	cases := []struct {
		name     string
		state    string
		attempts int32
		fn       func(context.Context, *mongolock.Lock) error
		want     string // the fields below after the step; "unchanged" for none
		pause    time.Duration
	}{
		{"success", "READY", 2, publishDone,
			"state=DONE previous_state=<missing> remote.step_attempts=0 remote.error=<nil> lock_id=<nil>", 0},
		{"counted failure", "READY", 1, failStep,
			"state=READY previous_state=<missing> remote.step_attempts=2 remote.error=boom lock_id=<nil>", 5 * time.Minute},
		{"give-up by count", "CHECKED_OUT", 3, failStep,
			"state=REMOTE_ERROR previous_state=CHECKED_OUT remote.step_attempts=3 remote.error=boom lock_id=<nil>", 0},
		{"Permanent", "READY", 1, func(context.Context, *mongolock.Lock) error { return mongolock.Permanent(errBoom) },
			"state=REMOTE_ERROR previous_state=READY remote.step_attempts=1 remote.error=boom lock_id=<nil>", 0},
		{"ErrLocked", "READY", 1, func(ctx context.Context, l *mongolock.Lock) error {
			_, err := flowLk.TryAcquire(ctx, bson.D{{Key: "_id", Value: "flow"}})
			if !errors.Is(err, mongolock.ErrLocked) {
				return fmt.Errorf("the Python runner's lock was not seen: %v", err)
			}
			return err
		}, "unchanged", 0},
		{"panic", "READY", 1, func(context.Context, *mongolock.Lock) error { panic("step panic") }, "unchanged", 0},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			insert(t, coll, pyJob(i, tc.state, tc.attempts, past, old))
			before := rawDoc(t, coll, i)
			t0 := serverNow(t)
			func() {
				defer func() {
					if p := recover(); p != nil && tc.name != "panic" {
						t.Errorf("panic %v", p)
					}
				}()
				_ = lk.Step(ctx, bson.D{{Key: "_id", Value: i}}, tc.fn)
			}()
			t1 := serverNow(t)
			doc := rawDoc(t, coll, i)
			if tc.want == "unchanged" {
				// Released as it was: every field as before (the Go holder
				// record, lock_holder, comes back null, which Python ignores).
				elems, _ := before.Elements()
				for _, e := range elems {
					if v := doc.Lookup(e.Key()); !bytes.Equal(v.Value, e.Value().Value) || v.Type != e.Value().Type {
						t.Errorf("%s changed: %v, was %v", e.Key(), v, e.Value())
					}
				}
				return
			}
			got := fields(doc, "state", "previous_state", "remote.step_attempts", "remote.error", "lock_id")
			if got != tc.want {
				t.Errorf("after the step:\n%s\nwant\n%s", got, tc.want)
			}
			if v := doc.Lookup("remote", "step_attempts"); v.Type != bson.TypeInt32 {
				t.Errorf("step_attempts written as %v, want int32 as Python writes it", v.Type)
			}
			u, ok := at(doc, upd).(time.Time)
			// The server's clock estimate may be a round trip off; allow a second.
			if !ok || u.Before(t0.Add(-time.Second)) || u.After(t1.Add(time.Second)) {
				t.Errorf("updated_on = %v, want the server's time of the step (%v to %v)", at(doc, upd), t0, t1)
			}
			switch {
			case tc.pause > 0:
				if r, _ := at(doc, rtl).(time.Time); !r.Equal(u.Add(tc.pause)) {
					t.Errorf("retry_time_limit = %v, want updated_on + %v = %v", at(doc, rtl), tc.pause, u.Add(tc.pause))
				}
			case tc.state == "READY" && tc.name == "success":
				if v := at(doc, rtl); v != nil {
					t.Errorf("retry_time_limit = %v, want null", v)
				}
			default: // give-up leaves it as it was
				if r, _ := at(doc, rtl).(time.Time); !r.Equal(past.Truncate(time.Millisecond).UTC()) {
					t.Errorf("retry_time_limit = %v, want it unchanged (%v)", at(doc, rtl), past)
				}
			}
		})
	}
}
