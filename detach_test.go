package mongolock

import (
	"context"
	"testing"
	"time"
)

func TestDetached(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	wctx, stop := detached(ctx)
	<-ctx.Done()
	time.Sleep(10 * time.Millisecond)
	if wctx.Err() != nil {
		t.Fatal("the write's context ended with the caller's, before the grace period")
	}
	if _, ok := wctx.Deadline(); ok {
		t.Error("the write's context kept the caller's deadline")
	}
	stop()
	if wctx.Err() == nil {
		t.Error("stop did not end the write's context")
	}
}
