package mongolock_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"strings"
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

// Every benchmark runs the library and the bare driver doing the same round
// trips, on the same server, interleaved in the same run. The library's cost
// is reported as ns/op, B/op and allocs/op; the driver's beside it as
// driver-ns/op, driver-B/op and driver-allocs/op; x-driver is the ratio of
// the times.

// cost accumulates the time and allocations of one side.
type cost struct {
	d             time.Duration
	allocs, bytes uint64
	before, after runtime.MemStats
	start         time.Time
}

func (c *cost) begin() {
	runtime.ReadMemStats(&c.before)
	c.start = time.Now()
}

func (c *cost) end() {
	c.d += time.Since(c.start)
	runtime.ReadMemStats(&c.after)
	c.allocs += c.after.Mallocs - c.before.Mallocs
	c.bytes += c.after.TotalAlloc - c.before.TotalAlloc
}

// report sets the benchmark's metrics from the two sides' costs over n ops.
func report(b *testing.B, lib, bare *cost, n int) {
	f := float64(n)
	b.ReportMetric(float64(lib.d.Nanoseconds())/f, "ns/op")
	b.ReportMetric(float64(lib.bytes)/f, "B/op")
	b.ReportMetric(float64(lib.allocs)/f, "allocs/op")
	b.ReportMetric(float64(bare.d.Nanoseconds())/f, "driver-ns/op")
	b.ReportMetric(float64(bare.bytes)/f, "driver-B/op")
	b.ReportMetric(float64(bare.allocs)/f, "driver-allocs/op")
	b.ReportMetric(float64(lib.d)/float64(bare.d), "x-driver")
}

// benchPair runs lib and bare b.N times each, alternating in chunks so that
// drift of the server or the machine hits both alike.
func benchPair(b *testing.B, lib, bare func() error) {
	const chunk = 16
	var l, d cost
	run := func(c *cost, f func() error, n int) {
		c.begin()
		for range n {
			if err := f(); err != nil {
				b.Fatal(err)
			}
		}
		c.end()
	}
	b.ResetTimer()
	for done := 0; done < b.N; done += chunk {
		n := min(chunk, b.N-done)
		run(&d, bare, n)
		run(&l, lib, n)
	}
	report(b, &l, &d, b.N)
}

// bareLock is what a lock costs without the library: the same conditional
// findOneAndUpdate, returning the document.
func bareLock(ctx context.Context, coll *mongo.Collection, filter bson.D, extra ...bson.E) (bson.Raw, error) {
	update := bson.D{
		{Key: "$set", Value: bson.D{{Key: mongolock.LockKey, Value: "bare"}}},
		{Key: "$currentDate", Value: bson.D{{Key: mongolock.LockTimeKey, Value: true}}},
	}
	f := append(append(bson.D{}, filter...), bson.E{Key: mongolock.LockKey, Value: nil})
	return coll.FindOneAndUpdate(ctx, f, update, options.FindOneAndUpdate().SetReturnDocument(options.After)).Raw()
}

// bareRelease clears the lock named by the document, setting extra fields in
// the same write.
func bareRelease(ctx context.Context, coll *mongo.Collection, doc bson.Raw, set ...bson.E) error {
	filter := bson.D{{Key: "_id", Value: doc.Lookup("_id")}, {Key: mongolock.LockKey, Value: "bare"}, {Key: mongolock.LockTimeKey, Value: doc.Lookup(mongolock.LockTimeKey)}}
	clear := append(bson.D{{Key: mongolock.LockKey, Value: nil}, {Key: mongolock.LockTimeKey, Value: nil}}, set...)
	res, err := coll.UpdateOne(ctx, filter, bson.D{{Key: "$set", Value: clear}})
	if err == nil && res.MatchedCount != 1 {
		err = errors.New("bare release matched nothing")
	}
	return err
}

func benchColl(b *testing.B, docs ...any) *mongo.Collection {
	coll := newColl(b)
	if len(docs) > 0 {
		insert(b, coll, docs...)
	}
	return coll
}

