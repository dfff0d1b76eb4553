package mongolock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// A Lock is one held acquisition of a document. Its methods are safe for
// concurrent use.
type Lock struct {
	locker   *Locker
	cfg      config
	fields   fieldSet
	acquired time.Time // client time, for held durations only
	latency  time.Duration

	mu        sync.Mutex
	id        identity
	expires   time.Time // the declared lease's end; zero without a lease
	doc       bson.Raw
	done      bool // released, or found lost
	onRelease releaseAction
	name      string // names this acquisition alone, in the release marker
	// unsettled is the cause of an earlier release call's copy whose reply
	// never came, which may have freed the lock; deleteSent says whether
	// such a copy was a delete. A retry settles it from the document.
	unsettled  error
	deleteSent bool
	lost       chan struct{}
	lostOnce   sync.Once

	// endMu guards localEnd apart from mu, which a write holds while in
	// flight: the lease's watch must read it whatever the network does.
	endMu    sync.Mutex
	localEnd time.Time // the lease's end by the client's monotonic clock; zero without a lease
	endsAt   time.Time // the same end by the server's clock, as written
}

// setLocalEnd records the lease's end by the local monotonic clock, for a
// lease the server counts from a time no earlier than at (the client's
// time before it estimated the server time the lease starts from). The
// estimate's uncertainty is taken off, so that the local end never comes
// after the moment another client may judge the lease run out.
func (l *Lock) setLocalEnd(at, expires time.Time) {
	end := at.Add(l.cfg.lease - l.locker.clock.uncertainty())
	l.endMu.Lock()
	defer l.endMu.Unlock()
	l.localEnd, l.endsAt = end, expires
}

// leaseEnd returns the lease's end by the local monotonic clock, zero
// without a lease.
func (l *Lock) leaseEnd() time.Time {
	l.endMu.Lock()
	defer l.endMu.Unlock()
	return l.localEnd
}

// releaseAction is what a release does besides clearing the lock.
type releaseAction struct {
	update any  // checked update (bson.Raw or pipeline bson.A); nil for none
	delete bool // delete the document instead
}

// ID returns the lock id written into the document.
func (l *Lock) ID() string { return l.id.lockID }

// Time returns the server's time when the lock was taken, or last refreshed.
func (l *Lock) Time() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.id.time.Time().UTC()
}

// Token returns the fencing token of this acquisition: the value of the
// WithFencing counter after the acquiring write. It is 0 without WithFencing.
func (l *Lock) Token() int64 { return l.id.token }

// Document returns the locked document as the acquiring write left it (or as
// the last Refresh found it), limited by WithProjection.
func (l *Lock) Document() bson.Raw {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.doc
}

// Lost returns a channel that is closed when the library learns that the lock
// is gone: a Refresh (or Do's auto-refresh) or a release found it taken over,
// broken, unlocked or deleted.
func (l *Lock) Lost() <-chan struct{} { return l.lost }

// SetUpdateOnRelease makes the release apply update (an update operator
// document, or a pipeline where the server supports them) in the same write
// that frees the lock. Do releases this way when fn returns nil; Release does
// too. It must not touch the lock fields and excludes SetDeleteOnRelease.
func (l *Lock) SetUpdateOnRelease(update any) error {
	u, err := releaseUpdate(update, l.fields)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.onRelease.delete {
		return invalid("update on release: the lock is already set to delete on release")
	}
	l.onRelease.update = u
	return nil
}

// SetDeleteOnRelease makes the release delete the document. Do releases this
// way when fn returns nil; Release does too. It excludes SetUpdateOnRelease.
func (l *Lock) SetDeleteOnRelease() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.onRelease.update != nil {
		return invalid("delete on release: the lock is already set to update on release")
	}
	l.onRelease.delete = true
	return nil
}

// Release frees the lock, applying what SetUpdateOnRelease or
// SetDeleteOnRelease asked for. It runs on context.WithoutCancel(ctx), so a
// cancelled caller still frees the lock (the write gets 10s more after ctx
// ends). When the lock is no longer held the
// error matches ErrLockLost and nothing is changed. After a network error the
// call may be retried: it can never free a newer lock, and it returns nil
// when a copy of the earlier call, whose reply was lost, freed the document.
func (l *Lock) Release(ctx context.Context) error {
	l.mu.Lock()
	a := l.onRelease
	l.mu.Unlock()
	return l.release(ctx, a)
}

