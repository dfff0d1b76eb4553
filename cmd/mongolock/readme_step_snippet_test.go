package main

import (
	"context"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/mongolock/mongolock"
)

// uploadOne advances one due CHECKED_OUT job, highest priority first.
// ErrNotFound: nothing due; ErrLocked: every due job is held; otherwise
// upload's error, already counted in the job.
func uploadOne(ctx context.Context, jobs *mongo.Collection) error {
	lk := mongolock.New(jobs, mongolock.WithSort(bson.D{{Key: "priority", Value: -1}}))
	return lk.Step(ctx, bson.D{{Key: "state", Value: "CHECKED_OUT"}}, upload)
}

// uploadAll runs 8 workers until nothing matches: none due, waiting for a
// retry, or locked.
func uploadAll(ctx context.Context, jobs *mongo.Collection) error {
	lk := mongolock.New(jobs, mongolock.WithSort(bson.D{{Key: "priority", Value: -1}}))
	return lk.Work(ctx, 8, bson.D{{Key: "state", Value: "CHECKED_OUT"}}, upload)
}

func upload(ctx context.Context, l *mongolock.Lock) error {
	if err := send(ctx, l.Document()); err != nil {
		return err // counted: retried after 30s, 5m, 20m, then REMOTE_ERROR
	}
	return l.SetUpdateOnRelease(bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "UPLOADED"}}}})
}
