package mongolock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// lookEvery is how often a poller reads who holds what it waits for when
// nothing else calls for it: so that ErrNotFound is reported soon after the
// last match went away, and leases that ran out are found.
const lookEvery = 250 * time.Millisecond

// contendedPoll caps a poller's back-off while other processes contend for
// what it waits for, so that a document left to whoever asks first (see
// localStreak) is found soon.
const contendedPoll = 20 * time.Millisecond

// Acquire locks a document matching filter, waiting while every match is
// locked. Waiters of one Locker that wait for the same thing queue in
// arrival order and only the first asks the server, with exponential
// back-off (from 10ms, capped by WithPollInterval, with jitter); a release
// through the Locker hands the document to it at once. It returns
// ErrNotFound as soon as nothing matches. When WithMaxWait or ctx's deadline
// runs out, or ctx is cancelled, the error matches both the holder's
// *LockedDocumentError and ctx's error (context.DeadlineExceeded when the
// wait ran out).
func (lk *Locker) Acquire(ctx context.Context, filter any, opts ...Option) (*Lock, error) {
	r, err := lk.newRequest(filter, opts)
	if err != nil {
		return nil, err
	}
	return lk.acquire(ctx, r)
}

// acquire is the wait: a try whenever this waiter is the poller and its
// back-off ends, or a release is handed to it; a read of the holder (look)
// only on its first try, after a hand-off, and every lookEvery.
func (lk *Locker) acquire(ctx context.Context, r *request) (*Lock, error) {
	start := time.Now()
	deadline := start.Add(r.cfg.maxWait)
	w := lk.waiters.join(r.waitKey()) // before the first try, so no release is missed
	defer lk.waiters.leave(w)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	var (
		polls  int       // failed tries since this waiter became the poller
		looked time.Time // when this waiter last read the holder
		tried  bool      // this waiter has made a try
		next   = tryNow  // a newcomer tries at once, unless others wait before it
	)
	if !lk.waiters.isPoller(w) {
		next = waitOn
	}
	for {
		if next != waitOn && next != pollNow {
			look := looked.IsZero() || next == handed || time.Since(looked) >= lookEvery
			tctx, cancel := tryContext(ctx, deadline)
			l, err := lk.attempt(tctx, r, look)
			ctxErr := endedBy(tctx, err) // before cancel, which ends tctx too
			cancel()
			tried = true
			lk.observeAttempt(r, l, err, time.Since(start))
			var locked *LockedDocumentError
			switch {
			case err == nil:
				if next == handed && r.cfg.logger != nil {
					lk.debug(r.cfg.logger, "lock handed over", "lock_id", l.ID(), "waited", time.Since(start))
				}
				return l, nil
			case errors.Is(err, errStillLocked):
			case errors.As(err, &locked):
				looked = time.Now()
				lk.waiters.sawHolder(w, locked, isForeign(locked.Document, r.fields))
			case errors.Is(err, ErrNotFound):
				lk.waiters.wakeAll(w) // they wait for nothing too
				return nil, err
			default:
				switch {
				case ctxErr != nil && lk.waiters.lastHolder(w) != nil:
					// The wait ran out during a try: report it as a wait
					// that ran out, naming the holder.
					return nil, lk.gaveUp(ctx, r, w, ctxErr, start)
				case ctxErr != nil && !errors.Is(err, ctxErr):
					return nil, fmt.Errorf("%w (%w)", err, ctxErr)
				}
				return nil, err
			}
			polls++
		}
		if next == pollNow {
			polls = 0 // just promoted: start the back-off afresh
		}
		left := time.Until(deadline)
		if left <= 0 && !tried {
			next = tryNow // a wait that ends makes its one try, behind the others or not
			continue
		}
		if left <= 0 {
			return nil, lk.gaveUp(ctx, r, w, context.DeadlineExceeded, start)
		}
		d := left // a waiter behind the poller has no timer but the deadline
		if lk.waiters.isPoller(w) {
			d = min(backoff(polls-1, lk.pollCap(r, w)), left)
		}
		if timer == nil {
			timer = time.NewTimer(d)
		} else {
			timer.Reset(d)
		}
		select {
		case <-ctx.Done():
			return nil, lk.gaveUp(ctx, r, w, ctx.Err(), start)
		case <-timer.C:
			next = lk.waiters.next(w, true)
		case <-w.wake:
			next = lk.waiters.next(w, false)
		}
	}
}

