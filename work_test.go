package mongolock_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/mongolock/mongolock"
)

// Work draining a queue: retries, give-ups, several workers and processes.

// seen returns how many times event was observed.
func (o *countingObserver) seen(event string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.counts[event]
}

// The jobs of a work queue behave by _id mod 10: most succeed, 6 and 7
// fail once, 8 always fails, 9 fails permanently.
func jobKind(id int) string {
	switch id % 10 {
	case 6, 7:
		return "fails once"
	case 8:
		return "always fails"
	case 9:
		return "permanent"
	}
	return "succeeds"
}

// workPolicy retries fast: tests must not wait 30 seconds.
var workPolicy = mongolock.Retry{MaxAttempts: 2, Delays: []time.Duration{time.Millisecond, 3 * time.Millisecond}}

// wantAttempts is how often a job is stepped on under workPolicy: a job that
// always fails is tried once, then once after each of its counted failures.
func wantAttempts(id int) int {
	switch jobKind(id) {
	case "fails once":
		return 2
	case "always fails":
		return workPolicy.MaxAttempts + 1
	}
	return 1
}

// stepTally counts steps per job, and the time each step held its job.
type stepTally struct {
	mu       sync.Mutex
	steps    map[int]int
	spans    map[int][][2]int64 // wall-clock nanoseconds, from after the lock to before the release
	overlaps atomic.Int64       // seen in this process
	inside   sync.Map           // job id -> *atomic.Int32: holders in this process
}

func (s *stepTally) add(id int, span [2]int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.steps == nil {
		s.steps, s.spans = map[int]int{}, map[int][][2]int64{}
	}
	s.steps[id]++
	s.spans[id] = append(s.spans[id], span)
}

// queueStep is the fn of the work queue. It counts itself as a holder of
// its job in this process, notes when it held the job (processes share the
// machine's clock, and a holder's span ends before its release, which comes
// before the next holder's lock: two spans of a job that overlap are two
// holders at once), then behaves as the job's kind says.
func queueStep(tally *stepTally, record func(id int, span [2]int64)) func(context.Context, *mongolock.Lock) error {
	return func(ctx context.Context, l *mongolock.Lock) error {
		start := time.Now().UnixNano()
		doc := l.Document()
		id := int(doc.Lookup("_id").AsInt64())
		local, _ := tally.inside.LoadOrStore(id, new(atomic.Int32))
		if local.(*atomic.Int32).Add(1) != 1 {
			tally.overlaps.Add(1)
		}
		time.Sleep(time.Millisecond) // a holder that lasts, so that a second one would show
		outcome := l.SetUpdateOnRelease(setDone)
		switch jobKind(id) {
		case "fails once":
			if n, _ := doc.Lookup("remote", "step_attempts").AsInt64OK(); n == 0 {
				outcome = errBoom
			}
		case "always fails":
			outcome = errBoom
		case "permanent":
			outcome = mongolock.Permanent(errBoom)
		}
		local.(*atomic.Int32).Add(-1)
		span := [2]int64{start, time.Now().UnixNano()}
		tally.add(id, span)
		if record != nil {
			record(id, span)
		}
		return outcome
	}
}

// overlappingSpans counts the spans of a job that begin before the one
// before them ended.
func overlappingSpans(spans map[int][][2]int64) int64 {
	var n int64
	for _, s := range spans {
		slices.SortFunc(s, func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) })
		for i := 1; i < len(s); i++ {
			if s[i][0] <= s[i-1][1] {
				n++
			}
		}
	}
	return n
}

func seedWorkQueue(t *testing.T, coll *mongo.Collection, n int) {
	docs := make([]any, n)
	for i := range docs {
		docs[i] = bson.D{{Key: "_id", Value: i}, {Key: "state", Value: "READY"}}
	}
	insert(t, coll, docs...)
}

// workLocker is the queue's Locker. It does not sort: FerretDB sorts a
// findAndModify's matches in memory, which for hundreds of jobs costs more
// than the rest of a step (Step's order is tested on its own).
func workLocker(coll *mongo.Collection) *mongolock.Locker {
	return mongolock.New(coll, mongolock.WithRetry(workPolicy), mongolock.WithPollInterval(20*time.Millisecond), workBatch)
}

