package mongolock_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/sync/errgroup"

	"github.com/mongolock/mongolock"
)

// DoAll and Group: a job, its flow and its descendants, all or nothing.

// jobflow seeds a job u1 with descendants u2..u4 in one collection and
// their flow in another, as jobflow-remote keeps them.
func jobflow(t *testing.T) (jobs, flows *mongo.Collection) {
	jobs, flows = newColl(t), newColl(t)
	insert(t, jobs,
		bson.D{{Key: "_id", Value: 1}, {Key: "uuid", Value: "u1"}, {Key: "state", Value: "FAILED"}},
		bson.D{{Key: "_id", Value: 2}, {Key: "uuid", Value: "u2"}, {Key: "state", Value: "WAITING"}, {Key: "parents", Value: bson.A{"u1"}}},
		bson.D{{Key: "_id", Value: 3}, {Key: "uuid", Value: "u3"}, {Key: "state", Value: "WAITING"}, {Key: "parents", Value: bson.A{"u2"}}},
		bson.D{{Key: "_id", Value: 4}, {Key: "uuid", Value: "u4"}, {Key: "state", Value: "WAITING"}, {Key: "parents", Value: bson.A{"u1"}}},
	)
	insert(t, flows, bson.D{{Key: "_id", Value: "f"}, {Key: "jobs", Value: bson.A{"u1", "u2", "u3", "u4"}}, {Key: "state", Value: "FAILED"}})
	return jobs, flows
}

// rerun is a rerun as jobflow-remote's: lock the job, then its flow, then
// every descendant; publish the new states in the releasing writes.
func rerun(jobsLk, flowsLk *mongolock.Locker, runs *atomic.Int32) func(ctx context.Context, g *mongolock.Group) error {
	set := func(state string) bson.D { return bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: state}}}} }
	return func(ctx context.Context, g *mongolock.Group) error {
		if runs != nil {
			runs.Add(1)
		}
		job, err := g.Lock(ctx, jobsLk, bson.D{{Key: "uuid", Value: "u1"}})
		if err != nil {
			return err
		}
		flow, err := g.Lock(ctx, flowsLk, bson.D{{Key: "jobs", Value: "u1"}})
		if err != nil {
			return err
		}
		for _, uuid := range []string{"u2", "u3", "u4"} {
			d, err := g.Lock(ctx, jobsLk, bson.D{{Key: "uuid", Value: uuid}})
			if err != nil {
				return err
			}
			if err := d.SetUpdateOnRelease(set("WAITING_RERUN")); err != nil {
				return err
			}
		}
		if err := flow.SetUpdateOnRelease(set("RUNNING")); err != nil {
			return err
		}
		return job.SetUpdateOnRelease(set("READY"))
	}
}

// checkRerun checks the states after a rerun that was done or not, and
// that no document is locked, but by heldBy.
func checkRerun(t *testing.T, jobs, flows *mongo.Collection, done bool, heldBy ...string) {
	t.Helper()
	if anyLocked(context.Background(), append(heldBy, "")[0], jobs, flows) {
		t.Error("a lock was left behind")
	}
	want := map[any]string{1: "READY", 2: "WAITING_RERUN", 3: "WAITING_RERUN", 4: "WAITING_RERUN", "f": "RUNNING"}
	if !done {
		want = map[any]string{1: "FAILED", 2: "WAITING", 3: "WAITING", 4: "WAITING", "f": "FAILED"}
	}
	for id, state := range want {
		coll := jobs
		if id == "f" {
			coll = flows
		}
		if got := fields(rawDoc(t, coll, id), "state"); got != "state="+state {
			t.Errorf("document %v: %s, want state %s", id, got, state)
		}
	}
}

// updateOrder returns coll seen through a client that records, in order,
// the collections that update commands write.
func updateOrder(t *testing.T, colls ...*mongo.Collection) ([]*mongo.Collection, func() []string) {
	t.Helper()
	var mu sync.Mutex
	var order []string
	mon := &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		if e.CommandName == "update" {
			mu.Lock()
			order = append(order, e.Command.Lookup("update").StringValue())
			mu.Unlock()
		}
	}}
	c, err := mongo.Connect(options.Client().ApplyURI(uri).SetMonitor(mon))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	out := make([]*mongo.Collection, len(colls))
	for i, coll := range colls {
		out[i] = c.Database(coll.Database().Name()).Collection(coll.Name())
	}
	return out, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), order...)
	}
}

