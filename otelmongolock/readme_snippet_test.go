// README.md's "Metrics" section repeats this file after its package clause,
// and TestREADMEMetrics checks that it does.

package otelmongolock_test

import (
	"context"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.opentelemetry.io/otel/metric"

	"github.com/mongolock/mongolock"
	"github.com/mongolock/mongolock/otelmongolock"
)

// newObservedLocker returns a Locker of the jobs collection whose lock
// events are metrics of provider (the SDK's MeterProvider with your
// exporter, OTLP or Prometheus; nil for otel's global one).
func newObservedLocker(jobs *mongo.Collection, provider metric.MeterProvider) (*mongolock.Locker, error) {
	obs, err := otelmongolock.New(provider)
	if err != nil {
		return nil, err
	}
	return mongolock.New(jobs, mongolock.WithObserver(obs), mongolock.WithSort(bson.D{{Key: "priority", Value: -1}})), nil
}

// stepOnce advances one READY job; the metrics count the lock, its wait and
// hold, and the step's retry or give-up if it fails.
func stepOnce(ctx context.Context, lk *mongolock.Locker) error {
	return lk.Step(ctx, bson.D{{Key: "state", Value: "READY"}}, func(ctx context.Context, l *mongolock.Lock) error {
		return l.SetUpdateOnRelease(bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "DONE"}}}})
	})
}
