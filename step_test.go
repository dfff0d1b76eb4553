package mongolock_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/mongolock/mongolock"
)

// Step against the server: what each outcome writes, in the document shape
// of jobflow-remote's runner.

// rawDoc reads the document with _id id.
func rawDoc(t testing.TB, coll *mongo.Collection, id any) bson.Raw {
	t.Helper()
	doc, err := coll.FindOne(context.Background(), bson.D{{Key: "_id", Value: id}}).Raw()
	if err != nil {
		t.Fatalf("reading document %v: %v", id, err)
	}
	return doc
}

// missing is what at returns for a field the document lacks.
const missing = "<missing>"

// at is the value at a dotted path of doc, as a comparable Go value.
func at(doc bson.Raw, path string) any {
	v, err := doc.LookupErr(strings.Split(path, ".")...)
	if err != nil {
		return missing
	}
	switch v.Type {
	case bson.TypeInt32:
		return v.Int32()
	case bson.TypeInt64:
		return v.Int64()
	case bson.TypeString:
		return v.StringValue()
	case bson.TypeNull:
		return nil
	case bson.TypeDateTime:
		return v.Time().UTC()
	}
	return v.String()
}

// fields are the values of paths in doc, for messages and comparisons.
func fields(doc bson.Raw, paths ...string) string {
	var b strings.Builder
	for _, p := range paths {
		fmt.Fprintf(&b, "%s=%v ", p, at(doc, p))
	}
	return strings.TrimSpace(b.String())
}

// serverNow reads the server's clock.
func serverNow(t *testing.T) time.Time {
	t.Helper()
	var hello struct{ LocalTime time.Time }
	if err := client.Database("admin").RunCommand(context.Background(), bson.D{{Key: "hello", Value: 1}}).Decode(&hello); err != nil {
		t.Fatal(err)
	}
	return hello.LocalTime
}

var (
	ready   = bson.D{{Key: "state", Value: "READY"}}
	setDone = bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "DONE"}}}}
	errBoom = errors.New("boom")
)

func publishDone(ctx context.Context, l *mongolock.Lock) error { return l.SetUpdateOnRelease(setDone) }
func failStep(ctx context.Context, l *mongolock.Lock) error    { return errBoom }

func TestStepSucceeds(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	past := bson.NewDateTimeFromTime(serverNow(t).Add(-time.Minute))
	insert(t, coll, bson.D{{Key: "_id", Value: 1}, {Key: "state", Value: "READY"},
		{Key: "remote", Value: bson.D{{Key: "step_attempts", Value: 2}, {Key: "retry_time_limit", Value: past}, {Key: "error", Value: "earlier"}, {Key: "process_id", Value: "42"}}}})
	lk := mongolock.New(coll)
	if err := lk.Step(ctx, ready, publishDone); err != nil {
		t.Fatal(err)
	}
	doc := rawDoc(t, coll, 1)
	got := fields(doc, "state", "remote.step_attempts", "remote.retry_time_limit", "remote.error", "remote.process_id", mongolock.LockKey)
	want := "state=DONE remote.step_attempts=0 remote.retry_time_limit=<nil> remote.error=<nil> remote.process_id=42 lock_id=<nil>"
	if got != want {
		t.Errorf("after a successful step:\n%s\nwant\n%s", got, want)
	}
	if err := lk.Step(ctx, ready, publishDone); !errors.Is(err, mongolock.ErrNotFound) {
		t.Errorf("second step: %v, want ErrNotFound", err)
	}
}

func TestStepDeletes(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	insert(t, coll, bson.D{{Key: "_id", Value: 1}, {Key: "state", Value: "READY"}})
	err := mongolock.New(coll).Step(ctx, ready, func(ctx context.Context, l *mongolock.Lock) error { return l.SetDeleteOnRelease() })
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := coll.CountDocuments(ctx, bson.D{}); n != 0 {
		t.Errorf("%d documents left after a step that deletes", n)
	}
}

