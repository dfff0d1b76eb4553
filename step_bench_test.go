package mongolock_test

import (
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

// Step and DoAll beside the same work done by hand with the driver, on the
// same server, interleaved in the same run (see bench_test.go). Besides
// time and allocations, each reports the round trips of one op, counted in
// an untimed pass through a monitored client (the monitor would add its own
// allocations to the timed runs).

// roundTrips runs f n times through a client that counts the commands it
// sends, and returns the count per run. colls are rebound to that client
// for f, which gets them in the same order.
func roundTrips(b *testing.B, n int, colls []*mongo.Collection, f func(colls []*mongo.Collection) func() error) float64 {
	b.Helper()
	var sent atomic.Int64
	mon := &event.CommandMonitor{Started: func(context.Context, *event.CommandStartedEvent) { sent.Add(1) }}
	c, err := mongo.Connect(options.Client().ApplyURI(uri).SetMonitor(mon))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Disconnect(context.Background())
	mine := make([]*mongo.Collection, len(colls))
	for i, coll := range colls {
		mine[i] = c.Database(coll.Database().Name()).Collection(coll.Name())
	}
	run := f(mine)
	if err := run(); err != nil { // connects, samples the server clock
		b.Fatal(err)
	}
	sent.Store(0)
	for range n {
		if err := run(); err != nil {
			b.Fatal(err)
		}
	}
	return float64(sent.Load()) / float64(n)
}

// benchWithRoundTrips reports the round trips of both sides, then times
// them as benchPair does.
func benchWithRoundTrips(b *testing.B, colls []*mongo.Collection, lib, bare func(colls []*mongo.Collection) func() error) {
	b.Helper()
	libRT := roundTrips(b, 50, colls, lib)
	bareRT := roundTrips(b, 50, colls, bare)
	benchPair(b, lib(colls), bare(colls))
	b.ReportMetric(libRT, "roundtrips/op")
	b.ReportMetric(bareRT, "driver-roundtrips/op")
}

const (
	attemptsPath  = "remote.step_attempts"
	notBeforePath = "remote.retry_time_limit"
	errorPath     = "remote.error"
)

// bareDue is what jobflow-remote's runner sends to lock a due job by hand:
// the filter narrowed to unlocked jobs whose retry time is not after now
// (the client's clock, as the runner does).
func bareDue(ctx context.Context, coll *mongo.Collection, filter bson.D) (bson.Raw, error) {
	f := append(append(bson.D{}, filter...),
		bson.E{Key: notBeforePath, Value: bson.D{{Key: "$not", Value: bson.D{{Key: "$gt", Value: time.Now()}}}}},
		bson.E{Key: mongolock.LockKey, Value: nil})
	update := bson.D{
		{Key: "$set", Value: bson.D{{Key: mongolock.LockKey, Value: "bare"}}},
		{Key: "$currentDate", Value: bson.D{{Key: mongolock.LockTimeKey, Value: true}}},
	}
	return coll.FindOneAndUpdate(ctx, f, update, options.FindOneAndUpdate().SetReturnDocument(options.After)).Raw()
}

// bareDueSorted is bareDue on a queue: the first due job in sort order;
// when every due job is locked it polls, as the runner's loop would.
func bareDueSorted(ctx context.Context, coll *mongo.Collection, filter, sort bson.D) (bson.Raw, error) {
	f := append(append(bson.D{}, filter...),
		bson.E{Key: notBeforePath, Value: bson.D{{Key: "$not", Value: bson.D{{Key: "$gt", Value: time.Now()}}}}},
		bson.E{Key: mongolock.LockKey, Value: nil})
	update := bson.D{
		{Key: "$set", Value: bson.D{{Key: mongolock.LockKey, Value: "bare"}}},
		{Key: "$currentDate", Value: bson.D{{Key: mongolock.LockTimeKey, Value: true}}},
	}
	o := options.FindOneAndUpdate().SetReturnDocument(options.After).SetSort(sort)
	for {
		doc, err := coll.FindOneAndUpdate(ctx, f, update, o).Raw()
		if !errors.Is(err, mongo.ErrNoDocuments) {
			return doc, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runnerReset is the bookkeeping reset of a step that succeeded.
var runnerReset = bson.D{{Key: attemptsPath, Value: 0}, {Key: notBeforePath, Value: nil}, {Key: errorPath, Value: nil}}

// bareStepRelease releases a job locked by bareDue with the runner's
// bookkeeping and the step's own update, in one write.
func bareStepRelease(ctx context.Context, coll *mongo.Collection, doc bson.Raw, set bson.D, inc bson.D) error {
	filter := bson.D{{Key: "_id", Value: doc.Lookup("_id")}, {Key: mongolock.LockKey, Value: "bare"}, {Key: mongolock.LockTimeKey, Value: doc.Lookup(mongolock.LockTimeKey)}}
	all := append(bson.D{{Key: mongolock.LockKey, Value: nil}, {Key: mongolock.LockTimeKey, Value: nil}}, set...)
	update := bson.D{{Key: "$set", Value: all}}
	if inc != nil {
		update = append(update, bson.E{Key: "$inc", Value: inc})
	}
	res, err := coll.UpdateOne(ctx, filter, update)
	if err == nil && res.MatchedCount != 1 {
		err = errors.New("bare release matched nothing")
	}
	return err
}

var incRuns = bson.D{{Key: "runs", Value: 1}}

// BenchmarkStep: a step that succeeds (Step with an update on release)
// against the runner's two writes by hand: lock the due job, release it with
// the step's update and the bookkeeping reset.
func BenchmarkStep(b *testing.B) {
	ctx := context.Background()
	coll := benchColl(b, bson.D{{Key: "_id", Value: "lib"}}, bson.D{{Key: "_id", Value: "bare"}})
	libFilter, bareFilter := bson.D{{Key: "_id", Value: "lib"}}, bson.D{{Key: "_id", Value: "bare"}}
	update := bson.D{{Key: "$inc", Value: incRuns}}
	reset := bson.D{{Key: attemptsPath, Value: 0}, {Key: notBeforePath, Value: nil}, {Key: errorPath, Value: nil}}
	benchWithRoundTrips(b, []*mongo.Collection{coll}, func(c []*mongo.Collection) func() error {
		lk := mongolock.New(c[0])
		fn := func(ctx context.Context, l *mongolock.Lock) error { return l.SetUpdateOnRelease(update) }
		return func() error { return lk.Step(ctx, libFilter, fn) }
	}, func(c []*mongo.Collection) func() error {
		return func() error {
			doc, err := bareDue(ctx, c[0], bareFilter)
			if err != nil {
				return err
			}
			return bareStepRelease(ctx, c[0], doc, reset, incRuns)
		}
	})
}

// BenchmarkStepRetry: a step that fails and is retried (the policy never
// gives up, and its pause is 0 so that the job is due again at once)
// against the runner's failure path by hand: count the attempt, set the
// retry time and the message.
func BenchmarkStepRetry(b *testing.B) {
	ctx := context.Background()
	coll := benchColl(b, bson.D{{Key: "_id", Value: "lib"}}, bson.D{{Key: "_id", Value: "bare"}})
	libFilter, bareFilter := bson.D{{Key: "_id", Value: "lib"}}, bson.D{{Key: "_id", Value: "bare"}}
	policy := mongolock.WithRetry(mongolock.Retry{MaxAttempts: 1 << 30, Delays: []time.Duration{0}})
	errFailed := errors.New("step failed")
	benchWithRoundTrips(b, []*mongo.Collection{coll}, func(c []*mongo.Collection) func() error {
		lk := mongolock.New(c[0], policy)
		fn := func(ctx context.Context, l *mongolock.Lock) error { return errFailed }
		return func() error {
			if err := lk.Step(ctx, libFilter, fn); !errors.Is(err, errFailed) {
				return err
			}
			return nil
		}
	}, func(c []*mongo.Collection) func() error {
		return func() error {
			doc, err := bareDue(ctx, c[0], bareFilter)
			if err != nil {
				return err
			}
			n, _ := doc.Lookup("remote", "step_attempts").AsInt64OK()
			set := bson.D{{Key: attemptsPath, Value: n + 1}, {Key: notBeforePath, Value: time.Now()}, {Key: errorPath, Value: errFailed.Error()}}
			return bareStepRelease(ctx, c[0], doc, set, nil)
		}
	})
}

// BenchmarkDoAll: a job and its flow, on two collections, locked together
// and released flow first, each with its update, against the same four
// writes by hand.
func BenchmarkDoAll(b *testing.B) {
	ctx := context.Background()
	jobs := benchColl(b, bson.D{{Key: "_id", Value: "lib"}, {Key: "uuid", Value: "lib"}}, bson.D{{Key: "_id", Value: "bare"}, {Key: "uuid", Value: "bare"}})
	flows := benchColl(b, bson.D{{Key: "_id", Value: "lib"}, {Key: "jobs", Value: bson.A{"lib"}}}, bson.D{{Key: "_id", Value: "bare"}, {Key: "jobs", Value: bson.A{"bare"}}})
	ready := bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "READY"}}}}
	benchWithRoundTrips(b, []*mongo.Collection{jobs, flows}, func(c []*mongo.Collection) func() error {
		jobsLk, flowsLk := mongolock.New(c[0]), mongolock.New(c[1])
		fn := func(ctx context.Context, g *mongolock.Group) error {
			job, err := g.Lock(ctx, jobsLk, bson.D{{Key: "uuid", Value: "lib"}})
			if err != nil {
				return err
			}
			flow, err := g.Lock(ctx, flowsLk, bson.D{{Key: "jobs", Value: "lib"}})
			if err != nil {
				return err
			}
			if err := flow.SetUpdateOnRelease(ready); err != nil {
				return err
			}
			return job.SetUpdateOnRelease(ready)
		}
		return func() error { return mongolock.DoAll(ctx, fn) }
	}, func(c []*mongo.Collection) func() error {
		return func() error {
			job, err := bareLock(ctx, c[0], bson.D{{Key: "uuid", Value: "bare"}})
			if err != nil {
				return err
			}
			flow, err := bareLock(ctx, c[1], bson.D{{Key: "jobs", Value: "bare"}})
			if err != nil {
				return err
			}
			if err := bareRelease(ctx, c[1], flow, bson.E{Key: "state", Value: "READY"}); err != nil {
				return err
			}
			return bareRelease(ctx, c[0], job, bson.E{Key: "state", Value: "READY"})
		}
	})
}
