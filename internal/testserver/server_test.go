package testserver

import (
	"bytes"
	"context"
	"encoding/binary"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.uber.org/goleak"
	"golang.org/x/sync/errgroup"

	"github.com/mongolock/mongolock/internal/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// incRace runs $inc from many goroutines on one document until a lost update
// shows or the budget runs out, and returns the calls made and the final count.
func incRace(t *testing.T, s *Server, budget time.Duration) (calls, final int64) {
	t.Helper()
	ctx := context.Background()
	c, err := mongo.Connect(options.Client().ApplyURI(s.URI()).SetMaxPoolSize(64))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(ctx)
	coll := c.Database("front").Collection("inc")
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: 1}, {Key: "n", Value: int64(0)}}); err != nil {
		t.Fatal(err)
	}
	stop := time.Now().Add(budget)
	for time.Now().Before(stop) {
		var g errgroup.Group
		var n atomic.Int64
		for range 16 {
			g.Go(func() error {
				for range 20 {
					if _, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: int64(1)}}}}); err != nil {
						return err
					}
					n.Add(1)
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
		calls += n.Load()
		var doc struct{ N int64 }
		if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: 1}}).Decode(&doc); err != nil {
			t.Fatal(err)
		}
		if final = doc.N; final != calls {
			return calls, final
		}
	}
	return calls, final
}

// Why the front exists: FerretDB alone loses concurrent $inc updates.
func TestRawFerretDBLosesUpdates(t *testing.T) {
	s, err := Start(Options{Raw: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	calls, final := incRace(t, s, 20*time.Second)
	if final == calls {
		t.Fatalf("no lost update in %d concurrent $inc calls: if FerretDB now applies updates atomically, the front may no longer be needed", calls)
	}
	t.Logf("without the front: %d $inc calls, final value %d", calls, final)
}

func TestFrontSerializesWrites(t *testing.T) {
	s, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	calls, final := incRace(t, s, 2*time.Second)
	if final != calls {
		t.Fatalf("with the front: %d $inc calls, final value %d", calls, final)
	}
}

func TestDataDirSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	for i := range 2 {
		s, err := Start(Options{DataDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		c, err := mongo.Connect(options.Client().ApplyURI(s.URI()))
		if err != nil {
			t.Fatal(err)
		}
		coll := c.Database("front").Collection("keep")
		if i == 0 {
			_, err = coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "kept"}})
		} else {
			err = coll.FindOne(ctx, bson.D{{Key: "_id", Value: "kept"}}).Err()
		}
		c.Disconnect(ctx)
		s.Close()
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
}

func opMsgBytes(t *testing.T, flags uint32, body bson.D) []byte {
	doc, err := bson.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, wire.HeaderLen+4+1+len(doc))
	binary.LittleEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.LittleEndian.PutUint32(msg[12:], wire.OpMsg)
	binary.LittleEndian.PutUint32(msg[16:], flags)
	msg[20] = 0
	copy(msg[21:], doc)
	return msg
}

func TestMessageRules(t *testing.T) {
	cases := []struct {
		cmd   string
		write bool
	}{
		{"insert", true}, {"update", true}, {"delete", true}, {"findAndModify", true}, {"findandmodify", true},
		{"find", false}, {"hello", false}, {"aggregate", false}, {"getMore", false},
	}
	for _, tc := range cases {
		msg := opMsgBytes(t, 0, bson.D{{Key: tc.cmd, Value: "c"}, {Key: "$db", Value: "d"}})
		if got := isWrite(msg); got != tc.write {
			t.Errorf("isWrite(%s) = %v", tc.cmd, got)
		}
	}
	bad := opMsgBytes(t, 0, bson.D{{Key: "insert", Value: "c"}})
	binary.LittleEndian.PutUint32(bad[21:], 9999)
	if isWrite(bad) {
		t.Error("a malformed body is not taken for a write")
	}
	timed := opMsgBytes(t, 0, bson.D{{Key: "find", Value: "c"}, {Key: "maxTimeMS", Value: int64(3)}, {Key: "$db", Value: "d"}})
	stripped := withoutMaxTime(timed)
	if want := opMsgBytes(t, 0, bson.D{{Key: "find", Value: "c"}, {Key: "$db", Value: "d"}}); !bytes.Equal(stripped, want) {
		t.Errorf("maxTimeMS not removed:\n got %x\nwant %x", stripped, want)
	}
	if plain := opMsgBytes(t, 0, bson.D{{Key: "find", Value: "c"}}); !bytes.Equal(withoutMaxTime(plain), plain) {
		t.Error("a message without maxTimeMS changed")
	}
}