// tryContext bounds one try by the wait's end, so that a server that stops
// answering cannot hold a wait past it: a write then in flight gets what a
// cancelled caller's does (graceAfterCancel to finish, cleanupTimeout to ask
// whether it took the lock, which is then given back). A try begun near the
// end still gets attemptTimeout, so that it can read the holder it names.
func tryContext(ctx context.Context, deadline time.Time) (context.Context, context.CancelFunc) {
	return context.WithDeadline(ctx, later(deadline, time.Now().Add(attemptTimeout)))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// errStillLocked is what a try that does not look reports when it takes
// nothing: every match was locked a moment ago, or nothing matches.
var errStillLocked = errors.New("mongolock: still locked")

// pollCap is the longest pause between a poller's tries.
func (lk *Locker) pollCap(r *request, w *waiter) time.Duration {
	if lk.waiters.contended(w) {
		return min(r.cfg.pollInterval, contendedPoll)
	}
	return r.cfg.pollInterval
}

// isForeign reports whether the holder of doc is outside this process: its
// holder record names another host or process, or there is none (a Python
// holder writes none).
func isForeign(doc []byte, f fieldSet) bool {
	h, ok := holderOf(doc, f.lock)
	if !ok {
		return true
	}
	host, pid := thisProcess()
	return h.host != host || h.pid != pid
}

// gaveUp is the error of a wait that ran out or was cancelled. It names the
// holder the group last read; a waiter whose group has read none yet reads
// it once, and reports ErrNotFound if nothing matches.
func (lk *Locker) gaveUp(ctx context.Context, r *request, w *waiter, ctxErr error, start time.Time) error {
	waited := time.Since(start)
	if o := r.cfg.observer; o != nil {
		o.GaveUp(lk.coll.Name(), waited)
	}
	locked := lk.waiters.lastHolder(w)
	if locked == nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), attemptTimeout)
		doc, err := lk.holder(rctx, r)
		cancel()
		switch {
		case err != nil:
			return fmt.Errorf("mongolock: acquiring: %w; reading the lock holder: %w", ctxErr, err)
		case doc == nil:
			return fmt.Errorf("%w (%w)", ErrNotFound, ctxErr)
		case isFree(doc, r.fields):
			return fmt.Errorf("mongolock: acquiring: %w before the document came free", ctxErr)
		}
		locked = lockedErrorFromDoc(doc, r.fields.lock, r.fields.time)
	}
	return &waitError{locked: locked, ctxErr: ctxErr, waited: waited}
}

// backoff is the pause before retry number attempt+1: 10ms doubling up to
// limit, of which a random half is kept so that waiters spread out.
func backoff(attempt int, limit time.Duration) time.Duration {
	d := limit
	if attempt < 30 && firstBackoff<<max(attempt, 0) < limit {
		d = firstBackoff << max(attempt, 0)
	}
	return d/2 + rand.N(d/2+1)
}

// waitKey names what a request waits for: waiters with the same key are one
// group of the Locker's waitQueue, and share the holder their poller read
// (so WithLockedDocument, which changes what that read returns, is part of
// the key).
func (r *request) waitKey() string {
	flags := []byte{'-', '-', '-'}
	if r.cfg.breakLock {
		flags[0] = 'b'
	}
	if r.cfg.lease > 0 {
		flags[1] = 'l'
	}
	if r.cfg.lockedDocument {
		flags[2] = 'd'
	}
	return string(r.filter) + "\x00" + r.fields.lock + "\x00" + r.fields.time + "\x00" + r.fields.seq + "\x00" + string(flags)
}
