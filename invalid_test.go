package mongolock_test

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/mongolock/mongolock"
)

// Bad input is refused before anything is sent: each case returns an error
// matching ErrInvalidOption and leaves the collection as it was.
func TestInvalidInput(t *testing.T) {
	ctx := testCtx(t)
	coll, sent := monitored(t, newColl(t))
	seedStates(t, coll)
	before := snapshot(t, coll)
	sent.Store(0)
	ok := func(ctx context.Context, l *mongolock.Lock) error { return nil }

	lockUpdate := bson.D{{Key: "$set", Value: bson.D{{Key: mongolock.LockKey, Value: "mine"}}}}
	cases := []refusal{
		{"nil collection", func() error { _, err := mongolock.New(nil).TryAcquire(ctx, nil); return err }},
		{"filter is a string", func() error { _, err := mongolock.New(coll).TryAcquire(ctx, "state=READY"); return err }},
		{"filter is a list", func() error { _, err := mongolock.New(coll).Acquire(ctx, bson.A{1, 2}); return err }},
		{"update is a replacement", func() error {
			return mongolock.New(coll).Do(ctx, nil, ok, mongolock.WithUpdate(bson.D{{Key: "state", Value: "X"}}))
		}},
		{"update is a pipeline", func() error {
			_, err := mongolock.New(coll).TryAcquire(ctx, nil, mongolock.WithUpdate(bson.A{bson.D{{Key: "$set", Value: bson.D{{Key: "a", Value: 1}}}}}))
			return err
		}},
		{"update operator without a document", func() error {
			_, err := mongolock.New(coll).TryAcquire(ctx, nil, mongolock.WithUpdate(bson.D{{Key: "$set", Value: 1}}))
			return err
		}},
		{"update sets the lock id", func() error {
			_, err := mongolock.New(coll).TryAcquire(ctx, nil, mongolock.WithUpdate(lockUpdate))
			return err
		}},
		{"update unsets the lock time", func() error {
			_, err := mongolock.New(coll).TryAcquire(ctx, nil, mongolock.WithUpdate(bson.M{"$unset": bson.M{mongolock.LockTimeKey: ""}}))
			return err
		}},
		{"update renames onto the lock", func() error {
			_, err := mongolock.New(coll).TryAcquire(ctx, nil, mongolock.WithUpdate(bson.M{"$rename": bson.M{"n": mongolock.LockKey}}))
			return err
		}},
		{"update writes the custom lock field", func() error {
			_, err := mongolock.New(coll, mongolock.WithFields("owner", "since")).TryAcquire(ctx, nil,
				mongolock.WithUpdate(bson.M{"$set": bson.M{"since.year": 2024}}))
			return err
		}},
		{"update writes the fencing field", func() error {
			_, err := mongolock.New(coll, mongolock.WithFencing("")).TryAcquire(ctx, nil,
				mongolock.WithUpdate(bson.M{"$inc": bson.M{"lock_seq": 5}}))
			return err
		}},
		{"negative max wait", func() error {
			_, err := mongolock.New(coll).Acquire(ctx, nil, mongolock.WithMaxWait(-time.Second))
			return err
		}},
		{"zero poll interval", func() error {
			_, err := mongolock.New(coll, mongolock.WithPollInterval(0)).Acquire(ctx, nil)
			return err
		}},
		{"negative lease", func() error {
			_, err := mongolock.New(coll).TryAcquire(ctx, nil, mongolock.WithLease(-time.Minute))
			return err
		}},
		{"zero auto refresh", func() error { return mongolock.New(coll).Do(ctx, nil, ok, mongolock.WithAutoRefresh(0)) }},
		{"empty lock id", func() error { _, err := mongolock.New(coll).TryAcquire(ctx, nil, mongolock.WithLockID("")); return err }},
		{"same lock fields", func() error {
			_, err := mongolock.New(coll, mongolock.WithFields("a", "a")).TryAcquire(ctx, nil)
			return err
		}},
		{"lock field _id", func() error {
			_, err := mongolock.New(coll, mongolock.WithFields("_id", "t")).TryAcquire(ctx, nil)
			return err
		}},
		{"lock field $where", func() error {
			_, err := mongolock.New(coll, mongolock.WithFields("l", "$where")).TryAcquire(ctx, nil)
			return err
		}},
		{"lock fields that contain one another", func() error {
			_, err := mongolock.New(coll, mongolock.WithFields("o", "o.t")).TryAcquire(ctx, nil)
			return err
		}},
		{"fencing on the lock field", func() error {
			_, err := mongolock.New(coll, mongolock.WithFencing(mongolock.LockKey)).TryAcquire(ctx, nil)
			return err
		}},
		{"fencing inside the holder record", func() error {
			_, err := mongolock.New(coll, mongolock.WithFencing(mongolock.HolderKey+".seq")).TryAcquire(ctx, nil)
			return err
		}},
		{"lock field is the holder record", func() error {
			_, err := mongolock.New(coll, mongolock.WithFields(mongolock.HolderKey, "t")).TryAcquire(ctx, nil)
			return err
		}},
		{"lock field inside _id", func() error {
			_, err := mongolock.New(coll, mongolock.WithFields("_id.x", "t")).TryAcquire(ctx, nil)
			return err
		}},
		{"lock field with a $ part", func() error {
			_, err := mongolock.New(coll, mongolock.WithFields("a.$b", "t")).TryAcquire(ctx, nil)
			return err
		}},
		{"lock field with NUL", func() error {
			_, err := mongolock.New(coll, mongolock.WithFields("a\x00b", "t")).TryAcquire(ctx, nil)
			return err
		}},
		{"lock field with an empty part", func() error {
			_, err := mongolock.New(coll, mongolock.WithFields("a..b", "t")).TryAcquire(ctx, nil)
			return err
		}},
		{"nil find options", func() error {
			_, err := mongolock.New(coll).TryAcquire(ctx, nil, mongolock.WithFindOptions(nil))
			return err
		}},
		{"typed nil find options builder", func() error {
			var b *options.FindOneAndUpdateOptionsBuilder
			return mongolock.New(coll, mongolock.WithFindOptions(b)).Do(ctx, nil, ok)
		}},
		{"update writes the holder record", func() error {
			_, err := mongolock.New(coll).TryAcquire(ctx, nil, mongolock.WithUpdate(bson.M{"$set": bson.M{mongolock.HolderKey + ".pid": 1}}))
			return err
		}},
		{"sort is a string", func() error { _, err := mongolock.New(coll).TryAcquire(ctx, nil, mongolock.WithSort("n")); return err }},
		{"projection is a number", func() error {
			_, err := mongolock.New(coll).TryAcquire(ctx, nil, mongolock.WithProjection(3))
			return err
		}},
		{"nil fn", func() error { return mongolock.New(coll).Do(ctx, nil, nil) }},
		{"unlock filter is a string", func() error { _, err := mongolock.New(coll).Unlock(ctx, "all"); return err }},
		{"list filter is a number", func() error { _, err := mongolock.New(coll).ListLocked(ctx, 1); return err }},
	}
	refused(t, sent, cases)
	if after := snapshot(t, coll); !equalDocs(before, after) {
		t.Errorf("the collection changed:\nbefore %v\nafter  %v", before, after)
	}

	// Bad updates on release leave the lock held and the document unchanged.
	l, err := mongolock.New(coll).TryAcquire(ctx, bson.D{{Key: "_id", Value: 2}})
	if err != nil {
		t.Fatal(err)
	}
	held := snapshot(t, coll)
	sent.Store(0)
	refused(t, sent, []refusal{
		{"release update is a replacement", func() error { return l.ReleaseWithUpdate(ctx, bson.D{{Key: "state", Value: "DONE"}}) }},
		{"release update clears the lock", func() error { return l.ReleaseWithUpdate(ctx, lockUpdate) }},
		{"release pipeline sets the lock", func() error {
			return l.ReleaseWithUpdate(ctx, bson.A{bson.D{{Key: "$set", Value: bson.D{{Key: mongolock.LockKey, Value: nil}}}}})
		}},
		{"release pipeline stage with two keys", func() error {
			return l.ReleaseWithUpdate(ctx, bson.A{bson.D{{Key: "$set", Value: bson.D{}}, {Key: "$unset", Value: "a"}}})
		}},
		{"release update is a string", func() error { return l.ReleaseWithUpdate(ctx, "DONE") }},
		{"release pipeline unsets a number", func() error {
			return l.ReleaseWithUpdate(ctx, bson.A{bson.D{{Key: "$unset", Value: bson.A{"tmp", 3}}}})
		}},
		{"release pipeline unsets the holder record", func() error {
			return l.ReleaseWithUpdate(ctx, bson.A{bson.D{{Key: "$unset", Value: mongolock.HolderKey}}})
		}},
		{"set update on release with a pipeline that unsets a document", func() error {
			return l.SetUpdateOnRelease(mongo.Pipeline{{{Key: "$unset", Value: bson.A{bson.D{}}}}})
		}},
		{"set update on release writes the lock time", func() error {
			return l.SetUpdateOnRelease(bson.M{"$currentDate": bson.M{mongolock.LockTimeKey: true}})
		}},
	})
	if after := snapshot(t, coll); !equalDocs(held, after) {
		t.Errorf("the collection changed:\nbefore %v\nafter  %v", held, after)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatalf("the lock must still be held and releasable: %v", err)
	}
}

