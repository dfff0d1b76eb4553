package mongolock

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver"
)

// cleanupTimeout bounds how long the library keeps asking the server about
// a write whose reply never came. Tests shorten it.
var cleanupTimeout = 10 * time.Second

// attemptTimeout bounds one of those questions (and one retried release), so
// that a server that stopped answering does not hold the whole clean-up.
// Tests shorten it.
var attemptTimeout = 5 * time.Second

// holderRetries bounds how often one attempt retries when the holder lookup
// finds the document free again (it was released in between).
const holderRetries = 8

// A Locker locks documents of one collection. Its options are the defaults of
// every call on it. It is safe for concurrent use; share one per collection so
// that its waiters are woken as soon as it releases a lock. Close it when
// done, to finish its sweep for late acquiring writes (see Close).
type Locker struct {
	coll    *mongo.Collection // as given: writes use its write concern
	primary *mongo.Collection // reads of lock state, always from the primary
	base    config
	clock   *serverClock
	now     func() time.Time // client clock; tests shift it
	waiters waitQueue
	sweep   sweeper // acquisitions whose outcome is unknown; see Close
}

// New returns a Locker for coll. A nil coll or a bad option makes every call
// return an error matching ErrInvalidOption.
func New(coll *mongo.Collection, opts ...Option) *Locker {
	lk := &Locker{coll: coll, base: defaultConfig().with(opts), now: time.Now}
	if coll == nil {
		lk.base.fail(invalid("nil collection"))
		return lk
	}
	lk.primary = coll.Clone(options.Collection().SetReadPreference(readpref.Primary()))
	lk.clock = &serverClock{db: coll.Database().Client().Database("admin"), now: func() time.Time { return lk.now() }}
	return lk
}

// request is one call's validated input: everything that can be checked
// before I/O has been.
type request struct {
	cfg        config
	fields     fieldSet
	filter     bson.Raw
	update     bson.Raw                        // the caller's, checked; nil when none
	projection any                             // sanitized: nil for the whole document
	ownsProj   bool                            // the caller gave a projection: the lock's own replaces it, even with nil
	find       options.FindOneAndUpdateOptions // resolved, for the holder lookup
	findOpts   []options.Lister[options.FindOneAndUpdateOptions]
}

// newRequest validates a call's filter and options.
func (lk *Locker) newRequest(filter any, opts []Option) (*request, error) {
	if lk.sweep.isClosed() {
		return nil, errClosed
	}
	cfg := lk.base.with(opts)
	if err := cfg.check(); err != nil {
		return nil, err
	}
	r := &request{cfg: cfg, fields: cfg.fields()}
	var err error
	if r.filter, err = toDocument("filter", filter); err != nil {
		return nil, err
	}
	if cfg.update != nil {
		if r.update, err = operatorUpdate("update", cfg.update, r.fields); err != nil {
			return nil, err
		}
	}
	if r.projection, err = lockProjection(cfg.projection, r.fields); err != nil {
		return nil, err
	}
	if cfg.sort != nil {
		if _, err := toDocument("sort", cfg.sort); err != nil {
			return nil, err
		}
	}
	for _, o := range cfg.findOpts {
		for _, set := range o.List() {
			if err := set(&r.find); err != nil {
				return nil, invalid("find options: %v", err)
			}
		}
	}
	if cfg.sort != nil {
		r.find.Sort = cfg.sort
	}
	r.ownsProj = cfg.projection != nil || r.find.Projection != nil
	if cfg.projection == nil && r.find.Projection != nil {
		// Sanitized like WithProjection's: a server that honours it would
		// otherwise take the lock and return a document without it.
		if r.projection, err = lockProjection(r.find.Projection, r.fields); err != nil {
			return nil, err
		}
	}
	r.findOpts = append(cfg.findOpts[:len(cfg.findOpts):len(cfg.findOpts)], r.lockOptions())
	return r, nil
}

// lockOptions are applied after the caller's find options, so that they win.
func (r *request) lockOptions() *options.FindOneAndUpdateOptionsBuilder {
	o := options.FindOneAndUpdate().SetReturnDocument(options.After).SetUpsert(false)
	if r.cfg.sort != nil {
		o.SetSort(r.cfg.sort)
	}
	if r.ownsProj {
		o.SetProjection(r.projection)
	}
	return o
}

