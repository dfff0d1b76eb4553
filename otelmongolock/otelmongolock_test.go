package otelmongolock_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/mongolock/mongolock"
	"github.com/mongolock/mongolock/internal/testserver"
	"github.com/mongolock/mongolock/otelmongolock"
)

var client *mongo.Client

func TestMain(m *testing.M) {
	testserver.ServeIfHelper()
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	uri, _, stop, err := testserver.ForTests()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	client, err = mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	_ = client.Database("otelmongolock_test").Drop(context.Background())
	_ = client.Disconnect(context.Background())
	if err := stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left running:", err)
			code = 1
		}
	}
	return code
}

// metrics collects what reader holds, by metric name.
func metrics(t *testing.T, reader *sdkmetric.ManualReader) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != otelmongolock.ScopeName {
			t.Errorf("scope %q", sm.Scope.Name)
		}
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

// key names a data point by its attributes: "jobs" or "jobs/released".
func key(t *testing.T, set attribute.Set) string {
	t.Helper()
	coll, ok := set.Value(otelmongolock.CollectionKey)
	if !ok {
		t.Errorf("a data point without its collection: %v", set.ToSlice())
	}
	k := coll.AsString()
	if outcome, ok := set.Value(otelmongolock.OutcomeKey); ok {
		k += "/" + outcome.AsString()
	}
	if n := set.Len(); n > 2 || (n == 2 && k == coll.AsString()) {
		t.Errorf("attributes beyond collection and outcome: %v", set.ToSlice())
	}
	return k
}

// values reads every metric as name -> attributes -> value: a counter's or
// gauge's value, a histogram's count.
func values(t *testing.T, reader *sdkmetric.ManualReader) (map[string]map[string]int64, map[string]map[string]float64) {
	t.Helper()
	counts, sums := map[string]map[string]int64{}, map[string]map[string]float64{}
	for name, m := range metrics(t, reader) {
		counts[name], sums[name] = map[string]int64{}, map[string]float64{}
		switch d := m.Data.(type) {
		case metricdata.Sum[int64]:
			if !d.IsMonotonic {
				t.Errorf("%s is not monotonic", name)
			}
			for _, p := range d.DataPoints {
				counts[name][key(t, p.Attributes)] = p.Value
			}
		case metricdata.Gauge[int64]:
			for _, p := range d.DataPoints {
				counts[name][key(t, p.Attributes)] = p.Value
			}
		case metricdata.Histogram[float64]:
			if m.Unit != "s" {
				t.Errorf("%s in %q, want s", name, m.Unit)
			}
			for _, p := range d.DataPoints {
				counts[name][key(t, p.Attributes)] = int64(p.Count)
				sums[name][key(t, p.Attributes)] = p.Sum
				if min, ok := p.Min.Value(); ok && min < 0 {
					t.Errorf("%s: a negative duration %v", name, min)
				}
			}
		default:
			t.Errorf("%s: unexpected data %T", name, m.Data)
		}
	}
	return counts, sums
}

