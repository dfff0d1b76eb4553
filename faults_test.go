package mongolock_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/mongolock/mongolock"
	"github.com/mongolock/mongolock/internal/faultproxy"
)

// Every write the library sends goes through a proxy that loses its reply
// (after the server applied it) or cuts it (before the server saw it). After
// the call, and after the retry its documentation asks for when it returns
// an error, no lock of ours is left, Lost has not closed for a lock still
// held, and the error wraps the driver's.

// faulty is one test's collection seen through a fault proxy, and the same
// collection seen directly, to check what the database holds.
type faulty struct {
	proxy  *faultproxy.Proxy
	coll   *mongo.Collection // through the proxy
	direct *mongo.Collection
}

func newFaulty(t *testing.T) *faulty {
	t.Helper()
	backend, err := singleHost(uri)
	if err != nil {
		t.Skipf("the fault proxy needs a single-host MONGODB_URI: %v", err)
	}
	p, err := faultproxy.Start(backend)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	// The driver would retry writes on a replica set, which hides a lost
	// reply from the library; on a standalone it never does.
	c, err := mongo.Connect(options.Client().ApplyURI(p.URI()).SetServerSelectionTimeout(5 * time.Second).SetRetryWrites(false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) }) // before the proxy closes
	direct := newColl(t)
	if err := c.Ping(testCtx(t), nil); err != nil { // a pooled connection, so a hold catches commands
		t.Fatal(err)
	}
	return &faulty{proxy: p, coll: c.Database(direct.Database().Name()).Collection(direct.Name()), direct: direct}
}

// singleHost returns the host:port of a mongodb:// URI that names one host.
func singleHost(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", err
	}
	if u.Scheme != "mongodb" || strings.Contains(u.Host, ",") || u.Port() == "" {
		return "", fmt.Errorf("%q is not mongodb://host:port", s)
	}
	return u.Host, nil
}

// fault is one way a write goes wrong.
type fault struct {
	name   string
	inject func(p *faultproxy.Proxy, cmd string)
}

var faults = []fault{
	{"lost reply", func(p *faultproxy.Proxy, cmd string) { p.LoseReply(cmd, 1) }},
	{"cut request", func(p *faultproxy.Proxy, cmd string) { p.CutRequest(cmd, 1) }},
}

// hit runs call with fault on the next cmd and checks that the fault was
// really met.
func (f *faulty) hit(t *testing.T, flt fault, cmd string, call func()) {
	t.Helper()
	flt.inject(f.proxy, cmd)
	call()
	if f.proxy.Armed(cmd) != 0 {
		t.Fatalf("no %s was sent: the %s was not met", cmd, flt.name)
	}
}

// unlocked fails the test when document id is left locked, or when a
// holder record is left on it.
func unlocked(t *testing.T, coll *mongo.Collection, id any) bson.M {
	t.Helper()
	doc := get(t, coll, id)
	if doc[mongolock.LockKey] != nil || doc[mongolock.LockTimeKey] != nil || doc[mongolock.HolderKey] != nil {
		t.Fatalf("lock left behind: %v", doc)
	}
	return doc
}

// networkError fails the test unless err wraps the driver's network error.
func networkError(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil || !mongo.IsNetworkError(err) || !strings.HasPrefix(err.Error(), "mongolock: ") {
		t.Fatalf("%s: %v; want a mongolock error wrapping the driver's network error", what, err)
	}
}

func notLost(t *testing.T, l *mongolock.Lock) {
	t.Helper()
	select {
	case <-l.Lost():
		t.Fatal("Lost() closed for a lock still held")
	default:
	}
}