// ReleaseWithUpdate frees the lock and applies update (an update operator
// document, or a pipeline where the server supports them) in the same write.
// See Release.
func (l *Lock) ReleaseWithUpdate(ctx context.Context, update any) error {
	u, err := releaseUpdate(update, l.fields)
	if err != nil {
		return err
	}
	return l.release(ctx, releaseAction{update: u})
}

// ReleaseAndDelete deletes the locked document, which frees the lock. When
// the lock is no longer held nothing is deleted and the error matches
// ErrLockLost. See Release.
func (l *Lock) ReleaseAndDelete(ctx context.Context) error {
	return l.release(ctx, releaseAction{delete: true})
}

func (l *Lock) hasReleaseAction() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.onRelease.update != nil || l.onRelease.delete
}

// releaseAttempts bounds how often a release is sent when its reply does not
// come back.
const releaseAttempts = 5

// release frees the lock with one write named by this acquisition's
// identity. A write whose reply never came is sent again (a few times, with
// back-off): it can only free this acquisition, so a second copy is
// harmless. When a copy then finds the lock gone, the document tells
// whether an earlier copy, of this call or of an earlier one that gave up,
// freed it.
func (l *Lock) release(ctx context.Context, a releaseAction) error {
	ctx, stop := detached(ctx)
	defer stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return fmt.Errorf("%w: already released or lost", ErrLockLost)
	}
	lostReply := l.unsettled // the last copy whose reply never came
	defer func() {
		if !l.done {
			l.unsettled = lostReply // for the caller's retry
		}
	}()
	for attempt := 0; ; attempt++ {
		n, err := l.releaseOnce(ctx, a)
		switch {
		case err == nil && n > 0:
			l.released()
			return nil
		case err == nil && lostReply != nil:
			return l.afterLostReply(ctx, a, lostReply)
		case err == nil:
			l.done = true
			return l.lostLocked("releasing")
		case unknownOutcome(ctx, err):
			lostReply = err
			l.deleteSent = l.deleteSent || a.delete
		case !notSent(err):
			return ioError(ctx, "releasing "+l.id.lockID, err)
		}
		if attempt+1 == releaseAttempts || !sleep(ctx, backoff(attempt+3, time.Second)) {
			return l.mayRemain(ctx, err)
		}
	}
}

// releaseOnce sends one release write and returns how many documents it
// freed.
func (l *Lock) releaseOnce(ctx context.Context, a releaseAction) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	filter := heldFilter(l.id, l.fields)
	if a.delete {
		res, err := l.locker.coll.DeleteOne(ctx, filter)
		if err != nil {
			return 0, err
		}
		return res.DeletedCount, nil
	}
	res, err := l.locker.coll.UpdateOne(ctx, filter, markedClearUpdate(a.update, l.fields, l.name))
	if err != nil {
		return 0, err
	}
	return res.MatchedCount, nil
}

// afterLostReply decides, when a release finds the lock gone after an
// earlier copy's reply was lost, whether that copy freed it: the document
// carries this acquisition's release marker, which only its own release
// writes (whatever happened to the document since), or the document is
// gone after a copy that deleted it. A lock broken (WithBreakLock, Unlock,
// a take-over) and then released by someone else carries another marker,
// or none: the lock was lost, and the release was not applied (or, if
// someone took and released the document since, may have been). A document deleted by someone else after a delete of
// ours whose reply was lost cannot be told apart, and counts as ours.
func (l *Lock) afterLostReply(ctx context.Context, a releaseAction, cause error) error {
	rctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	doc, err := l.locker.primary.FindOne(rctx, bson.D{{Key: "_id", Value: l.id.docID}},
		options.FindOne().SetProjection(bson.D{{Key: releasedKey, Value: 1}})).Raw()
	gone := errors.Is(err, mongo.ErrNoDocuments)
	if err != nil && !gone {
		return fmt.Errorf("mongolock: releasing %s: the reply of an earlier release was lost (%v) and the lock is no longer "+
			"held under its name; whether that release freed it is unknown, call the release again to find out: %w",
			l.id.lockID, cause, ioError(rctx, "reading the document", err))
	}
	l.done = true
	marker, _ := lookup(doc, releasedKey).StringValueOK()
	mine := !gone && marker == l.name
	if mine || (gone && (a.delete || l.deleteSent)) {
		l.released()
		return nil
	}
	l.lostOnce.Do(func() { close(l.lost) })
	if o := l.cfg.observer; o != nil { // every lock ends released or lost, for observers that count held locks
		o.Lost(l.locker.coll.Name(), time.Since(l.acquired))
	}
	return fmt.Errorf("%w: releasing lock %s on document %s: the reply of an earlier release was lost (%w), and the lock "+
		"is no longer held and the document does not show that release: someone else broke, took over, unlocked or deleted it "+
		"(or took and released it after that release freed it)",
		ErrLockLost, l.id.lockID, idString(l.id.docID), cause)
}

