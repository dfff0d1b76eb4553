package mongolock_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/mongolock/mongolock"
)

// The scenarios of the Python original's tests, in Go.

func seedStates(t *testing.T, coll *mongo.Collection) {
	insert(t, coll,
		bson.D{{Key: "_id", Value: 1}, {Key: "state", Value: "READY"}, {Key: "n", Value: 1}},
		bson.D{{Key: "_id", Value: 2}, {Key: "state", Value: "WAITING"}, {Key: "n", Value: 2}},
		bson.D{{Key: "_id", Value: 3}, {Key: "state", Value: "WAITING"}, {Key: "n", Value: 3}},
	)
}

func TestAcquireAndRelease(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	seedStates(t, coll)
	lk := mongolock.New(coll)

	l, err := lk.TryAcquire(ctx, bson.D{{Key: "state", Value: "READY"}})
	if err != nil {
		t.Fatal(err)
	}
	doc := get(t, coll, 1)
	if doc[mongolock.LockKey] != l.ID() || l.ID() == "" {
		t.Errorf("lock_id in the document = %v, lock's ID = %q", doc[mongolock.LockKey], l.ID())
	}
	lockTime, ok := doc[mongolock.LockTimeKey].(bson.DateTime)
	if !ok || !lockTime.Time().Equal(l.Time()) {
		t.Errorf("lock_time in the document = %v, lock's Time = %v", doc[mongolock.LockTimeKey], l.Time())
	}
	if got := l.Document().Lookup("state").StringValue(); got != "READY" {
		t.Errorf("Document state = %q", got)
	}
	for _, id := range []int{2, 3} {
		if d := get(t, coll, id); d[mongolock.LockKey] != nil || d[mongolock.LockTimeKey] != nil {
			t.Errorf("document %d was touched: %v", id, d)
		}
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	doc = get(t, coll, 1)
	// Released as the Python original does: both fields null, present.
	if v, has := doc[mongolock.LockKey]; !has || v != nil {
		t.Errorf("after release lock_id = %v (present: %v), want null", v, has)
	}
	if v, has := doc[mongolock.LockTimeKey]; !has || v != nil {
		t.Errorf("after release lock_time = %v (present: %v), want null", v, has)
	}
	if err := l.Release(ctx); !errors.Is(err, mongolock.ErrLockLost) {
		t.Errorf("second release: %v, want ErrLockLost", err)
	}
	if _, err := lk.TryAcquire(ctx, bson.D{{Key: "state", Value: "READY"}}); err != nil {
		t.Errorf("taking the released document again: %v", err)
	}
}

func TestAlreadyLocked(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	seedStates(t, coll)
	lk := mongolock.New(coll)
	held, err := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: 1}})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("plain", func(t *testing.T) {
		_, err := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: 1}})
		var locked *mongolock.LockedDocumentError
		if !errors.As(err, &locked) || !errors.Is(err, mongolock.ErrLocked) {
			t.Fatalf("err = %v, want a *LockedDocumentError", err)
		}
		if locked.LockID != held.ID() || !locked.LockTime.Equal(held.Time()) {
			t.Errorf("holder = %q since %v, want %q since %v", locked.LockID, locked.LockTime, held.ID(), held.Time())
		}
		if _, err := locked.Document.LookupErr("state"); err == nil {
			t.Errorf("without WithLockedDocument the holder's document carries only _id and the lock: %v", locked.Document)
		}
		if locked.Document.Lookup("_id").Int32() != 1 {
			t.Errorf("holder document = %v", locked.Document)
		}
	})
	t.Run("with locked document", func(t *testing.T) {
		_, err := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: 1}}, mongolock.WithLockedDocument())
		var locked *mongolock.LockedDocumentError
		if !errors.As(err, &locked) {
			t.Fatalf("err = %v, want a *LockedDocumentError", err)
		}
		if locked.Document.Lookup("state").StringValue() != "READY" || locked.Document.Lookup(mongolock.LockKey).StringValue() != held.ID() {
			t.Errorf("holder's whole document expected, got %v", locked.Document)
		}
	})
	t.Run("not found is not locked", func(t *testing.T) {
		_, err := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: 99}})
		if !errors.Is(err, mongolock.ErrNotFound) || errors.Is(err, mongolock.ErrLocked) {
			t.Errorf("err = %v, want ErrNotFound", err)
		}
	})
	t.Run("another match is free", func(t *testing.T) {
		l, err := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: bson.A{1, 2}}}}})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Release(ctx)
		if id := l.Document().Lookup("_id").Int32(); id != 2 {
			t.Errorf("locked document %d, want the free one, 2", id)
		}
	})
}

