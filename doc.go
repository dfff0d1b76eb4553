// Package mongolock locks MongoDB documents in place, so that many workers on
// many machines can claim work from a collection and never step on each other.
//
// It is the Go counterpart of the MongoLock of jobflow-remote
// (jobflow_remote.utils.db) and writes the same two fields into the locked
// document, lock_id and lock_time, so Python and Go processes that lock the
// same collection respect each other's locks.
//
// # Model
//
// A lock is taken by one findOneAndUpdate whose filter is the caller's filter
// narrowed to unlocked documents; the same write sets lock_id (a random UUID
// unless WithLockID), lock_time (the server's clock, by $currentDate), the
// holder record and any WithUpdate. When it takes nothing, one read of the
// caller's filter tells whether the document is locked (ErrLocked, a
// *LockedDocumentError naming the holder) or does not exist (ErrNotFound).
// Waiters of one Locker that wait for the same thing queue, and only the
// first asks the server; a release through the Locker hands it the document.
// A release sets the lock fields and the holder record back to null with a
// filter that names the acquisition (_id, lock_id, lock_time and the fencing
// token), so a late or retried release can never free a newer lock; it
// reports ErrLockLost when the lock was broken or taken over. The same write
// sets a release marker (lock_released), by which a release whose reply was
// lost tells its own work from a breaker's.
//
// Beyond the original: a holder record (HolderKey: lock id, host, pid and
// lease expiry) written with every lock; leases declared by their holders
// and judged by the server's clock (WithLease); a keep-alive inside Do
// (WithAutoRefresh) that cancels fn's context when the lock is lost, and at
// the lease's end by the local monotonic clock whatever the network does; writes
// that keep track of the lock when their reply is lost, and a sweep that
// frees a lock taken by an acquiring write that landed late (Close finishes
// it); fencing tokens
// (WithFencing); immediate hand-off to waiters of the same Locker; an
// Observer and slog debug records.
//
// # Usage
//
//	lk := mongolock.New(jobs, mongolock.WithSort(bson.D{{"priority", -1}}))
//	err := lk.Do(ctx, bson.D{{"state", "READY"}}, func(ctx context.Context, l *mongolock.Lock) error {
//		if err := run(ctx, l.Document()); err != nil {
//			return err // released, the job left READY
//		}
//		return l.SetUpdateOnRelease(bson.D{{"$set", bson.D{{"state", "DONE"}}}})
//	})
//	switch {
//	case errors.Is(err, mongolock.ErrNotFound): // no READY job
//	case errors.Is(err, mongolock.ErrLocked): // all READY jobs taken; waited WithMaxWait
//	}
//
// The collection's write concern is the lock's durability: on a replica set
// use majority. Reads of lock state go to the primary whatever the
// collection's read preference.
//
// # Runner steps and lock groups
//
// Locker.Step is jobflow-remote's lock_job_for_update: it locks the next due
// document (its remote.retry_time_limit not after the server's time),
// runs fn, and writes the outcome in the releasing write: fn's update and
// the bookkeeping reset on success; remote.step_attempts + 1, a retry time
// and remote.error on failure; REMOTE_ERROR and remote.error, the count kept,
// when the attempts run out (WithRetry, Permanent); and updated_on, the
// step's time, in each of these. Locker.Work runs workers that call Step until no
// document matches. DoAll locks several documents (a job, its flow, its
// descendants) all or nothing: Group.Lock makes one attempt, and a group
// that meets a lock releases everything before it waits for that document,
// so groups cannot deadlock whatever their order, and runs fn again already
// holding it. example_test.go has both as runnable
// examples.
//
// # Claiming many documents per round trip
//
// Locker.TryAcquireMany locks up to n matching, unlocked documents in three
// round trips whatever n: it reads up to n candidate _ids in the Locker's
// sort, locks them with one conditional updateMany under one lock id (each
// document still gets its lock fields, holder record, lease, fencing token
// and WithUpdate, and its own *Lock, whose release names its _id and lock
// time, so it frees that document alone), and reads them back by _id.
// ReleaseAll releases many locks in one bulk write per collection; locks
// whose releases write the same update share one write. Work with
// WithBatch(n) claims this way for its idle workers only.
package mongolock
