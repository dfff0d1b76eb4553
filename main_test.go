package mongolock_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.uber.org/goleak"

	"github.com/mongolock/mongolock"
	"github.com/mongolock/mongolock/internal/testserver"
)

// The tests run against MONGODB_URI when it is set, and against the embedded
// FerretDB (behind its one-write-at-a-time front) otherwise.
var (
	client   *mongo.Client
	embedded bool
	uri      string
)

const testDB = "mongolock_test"

func TestMain(m *testing.M) {
	testserver.ServeIfHelper()
	if role := os.Getenv(childEnv); role != "" {
		os.Exit(runChild(role))
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	var stop func() error
	var err error
	uri, embedded, stop, err = testserver.ForTests()
	if err != nil {
		fmt.Fprintln(os.Stderr, "test server:", err)
		return 1
	}
	client, err = connect(uri)
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		return 1
	}
	// Lockers that met a lost reply sweep for a late write until the horizon:
	// a short one lets the leak check below see them all end.
	defer mongolock.SetSweep(100*time.Millisecond, time.Second, sweepHorizon)()
	code := m.Run()
	ctx := context.Background()
	for _, coll := range exampleColls {
		_ = coll.Drop(ctx)
	}
	if err := client.Disconnect(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "disconnect:", err)
		code = 1
	}
	if err := stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping the test server:", err)
		code = 1
	}
	if code == 0 {
		if err := findLeaks(sweepHorizon + 10*time.Second); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left running:", err)
			code = 1
		}
	}
	return code
}

// sweepHorizon is the tests' horizon for unsettled acquisitions.
const sweepHorizon = 3 * time.Second

// findLeaks looks for goroutines left running until none is left or wait
// has passed: a sweep started by the last tests ends at its horizon.
func findLeaks(wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		err := goleak.Find()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func connect(uri string) (*mongo.Client, error) {
	c, err := mongo.Connect(options.Client().ApplyURI(uri).SetMaxPoolSize(64))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Ping(ctx, nil); err != nil {
		_ = c.Disconnect(ctx)
		return nil, err
	}
	return c, nil
}

var collSeq atomic.Int64

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_]+`)

// newColl returns a fresh, empty collection for one test, dropped after it.
func newColl(t testing.TB) *mongo.Collection {
	t.Helper()
	name := unsafeName.ReplaceAllString(t.Name(), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	coll := client.Database(testDB).Collection(fmt.Sprintf("%s_%d", name, collSeq.Add(1)))
	t.Cleanup(func() { _ = coll.Drop(context.Background()) })
	return coll
}

// insert adds docs to coll, failing the test on error.
func insert(t testing.TB, coll *mongo.Collection, docs ...any) {
	t.Helper()
	if _, err := coll.InsertMany(context.Background(), docs); err != nil {
		t.Fatalf("insert: %v", err)
	}
}

// get reads the document with _id id.
func get(t testing.TB, coll *mongo.Collection, id any) bson.M {
	t.Helper()
	var doc bson.M
	if err := coll.FindOne(context.Background(), bson.D{{Key: "_id", Value: id}}).Decode(&doc); err != nil {
		t.Fatalf("reading document %v: %v", id, err)
	}
	return doc
}

// requireRealMongoDB skips a test that needs what FerretDB lacks.
func requireRealMongoDB(t testing.TB, feature string) {
	t.Helper()
	if embedded {
		t.Skipf("FerretDB lacks %s; set MONGODB_URI to a real MongoDB to run this test", feature)
	}
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var exampleColls []*mongo.Collection

// exampleCollection returns a fresh collection holding docs, for the
// runnable examples.
func exampleCollection(docs ...any) *mongo.Collection {
	coll := client.Database(testDB).Collection(fmt.Sprintf("example_%d", collSeq.Add(1)))
	exampleColls = append(exampleColls, coll) // examples run one at a time
	if len(docs) > 0 {
		if _, err := coll.InsertMany(context.Background(), docs); err != nil {
			panic(err)
		}
	}
	return coll
}
