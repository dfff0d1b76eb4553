package mongolock_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/mongolock/mongolock"
)

// Faults on the claim's write and reads and on ReleaseAll's bulk write.
// After the call (and the retry its documentation asks for), no lock of
// ours is left, no document is locked twice, and Lost has not closed for a
// lock still held.

// claimed checks that locks are exactly the documents locked in coll, each
// under its lock's id.
func claimed(t *testing.T, coll *mongo.Collection, locks []*mongolock.Lock) {
	t.Helper()
	n, err := coll.CountDocuments(context.Background(), bson.D{{Key: mongolock.LockKey, Value: bson.D{{Key: "$ne", Value: nil}}}})
	if err != nil || n != int64(len(locks)) {
		t.Fatalf("%d documents locked (%v), want %d", n, err, len(locks))
	}
	for _, l := range locks {
		notLost(t, l)
		if got := get(t, coll, l.Document().Lookup("_id").Int32())[mongolock.LockKey]; got != l.ID() {
			t.Fatalf("document %v: lock_id %v, want %s", l.Document().Lookup("_id"), got, l.ID())
		}
	}
}

// noLocks fails the test when a document of coll is left locked.
func noLocks(t *testing.T, coll *mongo.Collection) {
	t.Helper()
	n, err := coll.CountDocuments(context.Background(), bson.D{{Key: "$or", Value: bson.A{
		bson.D{{Key: mongolock.LockKey, Value: bson.D{{Key: "$ne", Value: nil}}}},
		bson.D{{Key: mongolock.HolderKey, Value: bson.D{{Key: "$ne", Value: nil}}}},
	}}})
	if err != nil || n != 0 {
		t.Fatalf("%d documents left locked (%v)", n, err)
	}
}

func TestFaultClaimWrite(t *testing.T) {
	for _, flt := range faults {
		t.Run(flt.name, func(t *testing.T) {
			ctx := testCtx(t)
			f := newFaulty(t)
			seedJobs(t, f.direct, 5)
			lk := mongolock.New(f.coll, mongolock.WithUpdate(bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "RUNNING"}}}}))
			var locks []*mongolock.Lock
			var err error
			f.hit(t, flt, "update", func() { locks, err = lk.TryAcquireMany(ctx, ready, 3) })
			if flt.name == "cut request" {
				networkError(t, "claim with its write cut", err)
				noLocks(t, f.direct)
				if locks, err = lk.TryAcquireMany(ctx, ready, 3); err != nil {
					t.Fatalf("retried claim: %v", err)
				}
			} else if err != nil {
				t.Fatalf("claim whose reply was lost: %v; want the locks, found by their lock id", err)
			}
			if len(locks) != 3 {
				t.Fatalf("%d locks, want 3", len(locks))
			}
			claimed(t, f.direct, locks)
			for _, l := range locks {
				if err := l.SetUpdateOnRelease(setDone); err != nil {
					t.Fatal(err)
				}
			}
			if err := mongolock.ReleaseAll(ctx, locks...); err != nil {
				t.Fatal(err)
			}
			noLocks(t, f.direct)
			if n, _ := f.direct.CountDocuments(ctx, bson.D{{Key: "state", Value: "DONE"}}); n != 3 {
				t.Errorf("%d documents DONE, want 3", n)
			}
		})
	}
}

// The claim's reads meet the fault: the candidates' read (the driver
// retries a read once; two faults in a row make the claim fail before
// anything is written, or meet its read-back), or the read-back after the
// write (asked again until it answers).
func TestFaultClaimReads(t *testing.T) {
	for _, flt := range faults {
		for _, which := range []string{"candidates once", "candidates twice", "read-back"} {
			t.Run(flt.name+"/"+which, func(t *testing.T) {
				ctx := testCtx(t)
				f := newFaulty(t)
				seedJobs(t, f.direct, 5)
				lk := mongolock.New(f.coll)
				switch which {
				case "candidates once":
					flt.inject(f.proxy, "find")
				case "candidates twice":
					if flt.name == "lost reply" {
						f.proxy.LoseReply("find", 2)
					} else {
						f.proxy.CutRequest("find", 2)
					}
				case "read-back":
					f.proxy.Delay("update", 300*time.Millisecond)
					before := f.proxy.Count("find")
					go func() { // once the candidates' read has passed, while the write waits
						for f.proxy.Count("find") == before {
							time.Sleep(time.Millisecond)
						}
						flt.inject(f.proxy, "find")
					}()
				}
				locks, err := lk.TryAcquireMany(ctx, ready, 3)
				if which == "candidates twice" && err != nil {
					networkError(t, "claim whose read failed twice", err)
					noLocks(t, f.direct)
					if locks, err = lk.TryAcquireMany(ctx, ready, 3); err != nil {
						t.Fatalf("retried claim: %v", err)
					}
				} else if err != nil {
					t.Fatalf("claim: %v", err)
				}
				if f.proxy.Armed("find") != 0 {
					t.Fatal("the fault was not met")
				}
				claimed(t, f.direct, locks)
				if err := mongolock.ReleaseAll(ctx, locks...); err != nil {
					t.Fatal(err)
				}
				noLocks(t, f.direct)
			})
		}
	}
}

