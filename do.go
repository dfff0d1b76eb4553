package mongolock

import (
	"context"
	"errors"
	"fmt"
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
// auto-refresh (WithAutoRefresh, or WithLease) finds the lock lost. The
// release runs on context.WithoutCancel(ctx). Do returns Acquire's error
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
// ErrLockLost. Other refresh errors are retried at the next tick, until the
// lease runs out unrenewed (the server cannot be reached): then anyone may
// take the document over, so ctx is cancelled with a cause that matches
// ErrLockLost too, though Lost stays open until the lock is known to be
// gone. A zero interval does nothing.
func (l *Lock) keepAlive(ctx context.Context, cancel context.CancelCauseFunc, every time.Duration) (stop func()) {
	if every <= 0 {
		return func() {}
	}
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
			}
			err := l.Refresh(context.WithoutCancel(ctx))
			if errors.Is(err, ErrLockLost) {
				cancel(err)
				return
			}
			if err != nil && l.cfg.logger != nil {
				l.locker.debug(l.cfg.logger, "refresh failed", "lock_id", l.id.lockID, "error", err)
			}
			if err != nil {
				if expired := l.leaseRanOut(); expired != nil {
					cancel(expired)
				}
			}
		}
	}()
	return func() {
		close(quit)
		<-done
	}
}

// leaseRanOut returns an error matching ErrLockLost when the lock's lease
// has run out by the server's clock (as last estimated: the server may be
// out of reach), and nil otherwise or without a lease.
func (l *Lock) leaseRanOut() error {
	l.mu.Lock()
	expires := l.expires
	l.mu.Unlock()
	now, ok := l.locker.clock.estimate()
	if expires.IsZero() || !ok || now.Before(expires) {
		return nil
	}
	return fmt.Errorf("%w: the lease of lock %s ran out at %s without a refresh: anyone may have taken the document over",
		ErrLockLost, l.id.lockID, formatTime(expires))
}
