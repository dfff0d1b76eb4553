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

// StepObserver is an optional extension of Observer for Step and Work: when
// the Observer given to WithObserver also implements it, it hears of the
// steps whose failure was counted in their document. It is a separate
// interface so that existing Observers keep compiling.
type StepObserver interface {
	// StepRetried is called when a step's fn failed and the release
	// counted the failure and set the document's not-before time: the
	// document will be tried again.
	StepRetried(collection string)
	// StepGaveUp is called when a step's release wrote Retry's GiveUp
	// update: fn returned Permanent(err), or the attempts ran out.
	StepGaveUp(collection string)
}

// SweepObserver is an optional extension of Observer for the sweep of
// unsettled acquisitions (see Locker.Close): when the Observer given to
// WithObserver also implements it, it hears of each acquiring write whose
// outcome a lost reply left unknown, and of each lock such a write took
// when it landed late and the sweep released. Unsettled acquisitions that
// are never swept landed nowhere, or were released by their lease or an
// operator. Calls come from the Locker's sweep goroutine too; they must not
// block.
type SweepObserver interface {
	// Unsettled is called when an acquiring write got no reply and its
	// lock was not found: the Locker keeps looking for it.
	Unsettled(collection string)
	// Swept is called for each lock the sweep found, taken by an acquiring
	// write that landed after its caller had been told it failed, and
	// released.
	Swept(collection string)
}

// observeStep tells o, if it is a StepObserver, the outcome of a step whose
// release was applied.
func observeStep(o Observer, collection string, outcome stepOutcome) {
	so, ok := o.(StepObserver)
	if !ok {
		return
	}
	switch outcome {
	case stepRetry:
		so.StepRetried(collection)
	case stepGiveUp:
		so.StepGaveUp(collection)
	}
}
