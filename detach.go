package mongolock

import (
	"context"
	"sync"
	"time"
)

// graceAfterCancel is how long a write that must finish may still run after
// the caller's context has ended.
const graceAfterCancel = 10 * time.Second

// detached returns the context for a write that must not be cut off halfway
// by the end of ctx (an acquire, a refresh, a release): it keeps ctx's
// values, not its cancellation or deadline, and ends graceAfterCancel after
// ctx does, so that a server that never answers cannot hold the caller
// forever. stop releases it.
func detached(ctx context.Context) (wctx context.Context, stop func()) {
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var mu sync.Mutex
	var timer *time.Timer
	stopped := false
	unwatch := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			timer = time.AfterFunc(graceAfterCancel, cancel)
		}
	})
	return wctx, func() {
		unwatch()
		mu.Lock()
		stopped = true
		if timer != nil {
			timer.Stop()
		}
		mu.Unlock()
		cancel()
	}
}
