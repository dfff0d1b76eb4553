package faultproxy_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver"
	"go.uber.org/goleak"
	"golang.org/x/sync/errgroup"

	"github.com/mongolock/mongolock/internal/faultproxy"
	"github.com/mongolock/mongolock/internal/testserver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clientOptions make a fault surface within seconds. The driver would retry
// writes on a replica set, hiding a lost reply; on the embedded standalone
// it never does, but say so for a MONGODB_URI that names a replica set.
func clientOptions(uri string) *options.ClientOptions {
	return options.Client().ApplyURI(uri).SetServerSelectionTimeout(2 * time.Second).SetRetryWrites(false)
}

// env is a server, a proxy in front of it, and two clients: one through the
// proxy, the other straight to the server to see what the database holds.
type env struct {
	srv    *testserver.Server
	proxy  *faultproxy.Proxy
	client *mongo.Client // through the proxy
	direct *mongo.Client
}

func start(t *testing.T, opts testserver.Options) *env {
	t.Helper()
	e := &env{}
	var err error
	if e.srv, err = testserver.Start(opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeOK(t, e.srv.Close) })
	if e.proxy, err = faultproxy.Start(e.srv.Addr()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeOK(t, e.proxy.Close) })
	e.client = connect(t, e.proxy.URI())
	e.direct = connect(t, e.srv.URI())
	return e
}

func connect(t *testing.T, uri string) *mongo.Client {
	t.Helper()
	c, err := mongo.Connect(clientOptions(uri))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeOK(t, func() error { return c.Disconnect(context.Background()) }) })
	return c
}

func closeOK(t *testing.T, close func() error) {
	if err := close(); err != nil {
		t.Error(err)
	}
}

// colls returns one collection, seeded with {_id: 1, n: 0}, as seen through
// the proxy and straight from the server.
func (e *env) colls(t *testing.T, name string) (proxied, direct *mongo.Collection) {
	t.Helper()
	direct = e.direct.Database("fault").Collection(name)
	if _, err := direct.InsertOne(ctx(t), bson.D{{Key: "_id", Value: 1}, {Key: "n", Value: 0}}); err != nil {
		t.Fatal(err)
	}
	return e.client.Database("fault").Collection(name), direct
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// A write on document 1 per command, and how to see that it was applied.
var writes = []struct {
	cmd     string
	write   func(context.Context, *mongo.Collection) error
	applied func(n int, found bool, others int64) bool
}{
	{
		cmd: "insert",
		write: func(ctx context.Context, c *mongo.Collection) error {
			_, err := c.InsertOne(ctx, bson.D{{Key: "_id", Value: 2}})
			return err
		},
		applied: func(_ int, _ bool, others int64) bool { return others == 1 },
	},
	{
		cmd: "update",
		write: func(ctx context.Context, c *mongo.Collection) error {
			_, err := c.UpdateOne(ctx, bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: 1}}}})
			return err
		},
		applied: func(n int, _ bool, _ int64) bool { return n == 1 },
	},
	{
		cmd: "findAndModify",
		write: func(ctx context.Context, c *mongo.Collection) error {
			return c.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: 1}}}}).Err()
		},
		applied: func(n int, _ bool, _ int64) bool { return n == 1 },
	},
	{
		cmd: "delete",
		write: func(ctx context.Context, c *mongo.Collection) error {
			_, err := c.DeleteOne(ctx, bson.D{{Key: "_id", Value: 1}})
			return err
		},
		applied: func(_ int, found bool, _ int64) bool { return !found },
	},
}

// state reads document 1's n, whether it is there, and how many others are.
func state(t *testing.T, direct *mongo.Collection) (n int, found bool, others int64) {
	t.Helper()
	var doc struct{ N int }
	err := direct.FindOne(ctx(t), bson.D{{Key: "_id", Value: 1}}).Decode(&doc)
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		t.Fatal(err)
	}
	others, cerr := direct.CountDocuments(ctx(t), bson.D{{Key: "_id", Value: bson.D{{Key: "$ne", Value: 1}}}})
	if cerr != nil {
		t.Fatal(cerr)
	}
	return doc.N, err == nil, others
}