func TestMaxWait(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	seedStates(t, coll)
	lk := mongolock.New(coll, mongolock.WithPollInterval(20*time.Millisecond))
	held, err := lk.Acquire(ctx, bson.D{{Key: "_id", Value: 1}})
	if err != nil {
		t.Fatal(err)
	}

	_, err = lk.Acquire(ctx, bson.D{{Key: "_id", Value: 1}}, mongolock.WithMaxWait(100*time.Millisecond))
	var locked *mongolock.LockedDocumentError
	if !errors.As(err, &locked) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("short wait: err = %v, want the holder and context.DeadlineExceeded", err)
	}
	if locked.LockID != held.ID() {
		t.Errorf("holder %q, want %q", locked.LockID, held.ID())
	}

	// A second holder in another goroutine releases while we wait longer.
	release := make(chan error, 1)
	go func() {
		time.Sleep(200 * time.Millisecond)
		release <- held.Release(context.Background())
	}()
	l, err := lk.Acquire(ctx, bson.D{{Key: "_id", Value: 1}}, mongolock.WithMaxWait(30*time.Second))
	if err != nil {
		t.Fatalf("long wait: %v", err)
	}
	if err := <-release; err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}

	// The context's deadline bounds the wait too.
	held, _ = lk.Acquire(ctx, bson.D{{Key: "_id", Value: 1}})
	short, cancel := context.WithTimeout(ctx, 80*time.Millisecond)
	defer cancel()
	if _, err := lk.Acquire(short, bson.D{{Key: "_id", Value: 1}}); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, mongolock.ErrLocked) {
		t.Errorf("ctx deadline: err = %v", err)
	}
	// A wait ends at once when nothing matches.
	if _, err := lk.Acquire(ctx, bson.D{{Key: "_id", Value: 42}}); !errors.Is(err, mongolock.ErrNotFound) {
		t.Errorf("no match: err = %v, want ErrNotFound", err)
	}
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestBreakLock(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	seedStates(t, coll)
	lk := mongolock.New(coll)
	old, err := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: 1}})
	if err != nil {
		t.Fatal(err)
	}
	broke, err := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: 1}}, mongolock.WithBreakLock())
	if err != nil {
		t.Fatalf("breaking the lock: %v", err)
	}
	if broke.ID() == old.ID() {
		t.Fatal("the breaker got the old lock id")
	}
	if err := old.Release(ctx); !errors.Is(err, mongolock.ErrLockLost) {
		t.Errorf("old holder's release: %v, want ErrLockLost", err)
	}
	select {
	case <-old.Lost():
	default:
		t.Error("Lost() not closed after a release found the lock gone")
	}
	if got := get(t, coll, 1)[mongolock.LockKey]; got != broke.ID() {
		t.Errorf("the old holder's release changed the lock: lock_id = %v, want %q", got, broke.ID())
	}
	if err := broke.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: 42}}, mongolock.WithBreakLock()); !errors.Is(err, mongolock.ErrNotFound) {
		t.Errorf("breaking a lock on nothing: %v, want ErrNotFound", err)
	}
}