// TryAcquire makes one attempt to lock a document matching filter. It returns
// the lock, or an error matching ErrLocked (a *LockedDocumentError naming the
// holder) when every match is locked, or ErrNotFound when nothing matches.
//
// If ctx ends while the acquiring write is in flight, the write is allowed to
// finish (for up to 10s more) and a lock it took is given back at once; the
// error then matches ctx's error. So cancelling never leaves a lock behind.
func (lk *Locker) TryAcquire(ctx context.Context, filter any, opts ...Option) (*Lock, error) {
	r, err := lk.newRequest(filter, opts)
	if err != nil {
		return nil, err
	}
	l, err := lk.attempt(ctx, r, true)
	lk.observeAttempt(r, l, err, 0)
	return l, err
}

// attempt is one try: a conditional findOneAndUpdate and, when it takes
// nothing and look is set, one read of the filter that tells "locked" (and
// by whom) from "no match", and a look for a holder whose declared lease ran
// out. Without look, a try that takes nothing returns errStillLocked.
func (lk *Locker) attempt(ctx context.Context, r *request, look bool) (*Lock, error) {
	lockID, nonce := r.cfg.lockID, ""
	if lockID == "" {
		lockID = newUUID() // names this attempt alone
	} else {
		nonce = newUUID() // a custom lock id may be shared
	}
	var expires time.Time
	at := time.Now() // before the server time that expires is counted from
	if r.cfg.lease > 0 {
		now, err := lk.clock.Now(ctx)
		if err != nil {
			return nil, err
		}
		expires = now.Add(r.cfg.lease)
	}
	a := &acquisition{lockID: lockID, nonce: nonce, at: at, update: acquireUpdate(r.update, r.fields, lockID, holderRecord(lockID, nonce, expires))}
	var holder bson.Raw
	for range holderRetries {
		l, err := lk.take(ctx, r, acquireFilter(r.filter, r.fields, r.cfg.breakLock), a)
		if !errors.Is(err, mongo.ErrNoDocuments) {
			return l, err
		}
		if r.cfg.breakLock {
			return nil, ErrNotFound
		}
		if !look {
			return nil, errStillLocked
		}
		if holder, err = lk.holder(ctx, r); err != nil {
			return nil, err
		}
		if holder == nil {
			return nil, ErrNotFound
		}
		if !isFree(holder, r.fields) {
			if l, err := lk.takeOver(ctx, r, a); l != nil || err != nil {
				return l, err
			}
			break
		}
	}
	return nil, lockedErrorFromDoc(holder, r.fields.lock, r.fields.time)
}

// takeoverCandidates bounds how many documents with an expired lease one
// attempt looks at.
const takeoverCandidates = 8

// takeOver takes a document of the filter whose holder declared a lease
// that has run out by the server's clock. Only a holder record that names the
// current lock id counts: a lock whose holder declared no lease (any Python
// MongoLock) is never stale. The write names the expired holder exactly, so
// a holder that refreshes in time keeps its lock. It returns nil, nil when
// there is nothing to take over.
func (lk *Locker) takeOver(ctx context.Context, r *request, a *acquisition) (*Lock, error) {
	now, err := lk.clock.Now(ctx)
	if err != nil {
		return nil, err
	}
	o := options.Find().SetSort(r.find.Sort).SetLimit(takeoverCandidates).SetProjection(holderProjection(r.fields))
	if r.find.Collation != nil {
		o.SetCollation(r.find.Collation)
	}
	cur, err := lk.primary.Find(ctx, expiredFilter(r.filter, r.fields, now), o)
	if err != nil {
		return nil, ioError(ctx, "looking for expired leases", err)
	}
	var docs []bson.Raw
	for cur.Next(ctx) {
		docs = append(docs, cur.Current)
	}
	err = cur.Err()
	_ = cur.Close(context.WithoutCancel(ctx))
	if err != nil {
		return nil, ioError(ctx, "looking for expired leases", err)
	}
	for _, doc := range docs {
		h, ok := holderOf(doc, r.fields.lock)
		if !ok || h.expires.IsZero() || h.expires.After(now) {
			continue // a record left behind by someone else, or no lease
		}
		l, err := lk.take(ctx, r, takeoverFilter(r.filter, r.fields, doc, h), a)
		if errors.Is(err, mongo.ErrNoDocuments) {
			continue // refreshed, released or taken in between
		}
		if l != nil && r.cfg.logger != nil {
			lk.debug(r.cfg.logger, "took over an expired lease", "_id", idString(doc.Lookup("_id")), "from", h.lockID, "expired", h.expires)
		}
		return l, err
	}
	return nil, nil
}

