package mongolock

import (
	"bytes"
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
	locks   []*Lock    // in order of acquisition
	reqs    []*request // the request of each lock, for the next round
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
//     updates; holding nothing, DoAll waits for the document the last
//     g.Lock met as Acquire does (the Locker's queue, hand-off), then makes
//     one attempt, without waiting, on each other document the run locked,
//     and runs fn again from the start already holding them: g.Lock on them
//     returns the held lock. A document found locked by those attempts is
//     waited for in turn, after releasing everything, so a group never
//     waits while it holds anything. A lock fn does not ask for again is
//     released unchanged at the end. When fn's ErrLocked came from no
//     g.Lock, DoAll waits a back-off (10ms doubling, capped by
//     WithPollInterval, with jitter). fn must be safe to run again.
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
	var pre []member     // what the next round starts holding
	for round := 0; ; round++ {
		g := newGroup(ctx)
		for _, m := range pre {
			g.add(m.l, m.r) // a new group is not done: add cannot fail
		}
		pre = nil
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
		if b, ok := g.lastBlocked(); ok {
			// Holding nothing now, wait in the Locker's queue for the
			// document fn met, and run fn again holding it.
			g.leave()
			held, err := gather(ctx, b, g.members(), deadline)
			switch {
			case err == nil:
				pre = held
			case errors.Is(err, ErrNotFound): // gone: let fn say what it finds
			case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
				return gaveUp(last, fnErr, endedByCtx(ctx, err), start)
			default:
				return err
			}
			continue
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

// member is a lock of a group and the Locker and request that took it.
type member struct {
	lk *Locker
	r  *request
	l  *Lock
}

// gather prepares the next round of a group that met a lock, holding
// nothing: it waits for the document b met, then makes one attempt (no
// wait) on each other document the round had locked or met, so that fn runs again only
// when it can expect to find what it needs. A document found locked there
// makes gather release everything and wait for that one in turn. It never
// waits while it holds anything.
func gather(ctx context.Context, b blocked, prev []member, deadline time.Time) ([]member, error) {
	prev = append(prev, member{lk: b.lk, r: b.r})
	for {
		l, err := awaitBlocker(ctx, b, deadline)
		if err != nil {
			return nil, err
		}
		held := []member{{lk: b.lk, r: b.r, l: l}}
		var next *blocked
		for _, m := range prev {
			if sameCollection(m.lk, b.lk) && m.r.fields.lock == b.r.fields.lock && bytes.Equal(m.r.filter, b.r.filter) {
				continue // the one just waited for
			}
			l, err := m.lk.attempt(ctx, m.r, true)
			m.lk.observeAttempt(m.r, l, err, 0)
			var locked *LockedDocumentError
			if err == nil {
				held = append(held, member{lk: m.lk, r: m.r, l: l})
				continue
			}
			if errors.As(err, &locked) && !ownedBy(held, locked) {
				next = &blocked{lk: m.lk, r: m.r, lockID: locked.LockID}
			}
			break // fn finds out the rest
		}
		if next == nil {
			return held, nil
		}
		var errs []error
		for i := len(held) - 1; i >= 0; i-- {
			errs = append(errs, held[i].l.release(ctx, releaseAction{}))
		}
		if err := errors.Join(errs...); err != nil && !onlyLost(err) {
			return nil, err
		}
		b = *next
	}
}

// ownedBy reports whether the holder an attempt met is one of held.
func ownedBy(held []member, locked *LockedDocumentError) bool {
	for _, m := range held {
		if m.l.ID() == locked.LockID {
			return true
		}
	}
	return false
}

// awaitBlocker waits, as Acquire does (the Locker's queue and hand-off), for
// the document a Lock call of the group met, until DoAll's deadline.
func awaitBlocker(ctx context.Context, b blocked, deadline time.Time) (*Lock, error) {
	left := time.Until(deadline)
	if left <= 0 {
		return nil, context.DeadlineExceeded
	}
	r := *b.r
	r.cfg.maxWait = left // DoAll's WithMaxWait, not the Locker's
	r.cfg.observer = nil // DoAll reports its own give-up
	return b.lk.acquire(ctx, &r)
}

// endedByCtx is ctx's error if ctx ended, else the context error err
// matches.
func endedByCtx(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if errors.Is(err, context.Canceled) {
		return context.Canceled
	}
	return context.DeadlineExceeded
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
	if !g.add(l, r) {
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

// add makes l, taken by r, a member and keeps its lease alive; false when
// fn has returned meanwhile.
func (g *Group) add(l *Lock, r *request) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done {
		return false
	}
	g.locks = append(g.locks, l)
	g.reqs = append(g.reqs, r)
	g.stops = append(g.stops, l.keepAlive(g.ctx, g.cancel, r.cfg.refreshEvery()))
	return true
}

// members returns the Lockers and requests of the group's locks, in order.
func (g *Group) members() []member {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]member, len(g.locks))
	for i, l := range g.locks {
		out[i] = member{lk: l.locker, r: g.reqs[i]}
	}
	return out
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