// A partition holds the claim's write past the caller's deadline, then
// delivers it late or drops it: whatever the write locked is given back.
func TestFaultClaimHeldThenHealed(t *testing.T) {
	defer mongolock.SetFaultTimeouts(200*time.Millisecond, 20*time.Second)()
	for _, deliver := range []bool{true, false} {
		t.Run(fmt.Sprintf("deliver=%v", deliver), func(t *testing.T) {
			ctx := testCtx(t)
			f := newFaulty(t)
			seedJobs(t, f.direct, 5)
			lk := mongolock.New(f.coll)
			f.proxy.Delay("update", 400*time.Millisecond)
			before := f.proxy.Count("find")
			errc := make(chan error, 1)
			go func() {
				actx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
				defer cancel()
				_, err := lk.TryAcquireMany(actx, ready, 3)
				errc <- err
			}()
			for f.proxy.Count("find") == before {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond) // the candidates' reply has passed; the write waits
			f.proxy.Hold()
			for f.proxy.Held("update") == 0 {
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(400 * time.Millisecond) // the caller's deadline has passed
			f.proxy.Delay("update", 0)
			f.proxy.Heal(deliver)
			err := <-errc
			if err == nil || !errors.Is(err, context.DeadlineExceeded) && !mongo.IsTimeout(err) && !mongo.IsNetworkError(err) {
				t.Fatalf("claim: %v; want the caller's deadline", err)
			}
			noLocks(t, f.direct)
		})
	}
}

// ReleaseAll's bulk write meets the fault: it is sent again, and what
// every lock's release was to write is written once.
func TestFaultReleaseAll(t *testing.T) {
	for _, flt := range faults {
		for _, del := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/delete=%v", flt.name, del), func(t *testing.T) {
				ctx := testCtx(t)
				f := newFaulty(t)
				seedJobs(t, f.direct, 5)
				locks, err := mongolock.New(f.coll).TryAcquireMany(ctx, ready, 4)
				if err != nil {
					t.Fatal(err)
				}
				cmd := setOnRelease(t, locks, del)
				f.hit(t, flt, cmd, func() { err = mongolock.ReleaseAll(ctx, locks...) })
				if err != nil {
					t.Fatalf("ReleaseAll after a %s: %v", flt.name, err)
				}
				for _, l := range locks {
					notLost(t, l)
				}
				noLocks(t, f.direct)
				want, filter := int64(4), bson.D{{Key: "state", Value: "DONE"}}
				if del {
					want, filter = 1, bson.D{}
				}
				if n, _ := f.direct.CountDocuments(ctx, filter); n != want {
					t.Errorf("%d documents, want %d", n, want)
				}
			})
		}
	}
}

// A partition outlasts every copy of ReleaseAll's write: each lock's error
// says it may remain, the locks stay usable, and ReleaseAll after the
// partition (delivered late or dropped) leaves nothing locked.
func TestFaultReleaseAllHeld(t *testing.T) {
	defer mongolock.SetFaultTimeouts(100*time.Millisecond, time.Second)()
	for _, deliver := range []bool{true, false} {
		t.Run(fmt.Sprintf("deliver=%v", deliver), func(t *testing.T) {
			ctx := testCtx(t)
			f := newFaulty(t)
			seedJobs(t, f.direct, 3)
			locks, err := mongolock.New(f.coll).TryAcquireMany(ctx, ready, 3)
			if err != nil {
				t.Fatal(err)
			}
			f.proxy.Hold()
			err = mongolock.ReleaseAll(ctx, locks...)
			if err == nil || !mongo.IsTimeout(err) {
				t.Fatalf("ReleaseAll through a partition: %v", err)
			}
			f.proxy.Heal(deliver)
			for _, l := range locks {
				notLost(t, l)
			}
			if err := mongolock.ReleaseAll(ctx, locks...); err != nil {
				t.Fatalf("ReleaseAll after the partition: %v", err)
			}
			noLocks(t, f.direct)
		})
	}
}

