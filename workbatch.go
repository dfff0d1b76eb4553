package mongolock

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// workBatched is Work with WithBatch(n), n > 1: one dispatcher claims due
// documents for the idle workers only (never more than can start now, so no
// lease ticks on a document waiting in a buffer), hands one lock to each,
// and claims again at once while claims come back full. Each worker runs
// the same step as Step (runStep: keep-alive, fn, the release that carries
// the bookkeeping), so each document's bookkeeping is exactly Step's.
func (lk *Locker) workBatched(ctx context.Context, workers int, s *stepRequest, fn func(context.Context, *Lock) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan *Lock)
	finished := make(chan stepDone, workers)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		panicked bool
		panicVal any
	)
	for range workers {
		wg.Go(func() {
			for l := range jobs {
				finished <- lk.batchStep(ctx, s, l, fn, func(p any) {
					mu.Lock()
					if !panicked {
						panicked, panicVal = true, p
					}
					mu.Unlock()
					cancel()
				})
			}
		})
	}
	err := lk.dispatch(ctx, workers, s, jobs, finished)
	close(jobs)
	wg.Wait()
	if panicked {
		panic(panicVal)
	}
	return err
}

// batchStep runs one step on a claimed lock; a panic in fn is handed to
// onPanic after runStep has released the document unchanged.
func (lk *Locker) batchStep(ctx context.Context, s *stepRequest, l *Lock, fn func(context.Context, *Lock) error, onPanic func(any)) (d stepDone) {
	defer func() {
		if p := recover(); p != nil {
			onPanic(p)
			d = stepDone{err: context.Canceled}
		}
	}()
	fnErr, err := lk.runStep(ctx, s, l, fn)
	if errors.Is(err, ErrLockLost) {
		err = nil // the document is someone else's now
	}
	return stepDone{err: err, metLock: fnErr != nil && errors.Is(fnErr, ErrLocked)}
}

// stepDone is what a worker reports when its step ends: the error that ends
// Work, if any, and whether fn met another lock.
type stepDone struct {
	err     error
	metLock bool
}

// dispatch claims documents for idle workers until nothing matches the
// filter and every worker is idle, ctx ends, or a step's release fails.
func (lk *Locker) dispatch(ctx context.Context, workers int, s *stepRequest, jobs chan<- *Lock, finished <-chan stepDone) error {
	var z sleeper
	defer z.stop()
	idle := workers
	var first error
	misses := 0 // steps in a row whose fn met another lock
	collect := func(d stepDone) {
		idle++
		if d.err != nil && first == nil {
			first = d.err
		}
		if d.metLock {
			misses++
		} else {
			misses = 0
		}
	}
	// giveBack releases claimed locks no worker took: ctx ended.
	giveBack := func(locks []*Lock) {
		_ = releaseAll(context.WithoutCancel(ctx), locks)
	}
	for {
		for drained := false; !drained; { // note finished steps without waiting
			select {
			case d := <-finished:
				collect(d)
			default:
				drained = true
			}
		}
		if first != nil {
			return lk.drain(workers-idle, finished, first)
		}
		if err := ctx.Err(); err != nil {
			return lk.drain(workers-idle, finished, err)
		}
		if idle == 0 {
			collect(<-finished)
			continue
		}
		if misses > 0 { // fn met another lock: back off as a waiter does
			me := lk.waiters.watch("step\x00" + s.r.waitKey())
			err := z.sleep(ctx, backoff(misses-1, s.r.cfg.pollInterval), me.wake)
			lk.waiters.leave(me)
			if err != nil {
				return lk.drain(workers-idle, finished, err)
			}
		}
		me := lk.waiters.watch("step\x00" + s.r.waitKey()) // before the claim, so no release is missed
		want := min(idle, s.r.cfg.batch)
		locks, now, err := lk.stepClaim(ctx, s, want)
		if err == nil {
			lk.waiters.leave(me)
			for i, l := range locks {
				select {
				case jobs <- l:
					idle--
				case <-ctx.Done():
					giveBack(locks[i:])
					return lk.drain(workers-idle, finished, ctx.Err())
				}
			}
			continue // full or not, idle workers claim again at once
		}
		if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrLocked) {
			lk.waiters.leave(me)
			return lk.drain(workers-idle, finished, err)
		}
		d, more, err := lk.untilDue(ctx, s, now, errors.Is(err, ErrLocked))
		if err != nil {
			lk.waiters.leave(me)
			return lk.drain(workers-idle, finished, err)
		}
		if !more && idle == workers {
			lk.waiters.leave(me)
			return nil
		}
		if !more {
			d = s.r.cfg.pollInterval // a running step may fail and be due again
		}
		select {
		case d := <-finished:
			collect(d)
		default:
			if serr := z.sleepOr(ctx, d, me.wake, finished, collect); serr != nil {
				lk.waiters.leave(me)
				return lk.drain(workers-idle, finished, serr)
			}
		}
		lk.waiters.leave(me)
	}
}

// drain waits for the busy workers' steps to end and returns err.
func (lk *Locker) drain(busy int, finished <-chan stepDone, err error) error {
	for range busy {
		<-finished
	}
	return err
}

// stepClaim claims up to n due documents, as stepAttempt tries one.
func (lk *Locker) stepClaim(ctx context.Context, s *stepRequest, n int) (locks []*Lock, now time.Time, err error) {
	if now, err = lk.clock.Now(ctx); err != nil {
		return nil, now, err
	}
	r := *s.r
	if r.filter, err = bson.Marshal(dueFilter(s.r.filter, s.policy.NotBeforeField, now)); err != nil {
		return nil, now, invalid("filter: %v", err)
	}
	locks, err = lk.claim(ctx, &r, n)
	lk.observeClaim(&r, locks, err)
	return locks, now, err
}

// sleepOr is sleep that also ends when a worker finishes a step, which it
// hands to collect.
func (z *sleeper) sleepOr(ctx context.Context, d time.Duration, wake <-chan struct{}, finished <-chan stepDone, collect func(stepDone)) error {
	if z.t == nil {
		z.t = time.NewTimer(d)
	} else {
		z.t.Reset(d)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-z.t.C:
	case <-wake:
	case d := <-finished:
		collect(d)
	}
	return nil
}
