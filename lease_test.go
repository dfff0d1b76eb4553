package mongolock_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/mongolock/mongolock"
)

const childTTL = "MONGOLOCK_TEST_TTL"

// holdChild takes a leased lock on document "job", says so, and holds it until
// it is killed.
func holdChild(ctx context.Context, coll *mongo.Collection) int {
	ttl, err := time.ParseDuration(os.Getenv(childTTL))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	l, err := mongolock.New(coll, mongolock.WithLease(ttl)).TryAcquire(ctx, bson.D{{Key: "_id", Value: "job"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("locked=%s\n", l.ID())
	<-ctx.Done()
	return 0
}

func jobDoc(t *testing.T, coll *mongo.Collection) bson.D {
	insert(t, coll, bson.D{{Key: "_id", Value: "job"}, {Key: "state", Value: "READY"}})
	return bson.D{{Key: "_id", Value: "job"}}
}

func TestLeaseTakeover(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	job := jobDoc(t, coll)
	const ttl = 300 * time.Millisecond
	lk := mongolock.New(coll, mongolock.WithLease(ttl), mongolock.WithPollInterval(50*time.Millisecond))

	old, err := lk.TryAcquire(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lk.TryAcquire(ctx, job); !errors.Is(err, mongolock.ErrLocked) {
		t.Fatalf("a fresh lease was taken: %v", err)
	}
	time.Sleep(ttl + 50*time.Millisecond)
	// The expired lock, not yet taken, can still be refreshed, which
	// renews the holder's promise.
	if err := old.Refresh(ctx); err != nil {
		t.Fatalf("refreshing an expired lock nobody took: %v", err)
	}
	if _, err := lk.TryAcquire(ctx, job); !errors.Is(err, mongolock.ErrLocked) {
		t.Fatalf("a refreshed lease was taken: %v", err)
	}
	// The lease is the holder's promise: once it has run out, an acquirer
	// without a lease of its own takes the document too.
	plain := mongolock.New(coll, mongolock.WithPollInterval(50*time.Millisecond))
	l, err := plain.Acquire(ctx, job, mongolock.WithMaxWait(10*time.Second))
	if err != nil {
		t.Fatalf("taking over an expired lease: %v", err)
	}
	if err := old.Release(ctx); !errors.Is(err, mongolock.ErrLockLost) {
		t.Errorf("old holder's release: %v, want ErrLockLost", err)
	}
	if got := get(t, coll, "job")[mongolock.LockKey]; got != l.ID() {
		t.Errorf("the old holder's release touched the new lock: lock_id = %v, want %s", got, l.ID())
	}
	if err := old.Refresh(ctx); !errors.Is(err, mongolock.ErrLockLost) {
		t.Errorf("old holder's refresh: %v, want ErrLockLost", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestRefreshKeepsLeaseAlive(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	job := jobDoc(t, coll)
	const ttl = 400 * time.Millisecond
	lk := mongolock.New(coll, mongolock.WithLease(ttl))
	l, err := lk.TryAcquire(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	first := l.Time()
	competitor := mongolock.New(coll, mongolock.WithLease(ttl))
	tick := time.NewTicker(ttl / 4)
	defer tick.Stop()
	for end := time.Now().Add(4 * ttl); time.Now().Before(end); <-tick.C {
		if err := l.Refresh(ctx); err != nil {
			t.Fatalf("refresh: %v", err)
		}
		if _, err := competitor.TryAcquire(ctx, job); !errors.Is(err, mongolock.ErrLocked) {
			t.Fatalf("a refreshed lease was taken: %v", err)
		}
	}
	if !l.Time().After(first) {
		t.Errorf("Time did not move with Refresh: %v then %v", first, l.Time())
	}
	if got := get(t, coll, "job")[mongolock.LockTimeKey].(bson.DateTime).Time(); !got.Equal(l.Time()) {
		t.Errorf("lock_time %v, Time %v", got, l.Time())
	}
	if err := l.Release(ctx); err != nil {
		t.Fatalf("release after refreshes: %v", err)
	}
}

func TestAutoRefreshInDo(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	job := jobDoc(t, coll)
	const ttl = 300 * time.Millisecond
	lk := mongolock.New(coll, mongolock.WithLease(ttl))
	competitor := mongolock.New(coll, mongolock.WithLease(ttl))
	err := lk.Do(ctx, job, func(ctx context.Context, l *mongolock.Lock) error {
		for end := time.Now().Add(4 * ttl); time.Now().Before(end); time.Sleep(ttl / 5) {
			if _, err := competitor.TryAcquire(ctx, job); !errors.Is(err, mongolock.ErrLocked) {
				return fmt.Errorf("lease taken while Do kept it alive: %v", err)
			}
		}
		return ctx.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestLostLockCancelsFn(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	job := jobDoc(t, coll)
	lk := mongolock.New(coll, mongolock.WithAutoRefresh(100*time.Millisecond))
	var lost <-chan struct{}
	err := lk.Do(ctx, job, func(fnCtx context.Context, l *mongolock.Lock) error {
		lost = l.Lost()
		if _, err := mongolock.New(coll).TryAcquire(ctx, job, mongolock.WithBreakLock()); err != nil {
			return err
		}
		select {
		case <-fnCtx.Done():
		case <-time.After(time.Second):
			return errors.New("fn's context not cancelled within a second of the lock being broken")
		}
		if cause := context.Cause(fnCtx); !errors.Is(cause, mongolock.ErrLockLost) {
			return fmt.Errorf("cause = %v, want ErrLockLost", cause)
		}
		return nil
	})
	if !errors.Is(err, mongolock.ErrLockLost) {
		t.Fatalf("Do = %v, want ErrLockLost", err)
	}
	select {
	case <-lost:
	default:
		t.Error("Lost() not closed")
	}
}

func TestFencingTokens(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	job := jobDoc(t, coll)
	lk := mongolock.New(coll, mongolock.WithFencing(""))
	var last int64
	for i := range 6 {
		opts := []mongolock.Option{}
		if i%2 == 1 {
			opts = append(opts, mongolock.WithBreakLock())
		}
		l, err := lk.TryAcquire(ctx, job, opts...)
		if err != nil {
			t.Fatal(err)
		}
		if l.Token() <= last {
			t.Fatalf("token %d after %d: tokens must strictly increase", l.Token(), last)
		}
		last = l.Token()
		infos, err := lk.ListLocked(ctx, nil)
		if err != nil || len(infos) != 1 || infos[0].Token != last {
			t.Fatalf("ListLocked = %+v, %v; want token %d", infos, err, last)
		}
		if i%2 == 0 {
			continue // held: the next acquisition breaks it
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if seq := get(t, coll, "job")["lock_seq"]; seq != last {
		t.Errorf("lock_seq = %v, want %d", seq, last)
	}
	if l, _ := mongolock.New(coll).TryAcquire(ctx, job); l == nil || l.Token() != 0 {
		t.Error("Token is 0 without WithFencing")
	}
}

// Two holders with the same custom lock id: the first one's late release
// must not free the second one's lock.
func TestSameCustomIDRelease(t *testing.T) {
	for _, fencing := range []bool{false, true} {
		t.Run(fmt.Sprintf("fencing=%v", fencing), func(t *testing.T) {
			ctx := testCtx(t)
			coll := newColl(t)
			job := jobDoc(t, coll)
			opts := []mongolock.Option{mongolock.WithLockID("worker-1")}
			if fencing {
				opts = append(opts, mongolock.WithFencing(""))
			}
			lk := mongolock.New(coll, opts...)
			first, err := lk.TryAcquire(ctx, job)
			if err != nil {
				t.Fatal(err)
			}
			if !fencing {
				time.Sleep(5 * time.Millisecond) // lock_time has millisecond resolution
			}
			second, err := lk.TryAcquire(ctx, job, mongolock.WithBreakLock())
			if err != nil {
				t.Fatal(err)
			}
			if err := first.Release(ctx); !errors.Is(err, mongolock.ErrLockLost) {
				t.Fatalf("first holder's release: %v, want ErrLockLost", err)
			}
			if err := first.ReleaseAndDelete(ctx); !errors.Is(err, mongolock.ErrLockLost) {
				t.Fatalf("first holder's delete: %v, want ErrLockLost", err)
			}
			doc := get(t, coll, "job")
			if doc[mongolock.LockKey] != "worker-1" || !doc[mongolock.LockTimeKey].(bson.DateTime).Time().Equal(second.Time()) {
				t.Fatalf("the second lock was touched: %v", doc)
			}
			if err := second.Release(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Lease decisions follow the server's clock: client clocks an hour off in
// either direction change nothing.
func TestClientClockSkew(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	job := jobDoc(t, coll)
	const ttl = 400 * time.Millisecond
	skewed := func(d time.Duration) *mongolock.Locker {
		lk := mongolock.New(coll, mongolock.WithLease(ttl), mongolock.WithPollInterval(50*time.Millisecond))
		mongolock.SetClock(lk, func() time.Time { return time.Now().Add(d) })
		return lk
	}
	ahead, behind := skewed(time.Hour), skewed(-time.Hour)

	held, err := behind.TryAcquire(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	// A clock an hour ahead would find the fresh lock an hour old.
	if _, err := ahead.TryAcquire(ctx, job); !errors.Is(err, mongolock.ErrLocked) {
		t.Fatalf("a client clock an hour ahead took a fresh lease: %v", err)
	}
	time.Sleep(ttl + 100*time.Millisecond)
	// A clock an hour behind would never find it stale.
	l, err := behind.TryAcquire(ctx, job)
	if err != nil {
		t.Fatalf("a client clock an hour behind did not take a stale lease: %v", err)
	}
	if err := held.Release(ctx); !errors.Is(err, mongolock.ErrLockLost) {
		t.Errorf("release of the taken-over lock: %v", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// A holder killed with SIGKILL never releases; with a lease, another process
// takes the document within the ttl and one poll interval.
func TestKilledHolderLeaseExpires(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a process")
	}
	ctx := testCtx(t)
	coll := newColl(t)
	job := jobDoc(t, coll)
	const ttl, poll = time.Second, 200 * time.Millisecond
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=hold", childURI+"="+uri, childColl+"="+coll.Name(), childTTL+"="+ttl.String())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// ctx's deadline kills the child, which ends this read.
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "locked=") {
		t.Fatalf("waiting for the holding child to say locked=: it said %q, %v (ctx: %v)", line, err, ctx.Err())
	}
	childID := strings.TrimSpace(strings.TrimPrefix(line, "locked="))
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killed := time.Now()

	lk := mongolock.New(coll, mongolock.WithLease(ttl), mongolock.WithPollInterval(poll))
	l, err := lk.Acquire(ctx, job, mongolock.WithMaxWait(ttl+poll))
	if err != nil {
		t.Fatalf("the killed holder's lease was not taken within ttl+poll: %v", err)
	}
	t.Logf("taken over %v after the kill (ttl %v, poll %v)", time.Since(killed).Round(time.Millisecond), ttl, poll)
	if l.ID() == childID {
		t.Fatal("got the child's lock id")
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// A waiter is handed the document by a release through the same Locker
// instead of sleeping out its back-off: its debug records say so.
func TestHandoffWakesWaiter(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	job := jobDoc(t, coll)
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var tries atomic.Int64
	lk := mongolock.New(coll, mongolock.WithPollInterval(time.Hour), mongolock.WithLogger(logger),
		mongolock.WithObserver(countContended{&tries}))
	held, err := lk.TryAcquire(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		l, err := lk.Acquire(ctx, job)
		if err == nil {
			err = l.Release(ctx)
		}
		errc <- err
	}()
	for tries.Load() < 3 { // the waiter has polled and backs off
		time.Sleep(time.Millisecond)
	}
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "lock handed over") {
		t.Errorf("the waiter did not get the document from the release:\n%s", logs)
	}
}

// countContended counts the tries that found the document locked.
type countContended struct{ n *atomic.Int64 }

func (c countContended) Acquired(string, time.Duration, time.Duration) {}
func (c countContended) Contended(string)                              { c.n.Add(1) }
func (c countContended) GaveUp(string, time.Duration)                  {}
func (c countContended) Released(string, time.Duration)                {}
func (c countContended) Lost(string, time.Duration)                    {}

// A caller that gives up while fn still runs does not let the lease run out
// under fn: the keep-alive goes on until fn returns.
func TestKeepAliveOutlivesCancel(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	job := jobDoc(t, coll)
	const ttl = 300 * time.Millisecond
	dctx, cancel := context.WithCancel(ctx)
	err := mongolock.New(coll, mongolock.WithLease(ttl)).Do(dctx, job, func(context.Context, *mongolock.Lock) error {
		cancel() // fn goes on without looking at its context
		for end := time.Now().Add(3 * ttl); time.Now().Before(end); time.Sleep(ttl / 5) {
			if _, err := mongolock.New(coll).TryAcquire(ctx, job); !errors.Is(err, mongolock.ErrLocked) {
				return fmt.Errorf("the lease ran out while fn ran: %v", err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
