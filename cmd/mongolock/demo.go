package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/sync/errgroup"

	"github.com/mongolock/mongolock"
	"github.com/mongolock/mongolock/internal/testserver"
)

// demoConfig is what the demo's processes share.
type demoConfig struct {
	conn
	workers int
	batch   int // documents Work claims per round trip
	work    time.Duration
	fail    float64 // share of steps that fail
}

// demoGaveUp is the state Retry's default GiveUp writes, as jobflow-remote's
// runner does.
const demoGaveUp = "REMOTE_ERROR"

// demoMaxAttempts is the demo's retry policy: a job is retried after each of
// its first two failures and given up at the third, into REMOTE_ERROR.
const demoMaxAttempts = 2

// demoRetry pauses twice the mean work after the first failure and four
// times after the second (at least 10ms), so that back-off shows without
// jobflow-remote's 30s and 5m.
func demoRetry(work time.Duration) mongolock.Retry {
	d := max(2*work, 10*time.Millisecond)
	return mongolock.Retry{MaxAttempts: demoMaxAttempts, Delays: []time.Duration{d, 2 * d}}
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("demo", stderr)
	var cfg demoConfig
	jobs := fs.Int("jobs", 200, "number of jobs to seed")
	procs := fs.Int("procs", 1, "OS processes to spread the workers over")
	fs.IntVar(&cfg.workers, "workers", 8, "number of workers in all")
	fs.IntVar(&cfg.batch, "batch", 16, "jobs a process claims per round trip for its idle workers (1: one job per claim, the old path)")
	fs.DurationVar(&cfg.work, "work", 100*time.Millisecond, "mean simulated work per job")
	fs.Float64Var(&cfg.fail, "fail", 0, "share of steps that fail, between 0 and 1: a failed job is retried after a back-off, and given up (REMOTE_ERROR) at its third failure")
	fs.StringVar(&cfg.uri, "uri", "", "run against this MongoDB `URI` (default: start the embedded server)")
	fs.StringVar(&cfg.db, "db", "mongolock_demo", "database `name`")
	fs.StringVar(&cfg.collection, "collection", "", "collection `name`, which must be empty or absent; it is dropped at the end (default: a new one)")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Second, "how long to wait for the server")
	if ok, code := parse(fs, args); !ok {
		return code
	}
	switch {
	case *jobs <= 0:
		return usageError(stderr, fs, "-jobs must be positive, not %d", *jobs)
	case cfg.workers <= 0:
		return usageError(stderr, fs, "-workers must be positive, not %d", cfg.workers)
	case cfg.batch <= 0:
		return usageError(stderr, fs, "-batch must be positive, not %d", cfg.batch)
	case *procs <= 0 || *procs > cfg.workers:
		return usageError(stderr, fs, "-procs must be between 1 and -workers (%d), not %d", cfg.workers, *procs)
	case cfg.work < 0:
		return usageError(stderr, fs, "-work must not be negative")
	case !(cfg.fail >= 0 && cfg.fail <= 1):
		return usageError(stderr, fs, "-fail must be between 0 and 1, not %v", cfg.fail)
	}
	if cfg.uri == "" {
		srv, err := testserver.Start(testserver.Options{})
		if err != nil {
			return fail(stderr, "demo", err)
		}
		defer srv.Close()
		cfg.uri = srv.URI()
		fmt.Fprintf(stdout, "embedded server (FerretDB, one write at a time) at %s\n", cfg.uri)
	}
	if cfg.collection == "" {
		cfg.collection = fmt.Sprintf("jobs_%d", time.Now().UnixNano())
	}
	client, err := cfg.connect(ctx)
	if err != nil {
		return fail(stderr, "demo", err)
	}
	defer client.Disconnect(context.Background())
	coll := cfg.coll(client)
	if n, err := coll.EstimatedDocumentCount(ctx); err != nil || n > 0 {
		if err == nil {
			err = fmt.Errorf("collection %s.%s holds %d documents; the demo needs an empty one", cfg.db, cfg.collection, n)
		}
		return fail(stderr, "demo", err)
	}
	defer coll.Drop(context.Background())
	if err := seedDemo(ctx, coll, *jobs); err != nil {
		return fail(stderr, "demo", err)
	}
	fmt.Fprintf(stdout, "%d READY jobs, %d workers in %d process(es), about %v of work each", *jobs, cfg.workers, *procs, cfg.work)
	if cfg.fail > 0 {
		fmt.Fprintf(stdout, ", %.0f%% of steps fail", 100*cfg.fail)
	}
	fmt.Fprintln(stdout)

	start := time.Now()
	var counts demoCounts // this process's, live; the others' come at the end
	progress := startProgress(ctx, stdout, coll, *jobs, &counts, start)
	err = runDemoProcesses(ctx, cfg, *procs, &counts)
	progress()
	if err != nil {
		return fail(stderr, "demo", err)
	}
	return demoSummary(ctx, stdout, stderr, coll, *jobs, &counts, time.Since(start))
}

