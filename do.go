package mongolock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Do locks a document matching filter (waiting as Acquire does), runs fn
// while holding it, and releases it on every path:
//
//   - fn returns nil: the release applies what fn asked for with
//     SetUpdateOnRelease or SetDeleteOnRelease; Do returns the release's
//     error (matching ErrLockLost if the lock was lost meanwhile);
//   - fn returns an error: the lock is released without the update or
//     delete, and fn's error is returned (joined with any release error);
//   - fn panics: the lock is released the same way and the panic goes on.
//
// The context given to fn is cancelled with cause ErrLockLost when the
// auto-refresh (WithAutoRefresh, or WithLease) finds the lock lost and, with
// a lease, when the lease runs out unrenewed by the local monotonic clock
// (never later than another client may take the document over), whatever a
// refresh in flight, the network or another call of the Locker is doing.
// The release runs on context.WithoutCancel(ctx), once fn has returned,
// without waiting for a refresh in flight. Do returns Acquire's error
// without calling fn when no lock is taken.
func (lk *Locker) Do(ctx context.Context, filter any, fn func(ctx context.Context, l *Lock) error, opts ...Option) error {
	r, err := lk.newRequest(filter, opts)
	if err != nil {
		return err
	}
	if fn == nil {
		return invalid("Do: nil fn")
	}
	l, err := lk.acquire(ctx, r)
	if err != nil {
		return err
	}
	fnCtx, cancel := context.WithCancelCause(ctx)
	stop := l.keepAlive(fnCtx, cancel, r.cfg.refreshEvery())
	finished := false
	defer func() {
		if !finished { // fn panicked: free the lock and let the panic go on
			stop()
			cancel(nil)
			_ = l.release(ctx, releaseAction{})
		}
	}()
	fnErr := fn(fnCtx, l)
	finished = true
	stop()
	cancel(nil)
	if fnErr != nil {
		return errors.Join(fnErr, l.release(ctx, releaseAction{}))
	}
	err = l.Release(ctx)
	if err != nil && !errors.Is(err, ErrLockLost) && l.hasReleaseAction() {
		// The update or delete was refused or did not arrive: still free
		// the document, so that no lock of ours is left behind.
		err = errors.Join(err, l.release(ctx, releaseAction{}))
	}
	return err
}

// keepAlive refreshes the lock every interval until stop is called, even
// after ctx ends: fn may still be running, and its lease must not run out
// under it. When a refresh finds the lock lost it cancels ctx with cause
// ErrLockLost. Other refresh errors are retried at the next tick.
//
// With a lease, a local timer cancels ctx at the lease's end by the client's
// monotonic clock (moved on by each refresh that succeeds), with a cause
// matching ErrLockLost: from then on anyone may take the document over, and
// no refresh in flight, server that stopped answering or other call of the
// Locker can delay that. Lost stays open until the lock is known to be gone.
// stop cuts a refresh in flight short, so that the release after fn does
// not wait for it. A zero interval only watches the lease.
func (l *Lock) keepAlive(ctx context.Context, cancel context.CancelCauseFunc, every time.Duration) (stop func()) {
	unwatch := l.watchLease(cancel)
	if every <= 0 {
		return unwatch
	}
	rctx, rcancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-t.C:
			}
			err := l.refresh(rctx)
			if errors.Is(err, ErrLockLost) {
				cancel(err)
				return
			}
			if err != nil && rctx.Err() == nil && l.cfg.logger != nil {
				l.locker.debug(l.cfg.logger, "refresh failed", "lock_id", l.id.lockID, "error", err)
			}
		}
	}()
	return func() {
		rcancel()
		<-done
		unwatch()
	}
}

// watchLease cancels ctx (through cancel) when the lock's lease runs out by
// the local monotonic clock, and does nothing without a lease. stop ends
// the watch.
func (l *Lock) watchLease(cancel context.CancelCauseFunc) (stop func()) {
	end := l.leaseEnd()
	if end.IsZero() {
		return func() {}
	}
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	fire := func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		if left := time.Until(l.leaseEnd()); left > 0 {
			t.Reset(left) // a refresh moved the end on meanwhile
			return
		}
		cancel(l.leaseRanOut())
	}
	mu.Lock()
	t = time.AfterFunc(time.Until(end), fire)
	mu.Unlock()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}

// leaseRanOut is the error of a lease that ran out unrenewed, by the local
// clock: it matches ErrLockLost, since anyone may take the document over.
func (l *Lock) leaseRanOut() error {
	l.endMu.Lock()
	expires := l.endsAt
	l.endMu.Unlock()
	return fmt.Errorf("%w: the lease of lock %s ran out (by the local clock; on the server at about %s) without a refresh: "+
		"anyone may take the document over", ErrLockLost, l.id.lockID, formatTime(expires))
}