// The job and its flow are published together, released in reverse order
// of acquisition: the flow first, the job last.
func TestDoAllJobAndFlow(t *testing.T) {
	ctx := testCtx(t)
	jobs, flows := jobflow(t)
	c, order := updateOrder(t, jobs, flows)
	jobsLk, flowsLk := mongolock.New(c[0]), mongolock.New(c[1])
	err := mongolock.DoAll(ctx, func(ctx context.Context, g *mongolock.Group) error {
		job, err := g.Lock(ctx, jobsLk, bson.D{{Key: "uuid", Value: "u1"}})
		if err != nil {
			return err
		}
		flow, err := g.Lock(ctx, flowsLk, bson.D{{Key: "jobs", Value: job.Document().Lookup("uuid").StringValue()}})
		if err != nil {
			return err
		}
		if err := flow.SetUpdateOnRelease(bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "RUNNING"}}}}); err != nil {
			return err
		}
		return job.SetUpdateOnRelease(bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "READY"}}}})
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := fields(rawDoc(t, jobs, 1), "state", mongolock.LockKey); got != "state=READY lock_id=<nil>" {
		t.Errorf("job: %s", got)
	}
	if got := fields(rawDoc(t, flows, "f"), "state", mongolock.LockKey); got != "state=RUNNING lock_id=<nil>" {
		t.Errorf("flow: %s", got)
	}
	if got, want := fmt.Sprint(order()), fmt.Sprint([]string{flows.Name(), jobs.Name()}); got != want {
		t.Errorf("releases wrote %v, want the flow, then the job: %v", got, want)
	}
}

func TestDoAllRerun(t *testing.T) {
	ctx := testCtx(t)
	jobs, flows := jobflow(t)
	if err := mongolock.DoAll(ctx, rerun(mongolock.New(jobs), mongolock.New(flows), nil)); err != nil {
		t.Fatal(err)
	}
	checkRerun(t, jobs, flows, true)
}