// BenchmarkUncontended: TryAcquire + Release of one document, against
// findOneAndUpdate + updateOne.
func BenchmarkUncontended(b *testing.B) {
	ctx := context.Background()
	coll := benchColl(b, bson.D{{Key: "_id", Value: "lib"}}, bson.D{{Key: "_id", Value: "bare"}})
	lk := mongolock.New(coll)
	libFilter, bareFilter := bson.D{{Key: "_id", Value: "lib"}}, bson.D{{Key: "_id", Value: "bare"}}
	benchPair(b, func() error {
		l, err := lk.TryAcquire(ctx, libFilter)
		if err != nil {
			return err
		}
		return l.Release(ctx)
	}, func() error {
		doc, err := bareLock(ctx, coll, bareFilter)
		if err != nil {
			return err
		}
		return bareRelease(ctx, coll, doc)
	})
}

// BenchmarkDoUpdateOnRelease: Do with an update on release, against the same
// two bare calls.
func BenchmarkDoUpdateOnRelease(b *testing.B) {
	ctx := context.Background()
	coll := benchColl(b, bson.D{{Key: "_id", Value: "lib"}}, bson.D{{Key: "_id", Value: "bare"}})
	lk := mongolock.New(coll)
	libFilter, bareFilter := bson.D{{Key: "_id", Value: "lib"}}, bson.D{{Key: "_id", Value: "bare"}}
	done := bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "DONE"}}}}
	fn := func(ctx context.Context, l *mongolock.Lock) error { return l.SetUpdateOnRelease(done) }
	benchPair(b, func() error {
		return lk.Do(ctx, libFilter, fn)
	}, func() error {
		doc, err := bareLock(ctx, coll, bareFilter)
		if err != nil {
			return err
		}
		return bareRelease(ctx, coll, doc, bson.E{Key: "state", Value: "DONE"})
	})
}

// BenchmarkQueue: 8 workers drain READY jobs, highest priority first,
// publishing DONE on release, from a collection of docs documents; the bare
// loop does the same round trips. Each op is one job. When a round has
// drained as many jobs as the collection holds, every job is made READY
// again (untimed), so that the collection keeps its size while the cost of
// a job is measured against it.
func BenchmarkQueue(b *testing.B) {
	const workers = 8
	for _, size := range []int{200, 2000, 20000} {
		b.Run(fmt.Sprintf("docs=%d", size), func(b *testing.B) {
			ctx := context.Background()
			libColl, bareColl := benchColl(b), benchColl(b)
			seedQueue(b, libColl, size)
			seedQueue(b, bareColl, size)
			sort := bson.D{{Key: "priority", Value: -1}}
			ready := bson.D{{Key: "state", Value: "READY"}}
			lk := mongolock.New(libColl, mongolock.WithSort(sort))
			done := bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "DONE"}}}}
			var left atomic.Int64 // jobs this round still has to take
			libDrain := func() error {
				for left.Add(-1) >= 0 {
					err := lk.Do(ctx, ready, func(ctx context.Context, l *mongolock.Lock) error { return l.SetUpdateOnRelease(done) })
					if err != nil {
						return err
					}
				}
				return nil
			}
			bareDrain := func() error {
				for left.Add(-1) >= 0 {
					doc, err := bareQueueLock(ctx, bareColl, ready, sort)
					if err != nil {
						return err
					}
					if err := bareRelease(ctx, bareColl, doc, bson.E{Key: "state", Value: "DONE"}); err != nil {
						return err
					}
				}
				return nil
			}
			var lib, bare cost
			b.ResetTimer()
			for next := 0; next < b.N; next += size {
				n := min(size, b.N-next)
				for _, side := range []struct {
					coll  *mongo.Collection
					c     *cost
					drain func() error
				}{{bareColl, &bare, bareDrain}, {libColl, &lib, libDrain}} {
					b.StopTimer()
					if _, err := side.coll.UpdateMany(ctx, bson.D{}, bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "READY"}}}}); err != nil {
						b.Fatal(err)
					}
					left.Store(int64(n))
					b.StartTimer()
					side.c.begin()
					if err := parallel(workers, side.drain); err != nil {
						b.Fatal(err)
					}
					side.c.end()
				}
			}
			report(b, &lib, &bare, b.N)
		})
	}
}

