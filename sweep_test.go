package mongolock_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/mongolock/mongolock"
)

// An acquiring write that lands after its call gave up, and after the
// library's own look for it, leaves a lock that nobody holds; without a lease
// nothing else would ever free it. The Locker's sweep finds and frees it.
func TestSweepLateAcquire(t *testing.T) {
	defer mongolock.SetFaultTimeouts(100*time.Millisecond, 500*time.Millisecond)()
	defer mongolock.SetSweep(200*time.Millisecond, time.Second, time.Minute)()
	cases := []struct {
		name string
		// stall makes the next findAndModify land only when land is called,
		// after the call has returned.
		stall func(f *faulty) (land func())
	}{
		// The look after the lost reply reads "not applied": the write is
		// still on its way.
		{"read not applied", func(f *faulty) func() {
			f.proxy.Delay("findAndModify", 2*time.Second)
			return func() {}
		}},
		// A partition swallows the write and the looks alike: "unknown".
		{"unknown", func(f *faulty) func() {
			f.proxy.Hold()
			return func() { f.proxy.Heal(true) }
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := testCtx(t)
			f := newFaulty(t)
			f.coll = withTimeout(t, f, 500*time.Millisecond)
			job := jobDoc(t, f.direct)
			// A sibling with the same custom lock id holds another document:
			// the sweep frees the late lock alone.
			insert(t, f.direct, bson.D{{Key: "_id", Value: "other"}})
			shared := mongolock.WithLockID("runner")
			sibling, err := mongolock.New(f.direct, shared).TryAcquire(ctx, bson.D{{Key: "_id", Value: "other"}})
			if err != nil {
				t.Fatal(err)
			}
			// The fencing counter stays counted after a release: it shows
			// that the late write was applied.
			obs := &sweepCountingObserver{}
			lk := mongolock.New(f.coll, shared, mongolock.WithFencing("fence"), mongolock.WithObserver(obs))
			land := c.stall(f)
			_, err = lk.TryAcquire(ctx, job)
			if err == nil {
				t.Fatal("the acquire succeeded: the fault was not met")
			}
			land()
			f.proxy.Delay("findAndModify", 0)
			waitFor(t, "the late acquiring write to be applied", func() bool { return get(t, f.direct, "job")["fence"] != nil })
			waitFor(t, "the sweep to free the late lock", func() bool { return get(t, f.direct, "job")[mongolock.LockKey] == nil })
			unlocked(t, f.direct, "job")
			if err := sibling.Release(ctx); err != nil {
				t.Fatalf("the sibling's lock was touched: %v", err)
			}
			if err := lk.Close(ctx); err != nil {
				t.Fatalf("Close after the sweep settled everything: %v", err)
			}
			obs.mu.Lock()
			defer obs.mu.Unlock()
			if obs.counts["unsettled"] != 1 || obs.counts["swept"] != 1 {
				t.Errorf("the SweepObserver heard %v; want one unsettled acquisition and one swept lock", obs.counts)
			}
		})
	}
}

// sweepCountingObserver also counts the sweep's events.
type sweepCountingObserver struct{ countingObserver }

func (o *sweepCountingObserver) Unsettled(string) { o.add("unsettled", 0) }
func (o *sweepCountingObserver) Swept(string)     { o.add("swept", 0) }

// Close cannot reach the server: its error names the lock id that a late
// write may still take, and until when, and matches ctx's error. No
// goroutine of the Locker outlives Close.
func TestSweepCloseUnreachable(t *testing.T) {
	defer mongolock.SetSweep(200*time.Millisecond, time.Second, time.Minute)()
	ctx := testCtx(t)
	waitFor(t, "the sweeps of earlier tests to end", func() bool { return sweeps() == 0 })
	f := newFaulty(t)
	job := jobDoc(t, f.direct)
	lk := mongolock.New(f.coll, mongolock.WithLockID("worker-7"))
	f.hit(t, faults[1], "findAndModify", func() {
		if _, err := lk.TryAcquire(ctx, job); err == nil {
			t.Fatal("acquire with its request cut succeeded")
		}
	})
	waitFor(t, "the Locker's sweep to start", func() bool { return sweeps() == 1 })
	f.proxy.Hold()
	defer f.proxy.Heal(false)
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	err := lk.Close(cctx)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "lock_id worker-7") ||
		!strings.Contains(err.Error(), " until 20") {
		t.Fatalf("Close: %v; want ctx's deadline, lock_id worker-7 and until when", err)
	}
	if n := sweeps(); n != 0 {
		t.Fatalf("%d sweep goroutines outlived Close", n)
	}
	if _, err := lk.TryAcquire(ctx, job); !errors.Is(err, mongolock.ErrInvalidOption) {
		t.Fatalf("TryAcquire on a closed Locker: %v; want ErrInvalidOption", err)
	}
}