func TestUpdateOnAcquire(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	seedStates(t, coll)
	lk := mongolock.New(coll)
	l, err := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: 1}},
		mongolock.WithUpdate(bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "RUNNING"}}}, {Key: "$inc", Value: bson.D{{Key: "n", Value: 10}}}}))
	if err != nil {
		t.Fatal(err)
	}
	if s := l.Document().Lookup("state").StringValue(); s != "RUNNING" {
		t.Errorf("Document is the document after the update; state = %q", s)
	}
	if n := l.Document().Lookup("n").Int32(); n != 11 {
		t.Errorf("n = %d, want 11", n)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestUpdateOnRelease(t *testing.T) {
	cases := []struct {
		name   string
		update bson.D
		want   bson.M
	}{
		{"one field", bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "CHECKED_OUT"}}}}, bson.M{"state": "CHECKED_OUT"}},
		{"several fields", bson.D{
			{Key: "$set", Value: bson.D{{Key: "state", Value: "DONE"}, {Key: "result", Value: "ok"}}},
			{Key: "$inc", Value: bson.D{{Key: "n", Value: int32(5)}}},
		}, bson.M{"state": "DONE", "result": "ok", "n": int32(6)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			coll := newColl(t)
			seedStates(t, coll)
			lk := mongolock.New(coll)
			err := lk.Do(ctx, bson.D{{Key: "state", Value: "READY"}}, func(ctx context.Context, l *mongolock.Lock) error {
				return l.SetUpdateOnRelease(tc.update)
			})
			if err != nil {
				t.Fatal(err)
			}
			doc := get(t, coll, 1)
			for k, v := range tc.want {
				if doc[k] != v {
					t.Errorf("%s = %v, want %v", k, doc[k], v)
				}
			}
			if doc[mongolock.LockKey] != nil {
				t.Errorf("lock not released: %v", doc)
			}
		})
	}
	t.Run("outside Do", func(t *testing.T) {
		ctx := testCtx(t)
		coll := newColl(t)
		seedStates(t, coll)
		l, err := mongolock.New(coll).TryAcquire(ctx, bson.D{{Key: "_id", Value: 2}})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.ReleaseWithUpdate(ctx, bson.M{"$set": bson.M{"state": "READY"}}); err != nil {
			t.Fatal(err)
		}
		if doc := get(t, coll, 2); doc["state"] != "READY" || doc[mongolock.LockKey] != nil {
			t.Errorf("document after ReleaseWithUpdate: %v", doc)
		}
	})
}

func TestReleaseActionsSkippedWhenFnFails(t *testing.T) {
	boom := errors.New("boom")
	for _, action := range []string{"update", "delete"} {
		t.Run(action, func(t *testing.T) {
			ctx := testCtx(t)
			coll := newColl(t)
			seedStates(t, coll)
			err := mongolock.New(coll).Do(ctx, bson.D{{Key: "_id", Value: 1}}, func(ctx context.Context, l *mongolock.Lock) error {
				var err error
				if action == "update" {
					err = l.SetUpdateOnRelease(bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "DONE"}}}})
				} else {
					err = l.SetDeleteOnRelease()
				}
				return errors.Join(err, boom)
			})
			if !errors.Is(err, boom) {
				t.Fatalf("Do returned %v, want fn's error", err)
			}
			doc := get(t, coll, 1)
			if doc["state"] != "READY" || doc[mongolock.LockKey] != nil {
				t.Errorf("after a failed fn the document should be unchanged and unlocked: %v", doc)
			}
		})
	}
}

func TestDeleteOnRelease(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	seedStates(t, coll)
	lk := mongolock.New(coll)
	err := lk.Do(ctx, bson.D{{Key: "_id", Value: 1}}, func(ctx context.Context, l *mongolock.Lock) error {
		return l.SetDeleteOnRelease()
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := coll.CountDocuments(ctx, bson.D{{Key: "_id", Value: 1}}); n != 0 {
		t.Error("document not deleted")
	}
	if n, _ := coll.CountDocuments(ctx, bson.D{}); n != 2 {
		t.Errorf("%d documents left, want 2", n)
	}

	// ReleaseAndDelete when the lock was broken deletes nothing.
	old, err := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: 2}}, mongolock.WithBreakLock()); err != nil {
		t.Fatal(err)
	}
	if err := old.ReleaseAndDelete(ctx); !errors.Is(err, mongolock.ErrLockLost) {
		t.Errorf("ReleaseAndDelete of a broken lock: %v, want ErrLockLost", err)
	}
	if n, _ := coll.CountDocuments(ctx, bson.D{{Key: "_id", Value: 2}}); n != 1 {
		t.Error("a broken lock's ReleaseAndDelete deleted the document")
	}
}

