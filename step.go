package mongolock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Retry is the policy of Step and Work: how failures of a step are counted in
// the document, how long it then waits before it is due again, and what is
// written when the attempts run out. Its defaults are jobflow-remote's
// runner's, so that Go workers and Python runners can share a collection.
type Retry struct {
	// MaxAttempts is how many failed steps are counted and retried: the
	// failure that finds the document's count already at MaxAttempts gives
	// up and leaves the count at MaxAttempts, as jobflow-remote's
	// max_step_attempts does. The default is 3 (so a step is tried 4 times in
	// all, pausing after each of the first three failures).
	MaxAttempts int
	// Delays[i] is the pause after failure number i+1 before the document is
	// due again; the last one repeats. The default is 30s, 5m, 20m.
	Delays []time.Duration
	// AttemptsField counts the failures. The default is "remote.step_attempts".
	AttemptsField string
	// NotBeforeField holds the time, by the server's clock, before which the
	// document is not due. The default is "remote.retry_time_limit".
	NotBeforeField string
	// ErrorField holds the last failure's message. The default is
	// "remote.error".
	ErrorField string
	// UpdatedField is set to the time of the step, by the server's clock,
	// whenever a step writes (success, failure, give-up), as jobflow-remote
	// sets updated_on, on which its listings filter and sort. The default is
	// "updated_on".
	UpdatedField string
	// GiveUp returns the update (an operator document or pipeline, as for
	// SetUpdateOnRelease) written when the attempts run out or fn returned
	// Permanent(err); doc is the locked document and err fn's error. The
	// default sets state to "REMOTE_ERROR" and previous_state to the
	// document's state. The update should take the document out of the
	// filter that Work drains.
	GiveUp func(doc bson.Raw, err error) any
}

// WithRetry sets the policy of Step and Work; zero fields take the defaults
// (see Retry). A negative MaxAttempts or delay, or a field name that cannot
// hold the bookkeeping, makes the call fail with ErrInvalidOption. The
// default is Retry{}.
func WithRetry(r Retry) Option {
	return func(c *config) {
		if err := r.check(); err != nil {
			c.fail(err)
		}
		r.Delays = slices.Clone(r.Delays) // the caller may reuse its slice
		c.retry = r
	}
}

// Permanent wraps err so that a step that returns it gives up at once,
// without retrying: GiveUp's update is written with err's message. It
// unwraps to err; Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// stepRequest is a Step's validated input.
type stepRequest struct {
	r      *request
	policy Retry // with the defaults filled in
	giveUp func(doc bson.Raw, err error) any
}

// newStep validates a step's filter, options and retry policy.
func (lk *Locker) newStep(filter any, opts []Option) (*stepRequest, error) {
	r, err := lk.newRequest(filter, opts)
	if err != nil {
		return nil, err
	}
	s := &stepRequest{r: r, policy: r.cfg.retry.withDefaults(), giveUp: r.cfg.retry.GiveUp}
	if err := s.policy.checkFields(r.fields); err != nil {
		return nil, err
	}
	need := []string{s.policy.AttemptsField}
	if s.giveUp == nil {
		s.giveUp = defaultGiveUp
		need = append(need, "state")
	}
	if r.projection != nil {
		r.projection = stepProjection(r.projection, need)
		r.findOpts = append(r.cfg.findOpts[:len(r.cfg.findOpts):len(r.cfg.findOpts)], r.lockOptions())
	}
	return s, nil
}