// A document the group already holds is the group's: Lock returns the
// group's lock on it, however it is asked for.
func TestGroupOwnDocuments(t *testing.T) {
	ctx := testCtx(t)
	jobs, flows := jobflow(t)
	jobsLk := mongolock.New(jobs, mongolock.WithSort(bson.D{{Key: "_id", Value: 1}}))
	other := mongolock.New(jobs) // another Locker on the same collection
	err := mongolock.DoAll(ctx, func(ctx context.Context, g *mongolock.Group) error {
		first, err := g.Lock(ctx, jobsLk, bson.D{{Key: "uuid", Value: "u1"}})
		if err != nil {
			return err
		}
		again, err := g.Lock(ctx, other, bson.D{{Key: "_id", Value: 1}})
		if err != nil || again != first {
			return fmt.Errorf("the same document again: %v, %v; want the group's lock", again, err)
		}
		// Breaking locks never breaks the group's own.
		broken, err := g.Lock(ctx, other, bson.D{{Key: "_id", Value: 1}}, mongolock.WithBreakLock())
		if err != nil || broken != first {
			return fmt.Errorf("the same document with WithBreakLock: %v, %v; want the group's lock", broken, err)
		}
		// Both children of u1: u2 is taken, then u4; then the group holds
		// every match, and the holder lookup names the first, u2.
		var kids []*mongolock.Lock
		for range 2 {
			k, err := g.Lock(ctx, jobsLk, bson.D{{Key: "parents", Value: "u1"}})
			if err != nil {
				return err
			}
			kids = append(kids, k)
		}
		if kids[0] == kids[1] {
			return errors.New("a free match was not taken")
		}
		k, err := g.Lock(ctx, jobsLk, bson.D{{Key: "parents", Value: "u1"}})
		if err != nil || (k != kids[0] && k != kids[1]) {
			return fmt.Errorf("every match held by the group: %v, %v; want one of the group's locks", k, err)
		}
		// A Python holder on u3: locked, whoever asks.
		if _, err := jobs.UpdateOne(ctx, bson.D{{Key: "uuid", Value: "u3"}}, bson.D{{Key: "$set", Value: bson.D{{Key: mongolock.LockKey, Value: "python"}, {Key: mongolock.LockTimeKey, Value: time.Now()}}}}); err != nil {
			return err
		}
		_, err = g.Lock(ctx, jobsLk, bson.D{{Key: "uuid", Value: "u3"}})
		var locked *mongolock.LockedDocumentError
		if !errors.As(err, &locked) || locked.LockID != "python" {
			return fmt.Errorf("a document held by another: %v; want the holder named", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = flows
}

// A descendant held by someone else: the group releases everything, waits,
// and runs again until the holder lets go.
func TestDoAllWaitsForLockedDescendant(t *testing.T) {
	ctx := testCtx(t)
	jobs, flows := jobflow(t)
	jobsLk, flowsLk := mongolock.New(jobs), mongolock.New(flows)
	held, err := jobsLk.TryAcquire(ctx, bson.D{{Key: "uuid", Value: "u3"}})
	if err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int32
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return mongolock.DoAll(gctx, rerun(jobsLk, flowsLk, &runs), mongolock.WithPollInterval(50*time.Millisecond))
	})
	g.Go(func() error {
		// While it waits for the locked descendant, the group holds nothing
		// (it runs fn again only once it has it).
		for runs.Load() < 1 || anyLocked(gctx, held.ID(), jobs, flows) {
			if err := gctx.Err(); err != nil {
				return err
			}
			time.Sleep(time.Millisecond)
		}
		for id, state := range map[int]string{1: "FAILED", 2: "WAITING"} {
			doc, err := jobs.FindOne(gctx, bson.D{{Key: "_id", Value: id}}).Raw()
			if err != nil {
				return err
			}
			if got := fields(doc, "state"); got != "state="+state {
				return fmt.Errorf("a run that met the lock published job %d: %s", id, got)
			}
		}
		return held.Release(gctx)
	})
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	checkRerun(t, jobs, flows, true)
}

// anyLocked reports whether a document of the collections holds a lock other
// than except.
func anyLocked(ctx context.Context, except string, colls ...*mongo.Collection) bool {
	for _, c := range colls {
		n, err := c.CountDocuments(ctx, bson.D{{Key: mongolock.LockKey, Value: bson.D{{Key: "$nin", Value: bson.A{nil, except}}}}})
		if err != nil || n > 0 {
			return true
		}
	}
	return false
}

// When the wait runs out, the error names the holder and matches
// context.DeadlineExceeded, and the group holds nothing.
func TestDoAllWaitRunsOut(t *testing.T) {
	ctx := testCtx(t)
	jobs, flows := jobflow(t)
	jobsLk, flowsLk := mongolock.New(jobs), mongolock.New(flows)
	held, err := jobsLk.TryAcquire(ctx, bson.D{{Key: "uuid", Value: "u4"}}, mongolock.WithLockID("other-runner"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release(ctx)
	var obs countingObserver
	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		opts []mongolock.Option
	}{
		{"max wait", func() (context.Context, context.CancelFunc) { return ctx, func() {} },
			[]mongolock.Option{mongolock.WithMaxWait(150 * time.Millisecond), mongolock.WithPollInterval(20 * time.Millisecond)}},
		{"single attempt", func() (context.Context, context.CancelFunc) { return ctx, func() {} }, []mongolock.Option{mongolock.WithMaxWait(0)}},
		{"ctx deadline", func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, time.Second) }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cctx, cancel := tc.ctx()
			defer cancel()
			err := mongolock.DoAll(cctx, func(ctx context.Context, g *mongolock.Group) error {
				err := rerun(jobsLk, mongolock.New(flows, mongolock.WithObserver(&obs)), nil)(ctx, g)
				var locked *mongolock.LockedDocumentError
				if errors.As(err, &locked) {
					return mongolock.JobLockedErrorFromDoc(locked.Document, "The rerun must wait.")
				}
				return err
			}, tc.opts...)
			var locked *mongolock.LockedDocumentError
			var jobErr *mongolock.JobLockedError
			if !errors.As(err, &locked) || locked.LockID != "other-runner" || !errors.As(err, &jobErr) ||
				!errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, mongolock.ErrLocked) {
				t.Errorf("DoAll returned %v; want the holder's *LockedDocumentError, fn's *JobLockedError and context.DeadlineExceeded", err)
			}
			checkRerun(t, jobs, flows, false, "other-runner")
		})
	}
	_ = flowsLk
}