// ReleaseAll with every copy's reply lost says the locks may remain; the
// caller's retry finds each document released by its own earlier copy (the
// release marker says so) and returns nil, as a retried Release does.
func TestFaultReleaseAllRetriedAfterLostReplies(t *testing.T) {
	for _, del := range []bool{false, true} {
		t.Run(fmt.Sprintf("delete=%v", del), func(t *testing.T) {
			ctx := testCtx(t)
			f := newFaulty(t)
			seedJobs(t, f.direct, 3)
			locks, err := mongolock.New(f.coll, mongolock.WithLease(time.Minute)).TryAcquireMany(ctx, ready, 3)
			if err != nil {
				t.Fatal(err)
			}
			cmd := setOnRelease(t, locks, del)
			f.proxy.LoseReply(cmd, 100) // every copy
			if err := mongolock.ReleaseAll(ctx, locks...); err == nil || !strings.Contains(err.Error(), "may remain") {
				t.Fatalf("ReleaseAll with every reply lost: %v; want the error that the locks may remain", err)
			}
			f.proxy.LoseReply(cmd, 0)
			if err := mongolock.ReleaseAll(ctx, locks...); err != nil {
				t.Fatalf("the caller's retry: %v; want nil, the first copy freed every lock", err)
			}
			for _, l := range locks {
				notLost(t, l)
			}
			noLocks(t, f.direct)
			want, filter := int64(3), bson.D{{Key: "state", Value: "DONE"}}
			if del {
				want, filter = 0, bson.D{}
			}
			if n, _ := f.direct.CountDocuments(ctx, filter); n != want {
				t.Errorf("%d documents, want %d", n, want)
			}
		})
	}
}

// One lock of a claim is broken and released by someone else while
// ReleaseAll's reply is lost: that lock alone reports ErrLockLost (its
// document does not carry our release marker) and closes Lost; the others
// are released with their update.
func TestFaultReleaseAllAfterBrokenLock(t *testing.T) {
	ctx := testCtx(t)
	f := newFaulty(t)
	seedJobs(t, f.direct, 3)
	locks, err := mongolock.New(f.coll).TryAcquireMany(ctx, ready, 3)
	if err != nil {
		t.Fatal(err)
	}
	broken := locks[1]
	b, err := mongolock.New(f.direct).TryAcquire(ctx, bson.D{{Key: "_id", Value: broken.Document().Lookup("_id")}}, mongolock.WithBreakLock())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	for _, l := range locks {
		if err := l.SetUpdateOnRelease(setDone); err != nil {
			t.Fatal(err)
		}
	}
	f.proxy.LoseReply("update", 1)
	err = mongolock.ReleaseAll(ctx, locks...)
	if !errors.Is(err, mongolock.ErrLockLost) || !strings.Contains(err.Error(), broken.ID()) {
		t.Fatalf("ReleaseAll with a broken lock, its reply lost: %v; want ErrLockLost for %s", err, broken.ID())
	}
	for i, l := range locks {
		select {
		case <-l.Lost():
			if l != broken {
				t.Errorf("lock %d: Lost() closed, but it was released", i)
			}
		default:
			if l == broken {
				t.Errorf("lock %d (broken): Lost() still open", i)
			}
		}
	}
	noLocks(t, f.direct)
	if n, _ := f.direct.CountDocuments(ctx, bson.D{{Key: "state", Value: "DONE"}}); n != 2 {
		t.Errorf("%d documents DONE, want the 2 whose locks were ours", n)
	}
}

// setOnRelease sets every lock to publish DONE on release, or with del to
// delete its document, and returns the command the release sends.
func setOnRelease(t *testing.T, locks []*mongolock.Lock, del bool) string {
	t.Helper()
	for _, l := range locks {
		set := func() error { return l.SetUpdateOnRelease(setDone) }
		if del {
			set = l.SetDeleteOnRelease
		}
		if err := set(); err != nil {
			t.Fatal(err)
		}
	}
	if del {
		return "delete"
	}
	return "update"
}
