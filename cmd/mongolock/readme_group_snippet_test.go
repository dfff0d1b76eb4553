package main

import (
	"context"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/mongolock/mongolock"
)

// rerun makes a job and its flow READY again together: both are locked and
// both updates published in their releasing writes, or neither.
func rerun(ctx context.Context, db *mongo.Database, dbID string) error {
	jobsLk, flowsLk := mongolock.New(db.Collection("jobs")), mongolock.New(db.Collection("flows"))
	return mongolock.DoAll(ctx, func(ctx context.Context, g *mongolock.Group) error {
		job, err := g.Lock(ctx, jobsLk, bson.D{{Key: "db_id", Value: dbID}})
		if err != nil {
			return err // ErrLocked: everything released, DoAll waits and runs fn again
		}
		flow, err := g.Lock(ctx, flowsLk, bson.D{{Key: "jobs", Value: job.Document().Lookup("uuid").StringValue()}})
		if err != nil {
			return err
		}
		if err := flow.SetUpdateOnRelease(bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "READY"}}}}); err != nil {
			return err
		}
		return job.SetUpdateOnRelease(bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "READY"}}}})
	}, mongolock.WithMaxWait(time.Minute))
}
