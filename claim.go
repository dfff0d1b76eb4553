package mongolock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// TryAcquireMany makes one attempt to lock up to n unlocked documents that
// match filter, in the Locker's sort, and returns one Lock per document:
// each is locked exactly as TryAcquire locks one (lock fields, holder
// record, lease, fencing token, WithUpdate), under a lock id of its own, so
// a release of one never frees another. Fewer than n is not an error. It
// returns ErrNotFound when nothing matches, and an error matching ErrLocked
// (a *LockedDocumentError naming one holder) when every match is locked;
// then, as TryAcquire does, it takes over one document whose holder's
// declared lease has run out, if there is one.
//
// A claim takes three round trips whatever n: it reads up to n candidate
// _ids, sends one unordered bulk write of a conditional update per
// candidate, and reads the candidates back by _id. If ctx ends while the
// write is in flight, the write is allowed to finish and whatever it locked
// is given back; if its reply is lost, what it locked is found by its lock
// ids, as for TryAcquire. n < 1 returns ErrInvalidOption.
func (lk *Locker) TryAcquireMany(ctx context.Context, filter any, n int, opts ...Option) ([]*Lock, error) {
	if n < 1 {
		return nil, invalid("TryAcquireMany: n = %d, want at least 1", n)
	}
	r, err := lk.newRequest(filter, opts)
	if err != nil {
		return nil, err
	}
	locks, err := lk.claim(ctx, r, n)
	lk.observeClaim(r, locks, err)
	return locks, err
}

// observeClaim reports a claim's outcome as one attempt per lock taken.
func (lk *Locker) observeClaim(r *request, locks []*Lock, err error) {
	if len(locks) == 0 {
		lk.observeAttempt(r, nil, err, 0)
	}
	for _, l := range locks {
		lk.observeAttempt(r, l, nil, 0)
	}
}

// claim is one attempt of TryAcquireMany. A candidate that someone else
// takes between the claim's read and its write is skipped; when that befalls
// every candidate, the claim looks again (a few times at most), as attempt
// does after a holder lookup finds the document free.
func (lk *Locker) claim(ctx context.Context, r *request, n int) ([]*Lock, error) {
	var holder bson.Raw
	for range holderRetries {
		ids, err := lk.candidates(ctx, r, n)
		if err != nil {
			return nil, err
		}
		if len(ids) == 0 {
			if r.cfg.breakLock {
				return nil, ErrNotFound
			}
			if holder, err = lk.holder(ctx, r); err != nil {
				return nil, err
			}
			if holder == nil {
				return nil, ErrNotFound
			}
			if isFree(holder, r.fields) {
				continue // released in between
			}
			return lk.claimExpired(ctx, r, holder)
		}
		locks, other, err := lk.claimIDs(ctx, r, ids)
		if err != nil || len(locks) > 0 {
			return locks, err
		}
		if other != nil {
			holder = other
		}
	}
	if holder == nil || isFree(holder, r.fields) {
		return nil, ErrNotFound
	}
	return nil, lockedErrorFromDoc(holder, r.fields.lock, r.fields.time)
}

// claimExpired runs when every match is locked: like a single attempt, the
// claim takes over one document whose holder's lease ran out, and otherwise
// names the holder it found.
func (lk *Locker) claimExpired(ctx context.Context, r *request, holder bson.Raw) ([]*Lock, error) {
	at := time.Now() // before the server time that expires is counted from
	expires, err := lk.leaseEnd(ctx, r)
	if err != nil {
		return nil, err
	}
	lockID, nonce := newLockID(r)
	a := &acquisition{lockID: lockID, nonce: nonce, at: at, update: acquireUpdate(r.update, r.fields, lockID, holderRecord(lockID, nonce, expires))}
	l, err := lk.takeOver(ctx, r, a)
	switch {
	case err != nil:
		return nil, err
	case l != nil:
		return []*Lock{l}, nil
	}
	return nil, lockedErrorFromDoc(holder, r.fields.lock, r.fields.time)
}