func TestLoseReply(t *testing.T) {
	e := start(t, testserver.Options{})
	for _, w := range writes {
		t.Run(w.cmd, func(t *testing.T) {
			coll, direct := e.colls(t, "lose_"+w.cmd)
			e.proxy.LoseReply(w.cmd, 1)
			begin := time.Now()
			err := w.write(ctx(t), coll)
			if !mongo.IsNetworkError(err) {
				t.Fatalf("%s with its reply lost: %v; want a network error", w.cmd, err)
			}
			t.Logf("%s: lost reply surfaced after %v as %T: %v", w.cmd, time.Since(begin).Round(time.Millisecond), err, err)
			if !w.applied(state(t, direct)) {
				t.Errorf("%s with its reply lost was not applied", w.cmd)
			}
			if n := e.proxy.Count(w.cmd); n != 1 {
				t.Errorf("the server received %d %s commands, want 1 (the driver does not retry writes on a standalone)", n, w.cmd)
			}
		})
	}
}

func TestCutRequest(t *testing.T) {
	e := start(t, testserver.Options{})
	for _, w := range writes {
		t.Run(w.cmd, func(t *testing.T) {
			coll, direct := e.colls(t, "cut_"+w.cmd)
			e.proxy.CutRequest(w.cmd, 1)
			err := w.write(ctx(t), coll)
			if !mongo.IsNetworkError(err) {
				t.Fatalf("%s cut: %v; want a network error", w.cmd, err)
			}
			if w.applied(state(t, direct)) {
				t.Errorf("%s cut before the server was applied", w.cmd)
			}
			if n := e.proxy.Count(w.cmd); n != 0 {
				t.Errorf("the server received %d %s commands, want none", n, w.cmd)
			}
			// The fault is used up: the same write now goes through.
			if err := w.write(ctx(t), coll); err != nil || !w.applied(state(t, direct)) {
				t.Errorf("%s after the cut: %v, applied %v", w.cmd, err, w.applied(state(t, direct)))
			}
		})
	}
}

// The driver retries a read once after a network error: a lost find reply
// costs the server a second find, and the caller nothing.
func TestDriverRetriesReads(t *testing.T) {
	e := start(t, testserver.Options{})
	coll, _ := e.colls(t, "reads")
	e.proxy.LoseReply("find", 1)
	if err := coll.FindOne(ctx(t), bson.D{{Key: "_id", Value: 1}}).Err(); err != nil {
		t.Fatalf("find with one reply lost: %v; want the driver's retry to succeed", err)
	}
	if n := e.proxy.Count("find"); n != 2 {
		t.Errorf("the server received %d finds, want 2", n)
	}
}

