package mongolock

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Steps that end within the window share one bookkeeping time, so that
// their releases can share one write; after the window, or when the clock
// fails, each asks the clock.
func TestSharedStamp(t *testing.T) {
	ctx := context.Background()
	calls := 0
	var fail error
	clock := func(context.Context) (time.Time, error) {
		calls++
		return time.Unix(int64(calls), 0), fail
	}
	shared := &sharedStamp{clock: clock, window: time.Hour}
	a, _ := shared.now(ctx)
	b, _ := shared.now(ctx)
	if !a.Equal(b) || calls != 1 {
		t.Errorf("within the window: %v and %v after %d clock reads; want one time, one read", a, b, calls)
	}
	apart := &sharedStamp{clock: clock, window: 0}
	c, _ := apart.now(ctx)
	d, _ := apart.now(ctx)
	if c.Equal(d) || calls != 3 {
		t.Errorf("past the window: %v and %v after %d clock reads; want two times", c, d, calls)
	}
	fail = errors.New("no sample")
	failing := &sharedStamp{clock: clock, window: time.Hour}
	if _, err := failing.now(ctx); err == nil {
		t.Error("a failed clock read was not reported")
	}
	fail = nil
	if _, err := failing.now(ctx); err != nil || calls != 5 {
		t.Errorf("after a failed read: %v, %d reads; want a fresh read", err, calls)
	}
}
