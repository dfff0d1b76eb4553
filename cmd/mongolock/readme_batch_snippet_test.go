package main

import (
	"context"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/mongolock/mongolock"
)

var (
	readyJobs = bson.D{{Key: "state", Value: "READY"}}
	markDone  = bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "DONE"}}}}
)

// claimBatch locks up to 16 READY jobs in three round trips (ErrNotFound,
// ErrLocked, or 1 to 16 locks) and releases them in one bulk write.
func claimBatch(ctx context.Context, jobs *mongo.Collection) error {
	locks, err := mongolock.New(jobs).TryAcquireMany(ctx, readyJobs, 16)
	if err != nil {
		return err
	}
	for _, l := range locks {
		if err := l.SetUpdateOnRelease(markDone); err != nil {
			return err
		}
	}
	return mongolock.ReleaseAll(ctx, locks...)
}

// drainBatched is the batched worker: 16 workers, claims of up to 16 due
// jobs for the idle ones, each step's bookkeeping exactly Step's.
func drainBatched(ctx context.Context, jobs *mongo.Collection) error {
	lk := mongolock.New(jobs, mongolock.WithSort(bson.D{{Key: "priority", Value: -1}}), mongolock.WithBatch(16))
	return lk.Work(ctx, 16, readyJobs, func(ctx context.Context, l *mongolock.Lock) error {
		// ... the job ...
		return l.SetUpdateOnRelease(markDone)
	})
}
