package mongolock

import "time"

// SetClock replaces the client clock of lk, so tests can skew it. Call it
// before lk is used.
func SetClock(lk *Locker, now func() time.Time) { lk.now = now }

// SetFaultTimeouts shortens how long the library waits on a server that
// stopped answering (one question, and all of them after a lost reply), and
// returns a function that restores them. Tests that use it must not run in
// parallel.
func SetFaultTimeouts(attempt, cleanup time.Duration) (restore func()) {
	a, c := attemptTimeout, cleanupTimeout
	attemptTimeout, cleanupTimeout = attempt, cleanup
	return func() { attemptTimeout, cleanupTimeout = a, c }
}

// SetClockMaxAge shortens how long a server clock sample is trusted, and
// returns a function that restores it. Tests that use it must not run in
// parallel.
func SetClockMaxAge(d time.Duration) (restore func()) {
	old := clockMaxAge
	clockMaxAge = d
	return func() { clockMaxAge = old }
}

// GraceAfterCancel is how long a write in flight may still run after its
// caller's context, or its wait, has ended.
const GraceAfterCancel = graceAfterCancel

// SetSweep shortens the sweep of unsettled acquisitions: the first pause,
// the longest, and the horizon. It returns a function that restores them.
// Tests that use it must not run in parallel.
func SetSweep(first, longest, horizon time.Duration) (restore func()) {
	f, l, h := sweepFirst, sweepLongest, sweepHorizon
	sweepFirst, sweepLongest, sweepHorizon = first, longest, horizon
	return func() { sweepFirst, sweepLongest, sweepHorizon = f, l, h }
}