// seedDemo creates the index a work queue wants on MongoDB (the filter's
// equality field, the lock field, then the sort; see the README) and the
// READY jobs.
func seedDemo(ctx context.Context, coll *mongo.Collection, jobs int) error {
	index := mongo.IndexModel{Keys: bson.D{{Key: "state", Value: 1}, {Key: mongolock.LockKey, Value: 1}, {Key: "priority", Value: -1}}}
	if _, err := coll.Indexes().CreateOne(ctx, index); err != nil {
		return fmt.Errorf("creating the queue's index: %w", err)
	}
	docs := make([]any, jobs)
	for i := range docs {
		docs[i] = bson.D{{Key: "_id", Value: i + 1}, {Key: "state", Value: "READY"}, {Key: "priority", Value: rand.IntN(10)}, {Key: "runs", Value: 0}}
	}
	_, err := coll.InsertMany(ctx, docs)
	return err
}

// runDemoProcesses runs the workers, a share of them in each of procs
// processes (this one included), and adds what they count to counts.
func runDemoProcesses(ctx context.Context, cfg demoConfig, procs int, counts *demoCounts) error {
	g, ctx := errgroup.WithContext(ctx)
	for p := range procs {
		share := cfg.workers / procs
		if p < cfg.workers%procs {
			share++
		}
		if p == 0 {
			g.Go(func() error {
				c := cfg
				c.workers = share
				return demoWorkers(ctx, c, counts)
			})
			continue
		}
		g.Go(func() error {
			return demoChild(ctx, cfg, share, counts)
		})
	}
	return g.Wait()
}

// demoChild runs share workers in another process of this program, and
// adds what they count to counts.
func demoChild(ctx context.Context, cfg demoConfig, share int, counts *demoCounts) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, self, "demo-worker", "-uri", cfg.uri, "-db", cfg.db, "-collection", cfg.collection,
		"-workers", strconv.Itoa(share), "-batch", strconv.Itoa(cfg.batch), "-work", cfg.work.String(), "-fail", strconv.FormatFloat(cfg.fail, 'g', -1, 64))
	cmd.Env = append(os.Environ(), childCommandEnv+"=1")
	var errOut strings.Builder
	cmd.Stderr = &errOut
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("worker process: %v: %s", err, errOut.String())
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "waits":
			counts.waits.Add(n)
		case "retried":
			counts.retried.Add(n)
		case "steps":
			counts.steps.Add(n)
		case "roundtrips":
			counts.roundTrips.Add(n)
		default:
			counts.figures.read(k, n)
		}
	}
	return nil
}

// childCommandEnv tells a test binary started as a demo worker to run the
// command instead of the tests.
const childCommandEnv = "MONGOLOCK_RUN_COMMAND"

