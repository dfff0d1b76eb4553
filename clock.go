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
// differ.
const clockMaxAge = time.Minute

// serverClock estimates the server's current time from the localTime of a
// hello reply, so that lease decisions never depend on the client's clock.
type serverClock struct {
	db  *mongo.Database
	now func() time.Time // client clock, replaceable in tests

	mu      sync.Mutex
	sampled time.Time // client time of the sample, with its monotonic reading
	server  time.Time // estimated server time at sampled
}

// Now returns the estimated server time, sampling it first when the last
// sample is missing or old.
func (c *serverClock) Now(ctx context.Context) (time.Time, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sampled.IsZero() || c.since(c.sampled) > clockMaxAge {
		if err := c.sample(ctx); err != nil {
			return time.Time{}, err
		}
	}
	return c.server.Add(c.since(c.sampled)), nil
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

// since measures elapsed time on the monotonic clock, which a change of the
// client's wall clock does not move.
func (c *serverClock) since(t time.Time) time.Duration { return c.now().Sub(t) }

// sample runs hello and takes the server's localTime as it was half a round
// trip before the reply arrived.
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
	c.sampled = end
	c.server = time.UnixMilli(dt).Add(rtt / 2)
	return nil
}