// Step makes one attempt on the first document, in the Locker's sort, that
// matches filter, is unlocked and is due (its not-before field missing, null,
// or not after the server's time), runs fn while holding it, and releases it
// with the step's bookkeeping in the same write:
//
//   - fn returns nil: fn's update (or delete) on release, the attempts reset
//     to 0, the not-before time and the error null;
//   - fn returns an error matching ErrLocked (it met another lock), or the
//     caller's ctx ended and fn returned its error: released unchanged, no
//     attempt counted;
//   - fn returns Permanent(err), or fails when the document's count is
//     already at MaxAttempts: GiveUp's update and the error's message; the
//     count is left as it was, as jobflow-remote leaves it;
//   - any other error: the attempts + 1, the not-before time = the server's
//     time + the policy's pause, the error's message.
//
// Each of these three also sets UpdatedField to the server's time of the
// step (the not-before time is that time + the pause), as jobflow-remote's
// runner sets updated_on; a step released unchanged writes nothing.
//
// Step never waits: it returns ErrNotFound when no due document matches (one
// waiting for its not-before time does not count) and ErrLocked when every due
// match is locked. Otherwise it returns fn's error (joined with the release's,
// if that failed). A panic in fn releases the document unchanged and goes on.
// Leases are kept alive while fn runs, as in Do.
func (lk *Locker) Step(ctx context.Context, filter any, fn func(ctx context.Context, l *Lock) error, opts ...Option) error {
	s, err := lk.newStep(filter, opts)
	if err != nil {
		return err
	}
	if fn == nil {
		return invalid("Step: nil fn")
	}
	l, _, err := lk.stepAttempt(ctx, s)
	if err != nil {
		return err
	}
	fnErr, err := lk.runStep(ctx, s, l, fn)
	if err == nil {
		return fnErr
	}
	return errors.Join(fnErr, err)
}

// stepAttempt tries to lock a due document: the filter is narrowed by the
// server's current time, now, so the holder lookup of a failed attempt also
// sees due documents only.
func (lk *Locker) stepAttempt(ctx context.Context, s *stepRequest) (l *Lock, now time.Time, err error) {
	if now, err = lk.clock.Now(ctx); err != nil {
		return nil, now, err
	}
	r := *s.r
	if r.filter, err = bson.Marshal(dueFilter(s.r.filter, s.policy.NotBeforeField, now)); err != nil {
		return nil, now, invalid("filter: %v", err)
	}
	l, err = lk.attempt(ctx, &r, true)
	lk.observeAttempt(&r, l, err, 0)
	return l, now, err
}

// runStep runs fn on a locked document and releases it with the outcome's
// bookkeeping. It returns fn's error and, apart, the error of the release.
func (lk *Locker) runStep(ctx context.Context, s *stepRequest, l *Lock, fn func(context.Context, *Lock) error) (fnErr, err error) {
	every := s.r.cfg.refreshEvery()
	fnErr, a, o, err := lk.decideStep(ctx, s, l, fn, func(fnCtx context.Context, cancel context.CancelCauseFunc) func() {
		return l.keepAlive(fnCtx, cancel, every)
	})
	if err != nil {
		return fnErr, err
	}
	return fnErr, lk.stepReleased(ctx, s, l, a, o, l.release(ctx, a))
}

// stepReleased finishes a step whose release a returned err: a step whose
// release was applied is told to the Observer; one whose bookkeeping did not
// arrive (other than for a lock found lost) still frees the document. It
// returns the release's error.
func (lk *Locker) stepReleased(ctx context.Context, s *stepRequest, l *Lock, a releaseAction, o stepOutcome, err error) error {
	if err == nil {
		observeStep(s.r.cfg.observer, lk.coll.Name(), o)
		return nil
	}
	if !errors.Is(err, ErrLockLost) && (a.update != nil || a.delete) {
		err = errors.Join(err, l.release(ctx, releaseAction{}))
	}
	return err
}

// decideStep runs fn on a locked document, its lease kept alive by what
// keep starts (keep returns the function that stops it), and returns fn's
// error with the release that records the outcome; Step sends it at once,
// a batched Work with other steps' releases. When fn or Retry.GiveUp
// panics, or the release cannot be built, the document is released as it
// was (err then says why).
func (lk *Locker) decideStep(ctx context.Context, s *stepRequest, l *Lock, fn func(context.Context, *Lock) error,
	keep func(fnCtx context.Context, cancel context.CancelCauseFunc) (stop func())) (fnErr error, a releaseAction, o stepOutcome, err error) {
	fnCtx, cancel := context.WithCancelCause(ctx)
	stop := keep(fnCtx, cancel)
	decided := false
	defer func() {
		if !decided { // fn or GiveUp panicked: free the document as it was
			stop()
			cancel(nil)
			_ = l.release(ctx, releaseAction{})
		}
	}()
	fnErr = fn(fnCtx, l)
	stop()
	cancel(nil)
	a, o, err = lk.stepRelease(ctx, s, l, fnErr)
	decided = true
	if err != nil {
		return fnErr, releaseAction{}, o, errors.Join(err, l.release(ctx, releaseAction{}))
	}
	if s.r.cfg.logger != nil {
		lk.debug(s.r.cfg.logger, "step "+o.String(), "lock_id", l.ID(), "error", fnErr)
	}
	return fnErr, a, o, nil
}

