package mongolock

import (
	"context"
	"errors"
	"fmt"
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
	pub := &publisher{reqs: make(chan pubReq), max: workers}
	published := make(chan struct{})
	go func() {
		defer close(published)
		pub.run()
	}()
	jobs := make(chan claimed)
	finished := make(chan stepDone, workers)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		panicked bool
		panicVal any
	)
	for range workers {
		wg.Go(func() {
			for c := range jobs {
				finished <- lk.batchStep(ctx, s, c, fn, pub, func(p any) {
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
	err := lk.dispatch(ctx, workers, s, jobs, finished, pub)
	close(jobs)
	wg.Wait()
	close(pub.reqs)
	<-published
	if err == nil {
		err = pub.err()
	}
	if panicked {
		panic(panicVal)
	}
	return err
}

// batchStep runs one step on a claimed lock; a panic in fn is handed to
// onPanic after runStep has released the document unchanged.
func (lk *Locker) batchStep(ctx context.Context, s *stepRequest, c claimed, fn func(context.Context, *Lock) error, pub *publisher, onPanic func(any)) (d stepDone) {
	defer func() {
		if p := recover(); p != nil {
			onPanic(p)
			d = stepDone{err: context.Canceled}
		}
	}()
	fnErr, err := lk.runBatchStep(ctx, s, c, fn, pub)
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
func (lk *Locker) dispatch(ctx context.Context, workers int, s *stepRequest, jobs chan<- claimed, finished <-chan stepDone, pub *publisher) error {
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
		if first == nil {
			first = pub.err()
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
		if idle < min(workers, s.r.cfg.batch) && idle < workers {
			// Steps that end together (their releases went out in one
			// write) come back within microseconds: wait a moment for
			// them, so that one claim serves them all.
			z.gather(coalesceWindow, finished, collect, func() bool { return idle >= min(workers, s.r.cfg.batch) })
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
			k := lk.newKeeper(s.r.cfg.refreshEvery(), len(locks))
			for i, l := range locks {
				select {
				case jobs <- claimed{l, k}:
					idle--
				case <-ctx.Done():
					for range locks[i:] {
						k.leave(nil)
					}
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

// stepClaim claims up to n due documents, as stepAttempt tries one; for
// one document it is stepAttempt (one round trip, where a claim takes
// three).
func (lk *Locker) stepClaim(ctx context.Context, s *stepRequest, n int) (locks []*Lock, now time.Time, err error) {
	if n == 1 {
		l, now, err := lk.stepAttempt(ctx, s)
		if err != nil {
			return nil, now, err
		}
		return []*Lock{l}, now, nil
	}
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

// runBatchStep is runStep with the release handed to the publisher, which
// sends it with the releases of other steps that ended at about the same
// time. The release carries the same bookkeeping (stepRelease), and a
// release whose bookkeeping did not arrive still frees the document.
func (lk *Locker) runBatchStep(ctx context.Context, s *stepRequest, c claimed, fn func(context.Context, *Lock) error, pub *publisher) (fnErr, err error) {
	l := c.l
	fnErr, a, o, err := lk.decideStep(ctx, s, l, fn, func(_ context.Context, cancel context.CancelCauseFunc) func() {
		c.k.join(l, cancel) // the claim's keeper refreshes its locks together
		return func() { c.k.leave(l) }
	})
	if err != nil {
		return fnErr, err
	}
	// The worker is free at once: its release goes out with others while
	// the dispatcher claims its next document.
	pub.send(l, a, func(err error) {
		err = lk.stepReleased(context.WithoutCancel(ctx), s, l, a, o, err)
		if err != nil && !errors.Is(err, ErrLockLost) {
			pub.fail(err)
		}
	})
	return fnErr, nil
}

// coalesceWindow is how long the publisher waits for more finished steps
// before it sends their releases.
const coalesceWindow = 2 * time.Millisecond

// publisher sends the releases of finished steps in bulk writes: the first
// release waits at most coalesceWindow for others (or until max have come).
// The first release that fails (other than a lock found lost) ends Work.
type publisher struct {
	reqs chan pubReq
	max  int

	mu    sync.Mutex
	first error
}

type pubReq struct {
	l    *Lock
	a    releaseAction
	done func(error) // called by the publisher with the release's result
}

// send hands the release of l to the publisher.
func (p *publisher) send(l *Lock, a releaseAction, done func(error)) {
	p.reqs <- pubReq{l: l, a: a, done: done}
}

func (p *publisher) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.first == nil {
		p.first = err
	}
}

func (p *publisher) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.first
}

// run publishes until reqs is closed.
func (p *publisher) run() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for req := range p.reqs {
		batch := []pubReq{req}
		t.Reset(coalesceWindow)
	collect:
		for len(batch) < p.max {
			select {
			case r, ok := <-p.reqs:
				if !ok {
					break collect
				}
				batch = append(batch, r)
			case <-t.C:
				break collect
			}
		}
		publish(batch)
	}
}

// publish sends one batch of releases, as ReleaseAll does, and tells each
// step its result. A lock found lost meanwhile (by its keep-alive) is
// reported as Release would report it.
func publish(batch []pubReq) {
	locks := make([]*Lock, 0, len(batch))
	acts := make([]releaseAction, 0, len(batch))
	var live []pubReq
	unlock := lockAll(func() []*Lock {
		all := make([]*Lock, len(batch))
		for i, r := range batch {
			all[i] = r.l
		}
		return all
	}())
	var gone []pubReq
	for _, r := range batch {
		if r.l.done {
			gone = append(gone, r)
			continue
		}
		live = append(live, r)
		locks = append(locks, r.l)
		acts = append(acts, r.a)
	}
	var errs []error
	if len(locks) > 0 {
		errs = releaseEach(context.Background(), locks, acts)
	}
	unlock()
	for _, r := range gone {
		r.done(fmt.Errorf("%w: already released or lost", ErrLockLost))
	}
	for i, r := range live {
		r.done(errs[i])
	}
}

// gather collects finished steps for up to d, or until enough says so.
func (z *sleeper) gather(d time.Duration, finished <-chan stepDone, collect func(stepDone), enough func() bool) {
	if z.t == nil {
		z.t = time.NewTimer(d)
	} else {
		z.t.Reset(d)
	}
	for !enough() {
		select {
		case sd := <-finished:
			collect(sd)
		case <-z.t.C:
			return
		}
	}
}

// claimed is a lock handed to a worker, with the keeper of its claim.
type claimed struct {
	l *Lock
	k *claimKeeper
}

// claimKeeper keeps the leases of one claim's running steps alive: one
// write per tick for all of them (their filter names each lock as its own
// release does), instead of one refresh per lock. When the write does not
// refresh them all, each is refreshed on its own, which tells the lost
// ones: their fn's context is cancelled with ErrLockLost, as Do's
// keep-alive does. A nil keeper (no lease, no auto-refresh) does nothing.
type claimKeeper struct {
	lk    *Locker
	every time.Duration

	mu      sync.Mutex
	members map[*Lock]context.CancelCauseFunc
	left    int // steps of the claim not yet ended
	quit    chan struct{}
}

// newKeeper starts the keeper of a claim of n locks, which stops when all
// n have left.
func (lk *Locker) newKeeper(every time.Duration, n int) *claimKeeper {
	if every <= 0 {
		return nil
	}
	k := &claimKeeper{lk: lk, every: every, members: map[*Lock]context.CancelCauseFunc{}, left: n, quit: make(chan struct{})}
	go k.run()
	return k
}

// join adds a running step's lock and the cancel of its fn's context.
func (k *claimKeeper) join(l *Lock, cancel context.CancelCauseFunc) {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.members[l] = cancel
}

// leave removes a lock whose step ended (nil: one never handed out). The
// refresh in flight, if any, ends before leave returns, so that the step's
// release does not meet it.
func (k *claimKeeper) leave(l *Lock) {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.members, l)
	if k.left--; k.left == 0 {
		close(k.quit)
	}
}

func (k *claimKeeper) run() {
	t := time.NewTicker(k.every)
	defer t.Stop()
	for {
		select {
		case <-k.quit:
			return
		case <-t.C:
		}
		k.mu.Lock()
		k.refresh()
		k.mu.Unlock()
	}
}

// refresh renews every member's lock_time and lease in one write. k.mu is
// held: a step that ends waits for it.
func (k *claimKeeper) refresh() {
	if len(k.members) == 0 {
		return
	}
	locks := make([]*Lock, 0, len(k.members))
	for l := range k.members {
		locks = append(locks, l)
	}
	ctx, cancel := context.WithTimeout(context.Background(), attemptTimeout)
	defer cancel()
	if !k.refreshTogether(ctx, locks) {
		for _, l := range locks { // one by one: which are lost, and where are the others
			err := l.Refresh(ctx)
			if errors.Is(err, ErrLockLost) {
				k.members[l](err)
			} else if err != nil {
				if expired := l.leaseRanOut(); expired != nil {
					k.members[l](expired)
				}
			}
		}
	}
}

// refreshTogether sends one write that renews every lock of locks; it
// reports whether that write refreshed them all. It applies only to locks
// that share one random lock id and no pending refresh, without fencing,
// as a claim's are.
func (k *claimKeeper) refreshTogether(ctx context.Context, locks []*Lock) bool {
	unlock := lockAll(locks)
	defer unlock()
	first := locks[0]
	docs := make([]bson.RawValue, len(locks))
	var times bson.A
	t := bson.DateTime(0)
	for i, l := range locks {
		if l.done || l.cfg.lockID != "" || l.fields.seq != "" || len(l.id.pending) > 0 || l.id.lockID != first.id.lockID {
			return false
		}
		docs[i] = l.id.docID
		times = append(times, l.id.time)
		t = max(t, l.id.time+1)
	}
	now, err := k.lk.clock.Now(ctx)
	if err != nil {
		return false
	}
	t = max(t, bson.NewDateTimeFromTime(now))
	var expires time.Time
	if first.cfg.lease > 0 {
		expires = now.Add(first.cfg.lease)
	}
	filter := append(idsFilter(docs), bson.E{Key: first.fields.lock, Value: first.id.lockID},
		bson.E{Key: first.fields.time, Value: bson.D{{Key: "$in", Value: times}}})
	res, err := k.lk.coll.UpdateMany(ctx, filter, refreshUpdate(first.fields, t, expires))
	if err == nil && res.MatchedCount == int64(len(locks)) {
		for _, l := range locks {
			l.id.time, l.expires = t, expires
		}
		return true
	}
	if err == nil || unknownOutcome(ctx, err) {
		for _, l := range locks { // some may carry t now: the next write names either time
			l.id.pending = append(l.id.pending, t)
		}
	}
	return false
}
