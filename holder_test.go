package mongolock_test

import (
	"errors"
	"os"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/mongolock/mongolock"
)

// pythonLocked is a document as jobflow-remote's MongoLock leaves it while it
// holds the lock: lock_id a string, lock_time a naive UTC date, nothing else
// of ours. Its holder never refreshes.
func pythonLocked(id string, since time.Time) bson.D {
	return bson.D{
		{Key: "_id", Value: id},
		{Key: "state", Value: "READY"},
		{Key: mongolock.LockKey, Value: "1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed"},
		{Key: mongolock.LockTimeKey, Value: bson.NewDateTimeFromTime(since)},
	}
}

// Every acquisition writes the holder record in the same write; a release
// clears it with the lock fields; ListLocked reports it.
func TestHolderRecord(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	job := jobDoc(t, coll)
	host, _ := os.Hostname()
	for _, lease := range []time.Duration{0, time.Minute} {
		var opts []mongolock.Option
		if lease > 0 {
			opts = append(opts, mongolock.WithLease(lease))
		}
		lk := mongolock.New(coll, opts...)
		l, err := lk.TryAcquire(ctx, job)
		if err != nil {
			t.Fatal(err)
		}
		rec, ok := asMap(get(t, coll, "job")[mongolock.HolderKey])
		if !ok || rec["lock_id"] != l.ID() || rec["host"] != host || rec["pid"] != int64(os.Getpid()) {
			t.Fatalf("lease %v: holder record %v, want lock id %s, host %s, pid %d", lease, rec, l.ID(), host, os.Getpid())
		}
		exp, hasExp := rec["expires"].(bson.DateTime)
		if hasExp != (lease > 0) {
			t.Fatalf("lease %v: expires = %v", lease, rec["expires"])
		}
		infos, err := lk.ListLocked(ctx, nil)
		if err != nil || len(infos) != 1 {
			t.Fatalf("ListLocked = %v, %v", infos, err)
		}
		in := infos[0]
		if in.LockID != l.ID() || in.Host != host || in.PID != os.Getpid() || (hasExp && !in.Expires.Equal(exp.Time().UTC())) || hasExp == in.Expires.IsZero() {
			t.Errorf("lease %v: LockInfo = %+v", lease, in)
		}
		if lease > 0 {
			// The promise is server time + ttl, give or take the clock estimate.
			if d := in.Expires.Sub(l.Time()); d < lease-time.Second || d > lease+time.Second {
				t.Errorf("expires %v is %v after the lock time, want about %v", in.Expires, d, lease)
			}
			before := in.Expires
			time.Sleep(10 * time.Millisecond)
			if err := l.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			after, _ := asMap(get(t, coll, "job")[mongolock.HolderKey])
			if !after["expires"].(bson.DateTime).Time().After(before) {
				t.Errorf("Refresh did not move expires: %v then %v", before, after["expires"])
			}
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
		doc := get(t, coll, "job")
		if doc[mongolock.LockKey] != nil || doc[mongolock.LockTimeKey] != nil || doc[mongolock.HolderKey] != nil {
			t.Fatalf("release left %v", doc)
		}
	}
}

// A lock whose holder declared no lease is never stale, however old: not a
// Python MongoLock's, not a Go holder's without WithLease, not one whose
// holder record names another lock id (left behind when Python code broke
// or cleared a Go lock).
func TestUndeclaredLeaseNeverStale(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	old := time.Now().Add(-48 * time.Hour)
	expired := bson.NewDateTimeFromTime(time.Now().Add(-time.Hour))
	leftover := append(pythonLocked("leftover", old), bson.E{Key: mongolock.HolderKey, Value: bson.D{
		{Key: "lock_id", Value: "an-earlier-go-lock"}, {Key: "host", Value: "h"}, {Key: "pid", Value: int64(1)}, {Key: "expires", Value: expired},
	}})
	insert(t, coll, pythonLocked("python", old), leftover, bson.D{{Key: "_id", Value: "go"}, {Key: "state", Value: "READY"}})
	if _, err := mongolock.New(coll).TryAcquire(ctx, bson.D{{Key: "_id", Value: "go"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := coll.UpdateByID(ctx, "go", bson.D{{Key: "$set", Value: bson.D{{Key: mongolock.LockTimeKey, Value: bson.NewDateTimeFromTime(old)}}}}); err != nil {
		t.Fatal(err)
	}
	before := map[string]bson.M{}
	for _, id := range []string{"python", "leftover", "go"} {
		before[id] = get(t, coll, id)
	}
	all := snapshot(t, coll)
	for _, opts := range [][]mongolock.Option{nil, {mongolock.WithLease(time.Millisecond)}} {
		lk := mongolock.New(coll, opts...)
		for _, id := range []string{"python", "leftover", "go"} {
			_, err := lk.Acquire(ctx, bson.D{{Key: "_id", Value: id}}, mongolock.WithMaxWait(50*time.Millisecond))
			var locked *mongolock.LockedDocumentError
			if !errors.As(err, &locked) || locked.LockID != before[id][mongolock.LockKey] {
				t.Errorf("%s with %d options: %v, want the holder's *LockedDocumentError", id, len(opts), err)
			}
		}
		if _, err := lk.TryAcquire(ctx, bson.D{{Key: "state", Value: "READY"}}); !errors.Is(err, mongolock.ErrLocked) {
			t.Errorf("queue with %d options: %v, want ErrLocked", len(opts), err)
		}
	}
	if got := snapshot(t, coll); !equalDocs(got, all) {
		t.Errorf("documents changed:\n%v\nwere\n%v", got, all)
	}
	infos, err := mongolock.New(coll).ListLocked(ctx, bson.D{{Key: "_id", Value: "leftover"}})
	if err != nil || len(infos) != 1 || infos[0].Host != "" || !infos[0].Expires.IsZero() {
		t.Errorf("a leftover record describes the Python holder: %+v, %v", infos, err)
	}
}

// In a queue, an expired lease on any matching document is found, not only
// on the first in the sort; live locks and Python locks beside it are not
// touched.
func TestTakeoverInQueue(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	var docs []any
	for i := range 5 {
		docs = append(docs, bson.D{{Key: "_id", Value: i}, {Key: "state", Value: "READY"}, {Key: "priority", Value: i}})
	}
	insert(t, coll, docs...)
	lk := mongolock.New(coll, mongolock.WithSort(bson.D{{Key: "priority", Value: 1}}))
	short := 200 * time.Millisecond
	var held []*mongolock.Lock
	for i := range 5 {
		opts := []mongolock.Option{mongolock.WithLease(time.Hour)}
		if i == 3 {
			opts = []mongolock.Option{mongolock.WithLease(short)}
		}
		l, err := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: i}}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
	}
	time.Sleep(short + 50*time.Millisecond)
	l, err := lk.TryAcquire(ctx, bson.D{{Key: "state", Value: "READY"}})
	if err != nil {
		t.Fatalf("the expired lease in the queue was not taken: %v", err)
	}
	if id := l.Document().Lookup("_id").Int32(); id != 3 {
		t.Fatalf("took %d, want 3 (the only expired lease)", id)
	}
	if err := held[3].Refresh(ctx); !errors.Is(err, mongolock.ErrLockLost) {
		t.Errorf("the expired holder's refresh after the take-over: %v, want ErrLockLost", err)
	}
	select {
	case <-held[3].Lost():
	default:
		t.Error("Lost() not closed for the taken-over holder")
	}
	for i, h := range held {
		if i == 3 {
			continue
		}
		select {
		case <-h.Lost():
			t.Errorf("live lock %d lost", i)
		default:
		}
		if err := h.Release(ctx); err != nil {
			t.Errorf("live lock %d: %v", i, err)
		}
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// asMap reads an embedded document as get decodes it.
func asMap(v any) (bson.M, bool) {
	d, ok := v.(bson.D)
	if !ok {
		return nil, false
	}
	m := bson.M{}
	for _, e := range d {
		m[e.Key] = e.Value
	}
	return m, true
}