// seedQueue fills coll with n READY jobs of priorities 0 to 9.
func seedQueue(b testing.TB, coll *mongo.Collection, n int) {
	const batch = 1000
	for first := 0; first < n; first += batch {
		docs := make([]any, min(batch, n-first))
		for i := range docs {
			docs[i] = bson.D{{Key: "_id", Value: first + i}, {Key: "state", Value: "READY"}, {Key: "priority", Value: (first + i) % 10}}
		}
		insert(b, coll, docs...)
	}
}

// bareQueueLock locks the first READY document with no one on it; when every
// READY document is locked it polls, as a hand-written loop would.
func bareQueueLock(ctx context.Context, coll *mongo.Collection, ready, sort bson.D) (bson.Raw, error) {
	update := bson.D{
		{Key: "$set", Value: bson.D{{Key: mongolock.LockKey, Value: "bare"}}},
		{Key: "$currentDate", Value: bson.D{{Key: mongolock.LockTimeKey, Value: true}}},
	}
	filter := append(append(bson.D{}, ready...), bson.E{Key: mongolock.LockKey, Value: nil})
	o := options.FindOneAndUpdate().SetReturnDocument(options.After).SetSort(sort)
	for {
		doc, err := coll.FindOneAndUpdate(ctx, filter, update, o).Raw()
		if !errors.Is(err, mongo.ErrNoDocuments) {
			return doc, err
		}
		if n, err := coll.CountDocuments(ctx, ready); err != nil || n == 0 {
			return nil, mongo.ErrNoDocuments
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func parallel(n int, f func() error) error {
	var g errgroup.Group
	for range n {
		g.Go(f)
	}
	return g.Wait()
}

// handoffLatencies collects release→next-holder latencies in nanoseconds.
type handoffLatencies struct {
	mu   sync.Mutex
	ns   []float64
	self atomic.Int64 // acquisitions by the goroutine that had just released
}

func (h *handoffLatencies) add(d time.Duration) {
	h.mu.Lock()
	h.ns = append(h.ns, float64(d.Nanoseconds()))
	h.mu.Unlock()
}

func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

// childProc is a child process of the test binary started for a benchmark.
type childProc struct {
	wait func(b *testing.B) map[string][]int64
}

// startChild starts the test binary in role, with its output gathered as
// key=value lines (a key may repeat).
func startChild(b *testing.B, role string, coll *mongo.Collection, workers, rounds int) *childProc {
	c := spawn(b, childCommand(role, coll, workers, rounds))
	return &childProc{wait: func(b *testing.B) map[string][]int64 {
		c.wait(b, 30*time.Minute, fmt.Sprintf("benchmark child %s to run %d rounds", role, rounds))
		vals := map[string][]int64{}
		for _, line := range strings.Split(c.stdout.String(), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				if n, err := strconv.ParseInt(v, 10, 64); err == nil {
					vals[k] = append(vals[k], n)
				}
			}
		}
		return vals
	}}
}

// BenchmarkQueueBatch: 16 workers drain READY jobs, highest priority first,
// publishing DONE on release, with no work per job, from a collection of
// docs documents: the bare one-document loop (findOneAndUpdate + updateOne
// per job), the runner's loop by hand (the same two writes as jobflow-remote's
// runner sends: the lock narrowed to due jobs, the release with the
// bookkeeping reset), Work as it is (batch 1: one Step per job, the same
// work as the runner's loop) and Work with WithBatch(16), in the same run,
// on the same server. Each round makes
// min(docs, 480) jobs READY (untimed) and the rest DONE, so every query
// still meets the whole collection. Reported: jobs/s of each side, Work's
// round trips per job (counted by a command monitor), and batch16-x-bare,
// the batched side's jobs/s over the bare loop's.
func BenchmarkQueueBatch(b *testing.B) {
	const workers = 16
	for _, size := range []int{200, 2000, 20000} {
		b.Run(fmt.Sprintf("docs=%d", size), func(b *testing.B) {
			ctx := context.Background()
			var sent atomic.Int64
			mon := &event.CommandMonitor{Started: func(context.Context, *event.CommandStartedEvent) { sent.Add(1) }}
			mc, err := mongo.Connect(options.Client().ApplyURI(uri).SetMonitor(mon).SetMaxPoolSize(64))
			if err != nil {
				b.Fatal(err)
			}
			defer mc.Disconnect(ctx)
			bareColl, runnerColl := benchColl(b), benchColl(b)
			one := mc.Database(testDB).Collection(benchColl(b).Name())
			many := mc.Database(testDB).Collection(benchColl(b).Name())
			for _, c := range []*mongo.Collection{bareColl, runnerColl, one, many} {
				seedQueue(b, c, size)
			}
			sort := bson.D{{Key: "priority", Value: -1}}
			ready := bson.D{{Key: "state", Value: "READY"}}
			done := bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "DONE"}}}}
			step := func(ctx context.Context, l *mongolock.Lock) error { return l.SetUpdateOnRelease(done) }
			lk1 := mongolock.New(one, mongolock.WithSort(sort))
			lk16 := mongolock.New(many, mongolock.WithSort(sort), mongolock.WithBatch(16))
			var left atomic.Int64
			bareDrain := func() error {
				for left.Add(-1) >= 0 {
					doc, err := bareQueueLock(ctx, bareColl, ready, sort)
					if err != nil {
						return err
					}
					if err := bareRelease(ctx, bareColl, doc, bson.E{Key: "state", Value: "DONE"}); err != nil {
						return err
					}
				}
				return nil
			}
			runnerDone := append(bson.D{{Key: "state", Value: "DONE"}}, runnerReset...)
			runnerDrain := func() error {
				for left.Add(-1) >= 0 {
					doc, err := bareDueSorted(ctx, runnerColl, ready, sort)
					if err != nil {
						return err
					}
					if err := bareStepRelease(ctx, runnerColl, doc, runnerDone, nil); err != nil {
						return err
					}
				}
				return nil
			}
			perRound := min(size, 480)
			var bare, runner, c1, c16 cost
			var rt1, rt16 int64
			b.ResetTimer()
			for next := 0; next < b.N; next += perRound {
				n := min(perRound, b.N-next)
				for _, side := range []struct {
					coll *mongo.Collection
					c    *cost
					rt   *int64
					run  func() error
				}{
					{bareColl, &bare, nil, func() error { left.Store(int64(n)); return parallel(workers, bareDrain) }},
					{runnerColl, &runner, nil, func() error { left.Store(int64(n)); return parallel(workers, runnerDrain) }},
					{one, &c1, &rt1, func() error { return lk1.Work(ctx, workers, ready, step) }},
					{many, &c16, &rt16, func() error { return lk16.Work(ctx, workers, ready, step) }},
				} {
					b.StopTimer()
					if _, err := side.coll.UpdateMany(ctx, bson.D{}, bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "DONE"}}}}); err != nil {
						b.Fatal(err)
					}
					if _, err := side.coll.UpdateMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$lt", Value: n}}}}, bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "READY"}}}}); err != nil {
						b.Fatal(err)
					}
					before := sent.Load()
					b.StartTimer()
					side.c.begin()
					if err := side.run(); err != nil {
						b.Fatal(err)
					}
					side.c.end()
					if side.rt != nil {
						*side.rt += sent.Load() - before
					}
				}
			}
			b.StopTimer()
			for _, c := range []*mongo.Collection{bareColl, runnerColl, one, many} {
				if left, err := c.CountDocuments(ctx, bson.D{{Key: "$or", Value: bson.A{ready, bson.D{{Key: mongolock.LockKey, Value: bson.D{{Key: "$ne", Value: nil}}}}}}}); err != nil || left != 0 {
					b.Fatalf("%s: %d jobs left READY or locked (%v)", c.Name(), left, err)
				}
			}
			f := float64(b.N)
			rate := func(c *cost) float64 { return f / c.d.Seconds() }
			b.ReportMetric(float64(c16.d.Nanoseconds())/f, "ns/op")
			b.ReportMetric(rate(&bare), "bare-jobs/s")
			b.ReportMetric(rate(&c1), "batch1-jobs/s")
			b.ReportMetric(rate(&c16), "batch16-jobs/s")
			b.ReportMetric(float64(rt1)/f, "batch1-rt/job")
			b.ReportMetric(float64(rt16)/f, "batch16-rt/job")
			b.ReportMetric(rate(&c16)/rate(&bare), "batch16-x-bare")
			b.ReportMetric(rate(&c1)/rate(&bare), "batch1-x-bare")
			b.ReportMetric(rate(&runner), "runner-jobs/s")
			b.ReportMetric(rate(&c1)/rate(&runner), "batch1-x-runner")
		})
	}
}
