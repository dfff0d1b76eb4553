package mongolock

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// clockMaxAge is how long a server clock sample is trusted before it is
// taken again; the estimate drifts only as fast as the two clocks' rates
// differ. Tests shorten it.
var clockMaxAge = time.Minute

// serverClock estimates the server's current time from the localTime of a
// hello reply, so that lease decisions never depend on the client's clock.
//
// It is shared by every call of a Locker, the keep-alive of held locks
// among them, so no call ever waits on another's I/O: a sample runs on its
// own goroutine with its own timeout, an old sample is used while a new one
// is taken, and only a Locker without any sample waits, for as long as its
// own context allows.
type serverClock struct {
	db  *mongo.Database
	now func() time.Time // client clock, replaceable in tests

	mu      sync.Mutex
	sampled time.Time     // client time of the sample, with its monotonic reading
	server  time.Time     // estimated server time at sampled
	rtt     time.Duration // round trip of the sample: twice its uncertainty
	flight  *clockFlight  // the sample under way, nil when none
}

// clockFlight is one sample under way; done is closed when it ends, with err
// set when it failed.
type clockFlight struct {
	done chan struct{}
	err  error
}

// Now returns the estimated server time. A missing sample is taken first,
// waiting until it comes or ctx ends; an old one is used as it is while a
// new one is taken in the background.
func (c *serverClock) Now(ctx context.Context) (time.Time, error) {
	c.mu.Lock()
	if !c.sampled.IsZero() {
		if c.since(c.sampled) > clockMaxAge {
			c.startLocked()
		}
		now := c.server.Add(c.since(c.sampled))
		c.mu.Unlock()
		return now, nil
	}
	f := c.startLocked()
	c.mu.Unlock()
	select {
	case <-f.done:
	case <-ctx.Done():
		return time.Time{}, fmt.Errorf("mongolock: reading the server clock: %w", ctx.Err())
	}
	if f.err != nil {
		return time.Time{}, f.err
	}
	now, _ := c.estimate()
	return now, nil
}

// startLocked starts a sample unless one is under way, and returns the one
// under way. c.mu is held.
func (c *serverClock) startLocked() *clockFlight {
	if c.flight != nil {
		return c.flight
	}
	f := &clockFlight{done: make(chan struct{})}
	c.flight = f
	timeout := attemptTimeout
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		err := c.sample(ctx)
		c.mu.Lock()
		f.err = err
		c.flight = nil
		c.mu.Unlock()
		close(f.done)
	}()
	return f
}

// estimate returns the server time estimated from the last sample, however
// old, without asking the server; ok is false before the first sample.
func (c *serverClock) estimate() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sampled.IsZero() {
		return time.Time{}, false
	}
	return c.server.Add(c.since(c.sampled)), true
}

// uncertainty is how far the estimate may be from the server's clock (half
// the sample's round trip) counted twice, since whoever compares a lease
// with it has an estimate of its own.
func (c *serverClock) uncertainty() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rtt
}

// since measures elapsed time on the monotonic clock, which a change of the
// client's wall clock does not move.
func (c *serverClock) since(t time.Time) time.Duration { return c.now().Sub(t) }

// sample runs hello and takes the server's localTime as it was half a round
// trip before the reply arrived. It holds c.mu only to store the result.
func (c *serverClock) sample(ctx context.Context) error {
	start := c.now()
	raw, err := c.db.RunCommand(ctx, bson.D{{Key: "hello", Value: 1}}).Raw()
	end := c.now()
	if err != nil {
		return ioError(ctx, "reading the server clock", err)
	}
	dt, ok := raw.Lookup("localTime").DateTimeOK()
	if !ok {
		return fmt.Errorf("mongolock: reading the server clock: hello reply has no localTime")
	}
	rtt := end.Sub(start)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sampled = end
	c.server = time.UnixMilli(dt).Add(rtt / 2)
	c.rtt = rtt
	return nil
}