// newLockID names one acquisition: a random lock id, or the caller's custom
// one with a nonce that tells this acquisition from others of the same id.
func newLockID(r *request) (lockID, nonce string) {
	if r.cfg.lockID == "" {
		return newUUID(), ""
	}
	return r.cfg.lockID, newUUID()
}

// leaseEnd is when a lease declared now runs out by the server's clock;
// zero without a lease.
func (lk *Locker) leaseEnd(ctx context.Context, r *request) (time.Time, error) {
	if r.cfg.lease <= 0 {
		return time.Time{}, nil
	}
	now, err := lk.clock.Now(ctx)
	if err != nil {
		return time.Time{}, err
	}
	return now.Add(r.cfg.lease), nil
}

// candidates reads the _ids of up to n unlocked documents of the filter, in
// the Locker's sort, in one batch.
func (lk *Locker) candidates(ctx context.Context, r *request, n int) ([]bson.RawValue, error) {
	o := options.Find().SetSort(r.find.Sort).SetLimit(int64(n)).SetBatchSize(int32(min(n, 1<<20) + 1)).
		SetProjection(bson.D{{Key: "_id", Value: 1}})
	if r.find.Collation != nil {
		o.SetCollation(r.find.Collation)
	}
	if r.find.Hint != nil {
		o.SetHint(r.find.Hint)
	}
	cur, err := lk.primary.Find(ctx, acquireFilter(r.filter, r.fields, r.cfg.breakLock), o)
	if err != nil {
		return nil, ioError(ctx, "looking for documents to claim", err)
	}
	defer cur.Close(context.WithoutCancel(ctx))
	var ids []bson.RawValue
	for cur.Next(ctx) {
		ids = append(ids, cur.Current.Lookup("_id"))
	}
	if err := cur.Err(); err != nil {
		return nil, ioError(ctx, "looking for documents to claim", err)
	}
	return ids, nil
}

// claimIDs locks the candidates ids with one bulk write, each under an
// acquisition of its own, and reads them back by _id. It returns the locks
// taken, in the order of ids, and when it took none, a candidate that
// someone else holds (nil if none does). Like take, the write runs on a
// context of its own: a caller who gives up meanwhile gets its locks given
// back, not stranded.
func (lk *Locker) claimIDs(ctx context.Context, r *request, ids []bson.RawValue) ([]*Lock, bson.Raw, error) {
	at := time.Now() // before the server time that expires is counted from
	expires, err := lk.leaseEnd(ctx, r)
	if err != nil {
		return nil, nil, err
	}
	lockID, nonce := newLockID(r)
	a := &acquisition{lockID: lockID, nonce: nonce, at: at, update: acquireUpdate(r.update, r.fields, lockID, holderRecord(lockID, nonce, expires))}
	o := options.UpdateMany()
	if r.find.Collation != nil {
		o.SetCollation(r.find.Collation)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("mongolock: claiming: %w", err)
	}
	wctx, stop := detached(ctx)
	defer stop()
	sent := time.Now()
	_, werr := lk.coll.UpdateMany(wctx, claimFilter(r.filter, r.fields, r.cfg.breakLock, ids), a.update, o)
	if werr != nil && notSent(werr) {
		return nil, nil, ioError(ctx, "claiming", werr)
	}
	docs, err := lk.readClaim(wctx, r, ids, a, werr)
	if err != nil {
		return nil, nil, err
	}
	latency := time.Since(sent)
	var locks []*Lock
	var other bson.Raw
	for _, doc := range docs {
		switch {
		case doc != nil && isMine(doc, r.fields, a):
			l, err := lk.newLock(r, doc, a, latency)
			if err != nil {
				return nil, nil, errors.Join(err, releaseAll(ctx, locks))
			}
			locks = append(locks, l)
		case doc != nil && other == nil && !isFree(doc, r.fields):
			other = doc
		}
	}
	if werr != nil && (len(locks) == 0 || !unknownOutcome(wctx, werr)) {
		// Refused by the server (some of the writes, or all), or cut
		// before the server saw it: nothing is kept.
		return nil, nil, errors.Join(ioError(ctx, "claiming", werr), releaseAll(ctx, locks))
	}
	if cerr := ctx.Err(); cerr != nil {
		if err := releaseAll(ctx, locks); err != nil {
			return nil, nil, fmt.Errorf("mongolock: claiming: %w; giving the locks back: %w", cerr, err)
		}
		return nil, nil, fmt.Errorf("mongolock: claiming: %w", cerr)
	}
	return locks, other, nil
}

