package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/sync/errgroup"
)

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", stderr)
	var c conn
	c.registerServer(fs)
	fs.StringVar(&c.collection, "collection", "", "scratch collection `name`, which must be empty or absent; dropped at the end (default: a new mongolock_check_<random>)")
	workers := fs.Int("goroutines", 16, "concurrent clients")
	duration := fs.Duration("duration", 3*time.Second, "how long each of the two measurements runs")
	if ok, code := parse(fs, args); !ok {
		return code
	}
	if *workers < 2 {
		return usageError(stderr, fs, "-goroutines must be at least 2")
	}
	if *duration <= 0 {
		return usageError(stderr, fs, "-duration must be positive")
	}
	client, code := c.connectOrFail(ctx, "check", stderr)
	if client == nil {
		return code
	}
	defer client.Disconnect(context.Background())
	if c.collection == "" {
		c.collection = fmt.Sprintf("mongolock_check_%d", rand.Int64())
	}
	coll := client.Database(c.db).Collection(c.collection)
	if n, err := coll.CountDocuments(ctx, bson.D{}); err != nil || n > 0 {
		if err == nil {
			err = fmt.Errorf("collection %s.%s holds %d documents; check needs an empty one, and drops it", c.db, c.collection, n)
		}
		return fail(stderr, "check", err)
	}
	defer coll.Drop(context.WithoutCancel(ctx))

	fmt.Fprintf(stdout, "checking %s with %d concurrent clients, %v per measurement\n", c.uri, *workers, *duration)
	locks, overlaps, err := checkLocking(ctx, coll, *workers, *duration)
	if err != nil {
		return fail(stderr, "check", err)
	}
	fmt.Fprintf(stdout, "findAndModify lock on one document: %d acquisitions, %d overlapping holders\n", locks, overlaps)
	calls, final, err := checkIncrements(ctx, coll, *workers, *duration)
	if err != nil {
		return fail(stderr, "check", err)
	}
	fmt.Fprintf(stdout, "concurrent $inc on one document:    %d calls, final value %d, %d lost updates\n", calls, final, calls-final)
	if overlaps > 0 || calls != final {
		fmt.Fprintln(stdout, "not atomic: this server does not apply writes atomically under concurrency; locks on it are not safe")
		return exitNotAtomic
	}
	fmt.Fprintln(stdout, "atomic: no overlap and no lost update seen")
	return exitOK
}

// checkLocking has every client take a lock on one document with the bare
// findAndModify that mongolock relies on, and counts holders that overlap.
func checkLocking(ctx context.Context, coll *mongo.Collection, workers int, d time.Duration) (locks, overlaps int64, err error) {
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "lock"}, {Key: "owner", Value: nil}}); err != nil {
		return 0, 0, err
	}
	var inside, nLocks, nOverlaps atomic.Int64
	end := time.Now().Add(d)
	g, ctx := errgroup.WithContext(ctx)
	for w := range workers {
		g.Go(func() error {
			me := fmt.Sprint(w)
			for time.Now().Before(end) {
				err := coll.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: "lock"}, {Key: "owner", Value: nil}},
					bson.D{{Key: "$set", Value: bson.D{{Key: "owner", Value: me}}}}).Err()
				if err == mongo.ErrNoDocuments {
					continue
				}
				if err != nil {
					return err
				}
				nLocks.Add(1)
				if inside.Add(1) != 1 {
					nOverlaps.Add(1)
				}
				inside.Add(-1)
				res, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: "lock"}, {Key: "owner", Value: me}},
					bson.D{{Key: "$set", Value: bson.D{{Key: "owner", Value: nil}}}})
				if err != nil {
					return err
				}
				if res.MatchedCount == 0 { // someone else took the lock while we held it
					nOverlaps.Add(1)
				}
			}
			return nil
		})
	}
	err = g.Wait()
	return nLocks.Load(), nOverlaps.Load(), err
}

// checkIncrements has every client $inc one counter and compares the calls
// with the final value.
func checkIncrements(ctx context.Context, coll *mongo.Collection, workers int, d time.Duration) (calls, final int64, err error) {
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "counter"}, {Key: "n", Value: int64(0)}}); err != nil {
		return 0, 0, err
	}
	var n atomic.Int64
	end := time.Now().Add(d)
	g, gctx := errgroup.WithContext(ctx)
	for range workers {
		g.Go(func() error {
			for time.Now().Before(end) {
				if _, err := coll.UpdateOne(gctx, bson.D{{Key: "_id", Value: "counter"}}, bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: int64(1)}}}}); err != nil {
					return err
				}
				n.Add(1)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, 0, err
	}
	var doc struct{ N int64 }
	err = coll.FindOne(ctx, bson.D{{Key: "_id", Value: "counter"}}, options.FindOne()).Decode(&doc)
	return n.Load(), doc.N, err
}
