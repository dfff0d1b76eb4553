package mongolock

import (
	"context"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// DoAll's wait ends when a Locker whose lock fn met releases a lock: with
// an hour to wait, only the wake can end it.
func TestGroupWaitWokenByRelease(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	filter, _ := bson.Marshal(bson.D{{Key: "uuid", Value: "u3"}})
	for _, lockers := range []int{1, 3} {
		lks := make([]*Locker, lockers)
		g := newGroup(ctx)
		for i := range lks {
			lks[i] = New(nil)
			g.block(lks[i], &request{filter: filter}, "holder")
		}
		done := make(chan error, 1)
		go func() {
			var z sleeper
			defer z.stop()
			done <- g.wait(ctx, &z, time.Hour)
		}()
		lks[lockers-1].waiters.released()
		if err := <-done; err != nil {
			t.Errorf("%d Lockers: wait ended with %v", lockers, err)
		}
		g.leave()
		for i, lk := range lks {
			if len(lk.waiters.groups) != 0 {
				t.Errorf("%d Lockers: Locker %d keeps waiters after leave: %v", lockers, i, lk.waiters.groups)
			}
		}
	}
}
