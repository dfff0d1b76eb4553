package mongolock_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/mongolock/mongolock"
)

const childTTL = "MONGOLOCK_TEST_TTL"

// holdChild takes a leased lock on document "job", says so, and holds it until
// it is killed.
func holdChild(ctx context.Context, coll *mongo.Collection) int {
	ttl, err := time.ParseDuration(os.Getenv(childTTL))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	l, err := mongolock.New(coll, mongolock.WithLease(ttl)).TryAcquire(ctx, bson.D{{Key: "_id", Value: "job"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("locked=%s\n", l.ID())
	<-ctx.Done()
	return 0
}
