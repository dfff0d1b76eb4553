package mongolock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// sweepHorizon is how long a Locker keeps looking for an acquiring write
// whose outcome it could not settle. Such a write can still be applied as
// long as its bytes can still reach the server. Nothing on the server bounds
// that (maxTimeMS counts from when the server reads the command), and the
// driver's deadlines only end the wait for the reply: the request already
// handed to the kernel is retransmitted until TCP gives up. On Linux an open
// connection gives up after tcp_retries2 (default 15) retransmissions, about
// 924.6s (15.4 minutes), and an orphaned one (closed by the driver) sooner,
// after tcp_orphan_retries. 20 minutes outlives both with margin; a request
// held longer (by a proxy that buffers it) is beyond it, and only a lease
// bounds the lock it takes. Tests shorten it.
var sweepHorizon = 20 * time.Minute

// sweepFirst is the pause before the first look for an unsettled
// acquisition; it doubles after every look, up to sweepLongest, so that a
// late lock is freed at most sweepLongest after it lands. Tests shorten them.
var (
	sweepFirst   = time.Second
	sweepLongest = time.Minute
)

// An unsettled acquisition is one acquiring write whose reply never came and
// whose effect the Locker could not see yet. Its fields are fixed when it is
// remembered, so that the sweep reads no package variable a test may change.
type unsettled struct {
	fields        fieldSet
	observer      Observer // told of the locks the sweep releases, if a SweepObserver
	lockID, nonce string
	until         time.Time     // the horizon: after it, the write cannot land
	next          time.Time     // the next look
	period        time.Duration // the pause after the next look
	longest       time.Duration
	timeout       time.Duration // one look's deadline
	err           error         // the last look's error, if it failed
}

// sweeper is the Locker's registry of unsettled acquisitions and the one
// goroutine that looks for them, which runs only while there are some.
type sweeper struct {
	mu      sync.Mutex
	closed  bool
	pending []*unsettled
	wake    chan struct{}      // nudges the goroutine: a new entry, or Close
	cancel  context.CancelFunc // stops the goroutine; nil when none runs
	done    chan struct{}      // closed when the last goroutine started, and every one before it, has returned
}

// errClosed is what every call on a closed Locker returns.
var errClosed = invalid("the Locker is closed")

