package mongolock

import "time"

// SetClock replaces the client clock of lk, so tests can skew it. Call it
// before lk is used.
func SetClock(lk *Locker, now func() time.Time) { lk.now = now }