// stepRelease builds the release of a step from fn's outcome.
func (lk *Locker) stepRelease(ctx context.Context, s *stepRequest, l *Lock, fnErr error) (releaseAction, stepOutcome, error) {
	interrupted := fnErr != nil && ctx.Err() != nil && errors.Is(fnErr, ctx.Err())
	doc := l.Document()
	attempts := attemptsOf(doc, s.policy.AttemptsField)
	o := classify(fnErr, interrupted, attempts, s.policy.MaxAttempts)
	var user any
	switch o {
	case stepUnchanged:
		return releaseAction{}, o, nil
	case stepSucceeded:
		l.mu.Lock()
		a := l.onRelease
		l.mu.Unlock()
		if a.delete {
			return a, o, nil
		}
		user = a.update
	case stepGiveUp:
		var err error
		if user, err = releaseUpdate(s.giveUp(doc, fnErr), l.fields); err != nil {
			return releaseAction{}, o, fmt.Errorf("Retry.GiveUp: %w", err)
		}
	}
	// The step's time by the server's clock estimate, not $currentDate: one
	// instant for updated_on and the not-before base (as Python's one
	// utcnow), a plain $set that pipelines and dotted paths on every server
	// take, and the clock is sampled only about once a minute.
	wctx, stop := detached(ctx)
	defer stop()
	now, err := lk.clock.Now(wctx)
	if err != nil {
		return releaseAction{}, o, err
	}
	msg := ""
	if fnErr != nil {
		msg = fnErr.Error()
	}
	u, err := withBookkeeping(user, bookkeeping(s.policy, o, attempts, now, msg))
	return releaseAction{update: u}, o, err
}

// Work runs workers goroutines that call Step on filter until no document
// matches filter at all (none due, waiting for a retry, or locked), and then
// returns nil. While documents match but none is both due and unlocked, a
// worker sleeps until the earliest not-before time, or for the poll interval
// (WithPollInterval, jittered) when nothing waits for one, and is woken at
// once when this Locker releases a lock. A worker whose fn met another lock
// (an error matching ErrLocked) backs off as Acquire's waiters do.
//
// Failures of fn are the documents' business (Step records them); Work
// returns early only with ctx's error, or with the first error that is not a
// step's failure (a server that cannot be reached, a filter it refuses, a
// GiveUp update that is not valid). A lock found lost on release is not such
// an error: the document is someone else's now. A panic in fn releases its
// document unchanged, stops the other workers, and goes on in Work's caller.
// fn's success update and GiveUp must take a document out of filter, or Work
// runs it again. workers < 1 or a nil fn return ErrInvalidOption.
func (lk *Locker) Work(ctx context.Context, workers int, filter any, fn func(ctx context.Context, l *Lock) error, opts ...Option) error {
	if workers < 1 {
		return invalid("Work: %d workers", workers)
	}
	if fn == nil {
		return invalid("Work: nil fn")
	}
	s, err := lk.newStep(filter, opts)
	if err != nil {
		return err
	}
	if s.r.cfg.batch > 1 {
		return lk.workBatched(ctx, workers, s, fn)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		first    error
		panicked bool
		panicVal any
		drained  atomic.Bool // a worker found that nothing matches at all
	)
	for range workers {
		wg.Go(func() {
			defer func() {
				if p := recover(); p != nil {
					mu.Lock()
					if !panicked {
						panicked, panicVal = true, p
					}
					mu.Unlock()
					cancel()
				}
			}()
			if err := lk.work(ctx, s, fn, &drained); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
				cancel()
			}
		})
	}
	wg.Wait()
	if panicked {
		panic(panicVal)
	}
	return first
}