func TestFaultAcquire(t *testing.T) {
	ready := bson.D{{Key: "state", Value: "READY"}}
	running := bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "RUNNING"}}}}
	for _, flt := range faults {
		for _, moving := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/update moves the document out of the filter=%v", flt.name, moving), func(t *testing.T) {
				ctx := testCtx(t)
				f := newFaulty(t)
				insert(t, f.direct, bson.D{{Key: "_id", Value: "job"}, {Key: "state", Value: "READY"}})
				var opts []mongolock.Option
				if moving {
					opts = append(opts, mongolock.WithUpdate(running))
				}
				lk := mongolock.New(f.coll, opts...)
				var l *mongolock.Lock
				var err error
				f.hit(t, flt, "findAndModify", func() { l, err = lk.TryAcquire(ctx, ready) })
				if flt.name == "cut request" {
					networkError(t, "acquire with its request cut", err)
					unlocked(t, f.direct, "job")
					// The documented answer to a network error: try again.
					if l, err = lk.TryAcquire(ctx, ready); err != nil {
						t.Fatalf("retried acquire: %v", err)
					}
				} else if err != nil {
					t.Fatalf("acquire whose reply was lost: %v; want the lock, found by its lock id", err)
				}
				if got := get(t, f.direct, "job")[mongolock.LockKey]; got != l.ID() {
					t.Fatalf("lock_id = %v, want %s", got, l.ID())
				}
				if moving && get(t, f.direct, "job")["state"] != "RUNNING" {
					t.Fatal("the acquiring update was not applied")
				}
				notLost(t, l)
				if err := l.ReleaseWithUpdate(ctx, bson.M{"$set": bson.M{"state": "DONE"}}); err != nil {
					t.Fatal(err)
				}
				if unlocked(t, f.direct, "job")["state"] != "DONE" {
					t.Error("the update on release was not applied")
				}
			})
		}
	}
}

func TestFaultRefresh(t *testing.T) {
	for _, flt := range faults {
		t.Run(flt.name, func(t *testing.T) {
			ctx := testCtx(t)
			f := newFaulty(t)
			job := jobDoc(t, f.direct)
			l, err := mongolock.New(f.coll, mongolock.WithLease(time.Minute)).TryAcquire(ctx, job)
			if err != nil {
				t.Fatal(err)
			}
			f.hit(t, flt, "findAndModify", func() { err = l.Refresh(ctx) })
			networkError(t, "refresh", err)
			notLost(t, l)
			// The next refresh and the release still name the lock,
			// whichever lock_time the server kept.
			if err := l.Refresh(ctx); err != nil {
				t.Fatalf("refresh after a %s: %v", flt.name, err)
			}
			if got := get(t, f.direct, "job")[mongolock.LockTimeKey].(bson.DateTime).Time(); !got.Equal(l.Time()) {
				t.Errorf("lock_time %v, Time() %v", got, l.Time())
			}
			notLost(t, l)
			if err := l.Release(ctx); err != nil {
				t.Fatalf("release after a %s of a refresh: %v", flt.name, err)
			}
			unlocked(t, f.direct, "job")
		})
	}
}

// The auto-refresh inside Do meets the fault; fn keeps its lock and Do
// releases it.
func TestFaultAutoRefresh(t *testing.T) {
	for _, flt := range faults {
		t.Run(flt.name, func(t *testing.T) {
			ctx := testCtx(t)
			f := newFaulty(t)
			job := jobDoc(t, f.direct)
			lk := mongolock.New(f.coll, mongolock.WithLease(time.Minute), mongolock.WithAutoRefresh(50*time.Millisecond))
			err := lk.Do(ctx, job, func(fnCtx context.Context, l *mongolock.Lock) error {
				before := f.proxy.Count("findAndModify")
				flt.inject(f.proxy, "findAndModify")
				// Wait for the faulty refresh and two good ones after it.
				for f.proxy.Count("findAndModify") < before+3 {
					select {
					case <-fnCtx.Done():
						return context.Cause(fnCtx)
					case <-time.After(10 * time.Millisecond):
					}
				}
				notLost(t, l)
				return l.SetUpdateOnRelease(bson.M{"$set": bson.M{"state": "DONE"}})
			})
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			if unlocked(t, f.direct, "job")["state"] != "DONE" {
				t.Error("the update on release was not applied")
			}
		})
	}
}