// A Locker that is never closed sweeps until the horizon, and then keeps no
// goroutine.
func TestSweepEndsAtHorizon(t *testing.T) {
	defer mongolock.SetSweep(50*time.Millisecond, 100*time.Millisecond, 500*time.Millisecond)()
	ctx := testCtx(t)
	waitFor(t, "the sweeps of earlier tests to end", func() bool { return sweeps() == 0 })
	f := newFaulty(t)
	job := jobDoc(t, f.direct)
	lk := mongolock.New(f.coll)
	f.hit(t, faults[1], "findAndModify", func() {
		if _, err := lk.TryAcquire(ctx, job); err == nil {
			t.Fatal("acquire with its request cut succeeded")
		}
	})
	waitFor(t, "the Locker's sweep to start", func() bool { return sweeps() == 1 })
	waitFor(t, "the sweep to end at its horizon", func() bool { return sweeps() == 0 })
	if err := lk.Close(ctx); err != nil {
		t.Fatalf("Close after the horizon: %v", err)
	}
}

// Every call on a closed Locker is refused before any I/O; Locks it gave
// out can still be released; Close can be called again.
func TestSweepClosedLocker(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	job := jobDoc(t, coll)
	lk := mongolock.New(coll)
	l, err := lk.TryAcquire(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	if err := lk.Close(ctx); err != nil {
		t.Fatalf("Close with nothing unsettled: %v", err)
	}
	fn := func(context.Context, *mongolock.Lock) error { return nil }
	calls := map[string]func() error{
		"TryAcquire": func() error { _, err := lk.TryAcquire(ctx, job); return err },
		"Acquire":    func() error { _, err := lk.Acquire(ctx, job); return err },
		"Do":         func() error { return lk.Do(ctx, job, fn) },
		"Step":       func() error { return lk.Step(ctx, job, fn) },
		"Work":       func() error { return lk.Work(ctx, 2, job, fn) },
		"Unlock":     func() error { _, err := lk.Unlock(ctx, job); return err },
		"ListLocked": func() error { _, err := lk.ListLocked(ctx, job); return err },
		"Group.Lock": func() error {
			return mongolock.DoAll(ctx, func(ctx context.Context, g *mongolock.Group) error {
				_, err := g.Lock(ctx, lk, job)
				return err
			})
		},
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, mongolock.ErrInvalidOption) {
			t.Errorf("%s on a closed Locker: %v; want ErrInvalidOption", name, err)
		}
	}
	if err := l.Release(ctx); err != nil {
		t.Fatalf("releasing a lock of a closed Locker: %v", err)
	}
	if err := lk.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := mongolock.New(nil).Close(ctx); err != nil {
		t.Fatalf("Close of a Locker without a collection: %v", err)
	}
}

// withTimeout returns f's collection through a client of its own whose
// operations time out after d: an acquiring write that gets no reply in
// time is one whose outcome is unknown.
func withTimeout(t *testing.T, f *faulty, d time.Duration) *mongo.Collection {
	t.Helper()
	c, err := mongo.Connect(options.Client().ApplyURI(f.proxy.URI()).SetTimeout(d).SetRetryWrites(false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	if err := c.Ping(testCtx(t), nil); err != nil { // a pooled connection, so a hold catches the write
		t.Fatal(err)
	}
	return c.Database(f.direct.Database().Name()).Collection(f.direct.Name())
}

// sweeps counts the goroutines sweeping for unsettled acquisitions.
func sweeps() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "mongolock.(*Locker).sweepInBackground(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// waitFor polls cond until it holds, and fails the test saying what it was
// waiting for when a generous deadline passes first.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after 30s waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
