package mongolock

import (
	"testing"
	"time"
)

// signalled reports whether w has a signal pending, and takes it.
func signalled(w *waiter) bool {
	select {
	case <-w.wake:
		return true
	default:
		return false
	}
}

// The queueing rules, without a server: who polls, who is told what, and
// in which order.
func TestWaitQueueOrder(t *testing.T) {
	var q waitQueue
	a1, a2, a3 := q.join("a"), q.join("a"), q.join("a")
	b1 := q.join("b")
	if !q.isPoller(a1) || q.isPoller(a2) || q.isPoller(a3) || !q.isPoller(b1) {
		t.Fatal("the first waiter of each group, and only it, polls")
	}
	// A waiter behind the poller is not woken by its timer, only by its turn.
	if got := q.next(a2, true); got != waitOn {
		t.Fatalf("a waiter behind the poller: %v, want waitOn", got)
	}
	if got := q.next(a1, true); got != tryNow {
		t.Fatalf("the poller's timer: %v, want tryNow", got)
	}

	// A release is handed to the poller of every group, and only to it.
	q.released()
	if !signalled(a1) || signalled(a2) || signalled(a3) || !signalled(b1) {
		t.Fatal("a release signals the poller of each group, and only it")
	}
	if got := q.next(a1, false); got != handed {
		t.Fatalf("the poller after a release: %v, want handed", got)
	}
	if got := q.next(a1, false); got != pollNow {
		t.Fatalf("a release is tried once: %v, want pollNow", got)
	}

	// The poller leaves with the lock: the next becomes the poller and
	// starts polling, without a try of a document that is not free.
	q.leave(a1)
	if !signalled(a2) || signalled(a3) {
		t.Fatal("the next waiter is told it polls now")
	}
	if got := q.next(a2, false); got != pollNow || !q.isPoller(a2) {
		t.Fatalf("the promoted waiter: %v, want pollNow", got)
	}

	// Two releases before the poller tries: the second goes to the next
	// waiter once the poller leaves with the first.
	q.released()
	q.released()
	if got := q.next(a2, false); got != handed {
		t.Fatalf("%v, want handed", got)
	}
	signalled(a2)
	q.leave(a2)
	if !signalled(a3) || q.next(a3, false) != handed {
		t.Fatal("an untried release passes to the next poller")
	}

	// A newcomer queues behind, even right after a release.
	a4 := q.join("a")
	q.released()
	if q.isPoller(a4) || signalled(a4) || !signalled(a3) {
		t.Fatal("a newcomer does not barge ahead of the waiters")
	}

	// A cancelled waiter behind the poller leaves without disturbing it.
	a5 := q.join("a")
	q.leave(a4)
	if signalled(a5) || !q.isPoller(a3) {
		t.Fatal("a cancelled waiter behind the poller signals nobody")
	}
	q.leave(a3)
	if !signalled(a5) || !q.isPoller(a5) {
		t.Fatal("the last waiter becomes the poller")
	}

	// wakeAll makes every waiter of the group try, whoever polls.
	signalled(b1) // the releases above
	a6 := q.join("a")
	q.wakeAll(a5)
	if !signalled(a5) || !signalled(a6) || signalled(b1) {
		t.Fatal("wakeAll(w) signals w's group only")
	}
	if q.next(a6, false) != tryNow || q.next(a6, false) != waitOn {
		t.Fatal("a broadcast makes a waiter behind the poller try once")
	}
	q.wakeAll(nil)
	if !signalled(b1) || q.next(b1, false) != tryNow {
		t.Fatal("wakeAll(nil) makes everyone try")
	}
	for _, w := range []*waiter{a5, a6, b1} {
		q.leave(w)
	}
	if len(q.groups) != 0 {
		t.Errorf("groups left: %v", q.groups)
	}
}

// While other processes contend, a group takes at most localStreak
// hand-offs in a row and leaves the next release to whoever asks first.
func TestWaitQueueStreak(t *testing.T) {
	var q waitQueue
	w := q.join("a")
	for i := range 2 * localStreak {
		q.released()
		if !signalled(w) || q.next(w, false) != handed {
			t.Fatalf("release %d: not handed over without contention", i)
		}
	}
	q.sawHolder(w, &LockedDocumentError{}, true)
	if !q.contended(w) {
		t.Fatal("a foreign holder makes the group contended")
	}
	w.group.streak = 0
	for i := range localStreak {
		q.released()
		if !signalled(w) || q.next(w, false) != handed {
			t.Fatalf("release %d of the streak: not handed over", i)
		}
	}
	q.released()
	if signalled(w) {
		t.Fatal("the release after a streak is handed over too")
	}
	q.released()
	if !signalled(w) || q.next(w, false) != handed {
		t.Fatal("a new streak does not start")
	}
	w.group.foreign = time.Now().Add(-foreignMemory)
	if q.contended(w) {
		t.Fatal("contention is forgotten")
	}
	q.leave(w)
}

// Watchers (Work's workers, DoAll's waits) hear of every release, and one
// leaving does not wake the others: they poll on their own schedule.
func TestWaitQueueWatchers(t *testing.T) {
	var q waitQueue
	w1, w2 := q.watch("s"), q.watch("s")
	p := q.join("a")
	q.released()
	if !signalled(w1) || !signalled(w2) || !signalled(p) {
		t.Fatal("a release signals every watcher, and the poller of every other group")
	}
	q.leave(w1)
	if signalled(w2) {
		t.Fatal("a watcher that leaves signals the others")
	}
	for i := range 2 * localStreak {
		q.released()
		if !signalled(w2) {
			t.Fatalf("release %d: watchers have no streak", i)
		}
	}
	q.leave(w2)
	q.leave(p)
	if len(q.groups) != 0 {
		t.Errorf("groups left: %v", q.groups)
	}
}
