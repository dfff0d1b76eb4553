package mongolock_test

import (
	"context"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/mongolock/mongolock"
	"github.com/mongolock/mongolock/internal/testserver"
)

// A group that holds _id 1 of a collection on one deployment locks the free
// _id 1 of the same-named collection on another: collections are told apart
// by their client, not by their names alone.
func TestGroupTwoDeployments(t *testing.T) {
	if !embedded {
		t.Skip("needs a second deployment: runs on the embedded servers")
	}
	ctx := testCtx(t)
	uri2, _, stop, err := testserver.ForTests()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	client2, err := connect(uri2)
	if err != nil {
		t.Fatal(err)
	}
	defer client2.Disconnect(context.Background())
	jobsA := newColl(t)
	jobsB := client2.Database(jobsA.Database().Name()).Collection(jobsA.Name())
	defer jobsB.Drop(context.Background())
	insert(t, jobsA, bson.D{{Key: "_id", Value: 1}})
	insert(t, jobsB, bson.D{{Key: "_id", Value: 1}})
	lkA, lkB := mongolock.New(jobsA), mongolock.New(jobsB)
	err = mongolock.DoAll(ctx, func(ctx context.Context, g *mongolock.Group) error {
		a, err := g.Lock(ctx, lkA, bson.D{{Key: "_id", Value: 1}})
		if err != nil {
			return err
		}
		b, err := g.Lock(ctx, lkB, bson.D{{Key: "_id", Value: 1}})
		if err != nil {
			return err
		}
		if a == b {
			t.Error("the lock on deployment B is the one on deployment A")
		}
		held := [2]string{fields(rawDoc(t, jobsA, 1), mongolock.LockKey), fields(rawDoc(t, jobsB, 1), mongolock.LockKey)}
		if held[0] != "lock_id="+a.ID() || held[1] != "lock_id="+b.ID() {
			t.Errorf("held %v, want A's lock %s and B's %s", held, a.ID(), b.ID())
		}
		return nil
	})
	if err != nil {
		t.Fatalf("DoAll: %v", err)
	}
	if got := fields(rawDoc(t, jobsB, 1), mongolock.LockKey); got != "lock_id=<nil>" {
		t.Errorf("B after DoAll: %s", got)
	}
}

// Through a second client of the same deployment, the group's document is
// still the group's own: g.Lock returns the lock it holds, not ErrLocked.
func TestGroupTwoClientsOneDeployment(t *testing.T) {
	ctx := testCtx(t)
	client2, err := connect(uri)
	if err != nil {
		t.Fatal(err)
	}
	defer client2.Disconnect(context.Background())
	jobs := newColl(t)
	insert(t, jobs, bson.D{{Key: "_id", Value: 1}})
	lk1 := mongolock.New(jobs)
	lk2 := mongolock.New(client2.Database(jobs.Database().Name()).Collection(jobs.Name()))
	err = mongolock.DoAll(ctx, func(ctx context.Context, g *mongolock.Group) error {
		a, err := g.Lock(ctx, lk1, bson.D{{Key: "_id", Value: 1}})
		if err != nil {
			return err
		}
		b, err := g.Lock(ctx, lk2, bson.D{{Key: "_id", Value: 1}})
		if err != nil {
			return err
		}
		if a != b {
			t.Errorf("g.Lock through another client returned %p, want the group's %p", b, a)
		}
		return nil
	}, mongolock.WithMaxWait(time.Second))
	if err != nil {
		t.Fatalf("DoAll: %v", err)
	}
	if got := fields(rawDoc(t, jobs, 1), mongolock.LockKey); got != "lock_id=<nil>" {
		t.Errorf("after DoAll: %s", got)
	}
}