// Each way of releasing meets the fault: the release is sent again, and a
// copy that finds the lock gone after a lost reply knows its own work.
func TestFaultRelease(t *testing.T) {
	done := bson.M{"$set": bson.M{"state": "DONE"}}
	ways := []struct {
		name    string
		cmd     string
		release func(ctx context.Context, lk *mongolock.Locker, filter any) error
		deleted bool
	}{
		{"Release", "update", func(ctx context.Context, lk *mongolock.Locker, filter any) error {
			l, err := lk.TryAcquire(ctx, filter)
			if err != nil {
				return err
			}
			return l.Release(ctx)
		}, false},
		{"ReleaseWithUpdate", "update", func(ctx context.Context, lk *mongolock.Locker, filter any) error {
			l, err := lk.TryAcquire(ctx, filter)
			if err != nil {
				return err
			}
			return l.ReleaseWithUpdate(ctx, done)
		}, false},
		{"ReleaseAndDelete", "delete", func(ctx context.Context, lk *mongolock.Locker, filter any) error {
			l, err := lk.TryAcquire(ctx, filter)
			if err != nil {
				return err
			}
			return l.ReleaseAndDelete(ctx)
		}, true},
		{"release inside Do", "update", func(ctx context.Context, lk *mongolock.Locker, filter any) error {
			return lk.Do(ctx, filter, func(_ context.Context, l *mongolock.Lock) error { return l.SetUpdateOnRelease(done) })
		}, false},
		{"delete inside Do", "delete", func(ctx context.Context, lk *mongolock.Locker, filter any) error {
			return lk.Do(ctx, filter, func(_ context.Context, l *mongolock.Lock) error { return l.SetDeleteOnRelease() })
		}, true},
	}
	for _, way := range ways {
		for _, flt := range faults {
			t.Run(way.name+"/"+flt.name, func(t *testing.T) {
				ctx := testCtx(t)
				f := newFaulty(t)
				job := jobDoc(t, f.direct)
				var err error
				f.hit(t, flt, way.cmd, func() { err = way.release(ctx, mongolock.New(f.coll), job) })
				if err != nil {
					t.Fatalf("%s after a %s: %v", way.name, flt.name, err)
				}
				if way.deleted {
					if n, err := f.direct.CountDocuments(ctx, job); err != nil || n != 0 {
						t.Fatalf("the document was not deleted: %d, %v", n, err)
					}
					return
				}
				doc := unlocked(t, f.direct, "job")
				if way.name != "Release" && doc["state"] != "DONE" {
					t.Errorf("the update on release was not applied: %v", doc)
				}
			})
		}
	}
}

