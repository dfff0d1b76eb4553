package mongolock

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// A Group holds the locks DoAll's fn takes with Lock: several documents, in
// one or several collections, all or nothing. Its methods are safe for
// concurrent use while fn runs; after fn returns, Lock fails.
type Group struct {
	ctx    context.Context // fn's
	cancel context.CancelCauseFunc

	mu      sync.Mutex
	done    bool
	locks   []*Lock // in order of acquisition
	stops   []func()
	blocked []blocked // the calls that met a lock, for the wait
}

// blocked is a Lock call that met another holder: its Locker wakes the
// group's wait when it releases a lock.
type blocked struct {
	lk     *Locker
	r      *request
	w      *waiter
	lockID string // the holder met
}

// DoAll runs fn with a Group, in which fn locks the documents it needs with
// g.Lock, one attempt each; it never waits while it holds anything, so
// groups that lock the same documents in opposite orders cannot deadlock.
//
//   - fn returns nil: the locks are released in reverse order of acquisition
//     (the first one last), each with its own update or delete on release;
//     a failed release does not stop the others, and their errors are
//     joined.
//   - fn returns an error matching ErrLocked (a g.Lock found a document
//     locked by someone else): every lock of the group is released without
//     updates, DoAll waits (back-off from 10ms capped by WithPollInterval,
//     with jitter, woken early when a Locker whose lock fn met releases
//     one) and runs fn again from the start. fn must be safe to run again.
//     When WithMaxWait (default 600s) or ctx runs out, the error matches
//     fn's last error (and so the holder's *LockedDocumentError) and ctx's
//     error, context.DeadlineExceeded when the wait ran out.
//   - any other error, or a panic: every lock is released without updates,
//     and the error returned (joined with any release error) or the panic
//     goes on.
//
// Leases of the members are kept alive while fn runs (WithLease,
// WithAutoRefresh on their Lockers or Lock calls); when one is found lost,
// fn's context is cancelled with cause ErrLockLost. DoAll reads only
// WithMaxWait and WithPollInterval from opts; the locks take their options
// from their Lockers and from g.Lock. A nil fn or a bad option returns
// ErrInvalidOption.
func DoAll(ctx context.Context, fn func(ctx context.Context, g *Group) error, opts ...Option) error {
	cfg := defaultConfig().with(opts)
	if cfg.err != nil {
		return cfg.err
	}
	if fn == nil {
		return invalid("DoAll: nil fn")
	}
	start := time.Now()
	deadline := start.Add(cfg.maxWait)
	var z sleeper
	defer z.stop()
	var lastLocked error // fn's error of the last round that met a lock
	var last blocked     // the last Lock call that met a lock, for the observer
	for round := 0; ; round++ {
		g := newGroup(ctx)
		fnErr := g.run(fn)
		if fnErr == nil {
			err := g.releaseAll(ctx, true)
			g.leave()
			return err
		}
		relErr := g.releaseAll(ctx, false)
		if errors.Is(fnErr, ErrLocked) {
			lastLocked = fnErr
			if b, ok := g.lastBlocked(); ok {
				last = b
			}
		}
		if ctxErr := endedBy(ctx, fnErr); ctxErr != nil && lastLocked != nil && relErr == nil {
			// The wait ran out during a round: report it as a wait that
			// ran out, naming the last holder met.
			g.leave()
			return gaveUp(last, lastLocked, ctxErr, start)
		}
		if !errors.Is(fnErr, ErrLocked) || (relErr != nil && !onlyLost(relErr)) {
			g.leave()
			if relErr != nil {
				return errors.Join(fnErr, relErr)
			}
			return fnErr
		}
		var ctxErr error
		if left := time.Until(deadline); left <= 0 {
			ctxErr = context.DeadlineExceeded
		} else if g.stillBlocked(ctx) {
			ctxErr = g.wait(ctx, &z, min(backoff(round, cfg.pollInterval), left))
		}
		g.leave()
		if ctxErr != nil {
			return gaveUp(last, fnErr, ctxErr, start)
		}
	}
}

func newGroup(ctx context.Context) *Group {
	g := &Group{}
	g.ctx, g.cancel = context.WithCancelCause(ctx)
	return g
}

// run calls fn; if fn panics, the group's locks are released without
// updates and the panic goes on.
func (g *Group) run(fn func(context.Context, *Group) error) error {
	finished := false
	defer func() {
		if !finished {
			_ = g.releaseAll(context.WithoutCancel(g.ctx), false)
			g.leave()
		}
	}()
	err := fn(g.ctx, g)
	finished = true
	return err
}

