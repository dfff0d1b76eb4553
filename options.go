package mongolock

import (
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// LockKey and LockTimeKey are the fields a lock writes into the document, as
// in jobflow-remote's MongoLock. WithFields changes them.
const (
	LockKey     = "lock_id"
	LockTimeKey = "lock_time"
)

// defaultFencingField is the counter WithFencing("") increments.
const defaultFencingField = "lock_seq"

// Defaults of the waiting options.
const (
	defaultPollInterval = time.Second
	defaultMaxWait      = 600 * time.Second
	firstBackoff        = 10 * time.Millisecond
)

// An Option configures a Locker (given to New, it is a default for every call)
// or a single call (TryAcquire, Acquire, Do), where it overrides the default.
// A bad value makes the call return an error matching ErrInvalidOption before
// anything is sent to the server.
type Option func(*config)

// config is what the options set. The zero value is not ready: see
// defaultConfig.
type config struct {
	err error // the first bad option

	update         any
	sort           any
	projection     any
	breakLock      bool
	lockID         string
	pollInterval   time.Duration
	maxWait        time.Duration
	lockedDocument bool
	findOpts       []options.Lister[options.FindOneAndUpdateOptions]
	lockKey        string
	lockTimeKey    string
	lease          time.Duration
	autoRefresh    time.Duration
	fencingField   string // "" when fencing is off
	observer       Observer
	logger         *slog.Logger
	retry          Retry // Step and Work's policy (step.go); zero fields take the defaults
	batch          int   // Work: documents claimed per round; 0 means 1
}

func defaultConfig() config {
	return config{
		pollInterval: defaultPollInterval,
		maxWait:      defaultMaxWait,
		lockKey:      LockKey,
		lockTimeKey:  LockTimeKey,
	}
}

// with returns a copy of c with opts applied; c is left as it was.
func (c config) with(opts []Option) config {
	c.findOpts = c.findOpts[:len(c.findOpts):len(c.findOpts)] // appends must copy
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	return c
}

// check returns the first bad option, or an error when the options
// together name lock fields that overlap.
func (c *config) check() error {
	if c.err != nil {
		return c.err
	}
	return checkFieldSet(c.fields())
}

// fail records the first bad option.
func (c *config) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}

// WithUpdate applies update, an update operator document such as
// {"$set": {"state": "RUNNING"}}, in the same write that takes the lock. Its
// $set is merged with the lock fields; an update that touches the lock fields
// (or the fencing field) is an error. Pipelines are not accepted here. The
// default is no update.
func WithUpdate(update any) Option {
	return func(c *config) { c.update = update }
}

// WithSort picks which of several matching documents is locked, as the sort of
// findOneAndUpdate (for example bson.D{{"priority", -1}}). It wins over a sort
// given through WithFindOptions. The default is the server's natural order.
func WithSort(sort any) Option {
	return func(c *config) { c.sort = sort }
}

// WithProjection limits the fields of Lock.Document (a document, or a []string
// of field names to include). The _id and lock fields are always returned.
// The default is the whole document.
func WithProjection(projection any) Option {
	return func(c *config) { c.projection = projection }
}

// WithBreakLock takes the document even if another holder has it locked (the
// Python original's break_lock=True). The previous holder's release then
// reports ErrLockLost. The default is to respect existing locks.
func WithBreakLock() Option {
	return func(c *config) { c.breakLock = true }
}

// WithLockID sets the lock_id written into the document. The default is a new
// random UUID (version 4) for every acquisition, which is what makes a lock
// safe to clean up after a failed acquire; give your own id only when you need
// to find the lock by it.
func WithLockID(id string) Option {
	return func(c *config) {
		if id == "" {
			c.fail(invalid("WithLockID: empty lock id"))
		}
		c.lockID = id
	}
}

// WithPollInterval caps the back-off between attempts of Acquire and Do, which
// starts at 10ms and doubles, with jitter. d must be positive. The default is
// 1s.
func WithPollInterval(d time.Duration) Option {
	return func(c *config) {
		if d <= 0 {
			c.fail(invalid("WithPollInterval: interval %v is not positive", d))
		}
		c.pollInterval = d
	}
}

// WithMaxWait bounds how long Acquire and Do wait for a locked document; 0
// means a single attempt. The context's deadline bounds the wait too. It
// holds even against a server that stops answering: a write in flight when
// the wait ends gets what a cancelled caller's does (10s to finish, 10s more
// to find out whether it took the lock, which is then given back), so the
// call returns at most about 25s after the wait's end (a try begun near the
// end still gets 5s). The default is 600s, as in the Python original.
func WithMaxWait(d time.Duration) Option {
	return func(c *config) {
		if d < 0 {
			c.fail(invalid("WithMaxWait: wait %v is negative", d))
		}
		c.maxWait = d
	}
}

// WithLockedDocument makes the *LockedDocumentError of a failed acquisition
// carry the holder's whole document in its Document field (the Python
// original's get_locked_doc=True). The default carries only _id and the lock
// fields.
func WithLockedDocument() Option {
	return func(c *config) { c.lockedDocument = true }
}

