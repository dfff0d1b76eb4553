package mongolock_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/mongolock/mongolock"
)

// The cost of waiting, beside the loop one writes by hand with the bare
// driver: retry a failed findOneAndUpdate every 5ms.
const bareRetryEvery = 5 * time.Millisecond

// The holder writes the wall time of its release, and who it is, into the
// releasing write; the next holder reads them from the document it locked.
// All processes run on one machine, so they share the clock.
const (
	releasedAt = "released_at"
	releasedBy = "released_by"
)

// contendedStats is what one process measured of a contended run.
type contendedStats struct {
	lat      handoffLatencies
	acquired atomic.Int64
	cpu      time.Duration // user + system time of the process during the run
	commands int64         // commands its workers' client sent
}

// BenchmarkContended: goroutines in one or four processes take one document
// in turn, each asking again as soon as it has released it. Each op is one
// acquisition. Reported beside the bare 5ms retry loop doing the same work in
// the same run: throughput, hand-off latency (release to the next holder's
// lock, when that is another goroutine) p50 and p99, client CPU and round
// trips per acquisition, and across processes the smallest and largest share
// of the acquisitions that one process got.
func BenchmarkContended(b *testing.B) {
	for _, c := range []struct{ procs, goroutines int }{{1, 8}, {1, 32}, {1, 64}, {4, 8}} {
		b.Run(fmt.Sprintf("procs=%d/goroutines=%d", c.procs, c.goroutines), func(b *testing.B) {
			lib := contendedRun(b, c.procs, c.goroutines, false)
			bare := contendedRun(b, c.procs, c.goroutines, true)
			lib.report(b, "")
			bare.report(b, "driver-")
			b.ReportMetric(lib.perSec/bare.perSec, "x-throughput")
			b.ReportMetric(lib.p50/bare.p50, "x-p50")
			b.ReportMetric(lib.cpuPerAcq/bare.cpuPerAcq, "x-cpu")
		})
	}
}

// contendedResult sums a run over its processes.
type contendedResult struct {
	perSec, p50, p99, cpuPerAcq, rtPerAcq, minShare, maxShare float64
}

func (r contendedResult) report(b *testing.B, prefix string) {
	b.ReportMetric(r.perSec, prefix+"acq/s")
	b.ReportMetric(r.p50, prefix+"p50-ns")
	b.ReportMetric(r.p99, prefix+"p99-ns")
	b.ReportMetric(r.cpuPerAcq, prefix+"cpu-ns/acq")
	b.ReportMetric(r.rtPerAcq, prefix+"rt/acq")
	if r.maxShare > 0 {
		b.ReportMetric(r.minShare, prefix+"min-share")
		b.ReportMetric(r.maxShare, prefix+"max-share")
	}
}

// contendedRun runs b.N acquisitions of one document over procs processes.
func contendedRun(b *testing.B, procs, goroutines int, bare bool) contendedResult {
	coll := benchColl(b, bson.D{{Key: "_id", Value: "hot"}, {Key: "count", Value: int64(0)}, {Key: releasedAt, Value: int64(0)}})
	role := "contended"
	if bare {
		role = "contended-bare"
	}
	b.ResetTimer()
	start := time.Now()
	var children []*childProc
	for range procs - 1 {
		children = append(children, startChild(b, role, coll, goroutines, b.N))
	}
	var mine contendedStats
	if err := measureContended(context.Background(), uri, coll.Name(), goroutines, int64(b.N), bare, &mine); err != nil {
		b.Fatal(err)
	}
	lat := mine.lat.ns
	acquired := []int64{mine.acquired.Load()}
	cpu, commands := mine.cpu, mine.commands
	for _, c := range children {
		out := c.wait(b)
		for _, v := range out["latency"] {
			lat = append(lat, float64(v))
		}
		acquired = append(acquired, sum(out["acquired"]))
		cpu += time.Duration(sum(out["cpu"]))
		commands += sum(out["commands"])
	}
	wall := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	total := float64(sum(acquired))
	r := contendedResult{
		perSec:    total / wall.Seconds(),
		p50:       percentile(lat, 0.50),
		p99:       percentile(lat, 0.99),
		cpuPerAcq: float64(cpu.Nanoseconds()) / total,
		rtPerAcq:  float64(commands) / total,
	}
	if procs > 1 {
		r.minShare = float64(slices.Min(acquired)) / total
		r.maxShare = float64(slices.Max(acquired)) / total
	}
	return r
}

func sum(vs []int64) int64 {
	var n int64
	for _, v := range vs {
		n += v
	}
	return n
}