// readClaim reads the candidates back by _id, from the primary, after the
// claim's bulk write (whose error, werr, may say that its reply was lost):
// the document of ids[i] at i, nil when it is gone. A read that fails is
// asked again, with back-off, for up to cleanupTimeout; when the server
// cannot be asked, the claim's lock ids are remembered for the Locker's
// sweep and the error says that locks may remain.
func (lk *Locker) readClaim(ctx context.Context, r *request, ids []bson.RawValue, a *acquisition, werr error) ([]bson.Raw, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	o := options.Find().SetLimit(int64(len(ids))).SetBatchSize(int32(len(ids) + 1))
	if r.projection != nil {
		o.SetProjection(r.projection)
	}
	var err error
	for attempt := 0; ; attempt++ {
		var docs []bson.Raw
		if docs, err = lk.readIDs(ctx, ids, o); err == nil {
			if werr != nil && r.cfg.logger != nil {
				lk.debug(r.cfg.logger, "claim read back after a failed write", "cause", werr)
			}
			return docs, nil
		}
		if !sleep(ctx, backoff(attempt, time.Second)) {
			break
		}
	}
	lk.rememberUnsettled(r, a.lockID, a.nonce)
	cause := werr
	if cause == nil {
		cause = errors.New("the claim's write was applied")
	}
	return nil, fmt.Errorf("mongolock: claiming: %w; which documents the server locked is unknown (reading them back: %w): "+
		"locks left behind (lock id %s) are cleared by their lease, or by an administrator", cause, err, a.lockID)
}

// readIDs reads the documents of ids in one query, each at its index in ids.
func (lk *Locker) readIDs(ctx context.Context, ids []bson.RawValue, o *options.FindOptionsBuilder) ([]bson.Raw, error) {
	actx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	cur, err := lk.primary.Find(actx, idsFilter(ids), o)
	if err != nil {
		return nil, err
	}
	defer cur.Close(context.WithoutCancel(actx))
	at := make(map[string]int, len(ids))
	for i, id := range ids {
		at[idKey(id)] = i
	}
	docs := make([]bson.Raw, len(ids))
	for cur.Next(actx) {
		if i, ok := at[idKey(cur.Current.Lookup("_id"))]; ok {
			docs[i] = slices.Clone(cur.Current)
		}
	}
	return docs, cur.Err()
}

// idKey is a map key for an _id: its type and bytes.
func idKey(v bson.RawValue) string { return string(rune(v.Type)) + string(v.Value) }

// ReleaseAll releases locks with one bulk write per collection, each lock
// with its own update or delete on release, exactly as its own Release
// would (SetUpdateOnRelease, SetDeleteOnRelease). The result of each is
// reported: a lock that is no longer held gets an error matching ErrLockLost
// that names its document, and its Lost channel closes; the errors are
// joined. Like Release it runs on context.WithoutCancel(ctx), and sends the
// bulk write again (a few times, with back-off) when a reply is lost; a lock
// whose release never reached the server stays usable, and its error says
// until when it may remain; calling ReleaseAll again then returns nil for
// each lock that an earlier copy freed, as Release does: each release writes
// its acquisition's release marker, so a lock broken and released by
// someone else is told apart and reported lost. (The driver sends updates
// and deletes as two commands: a collection whose locks mix both costs two
// round trips.)
//
// A nil lock, the same lock twice, or a lock already released or found lost
// returns ErrInvalidOption before anything is sent.
func ReleaseAll(ctx context.Context, locks ...*Lock) error {
	seen := make(map[*Lock]bool, len(locks))
	for i, l := range locks {
		switch {
		case l == nil || l.locker == nil:
			return invalid("ReleaseAll: lock %d is nil", i)
		case seen[l]:
			return invalid("ReleaseAll: lock %d (%s) is given twice", i, l.id.lockID)
		}
		seen[l] = true
	}
	unlock := lockAll(locks)
	defer unlock()
	acts := make([]releaseAction, len(locks))
	for i, l := range locks {
		if l.done {
			return invalid("ReleaseAll: lock %d (%s on document %s) is already released or lost", i, l.id.lockID, idString(l.id.docID))
		}
		acts[i] = l.onRelease
	}
	return releaseHeld(ctx, locks, acts)
}