// fn's error or panic releases every lock without updates.
func TestDoAllErrorAndPanic(t *testing.T) {
	ctx := testCtx(t)
	jobs, flows := jobflow(t)
	jobsLk, flowsLk := mongolock.New(jobs), mongolock.New(flows)
	failAfter := func(ctx context.Context, g *mongolock.Group) error {
		if err := rerun(jobsLk, flowsLk, nil)(ctx, g); err != nil {
			return err
		}
		return errBoom
	}
	if err := mongolock.DoAll(ctx, failAfter); !errors.Is(err, errBoom) {
		t.Errorf("DoAll returned %v, want fn's error", err)
	}
	checkRerun(t, jobs, flows, false)
	func() {
		defer func() {
			if p := recover(); p != "rerun panic" {
				t.Errorf("recovered %v, want fn's panic", p)
			}
		}()
		_ = mongolock.DoAll(ctx, func(ctx context.Context, g *mongolock.Group) error {
			if err := rerun(jobsLk, flowsLk, nil)(ctx, g); err != nil {
				return err
			}
			panic("rerun panic")
		})
		t.Error("DoAll returned after a panic")
	}()
	checkRerun(t, jobs, flows, false)
}

// A member whose lock was lost (an administrator unlocked it) reports
// ErrLockLost on release; the others are still released with their updates.
func TestDoAllReleaseGoesOn(t *testing.T) {
	ctx := testCtx(t)
	jobs, flows := jobflow(t)
	jobsLk, flowsLk := mongolock.New(jobs), mongolock.New(flows)
	err := mongolock.DoAll(ctx, func(ctx context.Context, g *mongolock.Group) error {
		if err := rerun(jobsLk, flowsLk, nil)(ctx, g); err != nil {
			return err
		}
		_, err := flowsLk.Unlock(ctx, nil)
		return err
	})
	if !errors.Is(err, mongolock.ErrLockLost) {
		t.Errorf("DoAll returned %v, want ErrLockLost", err)
	}
	if got := fields(rawDoc(t, flows, "f"), "state"); got != "state=FAILED" {
		t.Errorf("the lost flow was written: %s", got)
	}
	for id, state := range map[int]string{1: "READY", 2: "WAITING_RERUN", 3: "WAITING_RERUN", 4: "WAITING_RERUN"} {
		if got := fields(rawDoc(t, jobs, id), "state", mongolock.LockKey); got != "state="+state+" lock_id=<nil>" {
			t.Errorf("job %d: %s, want %s and unlocked", id, got, state)
		}
	}
}