// TestMetrics runs a scripted sequence of lock events against the embedded
// server and checks every metric after it, with the real SDK.
func TestMetrics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer provider.Shutdown(context.Background())
	obs, err := otelmongolock.New(provider)
	if err != nil {
		t.Fatal(err)
	}
	coll := client.Database("otelmongolock_test").Collection("jobs_" + fmt.Sprint(time.Now().UnixNano()))
	defer coll.Drop(context.Background())
	for _, id := range []string{"a", "b", "c"} {
		if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "state", Value: "READY"}}); err != nil {
			t.Fatal(err)
		}
	}
	lk := mongolock.New(coll, mongolock.WithObserver(obs), mongolock.WithPollInterval(10*time.Millisecond),
		mongolock.WithRetry(mongolock.Retry{MaxAttempts: 1, Delays: []time.Duration{time.Nanosecond}}))
	docA, docB := bson.D{{Key: "_id", Value: "a"}}, bson.D{{Key: "_id", Value: "b"}}
	c := coll.Name()

	first, err := lk.TryAcquire(ctx, docA) // acquired, waited 0
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lk.TryAcquire(ctx, docA); !errors.Is(err, mongolock.ErrLocked) { // contended
		t.Fatal(err)
	}
	if _, err := lk.Acquire(ctx, docA, mongolock.WithMaxWait(0)); !errors.Is(err, mongolock.ErrLocked) { // contended, gave up
		t.Fatal(err)
	}
	second, err := lk.TryAcquire(ctx, docA, mongolock.WithBreakLock()) // acquired
	if err != nil {
		t.Fatal(err)
	}
	held, err := lk.Acquire(ctx, docB) // acquired after a wait of ~0
	if err != nil {
		t.Fatal(err)
	}
	counts, _ := values(t, reader)
	if got := counts["mongolock.lock.held"][c]; got != 3 {
		t.Errorf("held while three locks are: %d", got)
	}
	if err := first.Release(ctx); !errors.Is(err, mongolock.ErrLockLost) { // lost
		t.Fatal(err)
	}
	for _, l := range []*mongolock.Lock{second, held} { // released twice
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Steps on c: one retried failure, then a give-up, then Permanent on b.
	boom := errors.New("boom")
	docC := bson.D{{Key: "_id", Value: "c"}}
	for i := 0; i < 2; {
		switch err := lk.Step(ctx, docC, func(context.Context, *mongolock.Lock) error { return boom }); {
		case errors.Is(err, boom):
			i++
		case !errors.Is(err, mongolock.ErrNotFound): // not yet due again: try again
			t.Fatal(err)
		}
	}
	if err := lk.Step(ctx, docB, func(context.Context, *mongolock.Lock) error { return mongolock.Permanent(boom) }); !errors.Is(err, boom) {
		t.Fatal(err)
	}

	// The sweep's events need a lost reply (the library's sweep tests make
	// one); here the adapter's mapping is what is checked.
	obs.Unsettled(c)
	obs.Unsettled(c)
	obs.Swept(c)

	counts, sums := values(t, reader)
	want := map[string]map[string]int64{
		"mongolock.sweep.unsettled":       {c: 2},
		"mongolock.sweep.released":        {c: 1},
		"mongolock.lock.acquisitions":     {c: 6}, // 3 locks, 3 steps
		"mongolock.lock.contentions":      {c: 2},
		"mongolock.lock.give_ups":         {c: 1},
		"mongolock.lock.releases":         {c: 5}, // 2 locks, 3 steps
		"mongolock.lock.lost":             {c: 1},
		"mongolock.step.retries":          {c: 1},
		"mongolock.step.give_ups":         {c: 2},
		"mongolock.lock.acquire.duration": {c: 6},
		"mongolock.lock.wait.duration":    {c + "/acquired": 6, c + "/gave_up": 1},
		"mongolock.lock.hold.duration":    {c + "/released": 5, c + "/lost": 1},
		"mongolock.lock.held":             {c: 0},
	}
	for name, points := range want {
		if len(counts[name]) != len(points) {
			t.Errorf("%s: %v, want %v", name, counts[name], points)
			continue
		}
		for k, v := range points {
			if got, ok := counts[name][k]; !ok || got != v {
				t.Errorf("%s{%s} = %d, want %d (all: %v)", name, k, got, v, counts[name])
			}
		}
	}
	if len(counts) != len(want) {
		t.Errorf("%d metrics, want %d: %v", len(counts), len(want), counts)
	}
	if sums["mongolock.lock.hold.duration"][c+"/released"] <= 0 || sums["mongolock.lock.acquire.duration"][c] <= 0 {
		t.Errorf("durations not recorded: %v", sums)
	}
}

// TestGlobalProvider: New(nil) records through otel's global provider.
func TestGlobalProvider(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer provider.Shutdown(context.Background())
	otel.SetMeterProvider(provider)
	obs, err := otelmongolock.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	obs.Acquired("jobs", time.Millisecond, 0)
	counts, _ := values(t, reader)
	if counts["mongolock.lock.acquisitions"]["jobs"] != 1 || counts["mongolock.lock.held"]["jobs"] != 1 {
		t.Errorf("through the global provider: %v", counts)
	}
}