// checkWorkQueue checks that every job ended DONE or given up, stepped on
// exactly as often as the policy says, never by two holders at once.
func checkWorkQueue(t *testing.T, coll *mongo.Collection, steps map[int]int, spans map[int][][2]int64, overlaps int64, n int) {
	t.Helper()
	if overlaps != 0 {
		t.Errorf("%d overlapping holders in one process", overlaps)
	}
	if o := overlappingSpans(spans); o != 0 {
		t.Errorf("%d steps held a job while another step held it", o)
	}
	for id := range n {
		if steps[id] != wantAttempts(id) {
			t.Errorf("job %d (%s) stepped on %d times, want %d", id, jobKind(id), steps[id], wantAttempts(id))
		}
	}
	cur, err := coll.Find(context.Background(), bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close(context.Background())
	seen := 0
	for cur.Next(context.Background()) {
		doc := cur.Current
		id := int(doc.Lookup("_id").AsInt64())
		want := "state=DONE remote.step_attempts=0 lock_id=<nil>"
		switch jobKind(id) {
		case "always fails":
			want = fmt.Sprintf("state=REMOTE_ERROR remote.step_attempts=%d lock_id=<nil>", workPolicy.MaxAttempts) // kept, as jobflow-remote keeps it
		case "permanent":
			want = "state=REMOTE_ERROR remote.step_attempts=<missing> lock_id=<nil>"
		}
		if got := fields(doc, "state", "remote.step_attempts", mongolock.LockKey); got != want {
			t.Errorf("job %d: %s, want %s", id, got, want)
		}
		seen++
	}
	if seen != n {
		t.Errorf("%d jobs in the collection, want %d", seen, n)
	}
}

func TestWorkQueue(t *testing.T) {
	// Hundreds of steps, one write at a time on a server that scans: more
	// than testCtx's minute on a slow machine under -race.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	coll := newColl(t)
	const jobs, workers = 200, 6
	seedWorkQueue(t, coll, jobs)
	var tally stepTally
	if err := workLocker(coll).Work(ctx, workers, ready, queueStep(&tally, nil)); err != nil {
		t.Fatal(err)
	}
	checkWorkQueue(t, coll, tally.steps, tally.spans, tally.overlaps.Load(), jobs)
}

func TestWorkProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	coll := newColl(t)
	const jobs, procs, workers = 120, 3, 4
	seedWorkQueue(t, coll, jobs)
	steps, spans := map[int]int{}, map[int][][2]int64{}
	var overlaps int64
	role := "work"
	if workBatch != nil {
		role = "work16"
	}
	for _, r := range runChildren(t, role, procs, coll, workers, 0) {
		for k, end := range r {
			var id int
			var start int64
			if _, err := fmt.Sscanf(k, "span:%d:%d", &id, &start); err == nil {
				steps[id]++
				spans[id] = append(spans[id], [2]int64{start, end})
			}
		}
		overlaps += r["overlaps"]
	}
	checkWorkQueue(t, coll, steps, spans, overlaps, jobs)
}

// workChild is the "work" role of a child process: Work on the parent's
// queue, printing a span:<id>:<start>=<end> line per step and the overlaps
// it saw.
func workChild(ctx context.Context, coll *mongo.Collection, workers, _ int) int {
	var tally stepTally
	var mu sync.Mutex
	out := func(id int, span [2]int64) {
		mu.Lock()
		fmt.Printf("span:%d:%d=%d\n", id, span[0], span[1])
		mu.Unlock()
	}
	if err := workLocker(coll).Work(ctx, workers, ready, queueStep(&tally, out)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("overlaps=%d\n", tally.overlaps.Load())
	return 0
}

func TestWorkEmpty(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	insert(t, coll, bson.D{{Key: "_id", Value: 1}, {Key: "state", Value: "DONE"}})
	ran := false
	err := mongolock.New(coll, workBatch).Work(ctx, 4, ready, func(context.Context, *mongolock.Lock) error { ran = true; return nil })
	if err != nil || ran {
		t.Errorf("Work on an empty queue: %v, fn ran: %v", err, ran)
	}
}

// A worker with nothing due sleeps until the earliest not-before time, not
// for the poll interval (an hour here), and does not spin meanwhile.
func TestWorkSleepsUntilNotBefore(t *testing.T) {
	ctx := testCtx(t)
	coll, attempts := countFindAndModify(t, newColl(t))
	nb := bson.NewDateTimeFromTime(serverNow(t).Add(300 * time.Millisecond))
	insert(t, coll, bson.D{{Key: "_id", Value: 1}, {Key: "state", Value: "READY"}, {Key: "remote", Value: bson.D{{Key: "retry_time_limit", Value: nb}}}})
	lk := mongolock.New(coll, mongolock.WithPollInterval(time.Hour), workBatch)
	if err := lk.Work(ctx, 2, ready, publishDone); err != nil {
		t.Fatal(err)
	}
	if got := fields(rawDoc(t, coll, 1), "state"); got != "state=DONE" {
		t.Errorf("after Work: %s", got)
	}
	if n := attempts.Load(); n > 8 {
		t.Errorf("%d attempts to lock for one document that was due once", n)
	}
}

// A worker that finds every due document locked sleeps for the poll
// interval (an hour here), and is woken when the Locker releases one.
func TestWorkWokenByRelease(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	insert(t, coll, bson.D{{Key: "_id", Value: 1}, {Key: "state", Value: "READY"}})
	var obs countingObserver
	lk := mongolock.New(coll, mongolock.WithPollInterval(time.Hour), mongolock.WithObserver(&obs), workBatch)
	held, err := lk.TryAcquire(ctx, ready)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- lk.Work(ctx, 1, ready, publishDone) }()
	for obs.seen("contended") == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := fields(rawDoc(t, coll, 1), "state"); got != "state=DONE" {
		t.Errorf("after Work: %s", got)
	}
}

