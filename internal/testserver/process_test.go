package testserver

import (
	"context"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// TestProcessRestartsOnItsDataAndAddress: a helper process serves, stops at
// Close, and a second one on the same data directory and address serves the
// first one's documents; the built helper is reused, then removed.
func TestProcessRestartsOnItsDataAndAddress(t *testing.T) {
	defer removeHelper()
	dir := t.TempDir()
	ctx := context.Background()
	var addr, bin string
	for i := range 2 {
		p, err := StartProcess(Options{DataDir: dir, Listen: addr})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			addr, bin = p.Addr(), helper.bin
			if bin == "" {
				t.Error("the helper was not built: the server runs in the race-instrumented test binary")
			}
		} else if p.Addr() != addr || helper.bin != bin {
			t.Errorf("restart: at %s with %s, want %s with %s", p.Addr(), helper.bin, addr, bin)
		}
		c, err := mongo.Connect(options.Client().ApplyURI(p.URI()))
		if err != nil {
			t.Fatal(err)
		}
		coll := c.Database("front").Collection("keep")
		if i == 0 {
			_, err = coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "kept"}})
		} else {
			err = coll.FindOne(ctx, bson.D{{Key: "_id", Value: "kept"}}).Err()
		}
		_ = c.Disconnect(ctx)
		if cerr := p.Close(); cerr != nil {
			t.Errorf("run %d: Close: %v", i, cerr)
		}
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	removeHelper()
	if _, err := StartProcess(Options{Listen: "256.0.0.1:1"}); err == nil {
		t.Error("a helper that cannot listen: no error")
	}
}
