package mongolock_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.uber.org/goleak"

	"github.com/mongolock/mongolock"
)

// commandLog counts the commands a client sends, by name.
type commandLog struct {
	mu    sync.Mutex
	names []string
}

func (c *commandLog) started(_ context.Context, e *event.CommandStartedEvent) {
	c.mu.Lock()
	c.names = append(c.names, e.CommandName)
	c.mu.Unlock()
}

// since returns the commands sent since mark (a length of the log).
func (c *commandLog) since(mark int) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.names[mark:]...)
}

func (c *commandLog) mark() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.names)
}

// countedColl returns coll seen through a client whose commands are logged.
func countedColl(t testing.TB, coll *mongo.Collection) (*mongo.Collection, *commandLog) {
	t.Helper()
	log := &commandLog{}
	c, err := mongo.Connect(options.Client().ApplyURI(uri).SetMonitor(&event.CommandMonitor{Started: log.started}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c.Database(coll.Database().Name()).Collection(coll.Name()), log
}

// Each claimed document is locked exactly as TryAcquire locks one: the
// claim's lock id, holder record with lease, fencing token, update on acquire; a
// claim takes the first n in the Locker's sort; ListLocked sees them all.
func TestTryAcquireMany(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	seedJobs(t, coll, 20) // priority = _id % 7
	running := bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "RUNNING"}}}}
	lk := mongolock.New(coll, mongolock.WithSort(bson.D{{Key: "priority", Value: -1}, {Key: "_id", Value: 1}}),
		mongolock.WithLease(time.Minute), mongolock.WithFencing(""), mongolock.WithUpdate(running))
	locks, err := lk.TryAcquireMany(ctx, ready, 4)
	if err != nil {
		t.Fatal(err)
	}
	want := []int32{6, 13, 5, 12} // priorities 6, 6, 5, 5
	if len(locks) != len(want) {
		t.Fatalf("%d locks, want %d", len(locks), len(want))
	}
	ids := map[string]bool{}
	host, _ := os.Hostname()
	for i, l := range locks {
		id := l.Document().Lookup("_id").Int32()
		if id != want[i] {
			t.Errorf("lock %d is on document %d, want %d (the Locker's sort)", i, id, want[i])
		}
		if i > 0 && l.ID() != locks[0].ID() {
			t.Errorf("lock %d has lock id %s, the claim's is %s", i, l.ID(), locks[0].ID())
		}
		ids[l.ID()] = true
		doc := rawDoc(t, coll, id)
		got := fields(doc, mongolock.LockKey, "state", "lock_seq", "lock_holder.lock_id", "lock_holder.host")
		if w := fmt.Sprintf("lock_id=%s state=RUNNING lock_seq=1 lock_holder.lock_id=%s lock_holder.host=%s", l.ID(), l.ID(), host); got != w {
			t.Errorf("document %d: %s, want %s", id, got, w)
		}
		if exp, ok := doc.Lookup("lock_holder", "expires").DateTimeOK(); !ok || time.UnixMilli(exp).Before(l.Time().Add(50*time.Second)) {
			t.Errorf("document %d: no lease of a minute in the holder record: %v", id, doc.Lookup("lock_holder"))
		}
		if l.Token() != 1 || !l.Time().Equal(doc.Lookup(mongolock.LockTimeKey).Time().UTC()) {
			t.Errorf("lock %d: token %d, time %v", i, l.Token(), l.Time())
		}
		if s, _ := l.Document().Lookup("state").StringValueOK(); s != "RUNNING" {
			t.Errorf("Document() is not the document after the acquiring update: %v", l.Document())
		}
	}
	infos, err := lk.ListLocked(ctx, nil)
	if err != nil || len(infos) != 4 {
		t.Fatalf("ListLocked: %d locks, %v", len(infos), err)
	}
	for _, info := range infos {
		if !ids[info.LockID] || info.Host != host || info.Expires.IsZero() {
			t.Errorf("ListLocked: %+v", info)
		}
	}
	// Each release is its own: the first lock's release frees its document alone.
	if err := locks[0].Release(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := coll.CountDocuments(ctx, bson.D{{Key: mongolock.LockKey, Value: bson.D{{Key: "$ne", Value: nil}}}}); n != 3 {
		t.Errorf("%d documents locked after one release, want 3", n)
	}
	if err := locks[1].SetUpdateOnRelease(setDone); err != nil {
		t.Fatal(err)
	}
	if err := locks[2].SetDeleteOnRelease(); err != nil {
		t.Fatal(err)
	}
	if err := mongolock.ReleaseAll(ctx, locks[1:]...); err != nil {
		t.Fatal(err)
	}
	if got := fields(rawDoc(t, coll, 13), "state", mongolock.LockKey, mongolock.HolderKey); got != "state=DONE lock_id=<nil> lock_holder=<nil>" {
		t.Errorf("document 13 after ReleaseAll with an update: %s", got)
	}
	if n, _ := coll.CountDocuments(ctx, bson.D{{Key: "_id", Value: 5}}); n != 0 {
		t.Error("document 5 was not deleted on release")
	}
	if got := fields(rawDoc(t, coll, 12), "state", mongolock.LockKey, mongolock.HolderKey); got != "state=RUNNING lock_id=<nil> lock_holder=<nil>" {
		t.Errorf("document 12 after a plain release: %s", got)
	}
	for _, l := range locks {
		notLost(t, l)
	}
}