// measureContended runs one process's share of a contended run on a client
// of its own, and measures its CPU time and the commands it sent.
func measureContended(ctx context.Context, uri, collName string, goroutines int, total int64, bare bool, st *contendedStats) error {
	c, sent, err := countingClient(uri)
	if err != nil {
		return err
	}
	defer c.Disconnect(context.Background())
	coll := c.Database(testDB).Collection(collName)
	before := cpuTime()
	err = contendedWorkers(ctx, coll, goroutines, total, bare, st)
	st.cpu = cpuTime() - before
	st.commands = sent.Load()
	return err
}

// contendedWorkers take the document until its count reaches total, each
// asking again as soon as it has released it, and record each hand-off's
// latency.
func contendedWorkers(ctx context.Context, coll *mongo.Collection, workers int, total int64, bare bool, st *contendedStats) error {
	lk := mongolock.New(coll, mongolock.WithMaxWait(time.Minute))
	filter := bson.D{{Key: "_id", Value: "hot"}}
	take := func() (bson.Raw, func(set ...bson.E) error, error) {
		if bare {
			doc, err := bareRetry(ctx, coll, filter)
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
			st.acquired.Add(1)
			if ns, ok := doc.Lookup(releasedAt).AsInt64OK(); ok && ns > 0 {
				if by, _ := doc.Lookup(releasedBy).StringValueOK(); by == me {
					st.lat.self.Add(1) // taken again by its releaser: no hand-off
				} else {
					st.lat.add(time.Since(time.Unix(0, ns)))
				}
			}
			count, _ := doc.Lookup("count").AsInt64OK()
			err = release(bson.E{Key: releasedAt, Value: time.Now().UnixNano()}, bson.E{Key: releasedBy, Value: me}, bson.E{Key: "count", Value: count + 1})
			if err != nil || count+1 >= total {
				return err
			}
		}
	})
}

// bareRetry is the hand-written wait: the conditional findOneAndUpdate,
// again every 5ms until it takes the document.
func bareRetry(ctx context.Context, coll *mongo.Collection, filter bson.D) (bson.Raw, error) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		doc, err := bareLock(ctx, coll, filter)
		if !errors.Is(err, mongo.ErrNoDocuments) {
			return doc, err
		}
		t.Reset(bareRetryEvery)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// BenchmarkIdleWait: 64 goroutines wait for a document whose holder keeps
// it for the whole op (one second), then give up. Reports what the waiting
// costs per second: round trips and client CPU, for the library and for the
// bare 5ms retry loop.
func BenchmarkIdleWait(b *testing.B) {
	const waiters, hold = 64, time.Second
	coll := benchColl(b, bson.D{{Key: "_id", Value: "held"}})
	filter := bson.D{{Key: "_id", Value: "held"}}
	l, err := mongolock.New(coll).TryAcquire(context.Background(), filter)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Release(context.Background())
	c, sent, err := countingClient(uri)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Disconnect(context.Background())
	counted := c.Database(testDB).Collection(coll.Name())
	lk := mongolock.New(counted)
	wait := func(bare bool) (rtPerSec, cpuPerSec float64) {
		ctx, cancel := context.WithTimeout(context.Background(), hold)
		defer cancel()
		sent.Store(0)
		before, start := cpuTime(), time.Now()
		err := parallel(waiters, func() error {
			var err error
			if bare {
				_, err = bareRetry(ctx, counted, filter)
			} else {
				_, err = lk.Acquire(ctx, filter)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("a waiter ended with %v, want the deadline", err)
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		secs := time.Since(start).Seconds()
		return float64(sent.Load()) / secs, float64(cpuTime()-before) / secs
	}
	var lib, bare [2]float64
	b.ResetTimer()
	for range b.N {
		rt, cpu := wait(true)
		bare[0], bare[1] = bare[0]+rt, bare[1]+cpu
		rt, cpu = wait(false)
		lib[0], lib[1] = lib[0]+rt, lib[1]+cpu
	}
	n := float64(b.N)
	b.ReportMetric(lib[0]/n, "rt/s")
	b.ReportMetric(lib[1]/n, "cpu-ns/s")
	b.ReportMetric(bare[0]/n, "driver-rt/s")
	b.ReportMetric(bare[1]/n, "driver-cpu-ns/s")
}

// countingClient connects to uri with a client that counts the commands it
// sends.
func countingClient(uri string) (*mongo.Client, *atomic.Int64, error) {
	var sent atomic.Int64
	mon := &event.CommandMonitor{Started: func(context.Context, *event.CommandStartedEvent) { sent.Add(1) }}
	c, err := mongo.Connect(options.Client().ApplyURI(uri).SetMonitor(mon).SetMaxPoolSize(128))
	if err != nil {
		return nil, nil, err
	}
	return c, &sent, nil
}

// cpuTime is the user and system time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