// Each failure counts one attempt, stores the message and sets the
// not-before time to the server's time plus the pause for that failure; the
// document is not due until then.
func TestStepFailureBacksOff(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	insert(t, coll, bson.D{{Key: "_id", Value: 1}, {Key: "state", Value: "READY"}})
	delays := []time.Duration{time.Hour, 2 * time.Hour}
	lk := mongolock.New(coll, mongolock.WithRetry(mongolock.Retry{MaxAttempts: 5, Delays: delays}))
	for failure := 1; failure <= 3; failure++ {
		before := serverNow(t)
		if err := lk.Step(ctx, ready, failStep); !errors.Is(err, errBoom) {
			t.Fatalf("failure %d: Step returned %v, want fn's error", failure, err)
		}
		after := serverNow(t)
		doc := rawDoc(t, coll, 1)
		pause := delays[min(failure, len(delays))-1]
		nb, _ := at(doc, "remote.retry_time_limit").(time.Time)
		// The server's clock estimate may be a round trip off; allow a second.
		if nb.Before(before.Add(pause-time.Second)) || nb.After(after.Add(pause+time.Second)) {
			t.Errorf("failure %d: retry_time_limit %v, want server time + %v (between %v and %v)", failure, nb, pause, before.Add(pause), after.Add(pause))
		}
		got := fields(doc, "state", "remote.step_attempts", "remote.error", mongolock.LockKey)
		if want := fmt.Sprintf("state=READY remote.step_attempts=%d remote.error=boom lock_id=<nil>", failure); got != want {
			t.Errorf("failure %d:\n%s\nwant\n%s", failure, got, want)
		}
		if err := lk.Step(ctx, ready, publishDone); !errors.Is(err, mongolock.ErrNotFound) {
			t.Fatalf("failure %d: a step before the not-before time: %v, want ErrNotFound", failure, err)
		}
		// Make it due again, as the passing of the pause would.
		if _, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "$set", Value: bson.D{{Key: "remote.retry_time_limit", Value: bson.NewDateTimeFromTime(before.Add(-time.Second))}}}}); err != nil {
			t.Fatal(err)
		}
	}
}

