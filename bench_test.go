package mongolock_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
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

// BenchmarkQueue: W workers drain READY documents, highest priority first,
// publishing DONE on release; the bare loop does the same round trips. Each
// op is one job; jobs are seeded in batches of queueBatch (untimed), so that
// the cost of an op does not grow with b.N on a server that scans.
func BenchmarkQueue(b *testing.B) {
	const queueBatch = 100
	for _, workers := range []int{1, 8} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			ctx := context.Background()
			libColl, bareColl := benchColl(b), benchColl(b)
			sort := bson.D{{Key: "priority", Value: -1}}
			ready := bson.D{{Key: "state", Value: "READY"}}
			lk := mongolock.New(libColl, mongolock.WithSort(sort))
			done := bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "DONE"}}}}
			libDrain := func() error {
				for {
					err := lk.Do(ctx, ready, func(ctx context.Context, l *mongolock.Lock) error { return l.SetUpdateOnRelease(done) })
					if errors.Is(err, mongolock.ErrNotFound) {
						return nil
					}
					if err != nil {
						return err
					}
				}
			}
			bareDrain := func() error {
				for {
					doc, err := bareQueueLock(ctx, bareColl, ready, sort)
					if errors.Is(err, mongo.ErrNoDocuments) {
						return nil
					}
					if err != nil {
						return err
					}
					if err := bareRelease(ctx, bareColl, doc, bson.E{Key: "state", Value: "DONE"}); err != nil {
						return err
					}
				}
			}
			var lib, bare cost
			b.ResetTimer()
			for next := 0; next < b.N; next += queueBatch {
				n := min(queueBatch, b.N-next)
				for _, side := range []struct {
					coll  *mongo.Collection
					c     *cost
					drain func() error
				}{{bareColl, &bare, bareDrain}, {libColl, &lib, libDrain}} {
					seedQueue(b, side.coll, next, n)
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

// seedQueue replaces the documents of coll by n READY jobs numbered from
// first.
func seedQueue(b *testing.B, coll *mongo.Collection, first, n int) {
	ctx := context.Background()
	if _, err := coll.DeleteMany(ctx, bson.D{}); err != nil {
		b.Fatal(err)
	}
	docs := make([]any, n)
	for i := range docs {
		docs[i] = bson.D{{Key: "_id", Value: first + i}, {Key: "state", Value: "READY"}, {Key: "priority", Value: i % 10}}
	}
	insert(b, coll, docs...)
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

// The holder writes the wall time of its release, and who it is, into the
// releasing write; the next holder reads them from the document it locked.
// Both processes run on one machine, so they share the clock.
const (
	releasedAt = "released_at"
	releasedBy = "released_by"
)

// handoffWorkers take the document until its count reaches total, and record
// each hand-off's latency. With bare, they use the bare driver and the same
// back-off, without the library's hand-off.
func handoffWorkers(ctx context.Context, coll *mongo.Collection, workers int, total int64, bare bool, pace time.Duration, lat *handoffLatencies) error {
	const poll = 100 * time.Millisecond
	lk := mongolock.New(coll, mongolock.WithPollInterval(poll), mongolock.WithMaxWait(time.Minute))
	filter := bson.D{{Key: "_id", Value: "hot"}}
	take := func() (bson.Raw, func(set ...bson.E) error, error) {
		if bare {
			doc, err := bareLockWait(ctx, coll, filter, poll)
			return doc, func(set ...bson.E) error { return bareRelease(ctx, coll, doc, set...) }, err
		}
		l, err := lk.Acquire(ctx, filter)
		if err != nil {
			return nil, nil, err
		}
		return l.Document(), func(set ...bson.E) error {
			return l.ReleaseWithUpdate(ctx, bson.D{{Key: "$set", Value: bson.D(set)}})
		}, nil
	}
	var next atomic.Int64
	return parallel(workers, func() error {
		me := fmt.Sprintf("%d-%d", os.Getpid(), next.Add(1))
		for {
			doc, release, err := take()
			if err != nil {
				return err
			}
			if ns, ok := doc.Lookup(releasedAt).AsInt64OK(); ok && ns > 0 {
				if by, _ := doc.Lookup(releasedBy).StringValueOK(); by == me {
					lat.self.Add(1) // taken again by its releaser: no hand-off
				} else {
					lat.add(time.Since(time.Unix(0, ns)))
				}
			}
			count, _ := doc.Lookup("count").AsInt64OK()
			err = release(bson.E{Key: releasedAt, Value: time.Now().UnixNano()}, bson.E{Key: releasedBy, Value: me}, bson.E{Key: "count", Value: count + 1})
			if err != nil {
				return err
			}
			if count+1 >= total {
				return nil
			}
			time.Sleep(pace) // work done outside the lock
		}
	})
}

// bareLockWait retries bareLock with the library's back-off: from 10ms,
// doubling up to poll, with jitter.
func bareLockWait(ctx context.Context, coll *mongo.Collection, filter bson.D, poll time.Duration) (bson.Raw, error) {
	d := 10 * time.Millisecond
	for {
		doc, err := bareLock(ctx, coll, filter)
		if !errors.Is(err, mongo.ErrNoDocuments) {
			return doc, err
		}
		time.Sleep(d/2 + time.Duration(rand.Int64N(int64(d/2)+1)))
		d = min(2*d, poll)
	}
}

// BenchmarkHandoff: W goroutines (and, across processes, a second process
// with as many) contend on one document; each op is one acquisition. Reports
// p50 and p99 of the time from a release to the lock of the next holder when
// that is another goroutine (a hand-off), and the share of acquisitions that
// were hand-offs, for the library and for the bare driver with the same
// back-off. With pace=0 a
// holder asks for the lock again as soon as it releases it; with pace>0 it
// works that long outside the lock first, so the next holder is a waiter.
func BenchmarkHandoff(b *testing.B) {
	const workers = 4
	for _, procs := range []int{1, 2} {
		for _, pace := range []time.Duration{0, time.Millisecond} {
			b.Run(fmt.Sprintf("procs=%d/pace=%v", procs, pace), func(b *testing.B) {
				lib, libShare := handoffRun(b, procs, workers, false, pace)
				bare, bareShare := handoffRun(b, procs, workers, true, pace)
				b.ReportMetric(percentile(lib, 0.50), "p50-ns")
				b.ReportMetric(percentile(lib, 0.99), "p99-ns")
				b.ReportMetric(libShare, "handoff-share")
				b.ReportMetric(percentile(bare, 0.50), "driver-p50-ns")
				b.ReportMetric(percentile(bare, 0.99), "driver-p99-ns")
				b.ReportMetric(bareShare, "driver-handoff-share")
			})
		}
	}
}

// handoffRun runs b.N acquisitions of one document over procs processes and
// returns the sorted hand-off latencies and the share of acquisitions that
// were hand-offs to another goroutine.
func handoffRun(b *testing.B, procs, workers int, bare bool, pace time.Duration) (sorted []float64, share float64) {
	ctx := context.Background()
	coll := benchColl(b, bson.D{{Key: "_id", Value: "hot"}, {Key: "count", Value: int64(0)}, {Key: releasedAt, Value: int64(0)}})
	role := "handoff"
	if bare {
		role = "handoff-bare"
	}
	var lat handoffLatencies
	var children []*childProc
	for range procs - 1 {
		children = append(children, startChild(b, role, coll, workers, b.N, pace))
	}
	if err := handoffWorkers(ctx, coll, workers, int64(b.N), bare, pace, &lat); err != nil {
		b.Fatal(err)
	}
	for _, c := range children {
		out := c.wait(b)
		for _, v := range out["latency"] {
			lat.add(time.Duration(v))
		}
		for _, v := range out["self"] {
			lat.self.Add(v)
		}
	}
	slices.Sort(lat.ns)
	return lat.ns, float64(len(lat.ns)) / float64(len(lat.ns)+int(lat.self.Load()))
}

// childProc is a child process of the test binary started for a benchmark.
type childProc struct {
	out  *strings.Builder
	wait func(b *testing.B) map[string][]int64
}

// startChild starts the test binary in role, with its output gathered as
// key=value lines (a key may repeat).
func startChild(b *testing.B, role string, coll *mongo.Collection, workers, rounds int, pace time.Duration) *childProc {
	out := &strings.Builder{}
	cmd := childCommand(role, coll, workers, rounds)
	cmd.Env = append(cmd.Env, childPace+"="+pace.String())
	cmd.Stdout, cmd.Stderr = out, os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	return &childProc{out: out, wait: func(b *testing.B) map[string][]int64 {
		if err := cmd.Wait(); err != nil {
			b.Fatalf("child %s: %v", role, err)
		}
		vals := map[string][]int64{}
		for _, line := range strings.Split(out.String(), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				if n, err := strconv.ParseInt(v, 10, 64); err == nil {
					vals[k] = append(vals[k], n)
				}
			}
		}
		return vals
	}}
}