func TestUpdateAndDeleteExclusive(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	seedStates(t, coll)
	err := mongolock.New(coll).Do(ctx, bson.D{{Key: "_id", Value: 1}}, func(ctx context.Context, l *mongolock.Lock) error {
		if err := l.SetDeleteOnRelease(); err != nil {
			return err
		}
		if err := l.SetUpdateOnRelease(bson.D{{Key: "$set", Value: bson.D{{Key: "a", Value: 1}}}}); !errors.Is(err, mongolock.ErrInvalidOption) {
			t.Errorf("update after delete: %v, want ErrInvalidOption", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := coll.CountDocuments(ctx, bson.D{{Key: "_id", Value: 1}}); n != 0 {
		t.Error("the delete that was set first did not happen")
	}
	err = mongolock.New(coll).Do(ctx, bson.D{{Key: "_id", Value: 2}}, func(ctx context.Context, l *mongolock.Lock) error {
		if err := l.SetUpdateOnRelease(bson.D{{Key: "$set", Value: bson.D{{Key: "a", Value: 1}}}}); err != nil {
			return err
		}
		if err := l.SetDeleteOnRelease(); !errors.Is(err, mongolock.ErrInvalidOption) {
			t.Errorf("delete after update: %v, want ErrInvalidOption", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if doc := get(t, coll, 2); doc["a"] != int32(1) {
		t.Errorf("the update that was set first did not happen: %v", doc)
	}
}

func TestPanicInDoReleases(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	seedStates(t, coll)
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want the panic of fn", r)
			}
		}()
		_ = mongolock.New(coll).Do(ctx, bson.D{{Key: "_id", Value: 1}}, func(ctx context.Context, l *mongolock.Lock) error {
			if err := l.SetDeleteOnRelease(); err != nil {
				return err
			}
			panic("boom")
		})
		t.Error("Do returned instead of panicking")
	}()
	if doc := get(t, coll, 1); doc[mongolock.LockKey] != nil {
		t.Errorf("lock left after a panic: %v", doc)
	}
}

func TestReleaseOnCancelledContext(t *testing.T) {
	coll := newColl(t)
	seedStates(t, coll)
	ctx, cancel := context.WithCancel(context.Background())
	l, err := mongolock.New(coll).TryAcquire(ctx, bson.D{{Key: "_id", Value: 1}})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := l.Release(ctx); err != nil {
		t.Fatalf("release on a cancelled context: %v", err)
	}
	if doc := get(t, coll, 1); doc[mongolock.LockKey] != nil {
		t.Errorf("lock left: %v", doc)
	}

	// Do's release too, when fn sees its context cancelled.
	ctx, cancel = context.WithCancel(context.Background())
	err = mongolock.New(coll).Do(ctx, bson.D{{Key: "_id", Value: 1}}, func(ctx context.Context, l *mongolock.Lock) error {
		cancel()
		return l.SetUpdateOnRelease(bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "DONE"}}}})
	})
	if err != nil {
		t.Fatal(err)
	}
	if doc := get(t, coll, 1); doc[mongolock.LockKey] != nil || doc["state"] != "DONE" {
		t.Errorf("after Do with a cancelled context: %v", doc)
	}
}

func TestCustomFieldsAndLockID(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	seedStates(t, coll)
	lk := mongolock.New(coll, mongolock.WithFields("owner", "since"))
	l, err := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: 3}}, mongolock.WithLockID("worker-7"))
	if err != nil {
		t.Fatal(err)
	}
	doc := get(t, coll, 3)
	if doc["owner"] != "worker-7" || doc["since"] == nil || doc[mongolock.LockKey] != nil {
		t.Errorf("document = %v", doc)
	}
	if _, err := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: 3}}); !errors.Is(err, mongolock.ErrLocked) {
		t.Errorf("second acquire: %v, want ErrLocked", err)
	}
	// A locker with the default fields does not see the custom lock.
	other, err := mongolock.New(coll).TryAcquire(ctx, bson.D{{Key: "_id", Value: 3}})
	if err != nil {
		t.Fatalf("default fields: %v", err)
	}
	if err := other.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestSortAndFindOptions(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	seedStates(t, coll)
	lk := mongolock.New(coll)
	// WithSort wins over the sort of WithFindOptions.
	l, err := lk.TryAcquire(ctx, nil,
		mongolock.WithFindOptions(options.FindOneAndUpdate().SetSort(bson.D{{Key: "n", Value: 1}}).SetUpsert(true).SetReturnDocument(options.Before)),
		mongolock.WithSort(bson.D{{Key: "n", Value: -1}}))
	if err != nil {
		t.Fatal(err)
	}
	if id := l.Document().Lookup("_id").Int32(); id != 3 {
		t.Errorf("locked %d, want 3 (highest n)", id)
	}
	if l.Document().Lookup(mongolock.LockKey).StringValue() != l.ID() {
		t.Error("ReturnDocument is the lock's own (After), whatever the find options say")
	}
	// With the first choice held, the next in order is taken.
	l2, err := lk.TryAcquire(ctx, bson.M{}, mongolock.WithSort(bson.D{{Key: "n", Value: -1}}))
	if err != nil {
		t.Fatal(err)
	}
	if id := l2.Document().Lookup("_id").Int32(); id != 2 {
		t.Errorf("locked %d, want 2", id)
	}
	// Upsert stays false: a filter that matches nothing creates nothing.
	_, err = lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: 77}}, mongolock.WithFindOptions(options.FindOneAndUpdate().SetUpsert(true)))
	if !errors.Is(err, mongolock.ErrNotFound) {
		t.Errorf("err = %v, want ErrNotFound", err)
	}
	if n, _ := coll.CountDocuments(ctx, bson.D{}); n != 3 {
		t.Errorf("%d documents, want 3: upsert must stay off", n)
	}
	_ = l.Release(ctx)
	_ = l2.Release(ctx)
}