func (s *sweeper) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// rememberUnsettled records an acquiring write whose reply never came and
// whose lock was not found: a write held in the network can still land. The
// Locker looks for a document locked by lockID (and, when nonce is not "",
// the holder record's nonce) with back-off until sweepHorizon has passed,
// and releases every one it finds. lockID and nonce must name that one write
// alone, and no Lock the caller holds. On a closed Locker nothing is
// remembered: the caller's error already says that a lock may be left.
func (lk *Locker) rememberUnsettled(r *request, lockID, nonce string) {
	now := time.Now()
	u := &unsettled{fields: r.fields, observer: r.cfg.observer, lockID: lockID, nonce: nonce, until: now.Add(sweepHorizon),
		next: now.Add(sweepFirst), period: 2 * sweepFirst, longest: sweepLongest, timeout: attemptTimeout}
	s := &lk.sweep
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || lk.coll == nil {
		return
	}
	if so, ok := u.observer.(SweepObserver); ok {
		so.Unsettled(lk.coll.Name())
	}
	s.pending = append(s.pending, u)
	if s.cancel == nil {
		ctx, cancel := context.WithCancel(context.Background())
		prev := s.done
		s.cancel, s.done, s.wake = cancel, make(chan struct{}), make(chan struct{}, 1)
		go lk.sweepInBackground(ctx, prev, s.done)
		return
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// sweepInBackground looks for the unsettled acquisitions as they fall due,
// and returns when none is left or Close stops it.
// It first waits for the one before it (which was returning), so that
// waiting for the last one's done waits for them all.
func (lk *Locker) sweepInBackground(ctx context.Context, prev, done chan struct{}) {
	defer close(done)
	if prev != nil {
		<-prev
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		s := &lk.sweep
		s.mu.Lock()
		if len(s.pending) == 0 || ctx.Err() != nil {
			if ctx.Err() == nil { // not stopped by Close: let the next entry start a new one
				s.cancel()
				s.cancel = nil
			}
			s.mu.Unlock()
			return
		}
		wake := s.wake
		next := s.pending[0].next
		for _, u := range s.pending[1:] {
			if u.next.Before(next) {
				next = u.next
			}
		}
		s.mu.Unlock()
		t.Reset(time.Until(next))
		select {
		case <-ctx.Done():
		case <-wake:
		case <-t.C:
			lk.sweepDue(ctx, time.Now())
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
	}
}

// sweepDue looks once for every unsettled acquisition due by now. It drops
// the ones it found (and released), and the ones looked for at or after
// their horizon, when no late write can land any more.
func (lk *Locker) sweepDue(ctx context.Context, now time.Time) {
	s := &lk.sweep
	s.mu.Lock()
	var due []*unsettled
	for _, u := range s.pending {
		if !u.next.After(now) {
			due = append(due, u)
		}
	}
	s.mu.Unlock()
	drop := map[*unsettled]bool{}
	for _, u := range due {
		if ctx.Err() != nil {
			break
		}
		found, err := lk.sweepOne(ctx, u)
		switch {
		case err == nil && found:
			drop[u] = true
		case !now.Before(u.until):
			drop[u] = true
			if err != nil {
				lk.sweepLog("gave up an unsettled acquisition at its horizon", u)
			}
		}
		s.mu.Lock()
		u.err = err
		u.next = time.Now().Add(u.period)
		if u.next.After(u.until) {
			u.next = u.until // one last look once nothing can land any more
		}
		u.period = min(2*u.period, u.longest)
		s.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.pending[:0]
	for _, u := range s.pending {
		if !drop[u] {
			kept = append(kept, u)
		}
	}
	clear(s.pending[len(kept):])
	s.pending = kept
}

// sweepOne looks for the documents that u's write locked, and releases each
// with a write that names that very acquisition: its lock id, nonce and lock
// time. It reports whether it found any.
func (lk *Locker) sweepOne(ctx context.Context, u *unsettled) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	mine := bson.D{{Key: u.fields.lock, Value: u.lockID}}
	if u.nonce != "" {
		mine = append(mine, bson.E{Key: HolderKey + ".nonce", Value: u.nonce})
	}
	cur, err := lk.primary.Find(ctx, mine, options.Find().SetProjection(holderProjection(u.fields)))
	if err != nil {
		return false, err
	}
	var docs []bson.Raw
	for cur.Next(ctx) {
		docs = append(docs, cur.Current)
	}
	err = cur.Err()
	_ = cur.Close(context.WithoutCancel(ctx))
	if err != nil {
		return false, err
	}
	for _, doc := range docs {
		filter := sweepFilter(doc, u)
		res, err := lk.coll.UpdateOne(ctx, filter, clearUpdate(nil, u.fields))
		if err != nil {
			return false, err
		}
		lk.sweepLog("released a lock taken by an acquiring write that landed late", u)
		if so, ok := u.observer.(SweepObserver); ok && res.ModifiedCount > 0 {
			so.Swept(lk.coll.Name())
		}
	}
	return len(docs) > 0, nil
}

// sweepFilter names the one acquisition that u's write made on doc, so that
// the sweep's release never frees anyone else's lock.
func sweepFilter(doc bson.Raw, u *unsettled) bson.D {
	filter := bson.D{
		{Key: "_id", Value: doc.Lookup("_id")},
		{Key: u.fields.lock, Value: u.lockID},
		{Key: u.fields.time, Value: lookup(doc, u.fields.time)},
	}
	if u.nonce != "" {
		filter = append(filter, bson.E{Key: HolderKey + ".nonce", Value: u.nonce})
	}
	return filter
}

func (lk *Locker) sweepLog(msg string, u *unsettled) {
	if lk.base.logger != nil {
		lk.debug(lk.base.logger, msg, "lock_id", u.lockID, "until", u.until)
	}
}

// Close finishes the sweep of the Locker's unsettled acquisitions and stops
// its goroutines. An acquisition is unsettled when the reply to its
// acquiring write never came and the lock was not found: a write held in the
// network may still land and take it. The Locker looks for such locks by
// lock id, with back-off, for 20 minutes after the write (longer than TCP
// keeps retransmitting a request; see the README), and releases what it
// finds; a Locker that is never closed keeps doing so in the background
// until then.
//
// Close looks at once for every unsettled acquisition, releases what it
// finds, and keeps looking until none can land any more or ctx ends. It then
// returns an error that names the lock ids that may still be taken and until
// when, and matches ctx's error. So give ctx the deadline you can afford;
// Close may be called again to keep looking. After Close, every call on the
// Locker returns an error matching ErrInvalidOption; Locks it returned can
// still be released and refreshed.
func (lk *Locker) Close(ctx context.Context) error {
	s := &lk.sweep
	s.mu.Lock()
	s.closed = true
	cancel, done := s.cancel, s.done
	s.cancel = nil
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if done != nil {
		<-done // a look in flight ends with its context
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for first := true; ; first = false {
		now := time.Now()
		s.mu.Lock()
		if first {
			for _, u := range s.pending {
				u.next = now
			}
		}
		next, left := time.Time{}, len(s.pending)
		for _, u := range s.pending {
			if next.IsZero() || u.next.Before(next) {
				next = u.next
			}
		}
		s.mu.Unlock()
		if left == 0 {
			return nil
		}
		if ctx.Err() == nil && !next.After(now) {
			lk.sweepDue(ctx, now)
			continue
		}
		t.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			return lk.closeError(ctx.Err())
		case <-t.C:
		}
	}
}

// closeError is Close's error when ctx ends first: it names what a late
// write may still lock, until when, and why the Locker could not tell.
func (lk *Locker) closeError(cause error) error {
	s := &lk.sweep
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	var last error
	for i, u := range s.pending {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "lock_id %s", u.lockID)
		if u.nonce != "" {
			fmt.Fprintf(&b, " (nonce %s)", u.nonce)
		}
		fmt.Fprintf(&b, " until %s", u.until.UTC().Format(time.RFC3339))
		if u.err != nil {
			fmt.Fprintf(&b, " (last look: %v)", u.err)
			last = u.err
		}
	}
	err := fmt.Errorf("mongolock: closing: %w: an acquiring write whose reply was lost may still lock a document: %s; "+
		"a lock left behind is cleared by its lease, or by an administrator", cause, b.String())
	if last != nil {
		return errors.Join(err, last)
	}
	return err
}
