package mongolock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mongolock/mongolock"
)

// The keep-alive's promise: fn's context ends no later than the moment
// another client may take the document over, whatever the network, an
// in-flight refresh or another call of the same Locker is doing. Each test
// asserts that order (fn's context is done when the take-over returns), not
// durations.

// inDo runs lk.Do on job in the background; fn waits for its context to
// end (or the test's). It returns fn's context once fn runs, and Do's
// result when Do returns.
func inDo(t *testing.T, ctx context.Context, lk *mongolock.Locker, job any) (fnCtx context.Context, done <-chan error) {
	t.Helper()
	started := make(chan context.Context, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- lk.Do(ctx, job, func(fctx context.Context, _ *mongolock.Lock) error {
			started <- fctx
			select {
			case <-fctx.Done():
			case <-ctx.Done():
			}
			return nil
		})
	}()
	select {
	case fnCtx = <-started:
	case err := <-errc:
		t.Fatalf("Do: %v", err)
	}
	return fnCtx, errc
}

// takeOver waits, as another client, until it takes job over, and checks
// that fn's context had ended by then with a cause matching ErrLockLost.
func takeOver(t *testing.T, ctx context.Context, f *faulty, job any, fnCtx context.Context) *mongolock.Lock {
	t.Helper()
	other, err := mongolock.New(f.direct, mongolock.WithPollInterval(5*time.Millisecond)).Acquire(ctx, job, mongolock.WithMaxWait(30*time.Second))
	if err != nil {
		t.Fatalf("the other client could not take the document over: %v", err)
	}
	if fnCtx.Err() == nil {
		t.Errorf("another client took the document over while fn's context was still live")
	} else if cause := context.Cause(fnCtx); !errors.Is(cause, mongolock.ErrLockLost) {
		t.Errorf("fn's context ended with %v; want a cause matching ErrLockLost", cause)
	}
	return other
}