// take sends the acquiring write. The write runs on a context of its own,
// so that a caller who gives up while it is in flight cannot leave behind a
// lock that the server granted after all: such a lock is given back at once,
// and the caller's error returned. When the reply never comes, the lock is
// looked for by its lock id: found, it is the caller's as if the reply had
// arrived.
func (lk *Locker) take(ctx context.Context, r *request, filter any, a *acquisition) (*Lock, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("mongolock: acquiring: %w", err)
	}
	wctx, stop := detached(ctx)
	defer stop()
	sent := time.Now()
	doc, err := lk.coll.FindOneAndUpdate(wctx, filter, a.update, r.findOpts...).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, err
	}
	if err != nil {
		if !unknownOutcome(wctx, err) {
			return nil, ioError(ctx, "acquiring", err)
		}
		if doc, err = lk.recoverLock(wctx, r, a, err); doc == nil {
			lk.rememberUnsettled(r, a.lockID, a.nonce) // a held write can still land
			return nil, ioError(ctx, "acquiring", err)
		}
	}
	l, err := lk.newLock(r, doc, a, time.Since(sent))
	if err != nil {
		return nil, err
	}
	if cerr := ctx.Err(); cerr != nil {
		if err := l.release(ctx, releaseAction{}); err != nil {
			lk.rememberUnsettled(r, a.lockID, a.nonce)
			return nil, fmt.Errorf("mongolock: acquiring: %w; giving the lock back: %w", cerr, err)
		}
		return nil, fmt.Errorf("mongolock: acquiring: %w", cerr)
	}
	return l, nil
}

// unknownOutcome reports whether a write that failed with err may have been
// applied all the same: the connection broke, or no reply came in time.
// Any other error is the server's answer, or the driver's before sending,
// and nothing was written.
func unknownOutcome(ctx context.Context, err error) bool {
	return ctx.Err() != nil || mongo.IsNetworkError(err) || mongo.IsTimeout(err)
}

// notSent reports whether err is the driver's refusal to send a command
// because its connection pool was just cleared after a network error: the
// command was not applied, and may be sent again.
func notSent(err error) bool {
	var pool driver.RetryablePoolError
	return errors.As(err, &pool) && pool.Retryable()
}

// isFree reports whether a holder lookup found the document unlocked, which
// means it was released between the two commands.
func isFree(doc bson.Raw, f fieldSet) bool {
	v := lookup(doc, f.lock)
	return v.Type == 0 || v.Type == bson.TypeNull
}

// holder reads the first document that matches the filter (in the same sort),
// from the primary; nil when there is none.
func (lk *Locker) holder(ctx context.Context, r *request) (bson.Raw, error) {
	o := options.FindOne().SetSort(r.find.Sort)
	if r.find.Collation != nil {
		o.SetCollation(r.find.Collation)
	}
	if r.find.Hint != nil {
		o.SetHint(r.find.Hint)
	}
	if !r.cfg.lockedDocument {
		o.SetProjection(holderProjection(r.fields))
	}
	doc, err := lk.primary.FindOne(ctx, r.filter, o).Raw()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, nil
	}
	if err != nil {
		return nil, ioError(ctx, "reading the lock holder", err)
	}
	return doc, nil
}

// acquisition is one attempt's identity and its acquiring update: the lock
// id and, with a custom lock id that others may share, a nonce written into
// the holder record that names this attempt alone.
type acquisition struct {
	lockID, nonce string
	at            time.Time // client monotonic time, no later than the lease's start
	update        bson.D
}

