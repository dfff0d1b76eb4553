package mongolock

import (
	"errors"
	"math"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// This file holds the pure rules of Step: which documents are due, what a
// step's outcome writes, and how that is merged with the caller's update.
// Nothing here does I/O.

// Defaults of Retry, as jobflow-remote's runner has them.
const (
	defaultMaxAttempts    = 3
	defaultAttemptsField  = "remote.step_attempts"
	defaultNotBeforeField = "remote.retry_time_limit"
	defaultErrorField     = "remote.error"
	defaultUpdatedField   = "updated_on"
	giveUpState           = "REMOTE_ERROR"
)

var defaultDelays = []time.Duration{30 * time.Second, 5 * time.Minute, 20 * time.Minute}

// check rejects a Retry that no step could follow: negative counts or
// delays, and field names that cannot hold the bookkeeping.
func (r Retry) check() error {
	if r.MaxAttempts < 0 {
		return invalid("WithRetry: MaxAttempts %d is negative", r.MaxAttempts)
	}
	for i, d := range r.Delays {
		if d < 0 {
			return invalid("WithRetry: Delays[%d] = %v is negative", i, d)
		}
	}
	d := r.withDefaults()
	names := d.bookFields()
	for i, name := range names {
		if err := checkFieldName(name); err != nil {
			return invalid("WithRetry: %v", err)
		}
		for _, other := range names[:i] {
			if pathsOverlap(name, other) {
				return invalid("WithRetry: fields %q and %q overlap", other, name)
			}
		}
	}
	return nil
}

// withDefaults fills the zero fields of r with jobflow-remote's values.
func (r Retry) withDefaults() Retry {
	if r.MaxAttempts == 0 {
		r.MaxAttempts = defaultMaxAttempts
	}
	if len(r.Delays) == 0 {
		r.Delays = defaultDelays
	}
	if r.AttemptsField == "" {
		r.AttemptsField = defaultAttemptsField
	}
	if r.NotBeforeField == "" {
		r.NotBeforeField = defaultNotBeforeField
	}
	if r.ErrorField == "" {
		r.ErrorField = defaultErrorField
	}
	if r.UpdatedField == "" {
		r.UpdatedField = defaultUpdatedField
	}
	return r
}

// bookFields are the fields the bookkeeping writes.
func (r Retry) bookFields() []string {
	return []string{r.AttemptsField, r.NotBeforeField, r.ErrorField, r.UpdatedField}
}

// checkFields rejects bookkeeping fields that overlap the lock's own.
func (r Retry) checkFields(f fieldSet) error {
	for _, name := range r.bookFields() {
		if field, ok := f.overlaps(name); ok {
			return invalid("WithRetry: field %q overlaps the lock field %q", name, field)
		}
	}
	return nil
}

// pause is the not-before delay after a failure when the document counted
// attempts failures before it: failure number k (1-based) waits Delays[k-1],
// the last delay repeating.
func (r Retry) pause(attempts int64) time.Duration {
	i := min(max(attempts, 0), int64(len(r.Delays)-1))
	return r.Delays[i]
}

// dueFilter narrows user to the documents that are due at now: their
// not-before field missing, null, or not after now. It is jobflow-remote's
// {"$not": {"$gt": now}}, which also lets through a field that holds no date.
func dueFilter(user bson.Raw, notBefore string, now time.Time) any {
	return and(user, bson.D{{Key: notBefore, Value: bson.D{{Key: "$not", Value: bson.D{{Key: "$gt", Value: bson.NewDateTimeFromTime(now)}}}}}})
}

// waitingFilter matches the documents of user that are not due at now.
func waitingFilter(user bson.Raw, notBefore string, now time.Time) any {
	return and(user, bson.D{{Key: notBefore, Value: bson.D{{Key: "$gt", Value: bson.NewDateTimeFromTime(now)}}}})
}

// stepOutcome is what a step's release does with the document.
type stepOutcome int

const (
	stepUnchanged stepOutcome = iota // released as it was; no attempt counted
	stepSucceeded                    // fn's update, bookkeeping reset
	stepRetry                        // attempts + 1, not-before, error
	stepGiveUp                       // GiveUp's update, error; attempts kept
)

func (o stepOutcome) String() string {
	return [...]string{"unchanged", "succeeded", "retry", "gave up"}[o]
}

// classify decides a step's outcome from fn's error, whether the caller's
// context ended while fn ran (interrupted), and the document's count of
// failures so far. An error that matches ErrLocked comes first: fn met
// another lock, which is no failure of the document, even wrapped in
// Permanent. A step cut short by its caller counts nothing either.
func classify(fnErr error, interrupted bool, attempts int64, maxAttempts int) stepOutcome {
	var p *permanentError
	switch {
	case fnErr == nil:
		return stepSucceeded
	case errors.Is(fnErr, ErrLocked), interrupted:
		return stepUnchanged
	case errors.As(fnErr, &p), attempts >= int64(maxAttempts):
		return stepGiveUp
	}
	return stepRetry
}

// attemptsOf reads the count of failures from a locked document: 0 when the
// field is missing or holds no number (a Python runner writes an int).
func attemptsOf(doc bson.Raw, field string) int64 {
	n, ok := lookup(doc, field).AsInt64OK()
	if !ok {
		return 0
	}
	return n
}

// bookkeeping is the $set that records an outcome in the document's
// fields, as jobflow-remote's lock_job_for_update writes it: a success
// resets them, a retry counts the failure, stores its message and sets the
// not-before time to now + the policy's pause, a give-up stores the message
// and leaves the count as it was. Each stamps the updated field with now, the
// step's time.
func bookkeeping(r Retry, o stepOutcome, attempts int64, now time.Time, msg string) bson.D {
	at := bson.E{Key: r.UpdatedField, Value: bson.NewDateTimeFromTime(now)}
	switch o {
	case stepSucceeded:
		return bson.D{{Key: r.AttemptsField, Value: int32(0)}, {Key: r.NotBeforeField, Value: nil}, {Key: r.ErrorField, Value: nil}, at}
	case stepRetry:
		next := bson.NewDateTimeFromTime(now.Add(r.pause(attempts)))
		return bson.D{{Key: r.AttemptsField, Value: count(attempts + 1)}, {Key: r.NotBeforeField, Value: next}, {Key: r.ErrorField, Value: msg}, at}
	case stepGiveUp:
		return bson.D{{Key: r.ErrorField, Value: msg}, at}
	}
	return nil
}

// count is n as Python's driver writes a small int: an int32 when it fits.
func count(n int64) any {
	if n >= math.MinInt32 && n <= math.MaxInt32 {
		return int32(n)
	}
	return n
}

// defaultGiveUp is jobflow-remote's give-up: state REMOTE_ERROR, and the
// state the job was in as previous_state.
func defaultGiveUp(doc bson.Raw, _ error) any {
	set := bson.D{{Key: "state", Value: giveUpState}}
	if v := lookup(doc, "state"); v.Type != 0 {
		set = append(set, bson.E{Key: "previous_state", Value: v})
	}
	return bson.D{{Key: "$set", Value: set}}
}

// withBookkeeping merges a checked update on release (nil, an operator
// document as bson.Raw, or a pipeline as bson.A) with the bookkeeping $set,
// and returns an update that release accepts. Where the caller's update
// writes a bookkeeping field (or a document around it or inside it), the
// caller's wins, as jobflow-remote's deep merge lets the runner's update on
// release win; a pipeline's stages run after the bookkeeping, to the same
// effect.
func withBookkeeping(user any, book bson.D) (any, error) {
	switch u := user.(type) {
	case bson.A:
		set := make(bson.D, len(book))
		for i, e := range book {
			set[i] = bson.E{Key: e.Key, Value: bson.D{{Key: "$literal", Value: e.Value}}}
		}
		return append(bson.A{bson.D{{Key: "$set", Value: set}}}, u...), nil
	case bson.Raw:
		return mergeSet(u, book)
	case nil:
		b, err := bson.Marshal(bson.D{{Key: "$set", Value: book}})
		return bson.Raw(b), err
	}
	return nil, invalid("update on release of type %T", user)
}

// mergeSet adds the entries of book that u does not write to u's $set.
func mergeSet(u bson.Raw, book bson.D) (bson.Raw, error) {
	elems, err := u.Elements()
	if err != nil {
		return nil, invalid("update on release: %v", err)
	}
	written := writtenPaths(elems)
	keep := make(bson.D, 0, len(book))
	for _, e := range book {
		if !overlapsAny(e.Key, written) {
			keep = append(keep, e)
		}
	}
	out := make(bson.D, 0, len(elems)+1)
	merged := false
	for _, e := range elems {
		if e.Key() != "$set" || merged {
			out = append(out, bson.E{Key: e.Key(), Value: e.Value()})
			continue
		}
		vals, _ := e.Value().Document().Elements()
		set := make(bson.D, 0, len(vals)+len(keep))
		for _, v := range vals {
			set = append(set, bson.E{Key: v.Key(), Value: v.Value()})
		}
		out = append(out, bson.E{Key: "$set", Value: append(set, keep...)})
		merged = true
	}
	if !merged && len(keep) > 0 {
		out = append(out, bson.E{Key: "$set", Value: keep})
	}
	return bson.Marshal(out)
}

// writtenPaths lists the paths an operator update writes: the keys of every
// operator's arguments, and $rename's targets.
func writtenPaths(ops []bson.RawElement) []string {
	var paths []string
	for _, op := range ops {
		args, ok := op.Value().DocumentOK()
		if !ok {
			continue
		}
		vals, _ := args.Elements()
		for _, v := range vals {
			paths = append(paths, v.Key())
			if s, ok := v.Value().StringValueOK(); ok && op.Key() == "$rename" {
				paths = append(paths, s)
			}
		}
	}
	return paths
}

// pathsOverlap reports whether two dotted paths name the same field, or one
// lies inside the other.
func pathsOverlap(a, b string) bool {
	return a == b || strings.HasPrefix(a, b+".") || strings.HasPrefix(b, a+".")
}

func overlapsAny(path string, paths []string) bool {
	for _, p := range paths {
		if pathsOverlap(path, p) {
			return true
		}
	}
	return false
}

// stepProjection makes a lock projection (as lockProjection built it: nil,
// or a bson.D) return the fields a step reads, need: an inclusion projection
// gains them, an exclusion projection stops excluding them.
func stepProjection(p any, need []string) any {
	d, ok := p.(bson.D)
	if !ok || len(d) == 0 {
		return p
	}
	out := make(bson.D, 0, len(d)+len(need))
	if !isInclusion(d) {
		for _, e := range d {
			if !overlapsAny(e.Key, need) {
				out = append(out, e)
			}
		}
		return out
	}
	for _, e := range d {
		inside := false // a part of a needed field, which the whole replaces
		for _, n := range need {
			inside = inside || strings.HasPrefix(e.Key, n+".")
		}
		if !inside {
			out = append(out, e)
		}
	}
	for _, n := range need {
		covered := false // the field, or a document around it, is included
		for _, e := range out {
			covered = covered || n == e.Key || strings.HasPrefix(n, e.Key+".")
		}
		if !covered {
			out = append(out, bson.E{Key: n, Value: 1})
		}
	}
	return out
}

// isInclusion reports whether a projection built by lockProjection includes
// fields (its values are the caller's raw values and the lock's own 1s).
func isInclusion(d bson.D) bool {
	for _, e := range d {
		switch v := e.Value.(type) {
		case bson.RawValue:
			if truthy(v) {
				return true
			}
		case int:
			if v != 0 {
				return true
			}
		}
	}
	return false
}