// Lock makes one attempt to lock a document matching filter with lk (the
// Locker's options, then the call's) and adds the lock to the group. It
// returns the lock, or an error matching ErrLocked (a *LockedDocumentError
// naming the holder) or ErrNotFound, as TryAcquire does, or the group's own
// lock when the document is already the group's: a group never reports its
// own documents as locked. fn normally returns an ErrLocked error as it is,
// so that DoAll releases everything, waits and runs fn again.
func (g *Group) Lock(ctx context.Context, lk *Locker, filter any, opts ...Option) (*Lock, error) {
	if lk == nil {
		return nil, invalid("Group.Lock: nil Locker")
	}
	r, err := lk.newRequest(filter, opts)
	if err != nil {
		return nil, err
	}
	if g.finished() {
		return nil, errGroupDone
	}
	// The attempt leaves the group's own documents out, so that it can
	// neither break (WithBreakLock) nor take over (an expired lease) a lock
	// of the group's; they come back below as the group's own.
	try := r
	if mine := g.heldIn(lk, r); len(mine) > 0 {
		narrowed := *r
		if narrowed.filter, err = bson.Marshal(and(r.filter, bson.D{{Key: "_id", Value: bson.D{{Key: "$nin", Value: docIDs(mine)}}}})); err != nil {
			return nil, invalid("filter: %v", err)
		}
		try = &narrowed
	}
	l, err := lk.attempt(ctx, try, true)
	lk.observeAttempt(try, l, err, 0)
	var locked *LockedDocumentError
	if errors.As(err, &locked) || (errors.Is(err, ErrNotFound) && try != r) {
		if locked == nil {
			locked = &LockedDocumentError{}
		}
		own, ownErr := g.own(ctx, lk, r, locked)
		if own != nil || ownErr != nil {
			return own, ownErr
		}
		if errors.Is(err, ErrNotFound) {
			return nil, err
		}
		g.block(lk, r, locked.LockID)
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	if !g.add(l, r.cfg.refreshEvery()) {
		return nil, errors.Join(errGroupDone, l.release(ctx, releaseAction{}))
	}
	return l, nil
}

var errGroupDone = fmt.Errorf("%w: Group.Lock after DoAll's fn returned", ErrInvalidOption)

func (g *Group) finished() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.done
}

// add makes l a member and keeps its lease alive; false when fn has
// returned meanwhile.
func (g *Group) add(l *Lock, every time.Duration) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done {
		return false
	}
	g.locks = append(g.locks, l)
	g.stops = append(g.stops, l.keepAlive(g.ctx, g.cancel, every))
	return true
}

// block records a call that met another holder, and joins its Locker's
// waiters at once, so that a release from now on wakes the group's wait.
// Once fn has returned, nothing joins: no one would leave.
func (g *Group) block(lk *Locker, r *request, lockID string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done {
		return
	}
	w := lk.waiters.watch("group\x00" + r.waitKey())
	g.blocked = append(g.blocked, blocked{lk: lk, r: r, w: w, lockID: lockID})
}

// leave takes the group out of the waiters it joined.
func (g *Group) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, b := range g.blocked {
		b.lk.waiters.leave(b.w)
	}
	g.blocked = nil
}

// own returns the group's lock on the document an attempt found locked, if
// the group holds it: the holder is one of its locks, or (the holder lookup
// names the first match only) another match is.
func (g *Group) own(ctx context.Context, lk *Locker, r *request, locked *LockedDocumentError) (*Lock, error) {
	mine := g.heldIn(lk, r)
	if l := ownLock(mine, locked.Document.Lookup("_id"), locked.LockID); l != nil || len(mine) == 0 {
		if l == nil && locked.LockID != "" {
			// Lock ids are unique: a holder that is one of the group's locks,
			// taken through another client of the same deployment, is ours.
			l = ownLock(g.withField(r.fields.lock), locked.Document.Lookup("_id"), locked.LockID)
		}
		return l, nil
	}
	ids := docIDs(mine)
	o := options.FindOne().SetSort(r.find.Sort).SetProjection(holderProjection(r.fields))
	if c := r.find.Collation; c != nil {
		o.SetCollation(c)
	}
	mineFilter := and(r.filter, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}})
	doc, err := lk.primary.FindOne(ctx, mineFilter, o).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, nil
	}
	if err != nil {
		return nil, ioError(ctx, "reading the group's documents", err)
	}
	id, _ := lookup(doc, r.fields.lock).StringValueOK()
	return ownLock(mine, doc.Lookup("_id"), id), nil
}

// heldIn returns the group's locks in lk's collection under r's lock
// field.
func (g *Group) heldIn(lk *Locker, r *request) []*Lock {
	g.mu.Lock()
	defer g.mu.Unlock()
	var mine []*Lock
	for _, l := range g.locks {
		if sameCollection(l.locker, lk) && l.fields.lock == r.fields.lock {
			mine = append(mine, l)
		}
	}
	return mine
}

// withField returns the group's locks under the lock field lock, in any
// collection.
func (g *Group) withField(lock string) []*Lock {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []*Lock
	for _, l := range g.locks {
		if l.fields.lock == lock {
			out = append(out, l)
		}
	}
	return out
}

// docIDs returns the _ids of the locked documents.
func docIDs(locks []*Lock) bson.A {
	ids := make(bson.A, len(locks))
	for i, l := range locks {
		ids[i] = l.id.docID
	}
	return ids
}