// A step whose fn meets another lock counts nothing; the worker backs off
// and tries again until the other lock is gone.
func TestWorkFnMeetsLock(t *testing.T) {
	ctx := testCtx(t)
	jobs, flows := newColl(t), newColl(t)
	insert(t, jobs, bson.D{{Key: "_id", Value: 1}, {Key: "state", Value: "READY"}, {Key: "flow", Value: "f"}},
		bson.D{{Key: "_id", Value: 2}, {Key: "state", Value: "READY"}, {Key: "flow", Value: "f"}})
	insert(t, flows, bson.D{{Key: "_id", Value: "f"}})
	var flowObs countingObserver
	flowLk := mongolock.New(flows, mongolock.WithObserver(&flowObs))
	held, err := flowLk.TryAcquire(ctx, bson.D{{Key: "_id", Value: "f"}})
	if err != nil {
		t.Fatal(err)
	}
	lk := mongolock.New(jobs, mongolock.WithPollInterval(20*time.Millisecond), mongolock.WithRetry(mongolock.Retry{MaxAttempts: 1}), workBatch)
	done := make(chan error, 1)
	go func() {
		done <- lk.Work(ctx, 2, ready, func(ctx context.Context, l *mongolock.Lock) error {
			f, err := flowLk.TryAcquire(ctx, bson.D{{Key: "_id", Value: l.Document().Lookup("flow").StringValue()}})
			if err != nil {
				return err // ErrLocked as it is: no attempt counted
			}
			if err := f.ReleaseWithUpdate(ctx, bson.D{{Key: "$inc", Value: bson.D{{Key: "jobs_done", Value: 1}}}}); err != nil {
				return err
			}
			return l.SetUpdateOnRelease(setDone)
		})
	}()
	for flowObs.seen("contended") < 5 {
		time.Sleep(5 * time.Millisecond)
	}
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, id := range []int{1, 2} {
		if got, want := fields(rawDoc(t, jobs, id), "state", "remote.step_attempts", "remote.error"), "state=DONE remote.step_attempts=0 remote.error=<nil>"; got != want {
			t.Errorf("job %d: %s, want %s", id, got, want)
		}
	}
	if got := fields(rawDoc(t, flows, "f"), "jobs_done"); got != "jobs_done=2" {
		t.Errorf("flow: %s", got)
	}
}