// WithFindOptions passes options to findOneAndUpdate (hint, collation, let,
// comment, ...). The lock owns ReturnDocument (After) and Upsert (false) and
// overrides them; WithSort and WithProjection win over the sort and projection
// given here. A projection given here gets the _id and lock fields added,
// as WithProjection's does. The default is none.
func WithFindOptions(opts ...options.Lister[options.FindOneAndUpdateOptions]) Option {
	return func(c *config) {
		for i, o := range opts {
			if isNil(o) {
				c.fail(invalid("WithFindOptions: option %d is nil", i))
				return
			}
		}
		c.findOpts = append(c.findOpts, opts...)
	}
}

// isNil reports whether v is nil or a nil pointer, map or slice behind an
// interface (a typed nil builder).
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Interface, reflect.Func, reflect.Chan:
		return rv.IsNil()
	}
	return false
}

// WithFields names the two fields the lock writes. The default is LockKey and
// LockTimeKey ("lock_id" and "lock_time"), as in jobflow-remote.
func WithFields(lockKey, lockTimeKey string) Option {
	return func(c *config) {
		for _, f := range []string{lockKey, lockTimeKey} {
			if err := checkFieldName(f); err != nil {
				c.fail(invalid("WithFields: %v", err))
			}
		}
		if lockKey == lockTimeKey {
			c.fail(invalid("WithFields: lock key and lock time key are both %q", lockKey))
		}
		c.lockKey, c.lockTimeKey = lockKey, lockTimeKey
	}
}

// WithLease makes every lock taken with it a promise: its holder record
// (HolderKey) says that it expires ttl after it was taken, by the server's
// clock, and each Refresh moves the expiry ttl past the refresh (Do refreshes
// every ttl/3 unless WithAutoRefresh says otherwise). Once a lease has run
// out, any acquirer, with or without WithLease, may take the document over;
// the old holder's Refresh and Release then report ErrLockLost. A lock whose
// holder declared no lease (every Python MongoLock, a Go holder without
// WithLease) is never taken over, however old. The default is no lease: a
// lock is held until released or unlocked.
func WithLease(ttl time.Duration) Option {
	return func(c *config) {
		if ttl <= 0 {
			c.fail(invalid("WithLease: ttl %v is not positive", ttl))
		}
		c.lease = ttl
	}
}

// WithAutoRefresh makes Do refresh the lock every interval while fn runs. If
// a refresh finds the lock gone, Lost is closed and fn's context is cancelled
// with cause ErrLockLost. The default is ttl/3 with WithLease, and no refresh
// without it.
func WithAutoRefresh(every time.Duration) Option {
	return func(c *config) {
		if every <= 0 {
			c.fail(invalid("WithAutoRefresh: interval %v is not positive", every))
		}
		c.autoRefresh = every
	}
}

// WithFencing makes every acquisition increment the counter field (""
// means "lock_seq") and return it as Lock.Token: tokens strictly increase
// across holders of a document, so a writer downstream can reject a smaller
// one. The default is no fencing (Token returns 0).
func WithFencing(field string) Option {
	return func(c *config) {
		if field == "" {
			field = defaultFencingField
		}
		if err := checkFieldName(field); err != nil {
			c.fail(invalid("WithFencing: %v", err))
		}
		c.fencingField = field
	}
}

// WithObserver reports lock events to o. The default is none.
func WithObserver(o Observer) Option {
	return func(c *config) { c.observer = o }
}

// WithLogger writes debug records of acquisitions, waits and releases to l.
// The default is none.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.logger = l }
}

// WithBatch makes Work claim up to n due documents per round trip
// (TryAcquireMany), for its idle workers only: never more documents than
// workers that can start on them now. n must be at least 1. The default is
// 1: one Step per document.
func WithBatch(n int) Option {
	return func(c *config) {
		if n < 1 {
			c.fail(invalid("WithBatch: %d is below 1", n))
		}
		c.batch = n
	}
}

// checkFieldName rejects names that cannot hold a lock field. A dotted name
// is a path into embedded documents, and is read and written as one.
func checkFieldName(name string) error {
	if name == "" {
		return errString("empty field name")
	}
	for _, part := range strings.Split(name, ".") {
		switch {
		case part == "":
			return errString(fmt.Sprintf("field %q is not a valid path", name))
		case strings.HasPrefix(part, "$"):
			return errString(fmt.Sprintf("field %q has a part that starts with $", name))
		case strings.ContainsRune(part, 0):
			return errString(fmt.Sprintf("field %q contains NUL", name))
		}
	}
	if name == "_id" || strings.HasPrefix(name, "_id.") {
		return errString("field " + name + " is in _id, which cannot hold a lock")
	}
	return nil
}

type errString string

func (e errString) Error() string { return string(e) }

// fieldSet is the fields the lock owns in a document.
type fieldSet struct {
	lock, time, seq string // seq is "" without fencing
}

func (c *config) fields() fieldSet {
	return fieldSet{lock: c.lockKey, time: c.lockTimeKey, seq: c.fencingField}
}

// refreshEvery is how often Do refreshes the lock; 0 means never.
func (c *config) refreshEvery() time.Duration {
	if c.autoRefresh > 0 {
		return c.autoRefresh
	}
	return c.lease / 3
}