// ownLock is the lock among mine on document docID under lockID, if any.
func ownLock(mine []*Lock, docID bson.RawValue, lockID string) *Lock {
	for _, l := range mine {
		if l.id.lockID == lockID && l.id.docID.Equal(docID) {
			return l
		}
	}
	return nil
}

// sameCollection reports whether two Lockers lock the same collection: the
// same client (a same-named collection on another deployment is another
// collection) and the same database and collection names.
func sameCollection(a, b *Locker) bool {
	return a.coll.Database().Client() == b.coll.Database().Client() &&
		a.coll.Name() == b.coll.Name() && a.coll.Database().Name() == b.coll.Database().Name()
}

// releaseAll ends the group: it stops the keep-alives and releases every
// lock in reverse order of acquisition, with their updates on release when
// withUpdates (fn succeeded), and returns the errors joined.
func (g *Group) releaseAll(ctx context.Context, withUpdates bool) error {
	g.mu.Lock()
	g.done = true
	locks, stops := g.locks, g.stops
	g.mu.Unlock()
	for _, stop := range stops {
		stop()
	}
	g.cancel(nil)
	var errs []error
	for i := len(locks) - 1; i >= 0; i-- {
		l := locks[i]
		if !withUpdates {
			errs = append(errs, l.release(ctx, releaseAction{}))
			continue
		}
		err := l.Release(ctx)
		if err != nil && !errors.Is(err, ErrLockLost) && l.hasReleaseAction() {
			// The update or delete did not arrive: still free the document.
			err = errors.Join(err, l.release(ctx, releaseAction{}))
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// onlyLost reports whether every error joined in err matches ErrLockLost:
// nothing of the group's is left held, so it may run again.
func onlyLost(err error) bool {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if !onlyLost(e) {
				return false
			}
		}
		return true
	}
	return errors.Is(err, ErrLockLost)
}

// stillBlocked takes the group's waiters to the back of their queues, which
// passes on the wakes the group's own releases gave them (to a waiter for
// a document the group just freed), then reads whether the document that
// made fn give up is still held by the same holder: if it is not, fn runs
// again at once. A release after that read wakes the wait, so none is
// missed.
func (g *Group) stillBlocked(ctx context.Context) bool {
	g.mu.Lock()
	for i, b := range g.blocked {
		b.lk.waiters.leave(b.w)
		g.blocked[i].w = b.lk.waiters.watch("group\x00" + b.r.waitKey())
	}
	bs := append([]blocked(nil), g.blocked...)
	g.mu.Unlock()
	if len(bs) == 0 {
		return true // fn's own ErrLocked: nothing to read
	}
	b := bs[len(bs)-1]
	doc, err := b.lk.holder(ctx, b.r)
	if err != nil || doc == nil {
		return err != nil // gone: run again, and let fn say what it finds
	}
	id, _ := lookup(doc, b.r.fields.lock).StringValueOK()
	return id == b.lockID
}

// wait sleeps for d, or until a Locker whose lock fn met releases one, or
// ctx ends (then it returns ctx's error).
func (g *Group) wait(ctx context.Context, z *sleeper, d time.Duration) error {
	g.mu.Lock()
	wakes := make([]<-chan struct{}, len(g.blocked))
	for i, b := range g.blocked {
		wakes[i] = b.w.wake
	}
	g.mu.Unlock()
	if len(wakes) <= 1 {
		var wake <-chan struct{}
		if len(wakes) == 1 {
			wake = wakes[0]
		}
		return z.sleep(ctx, d, wake)
	}
	if z.t == nil {
		z.t = time.NewTimer(d)
	} else {
		z.t.Reset(d)
	}
	cases := []reflect.SelectCase{
		{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())},
		{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(z.t.C)},
	}
	for _, w := range wakes {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(w)})
	}
	if i, _, _ := reflect.Select(cases); i == 0 {
		return ctx.Err()
	}
	return nil
}

func (g *Group) lastBlocked() (blocked, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.blocked) == 0 {
		return blocked{}, false
	}
	return g.blocked[len(g.blocked)-1], true
}

// gaveUp ends a wait that ran out: the error matches fn's last error (the
// holder's *LockedDocumentError, or a *JobLockedError fn built from it) and
// ctxErr. The observer of the last Lock call that met a lock hears of it.
func gaveUp(last blocked, fnErr, ctxErr error, start time.Time) error {
	waited := time.Since(start)
	if last.r != nil && last.r.cfg.observer != nil {
		last.r.cfg.observer.GaveUp(last.lk.coll.Name(), waited)
	}
	return &groupWaitError{fnErr: fnErr, ctxErr: ctxErr, waited: waited}
}

// groupWaitError ends DoAll's wait for a locked document.
type groupWaitError struct {
	fnErr, ctxErr error
	waited        time.Duration
}

func (e *groupWaitError) Error() string {
	return fmt.Sprintf("mongolock: gave up after waiting %s: %v: %v", e.waited.Round(time.Millisecond), e.fnErr, e.ctxErr)
}

func (e *groupWaitError) Unwrap() []error { return []error{e.fnErr, e.ctxErr} }