// released records a release that freed the lock, and wakes this Locker's
// waiters. l.mu is held.
func (l *Lock) released() {
	l.done = true
	held := time.Since(l.acquired)
	if l.cfg.logger != nil {
		l.locker.debug(l.cfg.logger, "lock released", "lock_id", l.id.lockID, "held", held)
	}
	if o := l.cfg.observer; o != nil {
		o.Released(l.locker.coll.Name(), held)
	}
	l.locker.waiters.released()
}

// mayRemain is the error of a release that could not reach the server: the
// lock may still be held, and says until when. The Lock stays usable, so
// the release can be retried. l.mu is held.
func (l *Lock) mayRemain(ctx context.Context, err error) error {
	until := "until it is released or unlocked (it has no lease)"
	if !l.expires.IsZero() {
		until = "until its lease runs out at " + formatTime(l.expires)
	}
	return fmt.Errorf("%w; the lock on document %s may remain %s", ioError(ctx, "releasing "+l.id.lockID, err), idString(l.id.docID), until)
}

// Refresh renews lock_time to the server's current time and, with a lease,
// moves the holder record's expiry to ttl from now, which keeps the lease
// alive. It returns an error matching ErrLockLost, and closes Lost, when the
// lock is no longer held; a lock whose lease ran out but that nobody took is
// still held.
//
// The new lock_time names the acquisition from then on. It is chosen before
// the write is sent, so a refresh whose reply is lost does not lose track of
// the lock: until a reply says which time the server has, the next refresh
// or release matches either. A refresh that was sent is allowed to finish
// (for up to 10s more) if ctx ends meanwhile.
func (l *Lock) Refresh(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("mongolock: refreshing %s: %w", l.ID(), err)
	}
	wctx, stop := detached(ctx)
	defer stop()
	return l.refresh(wctx)
}

// refresh sends one refresh write on ctx, bounded by attemptTimeout. The
// keep-alive calls it on a context that its stop cuts short: a write cut
// short is remembered like one whose reply was lost.
func (l *Lock) refresh(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return fmt.Errorf("%w: already released or lost", ErrLockLost)
	}
	wctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	at := time.Now()
	now, err := l.locker.clock.Now(wctx)
	if err != nil {
		return err
	}
	// lock_time never goes back, and each refresh writes a time of its own.
	t := max(bson.NewDateTimeFromTime(now), l.id.time+1)
	for _, p := range l.id.pending {
		t = max(t, p+1)
	}
	var expires time.Time
	if l.cfg.lease > 0 {
		expires = now.Add(l.cfg.lease)
	}
	doc, err := l.locker.coll.FindOneAndUpdate(wctx, heldFilter(l.id, l.fields), refreshUpdate(l.fields, t, expires),
		options.FindOneAndUpdate().SetReturnDocument(options.After)).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		l.done = true
		return l.lostLocked("refreshing")
	}
	if err != nil {
		if unknownOutcome(wctx, err) {
			l.id.pending = append(l.id.pending, t)
		}
		return ioError(wctx, "refreshing "+l.id.lockID, err)
	}
	dt, ok := lookup(doc, l.fields.time).DateTimeOK()
	if !ok {
		return fmt.Errorf("mongolock: refreshing %s: no date in %s", l.id.lockID, l.fields.time)
	}
	l.id.time, l.id.pending = bson.DateTime(dt), nil
	l.expires = expires
	l.doc = doc
	if !expires.IsZero() {
		l.setLocalEnd(at, expires)
	}
	return nil
}

// lostLocked records that the lock is gone and returns the error saying so.
// l.mu is held.
func (l *Lock) lostLocked(while string) error {
	l.lostOnce.Do(func() { close(l.lost) })
	held := time.Since(l.acquired)
	if l.cfg.logger != nil {
		l.locker.debug(l.cfg.logger, "lock lost", "lock_id", l.id.lockID, "while", while)
	}
	if o := l.cfg.observer; o != nil {
		o.Lost(l.locker.coll.Name(), held)
	}
	return fmt.Errorf("%w: %s lock %s on document %s: it is no longer held", ErrLockLost, while, l.id.lockID, idString(l.id.docID))
}