// work is one worker of Work. drained is shared by the workers of one Work
// call: once one of them finds that nothing matches the filter at all, the
// others stop at their next idle moment instead of each asking the server
// again (four queries each, and on a server that scans, the end of every
// Work call cost as much as dozens of steps). That is safe because a
// document can come back into the filter only through a worker that held
// it, and a held document matches (it would have been seen, locked): a
// worker returns to the loop after each step and asks for itself.
func (lk *Locker) work(ctx context.Context, s *stepRequest, fn func(context.Context, *Lock) error, drained *atomic.Bool) error {
	var z sleeper
	defer z.stop()
	poll := s.r.cfg.pollInterval
	misses := 0 // consecutive steps whose fn met another lock
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		me := lk.waiters.watch("step\x00" + s.r.waitKey()) // before the attempt, so no release is missed
		l, now, err := lk.stepAttempt(ctx, s)
		if err == nil {
			lk.waiters.leave(me)
			fnErr, err := lk.runStep(ctx, s, l, fn)
			if err != nil && !errors.Is(err, ErrLockLost) {
				return err
			}
			if fnErr == nil || !errors.Is(fnErr, ErrLocked) {
				misses = 0
				continue
			}
			me = lk.waiters.watch("step\x00" + s.r.waitKey())
			err = z.sleep(ctx, backoff(misses, poll), me.wake)
			lk.waiters.leave(me)
			misses++
			if err != nil {
				return err
			}
			continue
		}
		if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrLocked) {
			lk.waiters.leave(me)
			return err
		}
		if drained.Load() { // this worker holds nothing, and a sibling found the queue empty
			lk.waiters.leave(me)
			return nil
		}
		d, more, err := lk.untilDue(ctx, s, now, errors.Is(err, ErrLocked))
		if err != nil || !more {
			if err == nil {
				drained.Store(true)
				lk.waiters.wakeAll(me) // the idle others stop too
			}
			lk.waiters.leave(me)
			return err
		}
		err = z.sleep(ctx, d, me.wake)
		lk.waiters.leave(me)
		if err != nil || drained.Load() {
			return err
		}
	}
}

// untilDue says how long an idle worker sleeps after an attempt at the
// server time now found nothing to take: until the earliest not-before time
// among the matches, or a jittered poll interval if that is sooner or there
// is none. more is false when nothing matches the filter at all; locked says
// the attempt found due matches, all locked.
func (lk *Locker) untilDue(ctx context.Context, s *stepRequest, now time.Time, locked bool) (d time.Duration, more bool, err error) {
	poll := s.r.cfg.pollInterval
	d = poll/2 + rand.N(poll/2+1)
	nb := s.policy.NotBeforeField
	o := options.FindOne().SetSort(bson.D{{Key: nb, Value: 1}}).SetProjection(bson.D{{Key: nb, Value: 1}})
	if c := s.r.find.Collation; c != nil {
		o.SetCollation(c)
	}
	doc, err := lk.primary.FindOne(ctx, waitingFilter(s.r.filter, nb, now), o).Raw()
	switch {
	case err == nil:
		if t, ok := lookup(doc, nb).DateTimeOK(); ok {
			d = min(d, max(time.UnixMilli(t).Sub(now), time.Millisecond))
		}
		return d, true, nil
	case !errors.Is(err, mongo.ErrNoDocuments):
		return 0, false, ioError(ctx, "reading the next not-before time", err)
	case locked:
		return d, true, nil
	}
	// Nothing waits and nothing was due at now: does anything match at all
	// (a document someone else changed meanwhile)? Then try again soon.
	o = options.FindOne().SetProjection(bson.D{{Key: "_id", Value: 1}})
	if c := s.r.find.Collation; c != nil {
		o.SetCollation(c)
	}
	err = lk.primary.FindOne(ctx, s.r.filter, o).Err()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, ioError(ctx, "reading the queue", err)
	}
	return min(d, firstBackoff), true, nil
}

// sleeper waits with one reused timer.
type sleeper struct{ t *time.Timer }

// sleep waits for d, a wake, or the end of ctx (then it returns ctx's error).
func (z *sleeper) sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) error {
	return z.sleepOr(ctx, d, wake, nil, nil) // a nil channel never delivers
}

func (z *sleeper) stop() {
	if z.t != nil {
		z.t.Stop()
	}
}
