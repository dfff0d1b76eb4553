package mongolock_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"golang.org/x/sync/errgroup"

	"github.com/mongolock/mongolock"
)

// crossedRuns has workers groups take document x of as and bs in opposite
// orders, rounds times each, and returns how often fn ran in all. It counts
// the groups holding both at once in overlaps.
func crossedRuns(ctx context.Context, as, bs *mongo.Collection, workers, rounds int, overlaps *atomic.Int64) (int64, error) {
	alk, blk := mongolock.New(as), mongolock.New(bs)
	order := [][2]*mongolock.Locker{{alk, blk}, {blk, alk}}
	var runs, holders atomic.Int64
	g, ctx := errgroup.WithContext(ctx)
	for w := range workers {
		first, second := order[w%2][0], order[w%2][1]
		g.Go(func() error {
			for range rounds {
				err := mongolock.DoAll(ctx, func(ctx context.Context, g *mongolock.Group) error {
					runs.Add(1)
					if _, err := g.Lock(ctx, first, bson.D{{Key: "_id", Value: "x"}}); err != nil {
						return err
					}
					if _, err := g.Lock(ctx, second, bson.D{{Key: "_id", Value: "x"}}); err != nil {
						return err
					}
					if holders.Add(1) > 1 {
						overlaps.Add(1)
					}
					time.Sleep(time.Millisecond) // a holder that lasts, so that a second one would show
					holders.Add(-1)
					return nil
				}, mongolock.WithPollInterval(20*time.Millisecond), mongolock.WithMaxWait(5*time.Minute))
				if err != nil {
					return err
				}
			}
			return nil
		})
	}
	err := g.Wait()
	return runs.Load(), err
}

// A group that meets a lock waits for that document and runs fn again
// holding it, so fn runs a few times per success, not tens of times.
func TestDoAllRunsPerSuccess(t *testing.T) {
	as, bs := seedCrossed(t)
	const workers, rounds = 6, 12
	var overlaps atomic.Int64
	runs, err := crossedRuns(testCtx(t), as, bs, workers, rounds, &overlaps)
	if err != nil {
		t.Fatal(err)
	}
	if o := overlaps.Load(); o != 0 {
		t.Errorf("%d times two groups held both documents", o)
	}
	per := float64(runs) / (workers * rounds)
	t.Logf("fn ran %d times for %d successes (%.2f per success)", runs, workers*rounds, per)
	if per > 3 {
		t.Errorf("fn ran %.2f times per success, want at most 3", per)
	}
	for _, c := range []*mongo.Collection{as, bs} {
		if got := fields(rawDoc(t, c, "x"), mongolock.LockKey); got != "lock_id=<nil>" {
			t.Errorf("%s left %s", c.Name(), got)
		}
	}
}

func BenchmarkDoAllOppositeOrders(b *testing.B) {
	c, sent, err := countingClient(uri)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Disconnect(context.Background())
	as, bs := seedCrossed(b)
	as = c.Database(as.Database().Name()).Collection(as.Name())
	bs = c.Database(bs.Database().Name()).Collection(bs.Name())
	const workers, rounds = 6, 12
	var overlaps atomic.Int64
	b.ReportAllocs()
	var runs int64
	sent.Store(0)
	for b.Loop() {
		n, err := crossedRuns(context.Background(), as, bs, workers, rounds, &overlaps)
		if err != nil {
			b.Fatal(err)
		}
		runs += n
	}
	successes := float64(b.N * workers * rounds)
	b.ReportMetric(float64(runs)/successes, "runs/success")
	b.ReportMetric(float64(sent.Load())/successes, "roundtrips/success")
	if overlaps.Load() != 0 {
		b.Errorf("%d overlaps", overlaps.Load())
	}
}