func TestProjection(t *testing.T) {
	requireRealMongoDB(t, "projection in findAndModify")
	ctx := testCtx(t)
	coll := newColl(t)
	seedStates(t, coll)
	lk := mongolock.New(coll)
	for _, p := range []any{bson.D{{Key: "state", Value: 1}, {Key: "_id", Value: 0}}, []string{"state"}} {
		l, err := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: 1}}, mongolock.WithProjection(p))
		if err != nil {
			t.Fatal(err)
		}
		d := l.Document()
		if _, err := d.LookupErr("n"); err == nil {
			t.Errorf("projection %v: n returned: %v", p, d)
		}
		for _, k := range []string{"_id", "state", mongolock.LockKey, mongolock.LockTimeKey} {
			if _, err := d.LookupErr(k); err != nil {
				t.Errorf("projection %v: %s missing: %v", p, k, d)
			}
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	l, err := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: 1}}, mongolock.WithProjection(bson.D{{Key: "n", Value: 0}, {Key: mongolock.LockKey, Value: 0}}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Document().LookupErr(mongolock.LockKey); err != nil {
		t.Errorf("exclusion projection: lock field excluded: %v", l.Document())
	}
	_ = l.Release(ctx)
}

// Issue 18 (seen-2): on a server that honours projection in findAndModify,
// a projection given through WithFindOptions that leaves out the lock
// fields must not make an acquire that the server granted fail in the
// client, leaving the lock with nobody.
func TestFindOptionsProjectionOnServer(t *testing.T) {
	requireRealMongoDB(t, "projection in findAndModify")
	ctx := testCtx(t)
	coll := newColl(t)
	seedStates(t, coll)
	lk := mongolock.New(coll)
	for _, p := range []bson.D{{{Key: "state", Value: 1}}, {{Key: mongolock.LockKey, Value: 0}, {Key: "n", Value: 0}}} {
		l, err := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: 1}}, mongolock.WithFindOptions(options.FindOneAndUpdate().SetProjection(p)))
		if err != nil {
			t.Fatalf("projection %v: %v", p, err)
		}
		d := l.Document()
		if _, err := d.LookupErr("n"); err == nil {
			t.Errorf("projection %v: n returned: %v", p, d)
		}
		for _, k := range []string{"_id", "state", mongolock.LockKey, mongolock.LockTimeKey} {
			if _, err := d.LookupErr(k); err != nil {
				t.Errorf("projection %v: %s missing: %v", p, k, d)
			}
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPipelineUpdateOnRelease(t *testing.T) {
	requireRealMongoDB(t, "pipeline updates")
	ctx := testCtx(t)
	coll := newColl(t)
	seedStates(t, coll)
	l, err := mongolock.New(coll).TryAcquire(ctx, bson.D{{Key: "_id", Value: 1}})
	if err != nil {
		t.Fatal(err)
	}
	pipe := mongo.Pipeline{{{Key: "$set", Value: bson.D{{Key: "m", Value: bson.D{{Key: "$multiply", Value: bson.A{"$n", 10}}}}}}}}
	if err := l.ReleaseWithUpdate(ctx, pipe); err != nil {
		t.Fatal(err)
	}
	if doc := get(t, coll, 1); doc["m"] != int32(10) || doc[mongolock.LockKey] != nil {
		t.Errorf("after a pipeline release: %v", doc)
	}
}

func TestUnlockAndListLocked(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	seedStates(t, coll)
	lk := mongolock.New(coll)
	a, _ := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: 1}})
	b, err := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: 2}})
	if err != nil {
		t.Fatal(err)
	}
	infos, err := lk.ListLocked(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 2 {
		t.Fatalf("ListLocked = %v, want 2 entries", infos)
	}
	seen := map[string]bool{}
	for _, in := range infos {
		seen[in.LockID] = true
		if in.LockTime.IsZero() || in.DocumentID == nil {
			t.Errorf("incomplete LockInfo %+v", in)
		}
	}
	if !seen[a.ID()] || !seen[b.ID()] {
		t.Errorf("ListLocked = %+v, want locks %s and %s", infos, a.ID(), b.ID())
	}
	n, err := lk.Unlock(ctx, bson.D{{Key: "_id", Value: 1}})
	if err != nil || n != 1 {
		t.Fatalf("Unlock = %d, %v; want 1", n, err)
	}
	if err := a.Release(ctx); !errors.Is(err, mongolock.ErrLockLost) {
		t.Errorf("release after Unlock: %v, want ErrLockLost", err)
	}
	if n, _ := lk.Unlock(ctx, nil); n != 1 {
		t.Errorf("Unlock(all) = %d, want 1", n)
	}
	if infos, _ := lk.ListLocked(ctx, nil); len(infos) != 0 {
		t.Errorf("after Unlock: %v", infos)
	}
}