func TestDelay(t *testing.T) {
	e := start(t, testserver.Options{})
	coll, direct := e.colls(t, "delay")
	const d = 500 * time.Millisecond
	e.proxy.Delay("update", d)
	update := func(ctx context.Context) error {
		_, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: 1}}}})
		return err
	}

	begin := time.Now()
	if err := update(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took < d {
		t.Errorf("a delayed update took %v, want at least %v", took, d)
	}
	if err := coll.FindOne(ctx(t), bson.D{}).Err(); err != nil {
		t.Fatal(err)
	}

	// A caller that gives up before the delay ends sees a timeout, and its
	// write is applied all the same.
	short, cancel := context.WithTimeout(ctx(t), d/5)
	defer cancel()
	if err := update(short); !mongo.IsTimeout(err) {
		t.Fatalf("update with a deadline shorter than the delay: %v; want a timeout", err)
	}
	if n, _, _ := state(t, direct); n != 1 {
		t.Fatalf("n = %d right after the timeout, want 1: the update was not delayed", n)
	}
	waitFor(t, "the late update to be applied", func() bool { n, _, _ := state(t, direct); return n == 2 })

	e.proxy.Delay("update", 0)
	begin = time.Now()
	if err := update(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took >= d {
		t.Errorf("an update took %v after the delay was removed", took)
	}
}

// holdUpdate holds the proxy, starts an update through it, and returns once
// the proxy holds that update; the update's error arrives on the channel.
func holdUpdate(t *testing.T, e *env, coll *mongo.Collection) <-chan error {
	t.Helper()
	// A connection opened during the hold would hold its handshake, and the
	// update would never be sent: leave one in the pool first.
	if err := coll.Database().RunCommand(ctx(t), bson.D{{Key: "ping", Value: 1}}).Err(); err != nil {
		t.Fatal(err)
	}
	e.proxy.Hold()
	done := make(chan error, 1)
	go func() {
		_, err := coll.UpdateOne(ctx(t), bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: 1}}}})
		done <- err
	}()
	waitFor(t, "the update to be held", func() bool { return e.proxy.Held("update") == 1 })
	return done
}

func TestHoldThenDeliver(t *testing.T) {
	e := start(t, testserver.Options{})
	coll, direct := e.colls(t, "deliver")
	done := holdUpdate(t, e, coll)

	// Nothing passes, and nothing answers: a read gives up at its deadline.
	short, cancel := context.WithTimeout(ctx(t), 300*time.Millisecond)
	defer cancel()
	if err := coll.FindOne(short, bson.D{}).Err(); !mongo.IsTimeout(err) {
		t.Errorf("find during the hold: %v; want a timeout", err)
	}
	if n, _, _ := state(t, direct); n != 0 || e.proxy.Count("update") != 0 {
		t.Fatalf("n = %d, %d updates received during the hold; want none", n, e.proxy.Count("update"))
	}

	e.proxy.Heal(true)
	if err := <-done; err != nil {
		t.Fatalf("held update after Heal(true): %v", err)
	}
	if n, _, _ := state(t, direct); n != 1 || e.proxy.Count("update") != 1 {
		t.Errorf("after Heal(true) n = %d, %d updates received; want 1, 1", n, e.proxy.Count("update"))
	}
}

func TestHoldThenDrop(t *testing.T) {
	e := start(t, testserver.Options{})
	coll, direct := e.colls(t, "drop")
	done := holdUpdate(t, e, coll)

	e.proxy.Heal(false)
	if err := <-done; !mongo.IsNetworkError(err) {
		t.Fatalf("held update after Heal(false): %v; want a network error", err)
	}
	if n, _, _ := state(t, direct); n != 0 || e.proxy.Count("update") != 0 {
		t.Fatalf("after Heal(false) n = %d, %d updates received; want none", n, e.proxy.Count("update"))
	}
	if _, err := coll.UpdateOne(ctx(t), bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: 1}}}}); err != nil {
		t.Fatalf("update after the heal: %v", err)
	}
	if n, _, _ := state(t, direct); n != 1 {
		t.Errorf("n = %d after an update following the heal, want 1", n)
	}
}

// The server restarts on the same data while the proxy holds: the held
// update died with its backend connection, and new connections reach the
// restarted server.
func TestRestartWhileHeld(t *testing.T) {
	dir := t.TempDir()
	e := start(t, testserver.Options{DataDir: dir})
	coll, direct := e.colls(t, "restart")
	done := holdUpdate(t, e, coll)

	addr := e.srv.Addr()
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	srv, err := testserver.Start(testserver.Options{DataDir: dir, Listen: addr})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	select {
	case err := <-done:
		t.Fatalf("the held update ended during the hold: %v", err)
	default:
	}

	e.proxy.Heal(true)
	if err := <-done; !mongo.IsNetworkError(err) {
		t.Fatalf("update held across a restart: %v; want a network error", err)
	}
	if n, found, _ := state(t, direct); !found || n != 0 {
		t.Fatalf("after the restart: document found %v, n = %d; want the seed kept and the update lost", found, n)
	}
	if _, err := coll.UpdateOne(ctx(t), bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: 1}}}}); err != nil {
		t.Fatalf("update through the proxy after the restart: %v", err)
	}
	if n, _, _ := state(t, direct); n != 1 {
		t.Errorf("n = %d after an update following the restart, want 1", n)
	}
}