// releaseAll gives back locks that no one else has seen yet, without
// updates.
func releaseAll(ctx context.Context, locks []*Lock) error {
	if len(locks) == 0 {
		return nil
	}
	unlock := lockAll(locks)
	defer unlock()
	return releaseHeld(ctx, locks, make([]releaseAction, len(locks)))
}

// lockAll takes the mutex of every lock, in an order that does not depend
// on the caller's, so that two ReleaseAll calls cannot deadlock; it
// returns the function that lets go of them.
func lockAll(locks []*Lock) (unlock func()) {
	sorted := slices.Clone(locks)
	slices.SortFunc(sorted, func(a, b *Lock) int {
		return strings.Compare(a.id.lockID+"\x00"+idKey(a.id.docID), b.id.lockID+"\x00"+idKey(b.id.docID))
	})
	for _, l := range sorted {
		l.mu.Lock()
	}
	return func() {
		for _, l := range sorted {
			l.mu.Unlock()
		}
	}
}

// collKey names a collection, whichever *mongo.Collection reaches it.
type collKey struct {
	client   *mongo.Client
	db, name string
	fields   fieldSet // one bulk write's locks share their fields
}

// releaseHeld releases locks, whose mutexes are held, doing acts[i] for
// locks[i]: one bulk write per collection. The errors are joined.
func releaseHeld(ctx context.Context, locks []*Lock, acts []releaseAction) error {
	return errors.Join(releaseEach(ctx, locks, acts)...)
}

// releaseEach is releaseHeld with the error of locks[i] at i (nil when it
// was released).
func releaseEach(ctx context.Context, locks []*Lock, acts []releaseAction) []error {
	ctx, stop := detached(ctx)
	defer stop()
	var order []collKey
	groups := map[collKey][]int{}
	for i, l := range locks {
		c := l.locker.coll
		k := collKey{c.Database().Client(), c.Database().Name(), c.Name(), l.fields}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], i)
	}
	errs := make([]error, len(locks))
	for _, k := range order {
		ls := make([]*Lock, len(groups[k]))
		as := make([]releaseAction, len(groups[k]))
		for j, i := range groups[k] {
			ls[j], as[j] = locks[i], acts[i]
		}
		for j, err := range releaseGroup(ctx, ls, as) {
			errs[groups[k][j]] = err
		}
	}
	return errs
}

