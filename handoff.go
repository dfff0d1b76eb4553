package mongolock

import "sync"

// waitQueue is how a Locker hands a released document to its own waiters
// without their sleeping out a back-off. Waiters are grouped by filter and
// kept in arrival order. A release wakes the first waiter of every group:
// one release frees one document, which one waiter of a group can take, so
// waking the rest would only queue their failed attempts in front of it.
// The first waiter keeps its place until it leaves, which makes the hand-off
// fair within a group.
type waitQueue struct {
	mu     sync.Mutex
	groups map[string][]*waiter
}

type waiter struct {
	group string
	wake  chan struct{} // buffered: a wake while the waiter is busy is kept
}

// join adds a waiter for filter (the raw filter bytes) at the end of its
// group.
func (q *waitQueue) join(filter []byte) *waiter {
	w := &waiter{group: string(filter), wake: make(chan struct{}, 1)}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.groups == nil {
		q.groups = map[string][]*waiter{}
	}
	q.groups[w.group] = append(q.groups[w.group], w)
	return w
}

// leave removes w. A wake that w did not use goes to the waiter now first.
func (q *waitQueue) leave(w *waiter) {
	q.mu.Lock()
	defer q.mu.Unlock()
	g := q.groups[w.group]
	for i, x := range g {
		if x == w {
			g = append(g[:i:i], g[i+1:]...)
			break
		}
	}
	if len(g) == 0 {
		delete(q.groups, w.group)
		return
	}
	q.groups[w.group] = g
	select {
	case <-w.wake:
		signal(g[0])
	default:
	}
}

// released wakes the first waiter of every group.
func (q *waitQueue) released() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, g := range q.groups {
		signal(g[0])
	}
}

// wakeAll wakes every waiter of w's group, or, for a nil w, every waiter:
// after Unlock, or when w found that nothing matches its filter any more.
func (q *waitQueue) wakeAll(w *waiter) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for group, g := range q.groups {
		if w != nil && group != w.group {
			continue
		}
		for _, x := range g {
			signal(x)
		}
	}
}

func signal(w *waiter) {
	select {
	case w.wake <- struct{}{}:
	default: // already has a wake pending
	}
}