// runDemoWorker is the demo's worker process.
func runDemoWorker(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("demo-worker", stderr)
	var cfg demoConfig
	cfg.register(fs)
	fs.IntVar(&cfg.workers, "workers", 1, "workers in this process")
	fs.IntVar(&cfg.batch, "batch", 1, "jobs claimed per round trip")
	fs.DurationVar(&cfg.work, "work", 100*time.Millisecond, "mean simulated work per job")
	fs.Float64Var(&cfg.fail, "fail", 0, "share of steps that fail")
	if ok, code := parse(fs, args); !ok {
		return code
	}
	var counts demoCounts
	if err := demoWorkers(ctx, cfg, &counts); err != nil {
		return fail(stderr, "demo-worker", err)
	}
	fmt.Fprintf(stdout, "waits=%d\nretried=%d\nsteps=%d\nroundtrips=%d\n", counts.waits.Load(), counts.retried.Load(), counts.steps.Load(), counts.roundTrips.Load())
	counts.figures.write(stdout)
	return exitOK
}

// demoCounts is what a process's workers count; as an Observer it counts
// lock waits.
type demoCounts struct {
	waits   atomic.Int64 // attempts that found every due job locked
	retried atomic.Int64 // failed steps that will be retried
	steps   atomic.Int64 // steps taken, failed or not

	roundTrips atomic.Int64 // commands the workers' clients sent
	figures    demoFigures  // waits, round trips and holds, as the metrics see them
}

func (c *demoCounts) Acquired(string, time.Duration, time.Duration) {}
func (c *demoCounts) Contended(string)                              { c.waits.Add(1) }
func (c *demoCounts) GaveUp(string, time.Duration)                  {}
func (c *demoCounts) Released(string, time.Duration)                {}
func (c *demoCounts) Lost(string, time.Duration)                    {}

// errSimulated is the failure of a step that -fail picked.
var errSimulated = errors.New("simulated failure")

// demoWorkers runs cfg.workers workers with Work until no READY job is
// left. Each step locks the highest-priority due READY job and works; a
// share cfg.fail of steps fail, and Step records the failure (a retry after
// a back-off, or REMOTE_ERROR at the third); the others publish DONE (and
// one more run) in the write that releases the lock.
func demoWorkers(ctx context.Context, cfg demoConfig, counts *demoCounts) error {
	client, err := cfg.connect(ctx)
	if err != nil {
		return err
	}
	defer client.Disconnect(context.Background())
	// The workers' own client counts their round trips.
	count := &event.CommandMonitor{Started: func(context.Context, *event.CommandStartedEvent) { counts.roundTrips.Add(1) }}
	wclient, err := mongo.Connect(options.Client().ApplyURI(cfg.uri).SetServerSelectionTimeout(cfg.timeout).SetMonitor(count))
	if err != nil {
		return err
	}
	defer wclient.Disconnect(context.Background())
	lk := mongolock.New(cfg.coll(wclient),
		mongolock.WithBatch(max(cfg.batch, 1)),
		mongolock.WithSort(bson.D{{Key: "priority", Value: -1}}),
		mongolock.WithPollInterval(50*time.Millisecond),
		mongolock.WithRetry(demoRetry(cfg.work)),
		mongolock.WithObserver(demoObserver{counts}))
	ready := bson.D{{Key: "state", Value: "READY"}}
	return lk.Work(ctx, cfg.workers, ready, func(ctx context.Context, l *mongolock.Lock) error {
		counts.steps.Add(1)
		if err := simulateWork(ctx, cfg.work); err != nil {
			return err
		}
		if rand.Float64() < cfg.fail {
			if n, _ := l.Document().Lookup("remote", "step_attempts").AsInt64OK(); n < demoMaxAttempts {
				counts.retried.Add(1)
			}
			return errSimulated
		}
		return l.SetUpdateOnRelease(bson.D{
			{Key: "$set", Value: bson.D{{Key: "state", Value: "DONE"}}},
			{Key: "$inc", Value: bson.D{{Key: "runs", Value: 1}}},
		})
	})
}

