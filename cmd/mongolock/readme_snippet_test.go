// README.md's "Use" section repeats this file after its package clause, and
// TestREADMESnippet checks that it does: go vet and the test keep it right.

package main

import (
	"context"
	"errors"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/mongolock/mongolock"
)

// processReadyJobs takes READY jobs one at a time, highest priority first,
// until none is left.
func processReadyJobs(ctx context.Context, client *mongo.Client) error {
	jobs := client.Database("work").Collection("jobs")
	lk := mongolock.New(jobs, mongolock.WithSort(bson.D{{Key: "priority", Value: -1}}))

	for {
		err := lk.Do(ctx, bson.D{{Key: "state", Value: "READY"}}, func(ctx context.Context, l *mongolock.Lock) error {
			if err := process(ctx, l.Document()); err != nil {
				return err // lock released, document left READY
			}
			// Published in the same write that releases the lock.
			return l.SetUpdateOnRelease(bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "DONE"}}}})
		})
		if errors.Is(err, mongolock.ErrNotFound) {
			return nil // no READY job left
		}
		if err != nil {
			return err // e.g. every READY job stayed locked for WithMaxWait (600s)
		}
	}
}
