package mongolock

import "time"

// Observer receives a Locker's lock events, for counters and latency
// histograms. Its methods are called synchronously on the caller's goroutine
// (or Do's refresh goroutine) and must be quick and safe for concurrent use.
// The collection is the lock collection's name.
type Observer interface {
	// Acquired is called when a lock is taken; latency is the round trip of
	// the write that took it, waited the time since Acquire (or Do) began.
	Acquired(collection string, latency, waited time.Duration)
	// Contended is called each time an attempt finds every matching
	// document locked by someone else.
	Contended(collection string)
	// GaveUp is called when Acquire or Do stops waiting without the lock
	// (the wait ran out or the context ended), after waiting waited.
	GaveUp(collection string, waited time.Duration)
	// Released is called when a release succeeds; held is the time since
	// the lock was taken.
	Released(collection string, held time.Duration)
	// Lost is called when the library learns that a lock it held is gone.
	Lost(collection string, held time.Duration)
}