// A wait of no time, or one that ends while others wait before it, still
// makes its one try: it takes a document that came free.
func TestMaxWaitZeroBehindWaiters(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	job := jobDoc(t, coll)
	lk := mongolock.New(coll, mongolock.WithPollInterval(time.Hour))
	holder, err := mongolock.New(coll).TryAcquire(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	var tries atomic.Int64
	waiting := make(chan error, 1)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { // the poller, which backs off for long
		_, err := lk.Acquire(wctx, job, mongolock.WithObserver(countContended{&tries}))
		waiting <- err
	}()
	for tries.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	if err := holder.Release(ctx); err != nil { // through another Locker: no hand-off
		t.Fatal(err)
	}
	l, err := lk.Acquire(ctx, job, mongolock.WithMaxWait(0))
	if err != nil {
		t.Fatalf("WithMaxWait(0) behind a waiter: %v; want the free document", err)
	}
	if _, err := lk.Acquire(ctx, job, mongolock.WithMaxWait(0)); !errors.Is(err, mongolock.ErrLocked) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WithMaxWait(0) on a held document: %v; want the holder and the deadline", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	stop()
	<-waiting
}

// Waiters behind a holder learn that nothing matches any more: at the
// try that a release through their Locker hands them when the holder
// deletes the document, and, when another client deletes it, at the poller's
// next look; every waiter of the group then returns ErrNotFound.
func TestWaitersSeeNotFound(t *testing.T) {
	for _, remote := range []bool{false, true} {
		t.Run(fmt.Sprintf("deleted by another client=%v", remote), func(t *testing.T) {
			ctx := testCtx(t)
			coll := newColl(t)
			job := jobDoc(t, coll)
			var tries atomic.Int64
			lk := mongolock.New(coll, mongolock.WithPollInterval(20*time.Millisecond), mongolock.WithObserver(countContended{&tries}))
			holder, err := lk.TryAcquire(ctx, job)
			if err != nil {
				t.Fatal(err)
			}
			const waiters = 4
			errc := make(chan error, waiters)
			for range waiters {
				go func() { _, err := lk.Acquire(ctx, job); errc <- err }()
			}
			for tries.Load() < 3 { // the poller has tried, and waits
				time.Sleep(time.Millisecond)
			}
			if remote {
				if _, err := coll.DeleteOne(ctx, job); err != nil {
					t.Fatal(err)
				}
			} else if err := holder.ReleaseAndDelete(ctx); err != nil {
				t.Fatal(err)
			}
			for range waiters {
				if err := <-errc; !errors.Is(err, mongolock.ErrNotFound) || errors.Is(err, mongolock.ErrLocked) {
					t.Errorf("waiter: %v, want ErrNotFound", err)
				}
			}
		})
	}
}
