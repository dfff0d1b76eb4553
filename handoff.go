package mongolock

import (
	"sync"
	"time"
)

// waitQueue is how a Locker's waiters share one document's wait. Waiters
// that wait for the same thing (filter, lock fields, break and lease
// settings) form a group, in arrival order. Only the first of a group, the
// poller, asks the server; the others wait on a channel, with no timer and no
// round trip, until they come first. A newcomer to a group that has waiters
// does not try before them. A release through the Locker hands the document
// to the poller of every group at once.
//
// A release hands over a document to this process only; other processes
// find it by polling. So that they are not starved by a chain of hand-offs
// inside this one, a group that has seen another holder recently hands off
// at most localStreak releases in a row, and leaves the next to whichever
// poller asks first, its own included.
type waitQueue struct {
	mu     sync.Mutex
	groups map[string]*waitGroup
}

// localStreak is how many releases in a row a group hands to its poller
// while other processes contend for the same documents.
const localStreak = 3

// foreignMemory is how long a group remembers that another process held
// what it waits for.
const foreignMemory = 2 * time.Second

type waitGroup struct {
	key       string
	broadcast bool      // see watch
	queue     []*waiter // arrival order; queue[0] is the poller
	wakes     int       // releases handed to the group and not yet tried
	streak    int       // releases handed over in a row
	foreign   time.Time // when another process last held what the group waits for
	holder    *LockedDocumentError
}

type waiter struct {
	group  *waitGroup
	wake   chan struct{} // buffered: a signal while the waiter is busy is kept
	tryAll bool          // wakeAll asked every waiter to try
}

// join adds a waiter at the end of key's group. The first waiter of a group
// is its poller.
func (q *waitQueue) join(key string) *waiter { return q.add(key, false) }

// watch adds a waiter to key's group of watchers, who poll on their own
// schedule (Work's workers, DoAll's waits) and want to hear of every
// release: a release signals all of them, and none is signalled when
// another leaves.
func (q *waitQueue) watch(key string) *waiter { return q.add(key, true) }

func (q *waitQueue) add(key string, broadcast bool) *waiter {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.groups == nil {
		q.groups = map[string]*waitGroup{}
	}
	g := q.groups[key]
	if g == nil {
		g = &waitGroup{key: key, broadcast: broadcast}
		q.groups[key] = g
	}
	w := &waiter{group: g, wake: make(chan struct{}, 1)}
	g.queue = append(g.queue, w)
	return w
}

// leave removes w. If w was the poller, the next waiter becomes the poller
// and is signalled: it tries at once if a release is still untried,
// otherwise it starts polling.
func (q *waitQueue) leave(w *waiter) {
	q.mu.Lock()
	defer q.mu.Unlock()
	g := w.group
	wasPoller := len(g.queue) > 0 && g.queue[0] == w
	for i, x := range g.queue {
		if x == w {
			g.queue = append(g.queue[:i:i], g.queue[i+1:]...)
			break
		}
	}
	if len(g.queue) == 0 {
		delete(q.groups, g.key)
		return
	}
	g.wakes = min(g.wakes, len(g.queue))
	if wasPoller && !g.broadcast {
		signal(g.queue[0])
	}
}

// turn is what a waiter does next: go on waiting; start polling (it was
// just made the poller); try now (its back-off ended, or a broadcast told
// every waiter to try); or try a document a release handed to it.
type turn int

const (
	waitOn turn = iota
	pollNow
	tryNow
	handed
)

// next tells w what to do after a signal or a timer.
func (q *waitQueue) next(w *waiter, timerFired bool) turn {
	q.mu.Lock()
	defer q.mu.Unlock()
	g := w.group
	if w.tryAll {
		w.tryAll = false
		return tryNow
	}
	if g.queue[0] != w {
		return waitOn
	}
	if g.wakes > 0 {
		g.wakes--
		return handed
	}
	if timerFired {
		return tryNow
	}
	return pollNow
}

// isPoller reports whether w is its group's poller.
func (q *waitQueue) isPoller(w *waiter) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return w.group.queue[0] == w
}

// released hands a document just released through the Locker to the poller
// of every group; see localStreak.
func (q *waitQueue) released() {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := time.Now()
	for _, g := range q.groups {
		if g.broadcast {
			for _, w := range g.queue {
				signal(w)
			}
			continue
		}
		if g.contended(now) && g.streak >= localStreak {
			g.streak = 0 // this one is for whoever asks first
			continue
		}
		g.streak++
		g.wakes = min(g.wakes+1, len(g.queue))
		signal(g.queue[0])
	}
}

// wakeAll makes every waiter of w's group, or for a nil w every waiter, try
// at once: after Unlock, or when w found that nothing matches any more.
func (q *waitQueue) wakeAll(w *waiter) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, g := range q.groups {
		if w != nil && g != w.group {
			continue
		}
		for _, x := range g.queue {
			x.tryAll = true
			signal(x)
		}
	}
}

// sawHolder records what w's poller learned of the holder: a holder in
// another process (or one that wrote no holder record, as Python does)
// means that others contend.
func (q *waitQueue) sawHolder(w *waiter, e *LockedDocumentError, foreign bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	w.group.holder = e
	if foreign {
		w.group.foreign = time.Now()
	}
}

// contended reports whether w's group has seen another process hold what it
// waits for lately.
func (q *waitQueue) contended(w *waiter) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return w.group.contended(time.Now())
}

func (g *waitGroup) contended(now time.Time) bool {
	return !g.foreign.IsZero() && now.Sub(g.foreign) < foreignMemory
}

// lastHolder returns the last holder w's group has read, or nil.
func (q *waitQueue) lastHolder(w *waiter) *LockedDocumentError {
	q.mu.Lock()
	defer q.mu.Unlock()
	return w.group.holder
}

func signal(w *waiter) {
	select {
	case w.wake <- struct{}{}:
	default: // already has a signal pending
	}
}