// A claim costs at most three round trips whatever n, and ReleaseAll one per
// collection, counted by a command monitor.
func TestClaimRoundTrips(t *testing.T) {
	ctx := testCtx(t)
	coll, log := countedColl(t, newColl(t))
	seedJobs(t, coll, 120)
	lk := mongolock.New(coll, mongolock.WithLease(time.Minute), mongolock.WithFencing(""))
	if _, err := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: 119}}); err != nil { // samples the server clock
		t.Fatal(err)
	}
	for _, n := range []int{1, 7, 50} {
		mark := log.mark()
		locks, err := lk.TryAcquireMany(ctx, ready, n)
		if err != nil || len(locks) != n {
			t.Fatalf("claim of %d: %d locks, %v", n, len(locks), err)
		}
		if got := log.since(mark); len(got) > 3 {
			t.Errorf("claim of %d sent %d commands: %v", n, len(got), got)
		}
		for _, l := range locks {
			if err := l.SetUpdateOnRelease(setDone); err != nil {
				t.Fatal(err)
			}
		}
		mark = log.mark()
		if err := mongolock.ReleaseAll(ctx, locks...); err != nil {
			t.Fatal(err)
		}
		if got := log.since(mark); len(got) != 1 {
			t.Errorf("ReleaseAll of %d sent %d commands: %v", n, len(got), got)
		}
	}
	if n, _ := coll.CountDocuments(ctx, bson.D{{Key: "state", Value: "DONE"}}); n != 58 {
		t.Errorf("%d documents DONE, want 58", n)
	}
}

// Nothing matches: ErrNotFound. Everything matching is locked: ErrLocked
// naming a holder. Fewer than n: no error. A Python holder (string lock id,
// naive lock time, no holder record) is skipped, never taken, however old.
func TestClaimNotFoundLockedFewer(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	old := bson.NewDateTimeFromTime(time.Now().Add(-24 * time.Hour))
	insert(t, coll,
		bson.D{{Key: "_id", Value: 1}, {Key: "state", Value: "READY"}, {Key: mongolock.LockKey, Value: "python-runner"}, {Key: mongolock.LockTimeKey, Value: old}},
		bson.D{{Key: "_id", Value: 2}, {Key: "state", Value: "READY"}},
		bson.D{{Key: "_id", Value: 3}, {Key: "state", Value: "READY"}})
	lk := mongolock.New(coll, mongolock.WithLease(time.Minute))
	if _, err := lk.TryAcquireMany(ctx, bson.D{{Key: "state", Value: "NONE"}}, 3); !errors.Is(err, mongolock.ErrNotFound) {
		t.Errorf("no match: %v, want ErrNotFound", err)
	}
	locks, err := lk.TryAcquireMany(ctx, ready, 5)
	if err != nil || len(locks) != 2 {
		t.Fatalf("claim of 5 among 2 free: %d locks, %v", len(locks), err)
	}
	for _, l := range locks {
		if l.Document().Lookup("_id").Int32() == 1 {
			t.Error("the Python holder's document was taken")
		}
	}
	_, err = lk.TryAcquireMany(ctx, ready, 5)
	var locked *mongolock.LockedDocumentError
	if !errors.Is(err, mongolock.ErrLocked) || !errors.As(err, &locked) || locked.LockID == "" {
		t.Errorf("all locked: %v, want a *LockedDocumentError", err)
	}
	if err := mongolock.ReleaseAll(ctx, locks...); err != nil {
		t.Fatal(err)
	}
	if got := fields(rawDoc(t, coll, 1), mongolock.LockKey); got != "lock_id=python-runner" {
		t.Errorf("the Python holder's lock was touched: %s", got)
	}
}

