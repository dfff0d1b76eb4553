package mongolock_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

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

// A runner step as jobflow-remote's runner takes it: lock the next due job
// (skipping locked ones and those waiting for a retry), work, and publish
// the outcome in the write that releases the lock. A failed step is counted
// in remote.step_attempts and the job is not due again before
// remote.retry_time_limit (30s later, by default: 30s, 5m, 20m, then
// REMOTE_ERROR).
func ExampleLocker_Step() {
	ctx := context.Background()
	jobs := exampleCollection(
		bson.D{{Key: "_id", Value: "a"}, {Key: "state", Value: "CHECKED_OUT"}, {Key: "priority", Value: 5}},
		bson.D{{Key: "_id", Value: "b"}, {Key: "state", Value: "CHECKED_OUT"}, {Key: "priority", Value: 1}},
	)
	lk := mongolock.New(jobs, mongolock.WithSort(bson.D{{Key: "priority", Value: -1}}))
	upload := func(ctx context.Context, l *mongolock.Lock) error {
		if l.Document().Lookup("_id").StringValue() == "a" {
			return errors.New("upload failed: connection reset")
		}
		return l.SetUpdateOnRelease(bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "UPLOADED"}}}})
	}
	checkedOut := bson.D{{Key: "state", Value: "CHECKED_OUT"}}
	for {
		err := lk.Step(ctx, checkedOut, upload)
		if errors.Is(err, mongolock.ErrNotFound) {
			fmt.Println("nothing due")
			break
		}
		fmt.Println("step:", err)
	}
	for _, id := range []string{"a", "b"} {
		var job struct {
			State  string
			Remote struct {
				StepAttempts int       `bson:"step_attempts"`
				Error        string    `bson:"error"`
				RetryAt      time.Time `bson:"retry_time_limit"`
			}
		}
		_ = jobs.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&job)
		fmt.Printf("%s: %s, step_attempts %d, error %q, retry later: %v\n", id, job.State, job.Remote.StepAttempts, job.Remote.Error, !job.Remote.RetryAt.IsZero())
	}
	// Output:
	// step: upload failed: connection reset
	// step: <nil>
	// nothing due
	// a: CHECKED_OUT, step_attempts 1, error "upload failed: connection reset", retry later: true
	// b: UPLOADED, step_attempts 0, error "", retry later: false
}

// Workers drain a queue: a step that keeps failing is retried after each
// pause and given up into REMOTE_ERROR; Permanent gives up at once. Work
// returns when no job matches the filter any more.
func ExampleLocker_Work() {
	ctx := context.Background()
	jobs := exampleCollection(
		bson.D{{Key: "_id", Value: 1}, {Key: "state", Value: "READY"}},
		bson.D{{Key: "_id", Value: 2}, {Key: "state", Value: "READY"}, {Key: "input", Value: "broken"}},
		bson.D{{Key: "_id", Value: 3}, {Key: "state", Value: "READY"}, {Key: "flaky", Value: true}},
		bson.D{{Key: "_id", Value: 4}, {Key: "state", Value: "READY"}, {Key: "input", Value: "missing"}},
	)
	lk := mongolock.New(jobs, mongolock.WithRetry(mongolock.Retry{
		MaxAttempts: 2,
		Delays:      []time.Duration{10 * time.Millisecond, 20 * time.Millisecond},
	}))
	err := lk.Work(ctx, 3, bson.D{{Key: "state", Value: "READY"}}, func(ctx context.Context, l *mongolock.Lock) error {
		doc := l.Document()
		switch input, _ := doc.Lookup("input").StringValueOK(); {
		case input == "broken":
			return errors.New("the input is broken")
		case input == "missing":
			return mongolock.Permanent(errors.New("no input"))
		}
		flaky, _ := doc.Lookup("flaky").BooleanOK()
		if n, _ := doc.Lookup("remote", "step_attempts").AsInt64OK(); flaky && n == 0 {
			return errors.New("try again")
		}
		return l.SetUpdateOnRelease(bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "DONE"}}}})
	})
	fmt.Println("Work:", err)
	cur, _ := jobs.Find(ctx, bson.D{}, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
	for cur.Next(ctx) {
		var job struct {
			ID     int `bson:"_id"`
			State  string
			Remote struct {
				StepAttempts int    `bson:"step_attempts"`
				Error        string `bson:"error"`
			}
		}
		_ = cur.Decode(&job)
		fmt.Printf("job %d: %s, step_attempts %d, error %q\n", job.ID, job.State, job.Remote.StepAttempts, job.Remote.Error)
	}
	// Output:
	// Work: <nil>
	// job 1: DONE, step_attempts 0, error ""
	// job 2: REMOTE_ERROR, step_attempts 2, error "the input is broken"
	// job 3: DONE, step_attempts 0, error ""
	// job 4: REMOTE_ERROR, step_attempts 0, error "no input"
}

// A job and its flow updated together: both locked, or neither; both
// updates published in the writes that release the locks, the flow first
// and the job last. A locked flow makes DoAll release the job and wait.
func ExampleDoAll() {
	ctx := context.Background()
	jobs := exampleCollection(bson.D{{Key: "db_id", Value: "7"}, {Key: "uuid", Value: "u7"}, {Key: "state", Value: "COMPLETED"}})
	flows := exampleCollection(bson.D{{Key: "uuid", Value: "f1"}, {Key: "jobs", Value: bson.A{"u7"}}, {Key: "state", Value: "RUNNING"}})
	jobsLk, flowsLk := mongolock.New(jobs), mongolock.New(flows)

	err := mongolock.DoAll(ctx, func(ctx context.Context, g *mongolock.Group) error {
		job, err := g.Lock(ctx, jobsLk, bson.D{{Key: "db_id", Value: "7"}})
		if err != nil {
			return err // a locked job: DoAll waits and runs this again
		}
		flow, err := g.Lock(ctx, flowsLk, bson.D{{Key: "jobs", Value: job.Document().Lookup("uuid").StringValue()}})
		if err != nil {
			return err // a locked flow: the job is released too
		}
		if err := job.SetUpdateOnRelease(bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "READY"}}}}); err != nil {
			return err
		}
		return flow.SetUpdateOnRelease(bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "READY"}}}})
	}, mongolock.WithMaxWait(time.Minute))
	fmt.Println("DoAll:", err)
	var job, flow struct{ State string }
	_ = jobs.FindOne(ctx, bson.D{{Key: "db_id", Value: "7"}}).Decode(&job)
	_ = flows.FindOne(ctx, bson.D{{Key: "uuid", Value: "f1"}}).Decode(&flow)
	fmt.Println("job", job.State, "flow", flow.State)
	// Output:
	// DoAll: <nil>
	// job READY flow READY
}