// Issue 18: a call of the same Locker that re-samples the server clock
// without a deadline while the server is silent must not hold up the
// keep-alive of a held lock. Every call needs a new sample here (the sample
// age is shortened to nothing), as the scenario's one did after a minute.
func TestKeepAliveIndependentOfClockSample(t *testing.T) {
	defer mongolock.SetFaultTimeouts(200*time.Millisecond, time.Second)()
	defer mongolock.SetClockMaxAge(time.Nanosecond)()
	const lease = 1500 * time.Millisecond
	x := func(ctx context.Context, lk *mongolock.Locker, job any) <-chan error {
		errc := make(chan error, 1)
		go func() { // X: the same Locker, a lease, no deadline
			l, err := lk.TryAcquire(context.Background(), job, mongolock.WithLease(time.Minute))
			if l != nil {
				err = errors.Join(errors.New("X took the lock"), l.Release(ctx))
			}
			errc <- err
		}()
		return errc
	}
	t.Run("partition", func(t *testing.T) {
		// The scenario: A's client is cut off while X samples the clock.
		ctx := testCtx(t)
		f := newFaulty(t)
		job := jobDoc(t, f.direct)
		lk := mongolock.New(f.coll, mongolock.WithLease(lease), mongolock.WithAutoRefresh(lease/3))
		fnCtx, doErr := inDo(t, ctx, lk, job)
		f.proxy.Hold()
		xErr := x(ctx, lk, job)
		other := takeOver(t, ctx, f, job, fnCtx)
		f.proxy.Heal(false)
		if err := <-xErr; err == nil {
			t.Error("X: no error; want the partition's")
		}
		if err := <-doErr; !errors.Is(err, mongolock.ErrLockLost) {
			t.Errorf("Do: %v; want ErrLockLost", err)
		}
		if err := other.Release(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("only the clock sample stalls", func(t *testing.T) {
		// Writes pass; hello, the clock's sample, is answered only after 20s.
		// X's sample must not stop A's refreshes: the lease stays alive.
		ctx := testCtx(t)
		f := newFaulty(t)
		job := jobDoc(t, f.direct)
		lk := mongolock.New(f.coll, mongolock.WithLease(lease), mongolock.WithAutoRefresh(lease/3))
		dctx, endFn := context.WithCancel(ctx)
		fnCtx, doErr := inDo(t, dctx, lk, job)
		f.proxy.Delay("hello", 20*time.Second)
		xErr := x(ctx, lk, job)
		time.Sleep(3 * lease)
		if fnCtx.Err() != nil {
			t.Errorf("fn's context ended (%v) while only the clock sample stalled", context.Cause(fnCtx))
		}
		if _, err := mongolock.New(f.direct).TryAcquire(ctx, job); !errors.Is(err, mongolock.ErrLocked) {
			t.Errorf("another client's try after three lease lengths: %v; want ErrLocked, the lease kept alive", err)
		}
		f.proxy.Delay("hello", 0)
		if err := <-xErr; !errors.Is(err, mongolock.ErrLocked) {
			t.Errorf("X: %v; want ErrLocked", err)
		}
		endFn()
		if err := <-doErr; err != nil {
			t.Errorf("Do: %v", err)
		}
	})
}

// Issue 19: fn's context ends at the lease's end by the local clock, not
// when a refresh in flight gives up; and Do returns after fn without
// waiting for that refresh.
func TestLeaseEndCancelsFnDuringRefresh(t *testing.T) {
	t.Run("partition", func(t *testing.T) {
		ctx := testCtx(t)
		f := newFaulty(t)
		job := jobDoc(t, f.direct)
		// A refresh waits up to the library's 5s for its reply: longer than the lease.
		lk := mongolock.New(f.coll, mongolock.WithLease(time.Second), mongolock.WithAutoRefresh(330*time.Millisecond))
		fnCtx, doErr := inDo(t, ctx, lk, job)
		f.proxy.Hold()
		other := takeOver(t, ctx, f, job, fnCtx)
		f.proxy.Heal(false)
		if err := <-doErr; !errors.Is(err, mongolock.ErrLockLost) {
			t.Errorf("Do: %v; want ErrLockLost", err)
		}
		if err := other.Release(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("refresh stalls", func(t *testing.T) {
		defer mongolock.SetFaultTimeouts(time.Minute, time.Minute)()
		ctx := testCtx(t)
		f := newFaulty(t)
		job := jobDoc(t, f.direct)
		lk := mongolock.New(f.coll, mongolock.WithLease(time.Second), mongolock.WithAutoRefresh(330*time.Millisecond))
		fnCtx, doErr := inDo(t, ctx, lk, job)
		// Refreshes reach the server only after 15s (and a refresh may wait a minute for its reply).
		f.proxy.Delay("findAndModify", 15*time.Second)
		sent := f.proxy.Count("findAndModify")
		other := takeOver(t, ctx, f, job, fnCtx)
		err := <-doErr
		if f.proxy.Count("findAndModify") != sent {
			t.Errorf("Do returned only after its stalled refresh reached the server")
		}
		if err != nil && !errors.Is(err, mongolock.ErrLockLost) { // nil: its release came before the take-over
			t.Errorf("Do: %v; want nil or ErrLockLost", err)
		}
		if err := other.Release(ctx); err != nil {
			t.Fatal(err)
		}
		unlocked(t, f.direct, "job")
	})
}

// A Locker's first clock sample is taken once for every call that needs
// it, and each waits only as long as its own context allows: a call with a
// deadline is not held up by one without, sampling a silent server.
func TestClockSampleWaitersLeaveOnTheirOwn(t *testing.T) {
	ctx := testCtx(t)
	f := newFaulty(t)
	job := jobDoc(t, f.direct)
	lk := mongolock.New(f.coll, mongolock.WithLease(time.Minute)) // no sample yet
	f.proxy.Hold()
	xErr := make(chan error, 1)
	go func() { // X: no deadline
		l, err := lk.TryAcquire(context.Background(), job)
		if err == nil {
			err = l.Release(ctx)
		}
		xErr <- err
	}()
	for f.proxy.Held("hello") == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	yErr := make(chan error, 1)
	go func() { // Y: a deadline of its own
		yctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		_, err := lk.TryAcquire(yctx, job)
		yErr <- err
	}()
	select {
	case err := <-yErr:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Y: %v; want its own deadline", err)
		}
	case <-time.After(30 * time.Second): // far past Y's deadline
		t.Error("Y waited on X's clock sample past its own deadline")
	}
	f.proxy.Heal(true)
	<-xErr // X's own outcome depends on how long the sample waited; it must return
	unlocked(t, f.direct, "job")
}
