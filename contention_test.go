package mongolock_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
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

// Several OS processes: the test binary re-executes itself with childEnv set
// to a role; TestMain runs the role instead of the tests.
const (
	childEnv     = "MONGOLOCK_TEST_CHILD"
	childURI     = "MONGOLOCK_TEST_URI"
	childColl    = "MONGOLOCK_TEST_COLL"
	childWorkers = "MONGOLOCK_TEST_WORKERS"
	childRounds  = "MONGOLOCK_TEST_ROUNDS"
)

// holders counts, inside the document itself, how many holders are in the
// critical section at once, so that overlaps across processes show.
type tally struct {
	acquired atomic.Int64
	overlaps atomic.Int64
}

// criticalSection runs under the lock of document id: it enters (an atomic
// $inc that must find no one else inside), makes a read-modify-write that
// loses an update if another holder runs at the same time, and leaves.
func criticalSection(ctx context.Context, coll *mongo.Collection, id any, local *atomic.Int32, t *tally) error {
	t.acquired.Add(1)
	if local != nil {
		if local.Add(1) != 1 {
			t.overlaps.Add(1)
		}
		defer local.Add(-1)
	}
	byID := bson.D{{Key: "_id", Value: id}}
	var in struct{ Inside int }
	if err := coll.FindOneAndUpdate(ctx, byID, bson.D{{Key: "$inc", Value: bson.D{{Key: "inside", Value: 1}}}},
		options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&in); err != nil {
		return err
	}
	if in.Inside != 1 {
		t.overlaps.Add(1)
	}
	var cur struct{ Counter int }
	if err := coll.FindOne(ctx, byID).Decode(&cur); err != nil {
		return err
	}
	runtime.Gosched()
	if _, err := coll.UpdateOne(ctx, byID, bson.D{{Key: "$set", Value: bson.D{{Key: "counter", Value: cur.Counter + 1}}}}); err != nil {
		return err
	}
	_, err := coll.UpdateOne(ctx, byID, bson.D{{Key: "$inc", Value: bson.D{{Key: "inside", Value: -1}}}})
	return err
}

