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
	"go.mongodb.org/mongo-driver/v2/mongo"
	"golang.org/x/sync/errgroup"

	"github.com/mongolock/mongolock"
	"github.com/mongolock/mongolock/internal/testserver"
)

// demoConfig is what the demo's processes share.
type demoConfig struct {
	conn
	workers int
	work    time.Duration
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("demo", stderr)
	var cfg demoConfig
	jobs := fs.Int("jobs", 200, "number of jobs to seed")
	procs := fs.Int("procs", 1, "OS processes to spread the workers over")
	fs.IntVar(&cfg.workers, "workers", 8, "number of workers in all")
	fs.DurationVar(&cfg.work, "work", 100*time.Millisecond, "mean simulated work per job")
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
	case *procs <= 0 || *procs > cfg.workers:
		return usageError(stderr, fs, "-procs must be between 1 and -workers (%d), not %d", cfg.workers, *procs)
	case cfg.work < 0:
		return usageError(stderr, fs, "-work must not be negative")
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
	fmt.Fprintf(stdout, "%d READY jobs, %d workers in %d process(es), about %v of work each\n", *jobs, cfg.workers, *procs, cfg.work)

	start := time.Now()
	var waits waitCounter // this process's waits, live; the others' come at the end
	progress := startProgress(ctx, stdout, coll, *jobs, &waits, start)
	err = runDemoProcesses(ctx, cfg, *procs, &waits)
	progress()
	if err != nil {
		return fail(stderr, "demo", err)
	}
	return demoSummary(ctx, stdout, stderr, coll, *jobs, waits.n.Load(), time.Since(start))
}

func seedDemo(ctx context.Context, coll *mongo.Collection, jobs int) error {
	docs := make([]any, jobs)
	for i := range docs {
		docs[i] = bson.D{{Key: "_id", Value: i + 1}, {Key: "state", Value: "READY"}, {Key: "priority", Value: rand.IntN(10)}, {Key: "runs", Value: 0}}
	}
	_, err := coll.InsertMany(ctx, docs)
	return err
}

// runDemoProcesses runs the workers, a share of them in each of procs
// processes (this one included), and adds the lock waits they count to waits.
func runDemoProcesses(ctx context.Context, cfg demoConfig, procs int, waits *waitCounter) error {
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
				return demoWorkers(ctx, c, waits)
			})
			continue
		}
		g.Go(func() error {
			n, err := demoChild(ctx, cfg, share)
			waits.n.Add(n)
			return err
		})
	}
	return g.Wait()
}

// demoChild runs share workers in another process of this program.
func demoChild(ctx context.Context, cfg demoConfig, share int) (int64, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, self, "demo-worker", "-uri", cfg.uri, "-db", cfg.db, "-collection", cfg.collection,
		"-workers", strconv.Itoa(share), "-work", cfg.work.String())
	cmd.Env = append(os.Environ(), childCommandEnv+"=1")
	var errOut strings.Builder
	cmd.Stderr = &errOut
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("worker process: %v: %s", err, errOut.String())
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "waits="); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, nil
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
	fs.DurationVar(&cfg.work, "work", 100*time.Millisecond, "mean simulated work per job")
	if ok, code := parse(fs, args); !ok {
		return code
	}
	var waits waitCounter
	if err := demoWorkers(ctx, cfg, &waits); err != nil {
		return fail(stderr, "demo-worker", err)
	}
	fmt.Fprintf(stdout, "waits=%d\n", waits.n.Load())
	return exitOK
}

// waitCounter is an Observer that counts lock waits.
type waitCounter struct{ n atomic.Int64 }

func (w *waitCounter) Acquired(string, time.Duration, time.Duration) {}
func (w *waitCounter) Contended(string)                              { w.n.Add(1) }
func (w *waitCounter) GaveUp(string, time.Duration)                  {}
func (w *waitCounter) Released(string, time.Duration)                {}
func (w *waitCounter) Lost(string, time.Duration)                    {}

// demoWorkers runs cfg.workers workers until no READY job is left; each
// locks the highest-priority READY job, works, and publishes DONE (and one
// more run) in the write that releases the lock.
func demoWorkers(ctx context.Context, cfg demoConfig, waits *waitCounter) error {
	client, err := cfg.connect(ctx)
	if err != nil {
		return err
	}
	defer client.Disconnect(context.Background())
	lk := mongolock.New(cfg.coll(client),
		mongolock.WithSort(bson.D{{Key: "priority", Value: -1}}),
		mongolock.WithPollInterval(50*time.Millisecond),
		mongolock.WithObserver(waits))
	ready := bson.D{{Key: "state", Value: "READY"}}
	g, ctx := errgroup.WithContext(ctx)
	for range cfg.workers {
		g.Go(func() error {
			for {
				err := lk.Do(ctx, ready, func(ctx context.Context, l *mongolock.Lock) error {
					if err := simulateWork(ctx, cfg.work); err != nil {
						return err
					}
					return l.SetUpdateOnRelease(bson.D{
						{Key: "$set", Value: bson.D{{Key: "state", Value: "DONE"}}},
						{Key: "$inc", Value: bson.D{{Key: "runs", Value: 1}}},
					})
				})
				if errors.Is(err, mongolock.ErrNotFound) {
					return nil
				}
				if err != nil {
					return err
				}
			}
		})
	}
	return g.Wait()
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

// startProgress shows jobs done and the rate: a line redrawn in place on a
// terminal, a line every few seconds otherwise. The returned func stops it.
func startProgress(ctx context.Context, w io.Writer, coll *mongo.Collection, jobs int, waits *waitCounter, start time.Time) (stop func()) {
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
			rate := float64(done) / time.Since(start).Seconds()
			line := fmt.Sprintf("%d/%d jobs done, %.0f jobs/s, %d lock waits", done, jobs, rate, waits.n.Load())
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
// Any job processed twice, or not at all, fails the demo.
func demoSummary(ctx context.Context, w, stderr io.Writer, coll *mongo.Collection, jobs int, waits int64, wall time.Duration) int {
	done, err := coll.CountDocuments(ctx, bson.D{{Key: "state", Value: "DONE"}})
	if err != nil {
		return fail(stderr, "demo", err)
	}
	twice, err := coll.CountDocuments(ctx, bson.D{{Key: "runs", Value: bson.D{{Key: "$gt", Value: 1}}}})
	if err != nil {
		return fail(stderr, "demo", err)
	}
	locked, err := coll.CountDocuments(ctx, bson.D{{Key: mongolock.LockKey, Value: bson.D{{Key: "$ne", Value: nil}}}})
	if err != nil {
		return fail(stderr, "demo", err)
	}
	fmt.Fprintf(w, "jobs done:              %d of %d\n", done, jobs)
	fmt.Fprintf(w, "wall time:              %v\n", wall.Round(time.Millisecond))
	fmt.Fprintf(w, "throughput:             %.1f jobs/s\n", float64(done)/wall.Seconds())
	fmt.Fprintf(w, "lock waits:             %d\n", waits)
	fmt.Fprintf(w, "locks left behind:      %d\n", locked)
	fmt.Fprintf(w, "jobs processed twice:   %d\n", twice)
	if twice > 0 || done != int64(jobs) || locked > 0 {
		fmt.Fprintln(w, "FAILED")
		return exitFail
	}
	fmt.Fprintln(w, "ok: every job processed exactly once")
	return exitOK
}