// releaseGroup releases locks of one collection with one bulk write, sent
// again when its reply is lost, as Lock.release sends a single release.
// When the server's count of matches falls short, or a copy's reply was
// lost, the documents are read back to tell which lock was released and
// which was lost. It returns the error of locks[i] at i.
func releaseGroup(ctx context.Context, locks []*Lock, acts []releaseAction) []error {
	ids := make([]identity, len(locks))
	random := make([]bool, len(locks))
	names := make([]string, len(locks))
	for i, l := range locks {
		ids[i], random[i], names[i] = l.id, l.cfg.lockID == "", l.name
	}
	models, members := releaseWrites(ids, locks[0].fields, acts, random, names)
	coll := locks[0].locker.coll
	var lostReply error // the last copy whose reply never came
	var res *mongo.BulkWriteResult
	var err error
	for attempt := 0; ; attempt++ {
		res, err = bulkOnce(ctx, coll, models)
		if err == nil || !unknownOutcome(ctx, err) && !notSent(err) {
			break
		}
		if unknownOutcome(ctx, err) {
			lostReply = err
		}
		if attempt+1 == releaseAttempts || !sleep(ctx, backoff(attempt+3, time.Second)) {
			errs := make([]error, len(locks))
			for i, l := range locks {
				errs[i] = l.mayRemain(ctx, err)
			}
			return errs
		}
	}
	errs := make([]error, len(locks))
	failed := make([]bool, len(locks))
	if err != nil {
		var bwe mongo.BulkWriteException
		if !errors.As(err, &bwe) || len(bwe.WriteErrors) == 0 {
			for i, l := range locks { // the server refused the whole write
				errs[i] = ioError(ctx, "releasing "+l.id.lockID+" on document "+idString(l.id.docID), err)
			}
			return errs
		}
		for _, we := range bwe.WriteErrors {
			if we.Index < 0 || we.Index >= len(members) {
				continue
			}
			for _, i := range members[we.Index] {
				if !failed[i] {
					failed[i] = true
					l := locks[i]
					errs[i] = ioError(ctx, "releasing "+l.id.lockID+" on document "+idString(l.id.docID), we)
				}
			}
		}
	}
	var rest []int // the writes the server did not refuse
	for i := range locks {
		if !failed[i] {
			rest = append(rest, i)
		}
	}
	var matched int64
	if res != nil {
		matched = res.MatchedCount + res.DeletedCount
	}
	if lostReply == nil && matched == int64(len(rest)) {
		for _, i := range rest {
			locks[i].released()
		}
		return errs
	}
	short := -1 // how many locks were lost, when the count tells
	if lostReply == nil {
		short = len(rest) - int(matched)
	}
	settleRelease(ctx, locks, acts, rest, short, lostReply, errs)
	return errs
}

// bulkOnce sends one copy of a bulk release.
func bulkOnce(ctx context.Context, coll *mongo.Collection, models []mongo.WriteModel) (*mongo.BulkWriteResult, error) {
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	return coll.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false))
}

// settleRelease reads back the documents of locks[rest] after a bulk
// release that did not free them all (short of them, when short >= 0) or
// whose earlier copy's reply was lost, and judges each by its release
// marker, as Lock.afterLostReply judges one: released, or lost. The error of locks[i] goes to errs[i].
func settleRelease(ctx context.Context, locks []*Lock, acts []releaseAction, rest []int, short int, lostReply error, errs []error) {
	lk := locks[0].locker
	ids := make([]bson.RawValue, len(rest))
	for j, i := range rest {
		ids[j] = locks[i].id.docID
	}
	proj := append(holderProjection(locks[0].fields), bson.E{Key: releasedKey, Value: 1})
	docs, err := lk.readIDs(ctx, ids, options.Find().SetLimit(int64(len(ids))).SetBatchSize(int32(len(ids)+1)).SetProjection(proj))
	if err != nil {
		for _, i := range rest {
			l := locks[i]
			l.done = true
			errs[i] = (fmt.Errorf("%w: releasing %s on document %s: the release did not find every lock it named, and which "+
				"were released is unknown: %w", ErrLockLost, l.id.lockID, idString(l.id.docID), ioError(ctx, "reading the documents", err)))
		}
		return
	}
	lost := 0
	verdict := make([]int, len(rest)) // 0 released, 1 lost, 2 still held
	for j, i := range rest {
		l := locks[i]
		switch {
		case stillHeld(docs[j], l.id, l.fields):
			verdict[j] = 2
		case !releasedByUs(docs[j], acts[i], l.name):
			verdict[j] = 1
			lost++
		}
	}
	for j, i := range rest {
		l := locks[i]
		switch verdict[j] {
		case 0:
			l.released()
		case 2:
			errs[i] = fmt.Errorf("mongolock: releasing %s on document %s: the release was not applied; the lock is still held", l.id.lockID, idString(l.id.docID))
		case 1:
			l.done = true
			err := l.lostLocked("releasing")
			if lostReply != nil {
				err = fmt.Errorf("%w (the reply of an earlier copy of the release was lost (%w): it may have freed the lock "+
					"before someone else took, unlocked or deleted it)", err, lostReply)
			} else if short >= 0 && lost != short {
				err = fmt.Errorf("%w (or this release freed it before someone else took it)", err)
			}
			errs[i] = err
		}
	}
}