// Work stops with its context; the step it interrupted counts nothing, and
// no lock is left behind.
func TestWorkStopsWithContext(t *testing.T) {
	coll := newColl(t)
	seedJobs(t, coll, 20)
	ctx, cancel := context.WithCancel(testCtx(t))
	var n atomic.Int32
	err := mongolock.New(coll, workBatch).Work(ctx, 3, ready, func(ctx context.Context, l *mongolock.Lock) error {
		if n.Add(1) == 3 { // every worker is inside fn
			cancel()
		}
		<-ctx.Done()
		return ctx.Err()
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Work returned %v, want context.Canceled", err)
	}
	left, err := coll.CountDocuments(context.Background(), bson.D{{Key: "$or", Value: bson.A{
		bson.D{{Key: mongolock.LockKey, Value: bson.D{{Key: "$ne", Value: nil}}}},
		bson.D{{Key: "remote", Value: bson.D{{Key: "$exists", Value: true}}}},
	}}})
	if err != nil || left != 0 {
		t.Errorf("%d documents locked or counted a failure after Work stopped (%v)", left, err)
	}
}

// A panic in fn stops the workers, releases its document unchanged and goes
// on in Work's caller.
func TestWorkPanic(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	seedJobs(t, coll, 10)
	defer func() {
		if p := recover(); p != "job 3" {
			t.Errorf("recovered %v, want the panic of job 3", p)
		}
		if got := fields(rawDoc(t, coll, 3), "state", "remote", mongolock.LockKey); got != "state=READY remote=<missing> lock_id=<nil>" {
			t.Errorf("job 3 after its panic: %s", got)
		}
		if n, _ := coll.CountDocuments(ctx, bson.D{{Key: mongolock.LockKey, Value: bson.D{{Key: "$ne", Value: nil}}}}); n != 0 {
			t.Errorf("%d locks left behind", n)
		}
	}()
	_ = mongolock.New(coll, workBatch).Work(ctx, 3, ready, func(ctx context.Context, l *mongolock.Lock) error {
		if l.Document().Lookup("_id").AsInt64() == 3 {
			panic("job 3")
		}
		return l.SetUpdateOnRelease(setDone)
	})
	t.Error("Work returned after a panic")
}

// An error that is no step's failure (here the server refuses the filter)
// ends Work.
func TestWorkServerError(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	seedJobs(t, coll, 3)
	err := mongolock.New(coll, workBatch).Work(ctx, 2, bson.D{{Key: "state", Value: bson.D{{Key: "$bogus", Value: 1}}}}, publishDone)
	if err == nil || errors.Is(err, mongolock.ErrInvalidOption) {
		t.Errorf("Work with a filter the server refuses: %v", err)
	}
}

// childRoles are the roles of child processes that the tests of Work and
// DoAll add to runChild's.
var childRoles = map[string]func(ctx context.Context, coll *mongo.Collection, workers, rounds int) int{
	"work": workChild,
	"work16": func(ctx context.Context, coll *mongo.Collection, workers, rounds int) int {
		workBatch = mongolock.WithBatch(16)
		return workChild(ctx, coll, workers, rounds)
	},
	"crossed": crossedChild,
}

// workBatch is the Locker option of the Work tests: nil (one Step per
// document) when they run on their own, WithBatch(16) under TestWorkBatch16.
var workBatch mongolock.Option

// The Work tests again, claiming up to 16 documents per round trip.
func TestWorkBatch16(t *testing.T) {
	workBatch = mongolock.WithBatch(16)
	defer func() { workBatch = nil }()
	for _, tc := range []struct {
		name string
		test func(*testing.T)
	}{
		{"Queue", TestWorkQueue}, {"Processes", TestWorkProcesses}, {"Empty", TestWorkEmpty},
		{"SleepsUntilNotBefore", TestWorkSleepsUntilNotBefore}, {"WokenByRelease", TestWorkWokenByRelease},
		{"FnMeetsLock", TestWorkFnMeetsLock}, {"StopsWithContext", TestWorkStopsWithContext},
		{"Panic", TestWorkPanic}, {"ServerError", TestWorkServerError},
	} {
		t.Run(tc.name, tc.test)
	}
}

// Batched workers in this process and one-at-a-time workers in two other
// processes drain one queue at once: every job is stepped on as often as
// the policy says, never by two holders at once, and ends as it should.
func TestWorkBatchMixedProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	coll := newColl(t)
	const jobs, procs, workers = 160, 2, 4
	seedWorkQueue(t, coll, jobs)
	var tally stepTally
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	batched := make(chan error, 1)
	go func() {
		lk := mongolock.New(coll, mongolock.WithRetry(workPolicy), mongolock.WithPollInterval(20*time.Millisecond), mongolock.WithBatch(16))
		batched <- lk.Work(ctx, 8, ready, queueStep(&tally, nil))
	}()
	steps, spans := map[int]int{}, map[int][][2]int64{}
	var overlaps int64
	for _, r := range runChildren(t, "work", procs, coll, workers, 0) {
		for k, end := range r {
			var id int
			var start int64
			if _, err := fmt.Sscanf(k, "span:%d:%d", &id, &start); err == nil {
				steps[id]++
				spans[id] = append(spans[id], [2]int64{start, end})
			}
		}
		overlaps += r["overlaps"]
	}
	if err := <-batched; err != nil {
		t.Fatal(err)
	}
	others := 0
	for _, n := range steps {
		others += n
	}
	if others == 0 {
		t.Error("the other processes took no job: the test did not mix them")
	}
	local := 0
	for id, n := range tally.steps {
		steps[id] += n
		spans[id] = append(spans[id], tally.spans[id]...)
		local += n
	}
	if local == 0 {
		t.Error("the batched workers took no job: the test did not mix them")
	}
	checkWorkQueue(t, coll, steps, spans, overlaps+tally.overlaps.Load(), jobs)
}