// Every match locked, one by a holder whose lease ran out: the claim takes
// that one over, as TryAcquire would.
func TestClaimTakesOverExpired(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	seedJobs(t, coll, 3)
	short := mongolock.New(coll, mongolock.WithLease(100*time.Millisecond))
	expired, err := short.TryAcquire(ctx, bson.D{{Key: "_id", Value: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mongolock.New(coll).TryAcquireMany(ctx, ready, 2); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	locks, err := mongolock.New(coll).TryAcquireMany(ctx, ready, 3)
	if err != nil || len(locks) != 1 || locks[0].Document().Lookup("_id").Int32() != 1 {
		t.Fatalf("claim: %v, %v; want the expired document 1", locks, err)
	}
	if err := expired.Release(ctx); !errors.Is(err, mongolock.ErrLockLost) {
		t.Errorf("the old holder's release: %v, want ErrLockLost", err)
	}
}

// A lock that is gone when ReleaseAll runs is reported (ErrLockLost naming its
// document, Lost closed); the others are released and their Lost stays open.
func TestReleaseAllLost(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	seedJobs(t, coll, 4)
	lk := mongolock.New(coll)
	locks, err := lk.TryAcquireMany(ctx, ready, 4)
	if err != nil || len(locks) != 4 {
		t.Fatalf("claim: %d, %v", len(locks), err)
	}
	if _, err := lk.Unlock(ctx, bson.D{{Key: "_id", Value: 2}}); err != nil {
		t.Fatal(err)
	}
	if _, err := coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: 3}}); err != nil {
		t.Fatal(err)
	}
	for _, l := range locks {
		if err := l.SetUpdateOnRelease(setDone); err != nil {
			t.Fatal(err)
		}
	}
	err = mongolock.ReleaseAll(ctx, locks...)
	if !errors.Is(err, mongolock.ErrLockLost) || !strings.Contains(err.Error(), "document 2") || !strings.Contains(err.Error(), "document 3") {
		t.Fatalf("ReleaseAll: %v; want ErrLockLost naming documents 2 and 3", err)
	}
	for _, l := range locks {
		id := l.Document().Lookup("_id").Int32()
		select {
		case <-l.Lost():
			if id == 0 || id == 1 {
				t.Errorf("Lost closed for the released document %d", id)
			}
		default:
			if id == 2 || id == 3 {
				t.Errorf("Lost open for the lost document %d", id)
			}
		}
	}
	for _, id := range []int{0, 1} {
		if got := fields(rawDoc(t, coll, id), "state", mongolock.LockKey); got != "state=DONE lock_id=<nil>" {
			t.Errorf("document %d: %s", id, got)
		}
	}
	if got := fields(rawDoc(t, coll, 2), "state"); got != "state=READY" {
		t.Errorf("the unlocked document got the update: %s", got)
	}
}