// A release whose reply was lost while someone else then took the document:
// the release marker tells that the lost copy freed it (its update
// applied), so the release succeeds, and the new holder's lock is never
// touched.
func TestFaultReleaseThenTaken(t *testing.T) {
	ctx := testCtx(t)
	f := newFaulty(t)
	job := jobDoc(t, f.direct)
	obs := &countingObserver{}
	l, err := mongolock.New(f.coll, mongolock.WithObserver(obs)).TryAcquire(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	taken := make(chan *mongolock.Lock, 1)
	go func() { // waits on the other side of the proxy, and takes the document as soon as it is free
		other, err := mongolock.New(f.direct, mongolock.WithPollInterval(time.Millisecond)).Acquire(ctx, job)
		if err != nil {
			t.Error(err)
		}
		taken <- other
	}()
	f.proxy.LoseReply("update", 1)
	err = l.ReleaseWithUpdate(ctx, bson.M{"$set": bson.M{"state": "DONE"}})
	other := <-taken
	if other == nil {
		t.FailNow()
	}
	if err != nil {
		t.Errorf("release: %v; want nil, its lost copy freed the lock", err)
	}
	obs.mu.Lock()
	if obs.counts["lost"] != 0 {
		t.Errorf("observer heard %v; want no lost lock: our own lost copy released it", obs.counts)
	}
	obs.mu.Unlock()
	doc := get(t, f.direct, "job")
	if doc[mongolock.LockKey] != other.ID() || doc["state"] != "DONE" {
		t.Fatalf("the new holder's lock was touched, or the update not applied: %v", doc)
	}
	if err := other.Release(ctx); err != nil {
		t.Fatal(err)
	}
	unlocked(t, f.direct, "job")
}

// Issue 18 (seen-1): every copy of a release loses its reply, and the
// caller retries as the docs say. Its own first copy freed the document
// (and applied its update, or deleted it): the retry reports success and
// Lost stays open.
func TestFaultReleaseRetriedAfterLostReplies(t *testing.T) {
	done := bson.M{"$set": bson.M{"state": "DONE"}}
	for _, del := range []bool{false, true} {
		t.Run(fmt.Sprintf("delete=%v", del), func(t *testing.T) {
			ctx := testCtx(t)
			f := newFaulty(t)
			job := jobDoc(t, f.direct)
			l, err := mongolock.New(f.coll, mongolock.WithLease(time.Minute)).TryAcquire(ctx, job)
			if err != nil {
				t.Fatal(err)
			}
			release, cmd := func() error { return l.ReleaseWithUpdate(ctx, done) }, "update"
			if del {
				release, cmd = func() error { return l.ReleaseAndDelete(ctx) }, "delete"
			}
			f.proxy.LoseReply(cmd, 100) // every copy
			err = release()
			if err == nil || !strings.Contains(err.Error(), "may remain") {
				t.Fatalf("release with every reply lost: %v; want the error that the lock may remain", err)
			}
			f.proxy.LoseReply(cmd, 0)
			if err := release(); err != nil {
				t.Fatalf("the caller's retry: %v; want nil, the first copy freed the lock", err)
			}
			notLost(t, l)
			if del {
				if n, err := f.direct.CountDocuments(ctx, job); err != nil || n != 0 {
					t.Fatalf("the document was not deleted: %d, %v", n, err)
				}
				return
			}
			if doc := unlocked(t, f.direct, "job"); doc["state"] != "DONE" {
				t.Errorf("the update on release was not applied: %v", doc)
			}
		})
	}
}

// Issue 16 (item 2): our lock is broken and the breaker releases it, while
// our release's reply is lost. The document is free, as our release would
// have left it, but not by our release: ours reports ErrLockLost, closes
// Lost, and its update was never applied.
func TestFaultReleaseAfterBrokenLock(t *testing.T) {
	breakers := []struct {
		name    string
		breakIt func(ctx context.Context, coll *mongo.Collection, job any) error
	}{
		{"WithBreakLock then released", func(ctx context.Context, coll *mongo.Collection, job any) error {
			b, err := mongolock.New(coll).TryAcquire(ctx, job, mongolock.WithBreakLock())
			if err != nil {
				return err
			}
			return b.Release(ctx)
		}},
		{"Unlock", func(ctx context.Context, coll *mongo.Collection, job any) error {
			_, err := mongolock.New(coll).Unlock(ctx, job)
			return err
		}},
	}
	for _, b := range breakers {
		t.Run(b.name, func(t *testing.T) {
			ctx := testCtx(t)
			f := newFaulty(t)
			job := jobDoc(t, f.direct)
			l, err := mongolock.New(f.coll).TryAcquire(ctx, job)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.breakIt(ctx, f.direct, job); err != nil {
				t.Fatal(err)
			}
			f.proxy.LoseReply("update", 1)
			err = l.ReleaseWithUpdate(ctx, bson.M{"$set": bson.M{"state": "DONE"}})
			if !errors.Is(err, mongolock.ErrLockLost) {
				t.Errorf("release of a broken lock, its reply lost: %v; want ErrLockLost", err)
			}
			select {
			case <-l.Lost():
			default:
				t.Error("Lost() still open")
			}
			if doc := get(t, f.direct, "job"); doc["state"] != "READY" {
				t.Errorf("the update on release was applied to a lock broken before: %v", doc)
			}
		})
	}
}

// Unlock is one idempotent write: after a network error, calling it again
// leaves no lock.
func TestFaultUnlock(t *testing.T) {
	for _, flt := range faults {
		t.Run(flt.name, func(t *testing.T) {
			ctx := testCtx(t)
			f := newFaulty(t)
			job := jobDoc(t, f.direct)
			if _, err := mongolock.New(f.direct).TryAcquire(ctx, job); err != nil {
				t.Fatal(err)
			}
			lk := mongolock.New(f.coll)
			var err error
			f.hit(t, flt, "update", func() { _, err = lk.Unlock(ctx, job) })
			networkError(t, "unlock", err)
			if _, err := lk.Unlock(ctx, job); err != nil {
				t.Fatalf("unlock again: %v", err)
			}
			unlocked(t, f.direct, "job")
		})
	}
}

// A partition swallows an acquiring write; the caller gives up; the
// partition heals and delivers the write late, or drops it. While the
// library is still asking about its write, the late lock is found and given
// back; a dropped write leaves nothing.
func TestFaultAcquireHeldThenHealed(t *testing.T) {
	defer mongolock.SetFaultTimeouts(200*time.Millisecond, 20*time.Second)()
	for _, deliver := range []bool{true, false} {
		t.Run(fmt.Sprintf("deliver=%v", deliver), func(t *testing.T) {
			ctx := testCtx(t)
			f := newFaulty(t)
			job := jobDoc(t, f.direct)
			lk := mongolock.New(f.coll)
			f.proxy.Hold()
			errc := make(chan error, 1)
			go func() {
				actx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
				defer cancel()
				_, err := lk.TryAcquire(actx, job)
				errc <- err
			}()
			for f.proxy.Held("findAndModify") == 0 {
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(500 * time.Millisecond) // the caller's deadline has passed; the library is still asking
			f.proxy.Heal(deliver)
			err := <-errc
			if err == nil || !errors.Is(err, context.DeadlineExceeded) && !mongo.IsTimeout(err) {
				t.Fatalf("acquire: %v; want the caller's deadline", err)
			}
			unlocked(t, f.direct, "job")
		})
	}
}

// A partition outlasts every copy of Do's release: Do says that the lock may
// remain and until when, and the declared lease is what frees it.
func TestFaultReleaseGivesUp(t *testing.T) {
	defer mongolock.SetFaultTimeouts(100*time.Millisecond, time.Second)()
	ctx := testCtx(t)
	f := newFaulty(t)
	job := jobDoc(t, f.direct)
	const ttl = 2 * time.Second
	lk := mongolock.New(f.coll, mongolock.WithLease(ttl))
	err := lk.Do(ctx, job, func(context.Context, *mongolock.Lock) error {
		f.proxy.Hold()
		return nil
	})
	f.proxy.Heal(false)
	if err == nil || !strings.Contains(err.Error(), "may remain until its lease runs out at ") || !mongo.IsTimeout(err) {
		t.Fatalf("Do: %v; want the driver's timeout and when the lock may remain until", err)
	}
	if get(t, f.direct, "job")[mongolock.LockKey] == nil {
		t.Fatal("the release was applied: the partition was not met")
	}
	l, err := mongolock.New(f.direct, mongolock.WithPollInterval(50*time.Millisecond)).Acquire(ctx, job, mongolock.WithMaxWait(10*time.Second))
	if err != nil {
		t.Fatalf("the lease did not free the lock: %v", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	unlocked(t, f.direct, "job")
}

// Workers that share a custom lock id: the recovery of one's lost acquire
// finds its own lock, never a sibling's.
func TestFaultAcquireSharedLockID(t *testing.T) {
	for _, flt := range faults {
		t.Run(flt.name, func(t *testing.T) {
			ctx := testCtx(t)
			f := newFaulty(t)
			insert(t, f.direct, bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "_id", Value: 2}})
			shared := mongolock.WithLockID("runner")
			sibling, err := mongolock.New(f.direct, shared).TryAcquire(ctx, bson.D{{Key: "_id", Value: 2}})
			if err != nil {
				t.Fatal(err)
			}
			var l *mongolock.Lock
			f.hit(t, flt, "findAndModify", func() { l, err = mongolock.New(f.coll, shared).TryAcquire(ctx, bson.D{{Key: "_id", Value: 1}}) })
			if flt.name == "cut request" {
				networkError(t, "acquire with its request cut", err)
				unlocked(t, f.direct, 1)
			} else {
				if err != nil || l.Document().Lookup("_id").Int32() != 1 {
					t.Fatalf("recovered %v, %v; want the lock on document 1", l, err)
				}
				if err := l.Release(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if err := sibling.Release(ctx); err != nil {
				t.Fatalf("the sibling's lock was touched: %v", err)
			}
		})
	}
}

// An administrator unlocks the document between a release whose request was
// cut and its next copy: the release cannot have been applied, and says so
// instead of reporting the update as published.
func TestFaultReleaseThenUnlocked(t *testing.T) {
	ctx := testCtx(t)
	f := newFaulty(t)
	job := jobDoc(t, f.direct)
	l, err := mongolock.New(f.coll).TryAcquire(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	f.proxy.CutRequest("update", 1)
	unlocked := make(chan error, 1)
	go func() { // as soon as the first copy is cut, before the library sends the next
		for f.proxy.Armed("update") != 0 {
			time.Sleep(time.Millisecond)
		}
		_, err := mongolock.New(f.direct).Unlock(ctx, job)
		unlocked <- err
	}()
	err = l.ReleaseWithUpdate(ctx, bson.M{"$set": bson.M{"state": "DONE"}})
	if err := <-unlocked; err != nil {
		t.Fatal(err)
	}
	if !errors.Is(err, mongolock.ErrLockLost) {
		t.Fatalf("release: %v; want ErrLockLost, the update was never applied", err)
	}
	if get(t, f.direct, "job")["state"] != "READY" {
		t.Fatal("the update was applied after all")
	}
}

// A partition outlasts the lease inside Do: fn's context is cancelled with a
// cause matching ErrLockLost once the lease has run out unrenewed, since
// anyone may take the document over by then.
func TestFaultLeaseRunsOutInDo(t *testing.T) {
	defer mongolock.SetFaultTimeouts(100*time.Millisecond, time.Second)()
	ctx := testCtx(t)
	f := newFaulty(t)
	job := jobDoc(t, f.direct)
	lk := mongolock.New(f.coll, mongolock.WithLease(600*time.Millisecond), mongolock.WithAutoRefresh(100*time.Millisecond))
	var cause error
	_ = lk.Do(ctx, job, func(fnCtx context.Context, l *mongolock.Lock) error {
		f.proxy.Hold()
		defer f.proxy.Heal(false)
		select {
		case <-fnCtx.Done():
			cause = context.Cause(fnCtx)
		case <-ctx.Done():
		}
		return nil
	})
	if !errors.Is(cause, mongolock.ErrLockLost) || !strings.Contains(cause.Error(), "ran out") {
		t.Fatalf("fn's context ended with %v; want the lease that ran out, matching ErrLockLost", cause)
	}
}

// Issue 18 (seen-4): the server stops answering in the middle of a wait
// bounded by WithMaxWait, with no deadline on the context. Acquire returns
// all the same, within the wait plus what one write in flight is given: its
// try's time, the grace to finish and the time to ask whether it took the
// lock (the library's own bounds, shortened here but for the grace).
func TestFaultMaxWaitServerStalls(t *testing.T) {
	const attempt, cleanup, wait = 200 * time.Millisecond, time.Second, time.Second
	defer mongolock.SetFaultTimeouts(attempt, cleanup)()
	ctx := testCtx(t)
	f := newFaulty(t)
	job := jobDoc(t, f.direct)
	holder, err := mongolock.New(f.direct).TryAcquire(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		l, err := mongolock.New(f.coll, mongolock.WithPollInterval(20*time.Millisecond)).Acquire(context.Background(), job, mongolock.WithMaxWait(wait))
		if l != nil {
			err = errors.Join(errors.New("acquired a held lock"), l.Release(ctx))
		}
		errc <- err
	}()
	for f.proxy.Count("findAndModify") == 0 { // the wait has made its first try
		time.Sleep(5 * time.Millisecond)
	}
	f.proxy.Hold()
	// Generous: twice everything a try may be given, and 5s for a slow machine.
	bound := 2*(wait+attempt+mongolock.GraceAfterCancel+cleanup) + 5*time.Second
	returned := false
	select {
	case err := <-errc:
		returned = true
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Acquire: %v; want the wait that ran out", err)
		}
	case <-time.After(bound):
		t.Errorf("Acquire with WithMaxWait(%v) had not returned %v after the server stopped answering", wait, bound)
	}
	f.proxy.Heal(false)
	if !returned {
		<-errc
	}
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
}