// Leases of every member are kept alive while fn runs; a lost one cancels
// fn's context with cause ErrLockLost.
func TestDoAllLeases(t *testing.T) {
	ctx := testCtx(t)
	jobs, flows := jobflow(t)
	const ttl = 2 * time.Second
	leased := []mongolock.Option{mongolock.WithLease(ttl), mongolock.WithAutoRefresh(30 * time.Millisecond)}
	jobsLk, flowsLk := mongolock.New(jobs, leased...), mongolock.New(flows, leased...)
	thief := mongolock.New(jobs, mongolock.WithLease(ttl))
	err := mongolock.DoAll(ctx, func(ctx context.Context, g *mongolock.Group) error {
		if _, err := g.Lock(ctx, jobsLk, bson.D{{Key: "uuid", Value: "u1"}}); err != nil {
			return err
		}
		if _, err := g.Lock(ctx, flowsLk, bson.D{{Key: "jobs", Value: "u1"}}); err != nil {
			return err
		}
		time.Sleep(ttl + ttl/2)
		if _, err := thief.TryAcquire(ctx, bson.D{{Key: "uuid", Value: "u1"}}); !errors.Is(err, mongolock.ErrLocked) {
			return fmt.Errorf("a lease kept alive was taken over: %v", err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("fn's context ended: %v", context.Cause(ctx))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	err = mongolock.DoAll(ctx, func(ctx context.Context, g *mongolock.Group) error {
		if _, err := g.Lock(ctx, jobsLk, bson.D{{Key: "uuid", Value: "u1"}}); err != nil {
			return err
		}
		if _, err := g.Lock(ctx, flowsLk, bson.D{{Key: "jobs", Value: "u1"}}); err != nil {
			return err
		}
		if _, err := flowsLk.Unlock(ctx, nil); err != nil {
			return err
		}
		<-ctx.Done()
		return context.Cause(ctx)
	})
	if !errors.Is(err, mongolock.ErrLockLost) {
		t.Errorf("DoAll returned %v, want ErrLockLost", err)
	}
	checkRerun(t, jobs, flows, false)
}

func TestDoAllInvalid(t *testing.T) {
	ctx := testCtx(t)
	coll, sent := monitored(t, newColl(t))
	insert(t, coll, bson.D{{Key: "_id", Value: 1}})
	sent.Store(0)
	lk := mongolock.New(coll)
	ok := func(ctx context.Context, g *mongolock.Group) error { return nil }
	lockWith := func(lk *mongolock.Locker, filter any, opts ...mongolock.Option) func() error {
		return func() error {
			return mongolock.DoAll(ctx, func(ctx context.Context, g *mongolock.Group) error {
				_, err := g.Lock(ctx, lk, filter, opts...)
				return err
			})
		}
	}
	cases := []refusal{
		{"nil fn", func() error { return mongolock.DoAll(ctx, nil) }},
		{"negative max wait", func() error { return mongolock.DoAll(ctx, ok, mongolock.WithMaxWait(-time.Second)) }},
		{"zero poll interval", func() error { return mongolock.DoAll(ctx, ok, mongolock.WithPollInterval(0)) }},
		{"nil Locker", lockWith(nil, nil)},
		{"nil collection", lockWith(mongolock.New(nil), nil)},
		{"bad filter", lockWith(lk, "uuid=u1")},
		{"bad update", lockWith(lk, nil, mongolock.WithUpdate(bson.D{{Key: "state", Value: "x"}}))},
	}
	refused(t, sent, cases)
	var kept *mongolock.Group
	if err := mongolock.DoAll(ctx, func(ctx context.Context, g *mongolock.Group) error { kept = g; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := kept.Lock(ctx, lk, nil); !errors.Is(err, mongolock.ErrInvalidOption) {
		t.Errorf("Lock after DoAll returned: %v, want ErrInvalidOption", err)
	}
	if got := fields(rawDoc(t, coll, 1), mongolock.LockKey); got != "lock_id=<missing>" {
		t.Errorf("a Lock after DoAll returned locked the document: %s", got)
	}
}

// Groups that lock the same two documents in opposite orders, from many
// goroutines and processes, never deadlock and never overlap; each group's
// updates are published exactly once.

// crossed runs workers goroutines, half locking a then b, half b then a,
// rounds times each; every round records its span on each document and
// adds one to each document's count on release.
func crossed(ctx context.Context, as, bs *mongo.Collection, workers, rounds int, spans *spanLog) error {
	alk := mongolock.New(as)
	blk := mongolock.New(bs)
	order := [][2]*mongolock.Locker{{alk, blk}, {blk, alk}}
	g, ctx := errgroup.WithContext(ctx)
	for w := range workers {
		first, second := order[w%2][0], order[w%2][1]
		g.Go(func() error {
			for range rounds {
				err := mongolock.DoAll(ctx, func(ctx context.Context, g *mongolock.Group) error {
					l1, err := g.Lock(ctx, first, bson.D{{Key: "_id", Value: "x"}})
					if err != nil {
						return err
					}
					l2, err := g.Lock(ctx, second, bson.D{{Key: "_id", Value: "x"}})
					if err != nil {
						return err
					}
					start := time.Now().UnixNano()
					time.Sleep(time.Millisecond) // a holder that lasts, so that a second one would show
					spans.add(start, time.Now().UnixNano())
					inc := bson.D{{Key: "$inc", Value: bson.D{{Key: "count", Value: 1}}}}
					if err := l1.SetUpdateOnRelease(inc); err != nil {
						return err
					}
					return l2.SetUpdateOnRelease(inc)
				}, mongolock.WithPollInterval(20*time.Millisecond), mongolock.WithMaxWait(5*time.Minute))
				if err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// spanLog records when each group held both documents.
type spanLog struct {
	mu    sync.Mutex
	spans map[int][][2]int64
	out   func(start, end int64) // a child process prints them
}

func (s *spanLog) add(start, end int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.spans == nil {
		s.spans = map[int][][2]int64{}
	}
	s.spans[0] = append(s.spans[0], [2]int64{start, end})
	if s.out != nil {
		s.out(start, end)
	}
}

// seedCrossed makes the two collections: b's name is a's with "_b", so that
// child processes find it.
func seedCrossed(t testing.TB) (as, bs *mongo.Collection) {
	as = newColl(t)
	bs = as.Database().Collection(as.Name() + "_b")
	t.Cleanup(func() { _ = bs.Drop(context.Background()) })
	insert(t, as, bson.D{{Key: "_id", Value: "x"}, {Key: "name", Value: "a"}, {Key: "count", Value: 0}})
	insert(t, bs, bson.D{{Key: "_id", Value: "x"}, {Key: "name", Value: "b"}, {Key: "count", Value: 0}})
	return as, bs
}

func checkCrossed(t *testing.T, as, bs *mongo.Collection, spans map[int][][2]int64, want int) {
	t.Helper()
	if n := len(spans[0]); n != want {
		t.Errorf("%d groups held both documents, want %d", n, want)
	}
	if o := overlappingSpans(spans); o != 0 {
		t.Errorf("%d groups held the documents while another group did", o)
	}
	for _, c := range []*mongo.Collection{as, bs} {
		if got := fields(rawDoc(t, c, "x"), "count", mongolock.LockKey); got != fmt.Sprintf("count=%d lock_id=<nil>", want) {
			t.Errorf("%s: %s, want count=%d and unlocked", c.Name(), got, want)
		}
	}
}

func TestDoAllOppositeOrders(t *testing.T) {
	as, bs := seedCrossed(t)
	const workers, rounds = 8, 6
	var spans spanLog
	if err := crossed(testCtx(t), as, bs, workers, rounds, &spans); err != nil {
		t.Fatal(err)
	}
	checkCrossed(t, as, bs, spans.spans, workers*rounds)
}

func TestDoAllOppositeOrdersProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	as, bs := seedCrossed(t)
	const procs, workers, rounds = 3, 2, 6
	spans := map[int][][2]int64{}
	for _, r := range runChildren(t, "crossed", procs, as, workers, rounds) {
		for k, end := range r {
			var start int64
			if _, err := fmt.Sscanf(k, "span:%d", &start); err == nil {
				spans[0] = append(spans[0], [2]int64{start, end})
			}
		}
	}
	checkCrossed(t, as, bs, spans, procs*workers*rounds)
}

// crossedChild is the "crossed" role of a child process.
func crossedChild(ctx context.Context, as *mongo.Collection, workers, rounds int) int {
	var mu sync.Mutex
	spans := spanLog{out: func(start, end int64) {
		mu.Lock()
		fmt.Printf("span:%d=%d\n", start, end)
		mu.Unlock()
	}}
	if err := crossed(ctx, as, as.Database().Collection(as.Name()+"_b"), workers, rounds, &spans); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