// ReleaseAll across two collections sends one write to each.
func TestReleaseAllCollections(t *testing.T) {
	ctx := testCtx(t)
	a, log := countedColl(t, newColl(t))
	b := a.Database().Collection(newColl(t).Name())
	seedJobs(t, a, 3)
	seedJobs(t, b, 3)
	la, err := mongolock.New(a).TryAcquireMany(ctx, ready, 3)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := mongolock.New(b).TryAcquireMany(ctx, ready, 3)
	if err != nil {
		t.Fatal(err)
	}
	mark := log.mark()
	if err := mongolock.ReleaseAll(ctx, append(lb, la...)...); err != nil {
		t.Fatal(err)
	}
	if got := log.since(mark); len(got) != 2 {
		t.Errorf("ReleaseAll over two collections sent %v", got)
	}
	for _, c := range []*mongo.Collection{a, b} {
		if n, _ := c.CountDocuments(ctx, bson.D{{Key: mongolock.LockKey, Value: nil}}); n != 3 {
			t.Errorf("%s: %d unlocked, want 3", c.Name(), n)
		}
	}
}

// Claims with a shared custom lock id: each lock is still its own, and
// releasing one twice never frees another.
func TestClaimSharedLockID(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	seedJobs(t, coll, 3)
	locks, err := mongolock.New(coll, mongolock.WithLockID("runner")).TryAcquireMany(ctx, ready, 3)
	if err != nil || len(locks) != 3 {
		t.Fatalf("claim: %d, %v", len(locks), err)
	}
	if err := locks[0].Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := locks[0].Release(ctx); !errors.Is(err, mongolock.ErrLockLost) {
		t.Fatalf("second release: %v", err)
	}
	if err := mongolock.ReleaseAll(ctx, locks[1:]...); err != nil {
		t.Fatalf("the others were touched: %v", err)
	}
}

// Bad input is refused before anything is sent.
func TestClaimInvalid(t *testing.T) {
	ctx := testCtx(t)
	coll, sent := monitored(t, newColl(t))
	seedJobs(t, coll, 3)
	locks, err := mongolock.New(coll).TryAcquireMany(ctx, ready, 2)
	if err != nil {
		t.Fatal(err)
	}
	released, err := mongolock.New(coll).TryAcquire(ctx, ready)
	if err != nil {
		t.Fatal(err)
	}
	if err := released.Release(ctx); err != nil {
		t.Fatal(err)
	}
	sent.Store(0)
	refused(t, sent, []refusal{
		{"n is 0", func() error { _, err := mongolock.New(coll).TryAcquireMany(ctx, ready, 0); return err }},
		{"n is negative", func() error { _, err := mongolock.New(coll).TryAcquireMany(ctx, ready, -1); return err }},
		{"nil collection", func() error { _, err := mongolock.New(nil).TryAcquireMany(ctx, ready, 1); return err }},
		{"bad filter", func() error { _, err := mongolock.New(coll).TryAcquireMany(ctx, "x", 1); return err }},
		{"nil lock", func() error { return mongolock.ReleaseAll(ctx, locks[0], nil) }},
		{"zero lock", func() error { return mongolock.ReleaseAll(ctx, &mongolock.Lock{}) }},
		{"same lock twice", func() error { return mongolock.ReleaseAll(ctx, locks[0], locks[1], locks[0]) }},
		{"released lock", func() error { return mongolock.ReleaseAll(ctx, locks[0], released) }},
	})
	if err := mongolock.ReleaseAll(ctx, locks...); err != nil {
		t.Fatalf("the refused calls changed the locks: %v", err)
	}
	if err := mongolock.ReleaseAll(ctx); err != nil {
		t.Errorf("ReleaseAll of nothing: %v", err)
	}
}