// The attempt that finds the count at MaxAttempts gives up: jobflow-remote's
// REMOTE_ERROR with previous_state, the message; the count and the
// not-before time are left as they were.
func TestStepGivesUp(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	past := bson.NewDateTimeFromTime(serverNow(t).Add(-time.Minute))
	// As a Python runner leaves it after three failures.
	insert(t, coll, bson.D{{Key: "_id", Value: 1}, {Key: "state", Value: "CHECKED_OUT"},
		{Key: "remote", Value: bson.D{{Key: "step_attempts", Value: int32(3)}, {Key: "retry_time_limit", Value: past}, {Key: "error", Value: "Remote error: upload failed"}}}})
	lk := mongolock.New(coll)
	err := lk.Step(ctx, bson.D{{Key: "state", Value: "CHECKED_OUT"}}, func(ctx context.Context, l *mongolock.Lock) error {
		return fmt.Errorf("upload: %w", errBoom)
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("Step returned %v, want fn's error", err)
	}
	got := fields(rawDoc(t, coll, 1), "state", "previous_state", "remote.step_attempts", "remote.error", "remote.retry_time_limit", mongolock.LockKey)
	want := fmt.Sprintf("state=REMOTE_ERROR previous_state=CHECKED_OUT remote.step_attempts=3 remote.error=upload: boom remote.retry_time_limit=%v lock_id=<nil>", past.Time().UTC())
	if got != want {
		t.Errorf("after giving up:\n%s\nwant\n%s", got, want)
	}
}

func TestStepPermanent(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	insert(t, coll, bson.D{{Key: "_id", Value: 1}, {Key: "state", Value: "READY"}})
	err := mongolock.New(coll).Step(ctx, ready, func(ctx context.Context, l *mongolock.Lock) error {
		return mongolock.Permanent(fmt.Errorf("bad input: %w", errBoom))
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("Step returned %v, want fn's error", err)
	}
	got := fields(rawDoc(t, coll, 1), "state", "previous_state", "remote.step_attempts", "remote.error", "remote.retry_time_limit")
	if want := "state=REMOTE_ERROR previous_state=READY remote.step_attempts=<missing> remote.error=bad input: boom remote.retry_time_limit=<missing>"; got != want {
		t.Errorf("after a permanent failure:\n%s\nwant\n%s", got, want)
	}
}

// Custom fields and GiveUp; the GiveUp update is merged with the message
// and the step's time.
func TestStepCustomRetry(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	insert(t, coll, bson.D{{Key: "_id", Value: "a"}, {Key: "status", Value: "queued"}, {Key: "tries", Value: int64(1)}})
	var gaveUpOn bson.Raw
	lk := mongolock.New(coll, mongolock.WithRetry(mongolock.Retry{
		MaxAttempts: 1, AttemptsField: "tries", NotBeforeField: "after", ErrorField: "why",
		GiveUp: func(doc bson.Raw, err error) any {
			gaveUpOn = doc
			return bson.D{{Key: "$set", Value: bson.D{{Key: "status", Value: "failed"}, {Key: "cause", Value: err.Error()}}}, {Key: "$inc", Value: bson.D{{Key: "failures", Value: 1}}}}
		},
	}))
	if err := lk.Step(ctx, bson.D{{Key: "status", Value: "queued"}}, failStep); !errors.Is(err, errBoom) {
		t.Fatal(err)
	}
	got := fields(rawDoc(t, coll, "a"), "status", "cause", "failures", "tries", "why", "after", "remote")
	if want := "status=failed cause=boom failures=1 tries=1 why=boom after=<missing> remote=<missing>"; got != want {
		t.Errorf("after a custom give-up:\n%s\nwant\n%s", got, want)
	}
	if gaveUpOn.Lookup("_id").StringValue() != "a" {
		t.Errorf("GiveUp was given %v, want the locked document", gaveUpOn)
	}
}

// fn that meets another lock, or is cut short by its caller, counts nothing
// and leaves the document as it was; so does a panic.
func TestStepCountsNothing(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	flows := newColl(t)
	insert(t, coll, bson.D{{Key: "_id", Value: 1}, {Key: "state", Value: "READY"}, {Key: "remote", Value: bson.D{{Key: "step_attempts", Value: int32(1)}}}})
	insert(t, flows, bson.D{{Key: "_id", Value: "flow"}})
	lk, flowLk := mongolock.New(coll), mongolock.New(flows)
	held, err := flowLk.TryAcquire(ctx, bson.D{{Key: "_id", Value: "flow"}})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release(ctx)
	paths := []string{"state", "remote", "previous_state", mongolock.LockKey}
	before := fields(rawDoc(t, coll, 1), paths...)
	unchanged := func(what string) {
		t.Helper()
		after := fields(rawDoc(t, coll, 1), paths...)
		if after != strings.Replace(before, "lock_id=<missing>", "lock_id=<nil>", 1) {
			t.Errorf("%s changed the document or left it locked:\nbefore %s\nafter  %s", what, before, after)
		}
	}

	err = lk.Step(ctx, ready, func(ctx context.Context, l *mongolock.Lock) error {
		_, err := flowLk.TryAcquire(ctx, bson.D{{Key: "_id", Value: "flow"}})
		if err == nil {
			return errors.New("the flow was not locked")
		}
		return mongolock.FlowLockedErrorFromDoc(err.(*mongolock.LockedDocumentError).Document, "")
	})
	var flowErr *mongolock.FlowLockedError
	if !errors.As(err, &flowErr) {
		t.Errorf("Step returned %v, want fn's *FlowLockedError", err)
	}
	unchanged("a step that met a lock")

	cctx, cancel := context.WithCancel(ctx)
	err = lk.Step(cctx, ready, func(ctx context.Context, l *mongolock.Lock) error {
		cancel()
		<-ctx.Done()
		return ctx.Err()
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Step returned %v, want context.Canceled", err)
	}
	unchanged("a step whose caller gave up")

	func() {
		defer func() {
			if p := recover(); p != "step panic" {
				t.Errorf("recovered %v, want the step's panic", p)
			}
		}()
		_ = lk.Step(ctx, ready, func(ctx context.Context, l *mongolock.Lock) error { panic("step panic") })
	}()
	unchanged("a step that panicked")
}

func TestStepNotFoundAndLocked(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	future := bson.NewDateTimeFromTime(serverNow(t).Add(time.Hour))
	insert(t, coll,
		bson.D{{Key: "_id", Value: 1}, {Key: "state", Value: "READY"}, {Key: "priority", Value: 5}},
		bson.D{{Key: "_id", Value: 2}, {Key: "state", Value: "READY"}, {Key: "priority", Value: 9}, {Key: "remote", Value: bson.D{{Key: "retry_time_limit", Value: future}}}},
		bson.D{{Key: "_id", Value: 3}, {Key: "state", Value: "READY"}, {Key: "priority", Value: 1}, {Key: "remote", Value: bson.D{{Key: "retry_time_limit", Value: nil}}}},
	)
	lk := mongolock.New(coll, mongolock.WithSort(bson.D{{Key: "priority", Value: -1}}))
	var order []any
	record := func(ctx context.Context, l *mongolock.Lock) error {
		order = append(order, l.Document().Lookup("_id").AsInt64())
		return nil
	}
	// Due documents in the Locker's sort; 2 waits for its not-before time.
	// (They stay READY, so hold the first to see the second.)
	h1, err := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if err := lk.Step(ctx, ready, record); err != nil {
		t.Fatal(err)
	}
	h3, err := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: 3}})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(order) != "[3]" {
		t.Errorf("stepped on %v, want [3]", order)
	}
	err = lk.Step(ctx, ready, record)
	var locked *mongolock.LockedDocumentError
	if !errors.As(err, &locked) || (locked.LockID != h1.ID() && locked.LockID != h3.ID()) {
		t.Errorf("every due match locked: %v, want a *LockedDocumentError naming a holder", err)
	}
	_ = h1.Release(ctx)
	_ = h3.Release(ctx)
	if err := lk.Step(ctx, bson.D{{Key: "_id", Value: 2}}, record); !errors.Is(err, mongolock.ErrNotFound) {
		t.Errorf("a document waiting for its not-before time: %v, want ErrNotFound", err)
	}
	if err := lk.Step(ctx, bson.D{{Key: "state", Value: "DONE"}}, record); !errors.Is(err, mongolock.ErrNotFound) {
		t.Errorf("no match: %v, want ErrNotFound", err)
	}
	if fmt.Sprint(order) != "[3]" {
		t.Errorf("fn ran without a lock: %v", order)
	}
}

