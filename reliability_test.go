package mongolock_test

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"
	"go.uber.org/goleak"

	"github.com/mongolock/mongolock"
	"github.com/mongolock/mongolock/internal/testserver"
)

// The server stops while locks are held and starts again on the same data:
// Release and Refresh fail with the driver's error (not ErrLockLost), and
// afterwards every lock is recovered, by retrying the release or by a lease.
func TestServerRestartMidHold(t *testing.T) {
	if !embedded {
		t.Skip("restarts the embedded server")
	}
	dir := t.TempDir()
	srv, err := testserver.StartProcess(testserver.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	addr := hostPort(t, srv.URI())
	c, err := mongo.Connect(options.Client().ApplyURI(srv.URI()).SetServerSelectionTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	coll := c.Database(testDB).Collection("restart")
	insert(t, coll, bson.D{{Key: "_id", Value: "a"}}, bson.D{{Key: "_id", Value: "b"}})
	const ttl = 500 * time.Millisecond
	lk := mongolock.New(coll, mongolock.WithLease(ttl))
	a, err := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: "a"}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: "b"}})
	if err != nil {
		t.Fatal(err)
	}

	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func() error{
		"release": func() error { return a.Release(ctx) },
		"refresh": func() error { return b.Refresh(ctx) },
	} {
		err := call()
		if err == nil || errors.Is(err, mongolock.ErrLockLost) || errors.Unwrap(err) == nil {
			t.Fatalf("%s with the server down: %v; want the driver's error, wrapped", name, err)
		}
		if !mongo.IsNetworkError(err) && !mongo.IsTimeout(err) && !isServerSelection(err) {
			t.Errorf("%s: %v does not wrap a driver network, timeout or selection error", name, err)
		}
	}

	srv, err = testserver.StartProcess(testserver.Options{DataDir: dir, Listen: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	defer c.Disconnect(context.Background()) // before the server stops
	locked, err := lk.ListLocked(ctx, nil)
	if err != nil || len(locked) != 2 {
		t.Fatalf("after the restart ListLocked = %v, %v; want both locks kept", locked, err)
	}
	// The failed release is retried: it frees a, and only a.
	if err := a.Release(ctx); err != nil {
		t.Fatalf("retried release after the restart: %v", err)
	}
	// b's holder is gone; its lease runs out and another acquirer takes it.
	other, err := mongolock.New(coll, mongolock.WithLease(ttl), mongolock.WithPollInterval(50*time.Millisecond)).
		Acquire(ctx, bson.D{{Key: "_id", Value: "b"}}, mongolock.WithMaxWait(10*time.Second))
	if err != nil {
		t.Fatalf("taking over b after the restart: %v", err)
	}
	if err := b.Release(ctx); !errors.Is(err, mongolock.ErrLockLost) {
		t.Errorf("old holder of b: %v, want ErrLockLost", err)
	}
	if err := other.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if locked, err := lk.ListLocked(ctx, nil); err != nil || len(locked) != 0 {
		t.Errorf("locks left behind: %v, %v", locked, err)
	}
}

func hostPort(t *testing.T, uri string) string {
	host, port, err := net.SplitHostPort(uri[len("mongodb://") : len(uri)-1])
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort(host, port)
}

func isServerSelection(err error) bool {
	var sel topology.ServerSelectionError
	return errors.As(err, &sel)
}

// Cancelling Acquire and Do at random moments, while another goroutine holds
// and releases the document, leaves no lock and no goroutine behind.
func TestRandomCancellation(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	job := jobDoc(t, coll)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	lk := mongolock.New(coll, mongolock.WithPollInterval(5*time.Millisecond), mongolock.WithLogger(logger))

	stop := make(chan struct{})
	var holder sync.WaitGroup
	holder.Add(1)
	go func() { // contention: takes the document now and then
		defer holder.Done()
		other := mongolock.New(coll, mongolock.WithPollInterval(5*time.Millisecond), mongolock.WithLogger(logger.With("who", "other")))
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = other.Do(ctx, job, func(context.Context, *mongolock.Lock) error {
				time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
				return nil
			}, mongolock.WithMaxWait(time.Second))
		}
	}()

	var got, cancelled atomic.Int64
	for i := range 300 {
		// Most deadlines end mid-acquire; one in four leaves time for a
		// lock even on a loaded machine, so that both outcomes happen.
		limit := 4 * time.Millisecond
		if i%4 == 0 {
			limit = 40 * time.Millisecond
		}
		cctx, cancel := context.WithTimeout(ctx, rand.N(limit))
		var err error
		if i%2 == 0 {
			var l *mongolock.Lock
			if l, err = lk.Acquire(cctx, job); err == nil {
				got.Add(1)
				err = l.Release(cctx) // a cancelled context still releases
			}
		} else {
			err = lk.Do(cctx, job, func(ctx context.Context, l *mongolock.Lock) error {
				got.Add(1)
				<-ctx.Done()
				return nil
			})
		}
		cancel()
		switch {
		case err == nil:
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
			cancelled.Add(1)
		case embedded && strings.Contains(err.Error(), "(InternalError)") && strings.Contains(err.Error(), "context deadline exceeded"):
			// FerretDB reports the maxTimeMS that the driver derives from
			// the deadline as an internal error, a little before the
			// client's deadline; MongoDB's MaxTimeMSExpired is matched.
			cancelled.Add(1)
		default:
			t.Fatalf("iteration %d: %v\n%s", i, err, logs)
		}
	}
	close(stop)
	holder.Wait()
	if got.Load() == 0 || cancelled.Load() == 0 {
		t.Fatalf("acquired %d times, cancelled %d times: both must happen for the test to mean anything", got.Load(), cancelled.Load())
	}
	t.Logf("acquired %d times, cancelled %d times", got.Load(), cancelled.Load())
	if doc := get(t, coll, "job"); doc[mongolock.LockKey] != nil {
		t.Errorf("lock left behind: %v\n%s", doc, logs)
	}
}

// syncBuffer collects log records from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