// Goroutines claiming batches of one queue at once: no document is ever
// held twice, and every one is done once.
func TestClaimContention(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	const jobs, workers = 150, 8
	seedJobs(t, coll, jobs)
	lk := mongolock.New(coll)
	var holders [jobs]atomic.Int32
	var done [jobs]atomic.Int32
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for {
				locks, err := lk.TryAcquireMany(ctx, ready, 7)
				if errors.Is(err, mongolock.ErrNotFound) {
					return
				}
				if errors.Is(err, mongolock.ErrLocked) { // the rest are claimed: wait for their releases
					time.Sleep(5 * time.Millisecond)
					continue
				}
				if err != nil {
					errc <- err
					return
				}
				for _, l := range locks {
					id := l.Document().Lookup("_id").Int32()
					if holders[id].Add(1) != 1 {
						errc <- fmt.Errorf("document %d held twice", id)
					}
					done[id].Add(1)
				}
				time.Sleep(time.Millisecond)
				for _, l := range locks {
					holders[l.Document().Lookup("_id").Int32()].Add(-1)
					if err := l.SetUpdateOnRelease(setDone); err != nil {
						errc <- err
					}
				}
				if err := mongolock.ReleaseAll(ctx, locks...); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	for id := range jobs {
		if n := done[id].Load(); n != 1 {
			t.Errorf("job %d done %d times", id, n)
		}
	}
}

// A batched Work drains a queue with a Python holder in its middle (string
// lock id, naive lock time, no holder record): the held job is skipped,
// never taken, and Work ends once only it is left.
func TestWorkBatchSkipsPythonHolder(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	seedJobs(t, coll, 40)
	old := bson.NewDateTimeFromTime(time.Now().Add(-time.Hour))
	if _, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: 20}}, bson.D{{Key: "$set", Value: bson.D{
		{Key: mongolock.LockKey, Value: "python-runner"}, {Key: mongolock.LockTimeKey, Value: old}}}}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[int32]int{}
	lk := mongolock.New(coll, mongolock.WithBatch(16), mongolock.WithPollInterval(20*time.Millisecond))
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- lk.Work(wctx, 4, ready, func(ctx context.Context, l *mongolock.Lock) error {
			mu.Lock()
			seen[l.Document().Lookup("_id").Int32()]++
			n := len(seen)
			mu.Unlock()
			if n == 39 {
				defer cancel() // only the Python holder's job is left: it stays locked, so Work would wait
			}
			return l.SetUpdateOnRelease(setDone)
		})
	}()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if seen[20] != 0 {
		t.Error("the Python holder's job was taken")
	}
	for id := range int32(40) {
		if id != 20 && seen[id] != 1 {
			t.Errorf("job %d stepped on %d times", id, seen[id])
		}
	}
	if got := fields(rawDoc(t, coll, 20), mongolock.LockKey, "state"); got != "lock_id=python-runner state=READY" {
		t.Errorf("the Python holder's job: %s", got)
	}
}

// WithBatch below 1 is refused before any I/O.
func TestWorkBatchInvalid(t *testing.T) {
	ctx := testCtx(t)
	coll, sent := monitored(t, newColl(t))
	sent.Store(0)
	refused(t, sent, []refusal{
		{"WithBatch(0)", func() error { return mongolock.New(coll).Work(ctx, 2, ready, publishDone, mongolock.WithBatch(0)) }},
		{"WithBatch(-3) on New", func() error { return mongolock.New(coll, mongolock.WithBatch(-3)).Work(ctx, 2, ready, publishDone) }},
	})
}