// recoverLock runs after an acquiring write whose reply never came: the
// server may have applied it. It looks for the lock by the attempt's lock
// id and nonce alone, not by the caller's filter, which the acquiring update
// may have moved the document out of. It returns the locked document when
// the write was applied; nil and cause when it was not; nil and an error
// saying so when the server could not be asked within cleanupTimeout. In
// both cases the write may still land later: take hands it to the sweep
// (sweep.go).
func (lk *Locker) recoverLock(ctx context.Context, r *request, a *acquisition, cause error) (bson.Raw, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	o := options.FindOne()
	if r.projection != nil {
		o.SetProjection(r.projection)
	}
	mine := bson.D{{Key: r.fields.lock, Value: a.lockID}}
	if a.nonce != "" {
		mine = append(mine, bson.E{Key: HolderKey + ".nonce", Value: a.nonce})
	}
	var err error
	for attempt := 0; ; attempt++ {
		actx, acancel := context.WithTimeout(ctx, attemptTimeout)
		var doc bson.Raw
		doc, err = lk.primary.FindOne(actx, mine, o).Raw()
		acancel()
		if errors.Is(err, mongo.ErrNoDocuments) {
			if r.cfg.logger != nil {
				lk.debug(r.cfg.logger, "acquire not applied", "lock_id", a.lockID, "cause", cause)
			}
			return nil, cause
		}
		if err == nil {
			if r.cfg.logger != nil {
				lk.debug(r.cfg.logger, "acquire recovered after a lost reply", "lock_id", a.lockID, "cause", cause)
			}
			return doc, nil
		}
		if !sleep(ctx, backoff(attempt, time.Second)) {
			break
		}
	}
	return nil, fmt.Errorf("%w; whether the server took the lock is unknown (looking for lock_id %s: %w): "+
		"the Locker keeps looking for it to release it (see Close)", cause, a.lockID, err)
}

// sleep waits d, or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// newLock makes the Lock from the document the acquiring write returned.
func (lk *Locker) newLock(r *request, doc bson.Raw, a *acquisition, latency time.Duration) (*Lock, error) {
	id, err := identityOf(doc, r.fields)
	if err != nil {
		return nil, err
	}
	l := &Lock{locker: lk, cfg: r.cfg, fields: r.fields, id: id, doc: doc, acquired: time.Now(), latency: latency, lost: make(chan struct{}), name: a.lockID}
	if a.nonce != "" {
		l.name = a.nonce
	}
	if h, ok := holderOf(doc, r.fields.lock); ok {
		l.expires = h.expires
		if !h.expires.IsZero() {
			l.setLocalEnd(a.at, h.expires)
		}
	}
	if r.cfg.logger != nil {
		lk.debug(r.cfg.logger, "lock acquired", "_id", id.docID, "lock_id", id.lockID, "latency", latency)
	}
	return l, nil
}

// identityOf reads an acquisition's identity out of the locked document.
func identityOf(doc bson.Raw, f fieldSet) (identity, error) {
	var id identity
	var ok bool
	id.docID, _ = doc.LookupErr("_id")
	id.lockID, ok = lookup(doc, f.lock).StringValueOK()
	if !ok || id.docID.Type == 0 {
		return id, fmt.Errorf("mongolock: the locked document has no _id or %s", f.lock)
	}
	dt, ok := lookup(doc, f.time).DateTimeOK()
	if !ok {
		return id, fmt.Errorf("mongolock: the locked document has no date in %s", f.time)
	}
	id.time = bson.DateTime(dt)
	if f.seq != "" {
		id.token, _ = lookup(doc, f.seq).AsInt64OK()
	}
	return id, nil
}

// observeAttempt reports an attempt's outcome: a lock taken after waiting
// waited (0 for TryAcquire), or contention.
func (lk *Locker) observeAttempt(r *request, l *Lock, err error, waited time.Duration) {
	o := r.cfg.observer
	switch {
	case l != nil && o != nil:
		o.Acquired(lk.coll.Name(), l.latency, waited)
	case errors.Is(err, ErrLocked) || errors.Is(err, errStillLocked):
		if r.cfg.logger != nil {
			lk.debug(r.cfg.logger, "document locked", "error", err)
		}
		if o != nil {
			o.Contended(lk.coll.Name())
		}
	}
}

// debug writes a debug record to logger. Callers check that logger is not
// nil first, so that a Locker without one does not even build the record's
// arguments.
func (lk *Locker) debug(logger *slog.Logger, msg string, args ...any) {
	logger.LogAttrs(context.Background(), slog.LevelDebug, "mongolock: "+msg, slog.String("collection", lk.coll.Name()), slog.Group("", args...))
}

// newUUID returns a random (version 4) UUID string.
func newUUID() string {
	var b [16]byte
	crand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}