// contend runs workers goroutines that each lock document id rounds times.
func contend(ctx context.Context, coll *mongo.Collection, id any, workers, rounds int, t *tally) error {
	lk := mongolock.New(coll, mongolock.WithPollInterval(50*time.Millisecond), mongolock.WithMaxWait(2*time.Minute))
	var local atomic.Int32
	g, ctx := errgroup.WithContext(ctx)
	for range workers {
		g.Go(func() error {
			for range rounds {
				err := lk.Do(ctx, bson.D{{Key: "_id", Value: id}}, func(ctx context.Context, _ *mongolock.Lock) error {
					return criticalSection(ctx, coll, id, &local, t)
				})
				if err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

func TestContentionGoroutines(t *testing.T) {
	coll := newColl(t)
	insert(t, coll, bson.D{{Key: "_id", Value: "shared"}, {Key: "counter", Value: 0}, {Key: "inside", Value: 0}})
	const workers, rounds = 8, 20
	var tl tally
	if err := contend(testCtx(t), coll, "shared", workers, rounds, &tl); err != nil {
		t.Fatal(err)
	}
	checkTally(t, coll, "shared", &tl, workers*rounds)
}

func TestContentionProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	coll := newColl(t)
	insert(t, coll, bson.D{{Key: "_id", Value: "shared"}, {Key: "counter", Value: 0}, {Key: "inside", Value: 0}})
	procs, workers, rounds := 4, 8, stress(5, 3125) // long: 100 000 acquisitions
	var tl tally
	results := runChildren(t, "contend", procs, coll, workers, rounds)
	for _, r := range results {
		tl.acquired.Add(r["acquired"])
		tl.overlaps.Add(r["overlaps"])
	}
	checkTally(t, coll, "shared", &tl, procs*workers*rounds)
}

func checkTally(t *testing.T, coll *mongo.Collection, id any, tl *tally, want int) {
	t.Helper()
	doc := get(t, coll, id)
	if got := tl.acquired.Load(); got != int64(want) {
		t.Errorf("acquisitions: %d, want %d", got, want)
	}
	if n := tl.overlaps.Load(); n != 0 {
		t.Errorf("%d overlapping holders", n)
	}
	if c, _ := doc["counter"].(int32); int(c) != want {
		t.Errorf("counter = %v after %d read-modify-writes under the lock: %d updates lost", doc["counter"], want, want-int(c))
	}
	if doc[mongolock.LockKey] != nil {
		t.Errorf("lock left behind: %v", doc)
	}
}

// TestQueue drains READY documents with several workers, each publishing
// DONE in the write that releases its lock.
func TestQueue(t *testing.T) {
	coll := newColl(t)
	const jobs, workers = 48, 6
	seedJobs(t, coll, jobs)
	processed := drainQueue(t, coll, workers)
	checkQueue(t, coll, processed, jobs)
}

func TestQueueProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	// FerretDB scans the whole collection for a sorted findAndModify, so the
	// long mode drains many queues of 1 000 jobs rather than one of 10 000.
	rounds, jobs := stress(1, 10), stress(200, 1000)
	for round := range rounds {
		coll := newColl(t)
		seedJobs(t, coll, jobs)
		processed := map[int]int{}
		for _, r := range runChildren(t, "queue", 4, coll, 8, 0) {
			for k, v := range r {
				if id, err := strconv.Atoi(strings.TrimPrefix(k, "job")); err == nil {
					processed[id] += int(v)
				}
			}
		}
		checkQueue(t, coll, processed, jobs)
		if t.Failed() {
			t.Fatalf("round %d of %d failed", round+1, rounds)
		}
	}
}

func seedJobs(t *testing.T, coll *mongo.Collection, n int) {
	docs := make([]any, n)
	for i := range docs {
		docs[i] = bson.D{{Key: "_id", Value: i}, {Key: "state", Value: "READY"}, {Key: "priority", Value: i % 7}}
	}
	insert(t, coll, docs...)
}

func drainQueue(t testing.TB, coll *mongo.Collection, workers int) map[int]int {
	var mu sync.Mutex
	processed := map[int]int{}
	err := queueWorkers(testCtx(t), coll, workers, func(id int) {
		mu.Lock()
		processed[id]++
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	return processed
}

// queueWorkers runs workers that take READY jobs, highest priority first,
// until none is left.
func queueWorkers(ctx context.Context, coll *mongo.Collection, workers int, done func(id int)) error {
	lk := mongolock.New(coll, mongolock.WithSort(bson.D{{Key: "priority", Value: -1}}), mongolock.WithPollInterval(20*time.Millisecond))
	g, ctx := errgroup.WithContext(ctx)
	for range workers {
		g.Go(func() error {
			for {
				err := lk.Do(ctx, bson.D{{Key: "state", Value: "READY"}}, func(ctx context.Context, l *mongolock.Lock) error {
					id, ok := l.Document().Lookup("_id").AsInt64OK()
					if !ok {
						return fmt.Errorf("job without an integer _id: %v", l.Document())
					}
					done(int(id))
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

func checkQueue(t *testing.T, coll *mongo.Collection, processed map[int]int, jobs int) {
	t.Helper()
	for id := range jobs {
		if processed[id] != 1 {
			t.Errorf("job %d processed %d times", id, processed[id])
		}
	}
	ctx := context.Background()
	n, err := coll.CountDocuments(ctx, bson.D{{Key: "state", Value: "DONE"}, {Key: mongolock.LockKey, Value: nil}})
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(jobs) {
		t.Errorf("%d unlocked DONE jobs, want %d", n, jobs)
	}
	// Each releasing write counted one run in the document itself.
	n, err = coll.CountDocuments(ctx, bson.D{{Key: "runs", Value: bson.D{{Key: "$ne", Value: 1}}}})
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d jobs published by more or fewer than one holder", n)
	}
}

// stressEnv set to "long" makes the multi-process tests run their long mode.
const stressEnv = "MONGOLOCK_STRESS"

// stress returns the size for the current mode.
func stress(short, long int) int {
	if os.Getenv(stressEnv) == "long" {
		return long
	}
	return short
}

// runChildren starts procs copies of the test binary in role and returns
// each one's "key=value" result lines. Each child must finish within
// childDeadline, or it is killed and the test fails with its output.
func runChildren(t *testing.T, role string, procs int, coll *mongo.Collection, workers, rounds int) []map[string]int64 {
	t.Helper()
	children := make([]*child, procs)
	for i := range children {
		children[i] = spawn(t, childCommand(role, coll, workers, rounds))
	}
	results := make([]map[string]int64, procs)
	for i, c := range children {
		c.wait(t, childDeadline(), fmt.Sprintf("child %d of %d in role %q to finish", i, procs, role))
		results[i] = map[string]int64{}
		sc := bufio.NewScanner(&c.stdout)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), "=")
			if n, err := strconv.ParseInt(v, 10, 64); ok && err == nil {
				results[i][k] += n
			}
		}
	}
	return results
}

// childDeadline bounds a child process of a test: generous in the short
// mode, hours in the long one. A bound against hanging, not a timing claim.
func childDeadline() time.Duration {
	if os.Getenv(stressEnv) == "long" {
		return 2 * time.Hour
	}
	return 5 * time.Minute
}

// childCommand is the test binary started in role against coll.
func childCommand(role string, coll *mongo.Collection, workers, rounds int) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		childEnv+"="+role, childURI+"="+uri, childColl+"="+coll.Name(),
		childWorkers+"="+strconv.Itoa(workers), childRounds+"="+strconv.Itoa(rounds))
	return cmd
}

// runChild is a child process's main: it runs role against the parent's
// server and prints its results as key=value lines.
func runChild(role string) int {
	c, err := connect(os.Getenv(childURI))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Disconnect(context.Background())
	coll := c.Database(testDB).Collection(os.Getenv(childColl))
	workers, _ := strconv.Atoi(os.Getenv(childWorkers))
	rounds, _ := strconv.Atoi(os.Getenv(childRounds))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour) // the long mode runs for many minutes; the parent kills us on failure
	defer cancel()
	switch role {
	case "contend":
		var tl tally
		if err := contend(ctx, coll, "shared", workers, rounds, &tl); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Printf("acquired=%d\noverlaps=%d\n", tl.acquired.Load(), tl.overlaps.Load())
	case "queue":
		var mu sync.Mutex
		err := queueWorkers(ctx, coll, workers, func(id int) {
			mu.Lock()
			fmt.Printf("job%d=1\n", id)
			mu.Unlock()
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	case "hold":
		return holdChild(ctx, coll)
	case "contended", "contended-bare":
		var st contendedStats
		if err := measureContended(ctx, os.Getenv(childURI), coll.Name(), workers, int64(rounds), role == "contended-bare", &st); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		for _, ns := range st.lat.ns {
			fmt.Printf("latency=%d\n", int64(ns))
		}
		fmt.Printf("acquired=%d\ncpu=%d\ncommands=%d\n", st.acquired.Load(), st.cpu.Nanoseconds(), st.commands)
	default:
		if f, ok := childRoles[role]; ok {
			return f(ctx, coll, workers, rounds)
		}
		fmt.Fprintln(os.Stderr, "unknown role", role)
		return 2
	}
	return 0
}