// Cancelling TryAcquireMany + ReleaseAll, and Work with WithBatch(4), at
// random moments, while another goroutine claims the same documents, leaves
// no lock and no goroutine behind, and never a document held twice.
func TestRandomCancellationBatch(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	seedJobs(t, coll, 12)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	lk := mongolock.New(coll, mongolock.WithPollInterval(5*time.Millisecond))
	var holders [12]atomic.Int32
	var twice atomic.Int64
	hold := func(l *mongolock.Lock) func() {
		id := l.Document().Lookup("_id").Int32()
		if holders[id].Add(1) != 1 {
			twice.Add(1)
		}
		return func() { holders[id].Add(-1) }
	}
	stop := make(chan struct{})
	var other sync.WaitGroup
	other.Go(func() { // contention: claims some documents now and then
		olk := mongolock.New(coll)
		for {
			select {
			case <-stop:
				return
			default:
			}
			locks, err := olk.TryAcquireMany(ctx, ready, 3)
			if err != nil {
				time.Sleep(time.Millisecond)
				continue
			}
			var lets []func()
			for _, l := range locks {
				lets = append(lets, hold(l))
			}
			time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
			for _, let := range lets {
				let()
			}
			if err := mongolock.ReleaseAll(ctx, locks...); err != nil {
				t.Error(err)
				return
			}
		}
	})
	var got, cancelled atomic.Int64
	for i := range 200 {
		// Most deadlines end mid-claim; one in four leaves time for a claim
		// (three round trips) even on a loaded machine.
		limit := 10 * time.Millisecond
		if i%4 == 0 {
			limit = 300 * time.Millisecond
		}
		cctx, cancel := context.WithTimeout(ctx, rand.N(limit))
		var err error
		if i%2 == 0 {
			var locks []*mongolock.Lock
			if locks, err = lk.TryAcquireMany(cctx, ready, 5); err == nil {
				got.Add(1)
				var lets []func()
				for _, l := range locks {
					lets = append(lets, hold(l))
				}
				for _, let := range lets {
					let()
				}
				err = mongolock.ReleaseAll(cctx, locks...) // a cancelled context still releases
			}
		} else {
			err = lk.Work(cctx, 3, ready, func(ctx context.Context, l *mongolock.Lock) error {
				got.Add(1)
				defer hold(l)()
				<-ctx.Done()
				return ctx.Err() // interrupted: released unchanged
			}, mongolock.WithBatch(4))
		}
		cancel()
		switch {
		case err == nil, errors.Is(err, mongolock.ErrLocked), errors.Is(err, mongolock.ErrNotFound):
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
			cancelled.Add(1)
		case embedded && strings.Contains(err.Error(), "(InternalError)") && strings.Contains(err.Error(), "context deadline exceeded"):
			cancelled.Add(1) // FerretDB's report of the deadline's maxTimeMS, as in TestRandomCancellation
		default:
			t.Fatalf("iteration %d: %v", i, err)
		}
	}
	close(stop)
	other.Wait()
	if got.Load() == 0 || cancelled.Load() == 0 {
		t.Fatalf("claimed %d times, cancelled %d times: both must happen for the test to mean anything", got.Load(), cancelled.Load())
	}
	t.Logf("claimed %d times, cancelled %d times", got.Load(), cancelled.Load())
	if n := twice.Load(); n != 0 {
		t.Errorf("%d documents held twice", n)
	}
	noLocks(t, coll)
	if n, _ := coll.CountDocuments(ctx, bson.D{{Key: "remote", Value: bson.D{{Key: "$exists", Value: true}}}}); n != 0 {
		t.Errorf("%d documents counted a failure: an interrupted step counts nothing", n)
	}
}

// A batched Work keeps the leases of a claim's running steps alive with one
// write per tick for the whole claim (no findAndModify refresh per lock),
// past the lease's length, and no step loses its lock.
func TestWorkBatchKeepsLeases(t *testing.T) {
	ctx := testCtx(t)
	coll, log := countedColl(t, newColl(t))
	seedJobs(t, coll, 4)
	const ttl = 400 * time.Millisecond
	lk := mongolock.New(coll, mongolock.WithBatch(4), mongolock.WithLease(ttl), mongolock.WithAutoRefresh(100*time.Millisecond))
	var mu sync.Mutex
	var during []string
	var started sync.WaitGroup
	started.Add(4)
	err := lk.Work(ctx, 4, ready, func(fnCtx context.Context, l *mongolock.Lock) error {
		started.Done()
		started.Wait() // all four run at once, from one claim
		mark := log.mark()
		select {
		case <-time.After(3 * ttl):
		case <-fnCtx.Done():
			return fmt.Errorf("fn's context ended: %w", context.Cause(fnCtx))
		}
		mu.Lock()
		if during == nil {
			during = log.since(mark)
		}
		mu.Unlock()
		notLost(t, l)
		return l.SetUpdateOnRelease(setDone)
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := coll.CountDocuments(ctx, bson.D{{Key: "state", Value: "DONE"}, {Key: mongolock.LockKey, Value: nil}}); n != 4 {
		t.Fatalf("%d jobs done, want 4", n)
	}
	refreshes := 0
	for _, name := range during {
		switch name {
		case "findAndModify":
			t.Errorf("a lock was refreshed on its own: %v", during)
		case "update":
			refreshes++
		}
	}
	// 12 ticks of 100ms in 1.2s: one write each for the four locks, where
	// a refresh per lock would send 48.
	if refreshes == 0 || refreshes > 16 {
		t.Errorf("%d refreshing writes in %v for four locks: %v", refreshes, 3*ttl, during)
	}
}
