package mongolock

import "testing"

func woken(w *waiter) bool {
	select {
	case <-w.wake:
		return true
	default:
		return false
	}
}

func TestWaitQueue(t *testing.T) {
	var q waitQueue
	a1, a2 := q.join([]byte("a")), q.join([]byte("a"))
	b1 := q.join([]byte("b"))

	q.released()
	if !woken(a1) || woken(a2) || !woken(b1) {
		t.Fatal("a release wakes the first waiter of each group, and only it")
	}
	q.released()
	q.released() // a second wake while one is pending is not queued twice
	if !woken(a1) || woken(a1) || !woken(b1) || woken(b1) {
		t.Fatal("a pending wake is kept, once")
	}

	// A waiter that leaves with a wake unused passes it on.
	q.released()
	woken(b1)
	q.leave(a1)
	if !woken(a2) {
		t.Fatal("the unused wake of a leaving waiter goes to the next")
	}
	a3 := q.join([]byte("a"))
	q.wakeAll(a2)
	if !woken(a2) || !woken(a3) || woken(b1) {
		t.Fatal("wakeAll(w) wakes w's group only")
	}
	q.wakeAll(nil)
	if !woken(a2) || !woken(a3) || !woken(b1) {
		t.Fatal("wakeAll(nil) wakes everyone")
	}
	for _, w := range []*waiter{a2, a3, b1} {
		q.leave(w)
	}
	if len(q.groups) != 0 {
		t.Errorf("groups left: %v", q.groups)
	}
}
