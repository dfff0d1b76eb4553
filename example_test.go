package mongolock_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/mongolock/mongolock"
)

// The examples of the Python original's documentation, in Go.

// Lock a document chosen by its state, and read it while holding the lock.
func Example() {
	ctx := context.Background()
	coll := exampleCollection(bson.D{{Key: "_id", Value: 1}, {Key: "state", Value: "READY"}})

	lk := mongolock.New(coll)
	err := lk.Do(ctx, bson.D{{Key: "state", Value: "READY"}}, func(ctx context.Context, l *mongolock.Lock) error {
		fmt.Println(l.Document().Lookup("state").StringValue())
		return nil
	})
	if err != nil {
		fmt.Println(err)
	}
	// Output: READY
}

// When the only matching document is locked, nothing is acquired and the
// error says who holds it; when nothing matches, the error says so.
func ExampleLocker_TryAcquire() {
	ctx := context.Background()
	coll := exampleCollection(bson.D{{Key: "_id", Value: 1}, {Key: "state", Value: "READY"}})
	lk := mongolock.New(coll)

	held, _ := lk.TryAcquire(ctx, bson.D{{Key: "state", Value: "READY"}}, mongolock.WithLockID("worker-1"))
	_, err := lk.TryAcquire(ctx, bson.D{{Key: "state", Value: "READY"}})
	var locked *mongolock.LockedDocumentError
	if errors.As(err, &locked) {
		fmt.Println("locked by", locked.LockID)
	}
	_, err = lk.TryAcquire(ctx, bson.D{{Key: "state", Value: "DONE"}})
	fmt.Println(errors.Is(err, mongolock.ErrNotFound))
	_ = held.Release(ctx)
	// Output:
	// locked by worker-1
	// true
}

// Wait for a locked document: the Python original's sleep=10, max_wait=60,
// scaled down to 100ms and 600ms.
func ExampleLocker_Acquire() {
	ctx := context.Background()
	coll := exampleCollection(bson.D{{Key: "uuid", Value: "5b84228b-d019-47fe-b0a0-564b36aa85ed"}})
	lk := mongolock.New(coll, mongolock.WithPollInterval(100*time.Millisecond), mongolock.WithMaxWait(600*time.Millisecond))
	filter := bson.D{{Key: "uuid", Value: "5b84228b-d019-47fe-b0a0-564b36aa85ed"}}

	held, _ := lk.TryAcquire(ctx, filter)
	_, err := lk.Acquire(ctx, filter)
	fmt.Println(errors.Is(err, mongolock.ErrLocked), errors.Is(err, context.DeadlineExceeded))

	// Released while another waits: the waiter gets it.
	go func() {
		time.Sleep(200 * time.Millisecond)
		_ = held.Release(ctx)
	}()
	l, err := lk.Acquire(ctx, filter)
	fmt.Println(err)
	_ = l.Release(ctx)
	// Output:
	// true true
	// <nil>
}

// Expose the holder's whole document when the lock cannot be taken: the
// Python original's get_locked_doc=True and unavailable_document.
func ExampleWithLockedDocument() {
	ctx := context.Background()
	coll := exampleCollection(bson.D{{Key: "uuid", Value: "5b84228b-d019-47fe-b0a0-564b36aa85ed"}, {Key: "state", Value: "RUNNING"}})
	lk := mongolock.New(coll)
	filter := bson.D{{Key: "uuid", Value: "5b84228b-d019-47fe-b0a0-564b36aa85ed"}}

	held, _ := lk.TryAcquire(ctx, filter, mongolock.WithLockID("8d68404f-c77a-461b-859c-40bb0af1979f"))
	_, err := lk.TryAcquire(ctx, filter, mongolock.WithLockedDocument())
	var locked *mongolock.LockedDocumentError
	if errors.As(err, &locked) {
		fmt.Println(locked.Document.Lookup(mongolock.LockKey).StringValue())
		fmt.Println(locked.Document.Lookup("state").StringValue())
	}
	_ = held.Release(ctx)
	// Output:
	// 8d68404f-c77a-461b-859c-40bb0af1979f
	// RUNNING
}

// Set values in the document in the same write that releases the lock.
func ExampleLock_SetUpdateOnRelease() {
	ctx := context.Background()
	coll := exampleCollection(bson.D{{Key: "_id", Value: 1}, {Key: "state", Value: "READY"}})

	err := mongolock.New(coll).Do(ctx, bson.D{{Key: "state", Value: "READY"}}, func(ctx context.Context, l *mongolock.Lock) error {
		// Perform some operations based on the job...
		return l.SetUpdateOnRelease(bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "CHECKED_OUT"}}}})
	})
	if err != nil {
		fmt.Println(err)
	}
	var doc struct{ State string }
	_ = coll.FindOne(ctx, bson.D{{Key: "_id", Value: 1}}).Decode(&doc)
	fmt.Println(doc.State)
	// Output: CHECKED_OUT
}

// Delete the locked document upon release.
func ExampleLock_SetDeleteOnRelease() {
	ctx := context.Background()
	coll := exampleCollection(bson.D{{Key: "_id", Value: 1}, {Key: "state", Value: "READY"}})

	err := mongolock.New(coll).Do(ctx, bson.D{{Key: "state", Value: "READY"}}, func(ctx context.Context, l *mongolock.Lock) error {
		// decide if the document should be deleted
		return l.SetDeleteOnRelease()
	})
	if err != nil {
		fmt.Println(err)
	}
	n, _ := coll.CountDocuments(ctx, bson.D{})
	fmt.Println(n)
	// Output: 0
}

// A worker that takes jobs by priority and publishes DONE on release, until
// no READY job is left.
func ExampleLocker_Do() {
	ctx := context.Background()
	coll := exampleCollection(
		bson.D{{Key: "_id", Value: "a"}, {Key: "state", Value: "READY"}, {Key: "priority", Value: 1}},
		bson.D{{Key: "_id", Value: "b"}, {Key: "state", Value: "READY"}, {Key: "priority", Value: 5}},
		bson.D{{Key: "_id", Value: "c"}, {Key: "state", Value: "READY"}, {Key: "priority", Value: 3}},
	)
	lk := mongolock.New(coll, mongolock.WithSort(bson.D{{Key: "priority", Value: -1}}))
	for {
		err := lk.Do(ctx, bson.D{{Key: "state", Value: "READY"}}, func(ctx context.Context, l *mongolock.Lock) error {
			fmt.Println("running", l.Document().Lookup("_id").StringValue())
			return l.SetUpdateOnRelease(bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "DONE"}}}})
		})
		if errors.Is(err, mongolock.ErrNotFound) {
			break
		}
		if err != nil {
			fmt.Println(err)
			return
		}
	}
	// Output:
	// running b
	// running c
	// running a
}

// Build jobflow-remote's error for a locked Job document.
func ExampleJobLockedErrorFromDoc() {
	doc, _ := bson.Marshal(bson.D{
		{Key: "db_id", Value: "42"},
		{Key: mongolock.LockKey, Value: "worker-1"},
		{Key: mongolock.LockTimeKey, Value: bson.NewDateTimeFromTime(time.Date(2024, 5, 1, 12, 30, 0, 0, time.UTC))},
	})
	fmt.Println(mongolock.JobLockedErrorFromDoc(doc, "Try again later."))
	// Output: Job with db_id 42 is locked with lock_id worker-1 since 2024-05-01T12:30:00 UTC. Try again later.
}
