package mongolock_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/mongolock/mongolock"
)

// countingObserver counts each event.
type countingObserver struct {
	mu     sync.Mutex
	counts map[string]int
}

func (o *countingObserver) add(event string, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.counts == nil {
		o.counts = map[string]int{}
	}
	if d < 0 {
		event += " (negative duration)"
	}
	o.counts[event]++
}

func (o *countingObserver) Acquired(_ string, latency, waited time.Duration) {
	o.add("acquired", min(latency, waited))
}
func (o *countingObserver) Contended(string)                   { o.add("contended", 0) }
func (o *countingObserver) GaveUp(_ string, w time.Duration)   { o.add("gave up", w) }
func (o *countingObserver) Released(_ string, h time.Duration) { o.add("released", h) }
func (o *countingObserver) Lost(_ string, h time.Duration)     { o.add("lost", h) }

func TestObserverAndLogger(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	job := jobDoc(t, coll)
	obs := &countingObserver{}
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	lk := mongolock.New(coll, mongolock.WithObserver(obs), mongolock.WithLogger(logger), mongolock.WithPollInterval(10*time.Millisecond))

	a, err := lk.TryAcquire(ctx, job) // acquired
	if err != nil {
		t.Fatal(err)
	}
	_, _ = lk.TryAcquire(ctx, job)                               // contended
	_, _ = lk.Acquire(ctx, job, mongolock.WithMaxWait(0))        // contended, gave up
	b, err := lk.TryAcquire(ctx, job, mongolock.WithBreakLock()) // acquired
	if err != nil {
		t.Fatal(err)
	}
	_ = a.Release(ctx) // lost
	_ = b.Release(ctx) // released

	want := map[string]int{"acquired": 2, "contended": 2, "gave up": 1, "released": 1, "lost": 1}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	for k, v := range want {
		if obs.counts[k] != v {
			t.Errorf("%s: %d events, want %d (all: %v)", k, obs.counts[k], v, obs.counts)
		}
	}
	if len(obs.counts) != len(want) {
		t.Errorf("unexpected events: %v", obs.counts)
	}
	for _, msg := range []string{"lock acquired", "document locked", "lock lost", "lock released"} {
		if !strings.Contains(logs.String(), "mongolock: "+msg) {
			t.Errorf("no %q debug record in:\n%s", msg, logs.String())
		}
	}
}

// stepCountingObserver also counts step outcomes.
type stepCountingObserver struct{ countingObserver }

func (o *stepCountingObserver) StepRetried(string) { o.add("step retried", 0) }
func (o *stepCountingObserver) StepGaveUp(string)  { o.add("step gave up", 0) }

// An Observer that implements StepObserver hears of each counted failure of
// a step: retried, or given up (attempts ran out, or Permanent).
func TestStepObserver(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	job := jobDoc(t, coll)
	obs := &stepCountingObserver{}
	lk := mongolock.New(coll, mongolock.WithObserver(obs), mongolock.WithRetry(mongolock.Retry{MaxAttempts: 1, Delays: []time.Duration{time.Nanosecond}}))
	failing := errors.New("boom")
	steps := []struct {
		fn   func(context.Context, *mongolock.Lock) error
		want map[string]int
	}{
		{func(context.Context, *mongolock.Lock) error { return nil }, map[string]int{}},
		{func(context.Context, *mongolock.Lock) error { return failing }, map[string]int{"step retried": 1}},
		{func(context.Context, *mongolock.Lock) error { return failing }, map[string]int{"step retried": 1, "step gave up": 1}},
	}
	for i, s := range steps {
		for { // the retry's not-before is a nanosecond later
			err := lk.Step(ctx, job, s.fn)
			if !errors.Is(err, mongolock.ErrNotFound) {
				break
			}
		}
		obs.mu.Lock()
		got := map[string]int{"step retried": obs.counts["step retried"], "step gave up": obs.counts["step gave up"]}
		obs.mu.Unlock()
		for k := range got {
			if got[k] != s.want[k] {
				t.Errorf("after step %d: %s %d times, want %d", i+1, k, got[k], s.want[k])
			}
		}
	}
	// Permanent gives up at once, on a document with no failure counted.
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "job2"}, {Key: "state", Value: "READY"}}); err != nil {
		t.Fatal(err)
	}
	_ = lk.Step(ctx, bson.D{{Key: "_id", Value: "job2"}}, func(context.Context, *mongolock.Lock) error { return mongolock.Permanent(failing) })
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if obs.counts["step gave up"] != 2 || obs.counts["step retried"] != 1 {
		t.Errorf("after Permanent: %v", obs.counts)
	}
}

// Work with WithBatch reports to the Observer what Work one step at a time
// reports on the same queue: a lock taken and released per step, and each
// step's retry or give-up.
func TestWorkObserverBatchAsSingle(t *testing.T) {
	counts := map[int]map[string]int{}
	for _, batch := range []int{1, 4} {
		ctx := testCtx(t)
		coll := newColl(t)
		seedJobs(t, coll, 12)
		obs := &stepCountingObserver{}
		lk := mongolock.New(coll, mongolock.WithObserver(obs), mongolock.WithBatch(batch),
			mongolock.WithRetry(mongolock.Retry{Delays: []time.Duration{time.Millisecond}}))
		var mu sync.Mutex
		failed := map[any]bool{}
		fail := errors.New("once")
		err := lk.Work(ctx, 3, ready, func(ctx context.Context, l *mongolock.Lock) error {
			var id int32
			_ = l.Document().Lookup("_id").Unmarshal(&id)
			mu.Lock()
			first := !failed[id]
			failed[id] = true
			mu.Unlock()
			switch {
			case id%3 == 0:
				return mongolock.Permanent(fail) // gives up: state REMOTE_ERROR
			case id%3 == 1 && first:
				return fail // retried
			}
			return l.SetUpdateOnRelease(setDone)
		})
		if err != nil {
			t.Fatalf("batch %d: %v", batch, err)
		}
		obs.mu.Lock()
		counts[batch] = map[string]int{}
		for _, k := range []string{"acquired", "released", "lost", "step retried", "step gave up"} {
			counts[batch][k] = obs.counts[k]
		}
		obs.mu.Unlock()
	}
	// 12 jobs: 4 give up, 4 fail once then succeed, 4 succeed: 16 steps.
	want := map[string]int{"acquired": 16, "released": 16, "lost": 0, "step retried": 4, "step gave up": 4}
	for _, batch := range []int{1, 4} {
		for k, v := range want {
			if counts[batch][k] != v {
				t.Errorf("batch %d: %s %d times, want %d (all: %v)", batch, k, counts[batch][k], v, counts[batch])
			}
		}
	}
}