// Due means due by the server's clock: a client whose clock is an hour
// ahead does not take a document whose not-before time is half an hour away.
func TestStepDueByServerClock(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	now := serverNow(t)
	insert(t, coll,
		bson.D{{Key: "_id", Value: "later"}, {Key: "state", Value: "READY"}, {Key: "remote", Value: bson.D{{Key: "retry_time_limit", Value: bson.NewDateTimeFromTime(now.Add(30 * time.Minute))}}}},
		bson.D{{Key: "_id", Value: "due"}, {Key: "state", Value: "READY"}, {Key: "remote", Value: bson.D{{Key: "retry_time_limit", Value: bson.NewDateTimeFromTime(now.Add(-time.Second))}}}},
	)
	for _, skew := range []time.Duration{time.Hour, -time.Hour} {
		lk := mongolock.New(coll)
		mongolock.SetClock(lk, func() time.Time { return time.Now().Add(skew) })
		var got []string
		for {
			err := lk.Step(ctx, ready, func(ctx context.Context, l *mongolock.Lock) error {
				got = append(got, l.Document().Lookup("_id").StringValue())
				return l.SetUpdateOnRelease(bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "SEEN"}}}})
			})
			if errors.Is(err, mongolock.ErrNotFound) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if fmt.Sprint(got) != "[due]" {
			t.Errorf("client clock %v off: stepped on %v, want [due]", skew, got)
		}
		if _, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: "due"}}, bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "READY"}}}}); err != nil {
			t.Fatal(err)
		}
	}
}

// Step keeps a lease alive while fn runs, and cancels fn's context when the
// lock is lost; nothing is then written.
func TestStepLease(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	insert(t, coll, bson.D{{Key: "_id", Value: 1}, {Key: "state", Value: "READY"}})
	lk := mongolock.New(coll, mongolock.WithLease(time.Minute), mongolock.WithAutoRefresh(20*time.Millisecond))
	err := lk.Step(ctx, ready, func(ctx context.Context, l *mongolock.Lock) error {
		if n, err := lk.Unlock(context.Background(), nil); n != 1 || err != nil {
			return fmt.Errorf("unlock: %d, %v", n, err)
		}
		<-ctx.Done()
		return context.Cause(ctx)
	})
	if !errors.Is(err, mongolock.ErrLockLost) {
		t.Errorf("Step returned %v, want ErrLockLost", err)
	}
	if r := at(rawDoc(t, coll, 1), "remote"); r != missing {
		t.Errorf("a step whose lock was lost wrote %v", r)
	}
}