// refusal is a call that bad input must make fail before any I/O.
type refusal struct {
	name string
	call func() error
}

// refused checks that each call returns an error matching ErrInvalidOption
// and that none of them sent a command (sent counts them).
func refused(t *testing.T, sent *atomic.Int64, cases []refusal) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, mongolock.ErrInvalidOption) {
				t.Errorf("err = %v, want ErrInvalidOption", err)
			}
		})
	}
	if n := sent.Load(); n != 0 {
		t.Errorf("%d commands were sent for bad input", n)
	}
}

// monitored returns coll seen through a new client that counts the commands
// it sends.
func monitored(t *testing.T, coll *mongo.Collection) (*mongo.Collection, *atomic.Int64) {
	t.Helper()
	var sent atomic.Int64
	mon := &event.CommandMonitor{Started: func(context.Context, *event.CommandStartedEvent) { sent.Add(1) }}
	c, err := mongo.Connect(options.Client().ApplyURI(uri).SetMonitor(mon))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c.Database(coll.Database().Name()).Collection(coll.Name()), &sent
}

// snapshot reads the whole collection in _id order.
func snapshot(t *testing.T, coll *mongo.Collection) []bson.Raw {
	t.Helper()
	cur, err := coll.Find(context.Background(), bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		t.Fatal(err)
	}
	var docs []bson.Raw
	for cur.Next(context.Background()) {
		docs = append(docs, append(bson.Raw(nil), cur.Current...))
	}
	if err := cur.Err(); err != nil {
		t.Fatal(err)
	}
	return docs
}

