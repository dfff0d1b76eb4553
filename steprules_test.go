package mongolock

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Pure rules of Step, no server: the due filter, the outcome of a step, the
// bookkeeping it writes and how that meets the caller's update.

func raw(t *testing.T, v any) bson.Raw {
	t.Helper()
	b, err := bson.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var stepNow = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

func TestRetryDefaultsAndCheck(t *testing.T) {
	d := Retry{}.withDefaults()
	if d.MaxAttempts != 3 || fmt.Sprint(d.Delays) != "[30s 5m0s 20m0s]" ||
		d.AttemptsField != "remote.step_attempts" || d.NotBeforeField != "remote.retry_time_limit" || d.ErrorField != "remote.error" || d.UpdatedField != "updated_on" {
		t.Errorf("defaults = %+v, want jobflow-remote's", d)
	}
	cases := []struct {
		name string
		r    Retry
		ok   bool
	}{
		{"zero", Retry{}, true},
		{"custom", Retry{MaxAttempts: 5, Delays: []time.Duration{0, time.Millisecond}, AttemptsField: "tries", NotBeforeField: "after", ErrorField: "why"}, true},
		{"negative attempts", Retry{MaxAttempts: -1}, false},
		{"negative delay", Retry{Delays: []time.Duration{time.Second, -time.Millisecond}}, false},
		{"field $inc", Retry{AttemptsField: "$inc"}, false},
		{"field _id", Retry{ErrorField: "_id"}, false},
		{"field a..b", Retry{NotBeforeField: "a..b"}, false},
		{"same fields", Retry{AttemptsField: "x", ErrorField: "x"}, false},
		{"nested fields", Retry{AttemptsField: "remote", ErrorField: "remote.error"}, false},
		{"default beside custom", Retry{AttemptsField: "remote.retry_time_limit.n"}, false},
		{"updated field $set", Retry{UpdatedField: "$set"}, false},
		{"updated field inside another", Retry{UpdatedField: "remote.error.at"}, false},
		{"updated field custom", Retry{UpdatedField: "meta.touched"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.r.check()
			if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidOption)) {
				t.Errorf("check() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	f := fieldSet{lock: "remote.lock", time: LockTimeKey}
	if err := (Retry{}).withDefaults().checkFields(f); err != nil {
		t.Errorf("bookkeeping beside a lock field inside remote: %v", err)
	}
	if err := (Retry{ErrorField: "remote.lock"}).withDefaults().checkFields(f); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("bookkeeping on the lock field: %v, want ErrInvalidOption", err)
	}
	if err := (Retry{UpdatedField: "remote.lock"}).withDefaults().checkFields(f); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("updated field on the lock field: %v, want ErrInvalidOption", err)
	}
	if err := (Retry{AttemptsField: "remote"}).withDefaults().checkFields(f); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("bookkeeping around the lock field: %v, want ErrInvalidOption", err)
	}
	if err := (Retry{}).withDefaults().checkFields(defaultFields); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

func TestRetryPause(t *testing.T) {
	r := Retry{Delays: []time.Duration{time.Second, time.Minute, time.Hour}}
	for attempts, want := range map[int64]time.Duration{-2: time.Second, 0: time.Second, 1: time.Minute, 2: time.Hour, 3: time.Hour, 50: time.Hour} {
		if got := r.pause(attempts); got != want {
			t.Errorf("pause after failure %d = %v, want %v", attempts+1, got, want)
		}
	}
}

func TestDueFilter(t *testing.T) {
	nb := "remote.retry_time_limit"
	date := `{"$date":"2024-05-01T12:00:00Z"}`
	cases := []struct {
		name, user, want string
	}{
		{"no filter", `{}`, `{"remote.retry_time_limit":{"$not":{"$gt":` + date + `}}}`},
		{"merged", `{"state":"READY"}`, `{"state":"READY","remote.retry_time_limit":{"$not":{"$gt":` + date + `}}}`},
		{"the caller filters on the field", `{"remote.retry_time_limit":null}`,
			`{"$and":[{"remote.retry_time_limit":null},{"remote.retry_time_limit":{"$not":{"$gt":` + date + `}}}]}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var user bson.Raw
			if err := bson.UnmarshalExtJSON([]byte(tc.user), false, &user); err != nil {
				t.Fatal(err)
			}
			if got := ext(t, dueFilter(user, nb, stepNow)); got != tc.want {
				t.Errorf("dueFilter = %s\nwant        %s", got, tc.want)
			}
		})
	}
	if got, want := ext(t, waitingFilter(emptyDoc, nb, stepNow)), `{"remote.retry_time_limit":{"$gt":`+date+`}}`; got != want {
		t.Errorf("waitingFilter = %s, want %s", got, want)
	}
}

func TestClassify(t *testing.T) {
	boom := errors.New("boom")
	locked := &LockedDocumentError{LockID: "x"}
	cases := []struct {
		name        string
		err         error
		interrupted bool
		attempts    int64
		want        stepOutcome
	}{
		{"success", nil, false, 2, stepSucceeded},
		{"success after the caller ended", nil, true, 0, stepSucceeded},
		{"first failure", boom, false, 0, stepRetry},
		{"failure 3 of 3", boom, false, 2, stepRetry},
		{"failure after 3 counted", boom, false, 3, stepGiveUp},
		{"count beyond the limit", boom, false, 9, stepGiveUp},
		{"permanent", Permanent(boom), false, 0, stepGiveUp},
		{"wrapped permanent", fmt.Errorf("step: %w", Permanent(boom)), false, 0, stepGiveUp},
		{"met a lock", locked, false, 3, stepUnchanged},
		{"met a jobflow lock", &FlowLockedError{LockedDocumentError: locked}, false, 0, stepUnchanged},
		{"met a lock, permanent", Permanent(locked), false, 0, stepUnchanged},
		{"interrupted", boom, true, 3, stepUnchanged},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := classify(tc.err, tc.interrupted, tc.attempts, 3); got != tc.want {
				t.Errorf("classify = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPermanent(t *testing.T) {
	boom := errors.New("boom")
	p := Permanent(boom)
	if !errors.Is(p, boom) || p.Error() != "boom" {
		t.Errorf("Permanent(boom) = %q, does not unwrap to boom", p)
	}
	if Permanent(nil) != nil {
		t.Error("Permanent(nil) is not nil")
	}
}

func TestAttemptsOf(t *testing.T) {
	cases := []struct {
		doc  bson.D
		want int64
	}{
		{bson.D{}, 0},
		{bson.D{{Key: "remote", Value: bson.D{{Key: "step_attempts", Value: int32(2)}}}}, 2},
		{bson.D{{Key: "remote", Value: bson.D{{Key: "step_attempts", Value: int64(7)}}}}, 7},
		{bson.D{{Key: "remote", Value: bson.D{{Key: "step_attempts", Value: 3.0}}}}, 3},
		{bson.D{{Key: "remote", Value: bson.D{{Key: "step_attempts", Value: "two"}}}}, 0},
		{bson.D{{Key: "remote", Value: nil}}, 0},
	}
	for _, tc := range cases {
		if got := attemptsOf(raw(t, tc.doc), "remote.step_attempts"); got != tc.want {
			t.Errorf("attemptsOf(%v) = %d, want %d", tc.doc, got, tc.want)
		}
	}
}

func TestBookkeeping(t *testing.T) {
	r := Retry{Delays: []time.Duration{time.Minute, time.Hour}}.withDefaults()
	in := func(d time.Duration) string {
		return `{"$date":"` + stepNow.Add(d).Format(time.RFC3339) + `"}`
	}
	cases := []struct {
		o        stepOutcome
		attempts int64
		want     string
	}{
		{stepSucceeded, 2, `{"remote.step_attempts":0,"remote.retry_time_limit":null,"remote.error":null,"updated_on":` + in(0) + `}`},
		{stepRetry, 0, `{"remote.step_attempts":1,"remote.retry_time_limit":` + in(time.Minute) + `,"remote.error":"boom","updated_on":` + in(0) + `}`},
		{stepRetry, 1, `{"remote.step_attempts":2,"remote.retry_time_limit":` + in(time.Hour) + `,"remote.error":"boom","updated_on":` + in(0) + `}`},
		{stepRetry, 5, `{"remote.step_attempts":6,"remote.retry_time_limit":` + in(time.Hour) + `,"remote.error":"boom","updated_on":` + in(0) + `}`},
		// jobflow-remote leaves the count at max_step_attempts on give-up.
		{stepGiveUp, 3, `{"remote.error":"boom","updated_on":` + in(0) + `}`},
		{stepUnchanged, 3, `null`},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%v after %d", tc.o, tc.attempts), func(t *testing.T) {
			b := bookkeeping(r, tc.o, tc.attempts, stepNow, "boom")
			got := "null"
			if b != nil {
				got = ext(t, b)
			}
			if got != tc.want {
				t.Errorf("bookkeeping = %s\nwant          %s", got, tc.want)
			}
		})
	}
	// Counts are written as Python writes a small int.
	if v := raw(t, bookkeeping(r, stepRetry, 0, stepNow, "")).Lookup("remote.step_attempts"); v.Type != bson.TypeInt32 {
		t.Errorf("attempts written as %v, want int32", v.Type)
	}
}

func TestDefaultGiveUp(t *testing.T) {
	got := ext(t, defaultGiveUp(raw(t, bson.D{{Key: "state", Value: "RUNNING"}}), errors.New("x")))
	if want := `{"$set":{"state":"REMOTE_ERROR","previous_state":"RUNNING"}}`; got != want {
		t.Errorf("defaultGiveUp = %s, want %s", got, want)
	}
	got = ext(t, defaultGiveUp(raw(t, bson.D{}), errors.New("x")))
	if want := `{"$set":{"state":"REMOTE_ERROR"}}`; got != want {
		t.Errorf("defaultGiveUp without a state = %s, want %s", got, want)
	}
}

func TestWithBookkeeping(t *testing.T) {
	book := bson.D{{Key: "remote.step_attempts", Value: int32(0)}, {Key: "remote.retry_time_limit", Value: nil}, {Key: "remote.error", Value: nil}}
	const all = `"remote.step_attempts":0,"remote.retry_time_limit":null,"remote.error":null`
	cases := []struct {
		name string
		user any
		want string
	}{
		{"no update", nil, `{"$set":{` + all + `}}`},
		{"merged into $set", raw(t, bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "DONE"}}}}),
			`{"$set":{"state":"DONE",` + all + `}}`},
		{"other operators kept", raw(t, bson.D{{Key: "$inc", Value: bson.D{{Key: "runs", Value: 1}}}, {Key: "$unset", Value: bson.D{{Key: "tmp", Value: ""}}}}),
			`{"$inc":{"runs":1},"$unset":{"tmp":""},"$set":{` + all + `}}`},
		{"the caller's field wins", raw(t, bson.D{{Key: "$set", Value: bson.D{{Key: "remote.error", Value: "kept"}}}}),
			`{"$set":{"remote.error":"kept","remote.step_attempts":0,"remote.retry_time_limit":null}}`},
		{"the caller's document around them wins", raw(t, bson.D{{Key: "$set", Value: bson.D{{Key: "remote", Value: bson.D{{Key: "state", Value: "x"}}}}}}),
			`{"$set":{"remote":{"state":"x"}}}`},
		{"the caller's field inside one wins", raw(t, bson.D{{Key: "$inc", Value: bson.D{{Key: "remote.step_attempts.n", Value: 1}}}}),
			`{"$inc":{"remote.step_attempts.n":1},"$set":{"remote.retry_time_limit":null,"remote.error":null}}`},
		{"renamed onto one", raw(t, bson.D{{Key: "$rename", Value: bson.D{{Key: "why", Value: "remote.error"}}}}),
			`{"$rename":{"why":"remote.error"},"$set":{"remote.step_attempts":0,"remote.retry_time_limit":null}}`},
		{"pipeline runs after", bson.A{raw(t, bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "DONE"}}}})},
			`{"pipeline":[{"$set":{"remote.step_attempts":{"$literal":0},"remote.retry_time_limit":{"$literal":null},"remote.error":{"$literal":null}}},{"$set":{"state":"DONE"}}]}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, err := withBookkeeping(tc.user, book)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := u.(bson.Raw); !ok && tc.user != nil {
				if _, ok := u.(bson.A); !ok {
					t.Errorf("update of type %T, which release does not apply", u)
				}
			}
			if got := ext(t, u); got != tc.want {
				t.Errorf("update = %s\nwant     %s", got, tc.want)
			}
		})
	}
	// A message that looks like a field path stays a string in a pipeline.
	u, _ := withBookkeeping(bson.A{}, bson.D{{Key: "remote.error", Value: "$state"}})
	if got, want := ext(t, u), `{"pipeline":[{"$set":{"remote.error":{"$literal":"$state"}}}]}`; got != want {
		t.Errorf("pipeline message = %s, want %s", got, want)
	}
	// What release sends: the lock fields cleared in the same $set.
	u, _ = withBookkeeping(raw(t, bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "DONE"}}}}), book[:1])
	if got, want := ext(t, clearUpdate(u, defaultFields)), `{"$set":{"lock_id":null,"lock_time":null,"lock_holder":null,"state":"DONE","remote.step_attempts":0}}`; got != want {
		t.Errorf("release update = %s, want %s", got, want)
	}
}