func TestCount(t *testing.T) {
	e := start(t, testserver.Options{})
	db := e.client.Database("fault")
	ping := func() error { return db.RunCommand(ctx(t), bson.D{{Key: "ping", Value: 1}}).Err() }
	for range 3 {
		if err := ping(); err != nil {
			t.Fatal(err)
		}
	}
	if n, m := e.proxy.Count("ping"), e.proxy.Count("PING"); n != 3 || m != 3 {
		t.Fatalf("Count(ping) = %d, Count(PING) = %d after 3 pings", n, m)
	}
	e.proxy.CutRequest("Ping", 1)
	if err := ping(); !mongo.IsNetworkError(err) {
		t.Fatalf("cut ping: %v", err)
	}
	e.proxy.LoseReply("ping", 1)
	if err := ping(); !mongo.IsNetworkError(err) {
		t.Fatalf("ping with its reply lost: %v", err)
	}
	if n := e.proxy.Count("ping"); n != 4 {
		t.Errorf("Count(ping) = %d, want 4: the cut ping is not counted, the lost one is", n)
	}
	// A connection's first hello goes as an OP_QUERY isMaster, the monitor's
	// later ones as OP_MSG hello.
	if e.proxy.Count("isMaster") == 0 {
		t.Errorf("no handshake counted: isMaster %d, hello %d", e.proxy.Count("isMaster"), e.proxy.Count("hello"))
	}
}

// Many connections at once, with faults among them: every update the server
// received is applied exactly once, and the faulted ones fail with a network
// error. A network error clears the driver's pool, and updates that wanted a
// connection meanwhile fail, unsent, with the pool's error.
func TestConcurrentFaults(t *testing.T) {
	e := start(t, testserver.Options{})
	coll, direct := e.colls(t, "concurrent")
	const lost, cut = 3, 3
	e.proxy.LoseReply("update", lost)
	e.proxy.CutRequest("update", cut)

	var ok, failed, notSent atomic.Int64
	var g errgroup.Group
	for range 16 {
		g.Go(func() error {
			for range 20 {
				_, err := coll.UpdateOne(ctx(t), bson.D{{Key: "_id", Value: 1}}, bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: 1}}}})
				switch {
				case err == nil:
					ok.Add(1)
				case mongo.IsNetworkError(err):
					failed.Add(1)
				case errors.As(err, new(driver.RetryablePoolError)):
					notSent.Add(1)
				default:
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	n, _, _ := state(t, direct)
	received := e.proxy.Count("update")
	t.Logf("%d updates succeeded, %d failed, %d not sent, %d received, n = %d", ok.Load(), failed.Load(), notSent.Load(), received, n)
	if int64(n) != int64(received) || int64(received) != ok.Load()+lost {
		t.Errorf("n = %d, %d received, %d succeeded; want n = received = succeeded + %d lost", n, received, ok.Load(), lost)
	}
	if failed.Load() != lost+cut {
		t.Errorf("%d updates failed, want %d", failed.Load(), lost+cut)
	}
}

// Close ends everything, even with messages held, and may be called again.
func TestCloseWhileHeld(t *testing.T) {
	e := start(t, testserver.Options{})
	coll, _ := e.colls(t, "close")
	done := holdUpdate(t, e, coll)
	if err := e.proxy.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !mongo.IsNetworkError(err) {
		t.Errorf("held update after Close: %v; want a network error", err)
	}
	if err := e.proxy.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 5s for %s", what)
		}
		<-tick.C
	}
}