// A projection still returns the fields a step reads.
func TestStepProjection(t *testing.T) {
	requireRealMongoDB(t, "projection in findAndModify")
	ctx := testCtx(t)
	coll := newColl(t)
	insert(t, coll, bson.D{{Key: "_id", Value: 1}, {Key: "state", Value: "UPLOADED"}, {Key: "big", Value: strings.Repeat("x", 1000)},
		{Key: "remote", Value: bson.D{{Key: "step_attempts", Value: int32(3)}}}})
	lk := mongolock.New(coll, mongolock.WithProjection([]string{"name"}))
	if err := lk.Step(ctx, nil, failStep); !errors.Is(err, errBoom) {
		t.Fatal(err)
	}
	if got, want := fields(rawDoc(t, coll, 1), "state", "previous_state"), "state=REMOTE_ERROR previous_state=UPLOADED"; got != want {
		t.Errorf("a projected step did not give up after three counted failures: %s", got)
	}
}

// Bad input to Step and Work is refused before anything is sent.
func TestStepWorkInvalid(t *testing.T) {
	ctx := testCtx(t)
	coll, sent := monitored(t, newColl(t))
	insert(t, coll, bson.D{{Key: "_id", Value: 1}, {Key: "state", Value: "READY"}})
	sent.Store(0)
	lk := mongolock.New(coll)
	ok := func(ctx context.Context, l *mongolock.Lock) error { return nil }
	cases := []refusal{
		{"Step nil fn", func() error { return lk.Step(ctx, ready, nil) }},
		{"Work nil fn", func() error { return lk.Work(ctx, 2, ready, nil) }},
		{"Work no workers", func() error { return lk.Work(ctx, 0, ready, ok) }},
		{"Work negative workers", func() error { return lk.Work(ctx, -3, ready, ok) }},
		{"negative MaxAttempts", func() error { return lk.Step(ctx, ready, ok, mongolock.WithRetry(mongolock.Retry{MaxAttempts: -1})) }},
		{"negative delay", func() error {
			return lk.Work(ctx, 1, ready, ok, mongolock.WithRetry(mongolock.Retry{Delays: []time.Duration{time.Second, -1}}))
		}},
		{"negative delay on New", func() error {
			return mongolock.New(coll, mongolock.WithRetry(mongolock.Retry{Delays: []time.Duration{-time.Second}})).Step(ctx, ready, ok)
		}},
		{"bad field", func() error {
			return lk.Step(ctx, ready, ok, mongolock.WithRetry(mongolock.Retry{ErrorField: "$error"}))
		}},
		{"field on the lock", func() error {
			return lk.Step(ctx, ready, ok, mongolock.WithRetry(mongolock.Retry{AttemptsField: mongolock.LockTimeKey}))
		}},
		{"bad filter", func() error { return lk.Work(ctx, 1, "READY", ok) }},
		{"nil collection", func() error { return mongolock.New(nil).Work(ctx, 1, ready, ok) }},
		{"negative poll", func() error { return lk.Work(ctx, 1, ready, ok, mongolock.WithPollInterval(-time.Second)) }},
	}
	refused(t, sent, cases)
}

// A GiveUp that returns no valid update leaves the document as it was and
// stops Work: it is a bug, not a document's failure.
func TestStepBadGiveUp(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	insert(t, coll, bson.D{{Key: "_id", Value: 1}, {Key: "state", Value: "READY"}})
	bad := mongolock.WithRetry(mongolock.Retry{GiveUp: func(bson.Raw, error) any {
		return bson.D{{Key: "$set", Value: bson.D{{Key: mongolock.LockKey, Value: "mine"}}}}
	}})
	lk := mongolock.New(coll, bad)
	err := lk.Work(ctx, 2, ready, func(ctx context.Context, l *mongolock.Lock) error { return mongolock.Permanent(errBoom) })
	if !errors.Is(err, mongolock.ErrInvalidOption) {
		t.Errorf("Work returned %v, want ErrInvalidOption", err)
	}
	if got, want := fields(rawDoc(t, coll, 1), "state", "remote", mongolock.LockKey), "state=READY remote=<missing> lock_id=<nil>"; got != want {
		t.Errorf("a bad GiveUp changed the document: %s", got)
	}
}

// countCommands returns coll seen through a client that counts the
// findAndModify commands it sends.
func countFindAndModify(t *testing.T, coll *mongo.Collection) (*mongo.Collection, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	mon := &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		if e.CommandName == "findAndModify" {
			n.Add(1)
		}
	}}
	c, err := mongo.Connect(options.Client().ApplyURI(uri).SetMonitor(mon))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c.Database(coll.Database().Name()).Collection(coll.Name()), &n
}
