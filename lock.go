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
	doc       bson.Raw
	done      bool // released, or found lost
	onRelease releaseAction
	lost      chan struct{}
	lostOnce  sync.Once
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
// call may be retried: it can never free a newer lock.
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

// release runs one release write named by this acquisition's identity.
func (l *Lock) release(ctx context.Context, a releaseAction) error {
	ctx, stop := detached(ctx)
	defer stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return fmt.Errorf("%w: already released or lost", ErrLockLost)
	}
	filter := heldFilter(l.id, l.fields)
	var n int64
	var err error
	if a.delete {
		var res *mongo.DeleteResult
		if res, err = l.locker.coll.DeleteOne(ctx, filter); err == nil {
			n = res.DeletedCount
		}
	} else {
		var res *mongo.UpdateResult
		if res, err = l.locker.coll.UpdateOne(ctx, filter, clearUpdate(a.update, l.fields)); err == nil {
			n = res.MatchedCount
		}
	}
	if err != nil {
		return ioError(ctx, "releasing "+l.id.lockID, err)
	}
	l.done = true
	if n == 0 {
		return l.lostLocked("releasing")
	}
	held := time.Since(l.acquired)
	if l.cfg.logger != nil {
		l.locker.debug(l.cfg.logger, "lock released", "lock_id", l.id.lockID, "held", held)
	}
	if o := l.cfg.observer; o != nil {
		o.Released(l.locker.coll.Name(), held)
	}
	l.locker.waiters.released()
	return nil
}

// Refresh renews lock_time to the server's current time, which keeps a lease
// alive. It returns an error matching ErrLockLost, and closes Lost, when the
// lock is no longer held; a lock whose lease ran out but that nobody took is
// still held.
//
// The new lock_time names the acquisition from then on, so a refresh that
// was sent is allowed to finish (for up to 10s more) if ctx ends meanwhile;
// otherwise the Lock could no longer release what the server renewed.
func (l *Lock) Refresh(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("mongolock: refreshing %s: %w", l.ID(), err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return fmt.Errorf("%w: already released or lost", ErrLockLost)
	}
	wctx, stop := detached(ctx)
	defer stop()
	update := bson.D{{Key: "$currentDate", Value: bson.D{{Key: l.fields.time, Value: true}}}}
	doc, err := l.locker.coll.FindOneAndUpdate(wctx, heldFilter(l.id, l.fields), update,
		options.FindOneAndUpdate().SetReturnDocument(options.After)).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		l.done = true
		return l.lostLocked("refreshing")
	}
	if err != nil {
		return ioError(wctx, "refreshing "+l.id.lockID, err)
	}
	dt, ok := lookup(doc, l.fields.time).DateTimeOK()
	if !ok {
		return fmt.Errorf("mongolock: refreshing %s: no date in %s", l.id.lockID, l.fields.time)
	}
	l.id.time = bson.DateTime(dt)
	l.doc = doc
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