func TestStepProjectionRule(t *testing.T) {
	need := []string{"remote.step_attempts", "state"}
	proj := func(v any) any {
		p, err := lockProjection(v, defaultFields)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name string
		p    any
		want string
	}{
		{"none", nil, "nil"},
		{"names", proj([]string{"name"}), `{"name":1,"lock_id":1,"lock_time":1,"lock_holder":1,"remote.step_attempts":1,"state":1}`},
		{"inclusion with state", proj(bson.D{{Key: "state", Value: 1}}), `{"state":1,"lock_id":1,"lock_time":1,"lock_holder":1,"remote.step_attempts":1}`},
		{"inclusion of the whole remote", proj(bson.D{{Key: "remote", Value: true}}), `{"remote":true,"lock_id":1,"lock_time":1,"lock_holder":1,"state":1}`},
		{"inclusion of a part", proj(bson.D{{Key: "remote.step_attempts.n", Value: 1}, {Key: "a", Value: 1}}),
			`{"a":1,"lock_id":1,"lock_time":1,"lock_holder":1,"remote.step_attempts":1,"state":1}`},
		{"exclusion", proj(bson.D{{Key: "big", Value: 0}, {Key: "remote", Value: 0}, {Key: "state", Value: 0}}), `{"big":0}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := ext(t, stepProjection(tc.p, need)); got != tc.want {
				t.Errorf("stepProjection = %s\nwant           %s", got, tc.want)
			}
		})
	}
}