func equalDocs(a, b []bson.Raw) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// Inputs that used to fail after I/O, and that are now supported wherever
// they are used: dotted lock and fencing fields are read and written as
// paths, and a projection that keeps nothing of its own returns the whole
// document.
func TestPathsAndProjectionsSupported(t *testing.T) {
	cases := []struct {
		name     string
		opts     []mongolock.Option
		timePath bool // FerretDB 1.x refuses $currentDate of a dotted path
	}{
		{"fencing at a path", []mongolock.Option{mongolock.WithFencing("meta.seq")}, false},
		{"lock id at a path", []mongolock.Option{mongolock.WithFields("lock.id", "lock_time"), mongolock.WithFencing("lock.seq")}, false},
		{"lock fields at paths", []mongolock.Option{mongolock.WithFields("lock.id", "lock.time"), mongolock.WithFencing("lock.seq")}, true},
		{"projection of only _id:0", []mongolock.Option{mongolock.WithProjection(bson.D{{Key: "_id", Value: 0}})}, false},
		{"projection of only lock fields", []mongolock.Option{mongolock.WithProjection(bson.D{{Key: mongolock.LockKey, Value: 1}, {Key: mongolock.LockTimeKey, Value: 1}})}, false},
		{"lease with lock fields at paths", []mongolock.Option{mongolock.WithFields("l.id", "l.t"), mongolock.WithLease(time.Minute)}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.timePath {
				requireRealMongoDB(t, "$currentDate of a dotted path")
			}
			ctx := testCtx(t)
			coll := newColl(t)
			job := jobDoc(t, coll)
			lk := mongolock.New(coll, tc.opts...)
			l, err := lk.TryAcquire(ctx, job)
			if err != nil {
				t.Fatalf("acquire: %v", err)
			}
			if _, err := lk.TryAcquire(ctx, job); !errors.Is(err, mongolock.ErrLocked) {
				t.Fatalf("second acquire: %v, want ErrLocked", err)
			}
			infos, err := lk.ListLocked(ctx, nil)
			if err != nil || len(infos) != 1 || infos[0].LockID != l.ID() || infos[0].Token != l.Token() {
				t.Fatalf("ListLocked = %+v, %v; want lock %s token %d", infos, err, l.ID(), l.Token())
			}
			if err := l.Refresh(ctx); err != nil {
				t.Fatalf("refresh: %v", err)
			}
			if err := l.ReleaseWithUpdate(ctx, bson.M{"$set": bson.M{"state": "DONE"}}); err != nil {
				t.Fatalf("release: %v", err)
			}
			if infos, err := lk.ListLocked(ctx, nil); err != nil || len(infos) != 0 {
				t.Fatalf("after release ListLocked = %+v, %v", infos, err)
			}
			if get(t, coll, "job")["state"] != "DONE" {
				t.Error("the update on release was not applied")
			}
		})
	}
}