// simulateWork sleeps between half and one and a half times mean.
func simulateWork(ctx context.Context, mean time.Duration) error {
	if mean <= 0 {
		return nil
	}
	t := time.NewTimer(mean/2 + rand.N(mean+1))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// startProgress shows jobs done, given up and retried, and the rate: a line
// redrawn in place on a terminal, a line every few seconds otherwise. The
// returned func stops it.
func startProgress(ctx context.Context, w io.Writer, coll *mongo.Collection, jobs int, counts *demoCounts, start time.Time) (stop func()) {
	tty := isTerminal(w)
	every := 2 * time.Second
	if tty {
		every = 200 * time.Millisecond
	}
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-quit:
				if tty {
					fmt.Fprint(w, "\r\033[K")
				}
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			done, err := coll.CountDocuments(ctx, bson.D{{Key: "state", Value: "DONE"}})
			if err != nil {
				continue
			}
			gaveUp, err := coll.CountDocuments(ctx, bson.D{{Key: "state", Value: demoGaveUp}})
			if err != nil {
				continue
			}
			rate := float64(done) / time.Since(start).Seconds()
			line := fmt.Sprintf("%d/%d jobs done, %d given up, %d retries, %.0f jobs/s, %d lock waits",
				done, jobs, gaveUp, counts.retried.Load(), rate, counts.waits.Load())
			if tty {
				fmt.Fprintf(w, "\r\033[K%s", line)
			} else {
				fmt.Fprintln(w, line)
			}
		}
	}()
	return func() {
		close(quit)
		wg.Wait()
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// demoSummary reads the outcome from the documents themselves and prints it.
// Every job must end DONE or given up, none published twice, no lock left.
func demoSummary(ctx context.Context, w, stderr io.Writer, coll *mongo.Collection, jobs int, counts *demoCounts, wall time.Duration) int {
	count := func(filter bson.D) int64 {
		n, err := coll.CountDocuments(ctx, filter)
		if err != nil {
			fail(stderr, "demo", err)
			return -1
		}
		return n
	}
	done := count(bson.D{{Key: "state", Value: "DONE"}})
	gaveUp := count(bson.D{{Key: "state", Value: demoGaveUp}})
	twice := count(bson.D{{Key: "runs", Value: bson.D{{Key: "$gt", Value: 1}}}})
	locked := count(bson.D{{Key: mongolock.LockKey, Value: bson.D{{Key: "$ne", Value: nil}}}})
	if done < 0 || gaveUp < 0 || twice < 0 || locked < 0 {
		return exitFail
	}
	fmt.Fprintf(w, "jobs done:              %d of %d\n", done, jobs)
	fmt.Fprintf(w, "given up:               %d (%s at their failure %d)\n", gaveUp, demoGaveUp, demoMaxAttempts+1)
	fmt.Fprintf(w, "retried:                %d failed steps (of %d steps)\n", counts.retried.Load(), counts.steps.Load())
	fmt.Fprintf(w, "wall time:              %v\n", wall.Round(time.Millisecond))
	fmt.Fprintf(w, "throughput:             %.1f jobs/s\n", float64(done)/wall.Seconds())
	fmt.Fprintf(w, "lock waits:             %d\n", counts.waits.Load())
	fmt.Fprintf(w, "round trips per job:    %.2f\n", float64(counts.roundTrips.Load())/float64(max(counts.steps.Load(), 1)))
	counts.figures.print(w)
	fmt.Fprintf(w, "locks left behind:      %d\n", locked)
	fmt.Fprintf(w, "jobs processed twice:   %d\n", twice)
	if twice > 0 || done+gaveUp != int64(jobs) || locked > 0 {
		fmt.Fprintln(w, "FAILED")
		return exitFail
	}
	if gaveUp > 0 {
		fmt.Fprintln(w, "ok: every job done once or given up")
		return exitOK
	}
	fmt.Fprintln(w, "ok: every job processed exactly once")
	return exitOK
}
