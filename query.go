package mongolock

import (
	"encoding/binary"
	"fmt"
	"reflect"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// This file holds the pure rules: how a filter, update or projection given by
// the caller becomes the command the lock sends. Nothing here does I/O.

var emptyDoc = bson.Raw{5, 0, 0, 0, 0}

// toDocument marshals a filter-like value (bson.D, bson.M, bson.Raw, a map or
// a struct) to a document; nil is the empty document.
func toDocument(what string, v any) (bson.Raw, error) {
	switch d := v.(type) {
	case nil:
		return emptyDoc, nil
	case bson.Raw:
		if err := validateDeep(d, 0); err != nil {
			return nil, invalid("%s is not a valid document: %v", what, err)
		}
		return d, nil
	}
	if isPipeline(v) {
		return nil, invalid("%s is a %T, not a document", what, v)
	}
	b, err := bson.Marshal(v)
	if err != nil {
		return nil, invalid("%s is not a document: %v", what, err)
	}
	return b, nil
}

// maxNesting is MongoDB's limit on nested documents and arrays.
const maxNesting = 100

// validateDeep checks a raw document and every document and array in it
// (the driver's Validate checks only the top level).
func validateDeep(doc bson.Raw, depth int) error {
	if depth > maxNesting {
		return errString("documents nested too deep")
	}
	if len(doc) < 5 || int(int32(binary.LittleEndian.Uint32(doc))) != len(doc) {
		return errString("document length does not match its bytes")
	}
	if err := doc.Validate(); err != nil {
		return err
	}
	elems, err := doc.Elements()
	if err != nil {
		return err
	}
	for _, e := range elems {
		switch v := e.Value(); v.Type {
		case bson.TypeEmbeddedDocument, bson.TypeArray:
			if err := validateDeep(bson.Raw(v.Value), depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// isPipeline reports whether v is a list (of stages) rather than a document:
// any slice or array other than bson.D, []bson.E and bson.Raw.
func isPipeline(v any) bool {
	switch v.(type) {
	case bson.D, []bson.E, bson.Raw, []byte:
		return false
	}
	k := reflect.TypeOf(v).Kind()
	return k == reflect.Slice || k == reflect.Array
}

// toPipeline marshals every stage of a pipeline update and checks that each
// is a single $-stage.
func toPipeline(v any) (bson.A, error) {
	rv := reflect.ValueOf(v)
	stages := make(bson.A, 0, rv.Len())
	for i := range rv.Len() {
		stage, err := toDocument(fmt.Sprintf("update pipeline stage %d", i), rv.Index(i).Interface())
		if err != nil {
			return nil, err
		}
		elems, _ := stage.Elements()
		if len(elems) != 1 || !strings.HasPrefix(elems[0].Key(), "$") {
			return nil, invalid("update pipeline stage %d is not a single $stage", i)
		}
		stages = append(stages, stage)
	}
	return stages, nil
}

// operatorUpdate checks that update is an update operator document that
// leaves the lock's fields alone, and returns it.
func operatorUpdate(what string, v any, f fieldSet) (bson.Raw, error) {
	doc, err := toDocument(what, v)
	if err != nil {
		return nil, err
	}
	elems, err := doc.Elements()
	if err != nil {
		return nil, invalid("%s: %v", what, err)
	}
	for _, e := range elems {
		op := e.Key()
		if !strings.HasPrefix(op, "$") {
			return nil, invalid("%s: %q is not an update operator (replacement documents are not supported)", what, op)
		}
		args, ok := e.Value().DocumentOK()
		if !ok {
			return nil, invalid("%s: %s takes a document", what, op)
		}
		if err := checkTouched(what, op, args, f); err != nil {
			return nil, err
		}
	}
	return doc, nil
}

// checkTouched rejects an operator whose paths (or, for $rename, targets)
// overlap a lock field.
func checkTouched(what, op string, args bson.Raw, f fieldSet) error {
	elems, _ := args.Elements()
	for _, e := range elems {
		paths := []string{e.Key()}
		if s, ok := e.Value().StringValueOK(); ok && op == "$rename" {
			paths = append(paths, s)
		}
		for _, p := range paths {
			if field, ok := f.overlaps(p); ok {
				return invalid("%s: %s writes %q, which the lock owns (field %q)", what, op, p, field)
			}
		}
	}
	return nil
}

// overlaps reports which lock field, if any, path writes: the field itself, a
// part of it, or a document that contains it. The release marker counts.
func (f fieldSet) overlaps(path string) (string, bool) {
	for _, field := range append(f.all(), releasedKey) {
		if pathsMeet(path, field) {
			return field, true
		}
	}
	return "", false
}

// all lists the fields the lock owns: its two fields, the holder record and,
// with fencing, the counter.
func (f fieldSet) all() []string {
	all := []string{f.lock, f.time, HolderKey}
	if f.seq != "" {
		all = append(all, f.seq)
	}
	return all
}

// pathsMeet reports whether writing one path changes the other: they are
// equal, or one contains the other.
func pathsMeet(a, b string) bool {
	return a == b || strings.HasPrefix(a, b+".") || strings.HasPrefix(b, a+".")
}

// checkFieldSet rejects lock fields that would overwrite one another (one
// is, or contains, another): each must stay readable on its own.
func checkFieldSet(f fieldSet) error {
	all := append(f.all(), releasedKey)
	for i, a := range all {
		for _, b := range all[i+1:] {
			if pathsMeet(a, b) {
				return invalid("lock fields %q and %q overlap", a, b)
			}
		}
	}
	return nil
}

// releaseUpdate checks an update on release (an operator document or a
// pipeline) and returns it with the lock fields cleared; nil means a plain
// release.
func releaseUpdate(v any, f fieldSet) (any, error) {
	if v == nil {
		return nil, nil
	}
	if isPipeline(v) {
		stages, err := toPipeline(v)
		if err != nil {
			return nil, err
		}
		for i, s := range stages {
			if err := checkStage(s.(bson.Raw), f); err != nil {
				return nil, invalid("update pipeline stage %d: %v", i, err)
			}
		}
		return stages, nil
	}
	doc, err := operatorUpdate("update on release", v, f)
	if err != nil {
		return nil, err
	}
	return doc, nil
}

// checkStage rejects a pipeline stage that sets or unsets a lock field.
func checkStage(stage bson.Raw, f fieldSet) error {
	e := stage.Index(0)
	switch e.Key() {
	case "$set", "$addFields":
		if args, ok := e.Value().DocumentOK(); ok {
			return checkTouched("update", e.Key(), args, f)
		}
	case "$unset":
		var paths []string
		if s, ok := e.Value().StringValueOK(); ok {
			paths = []string{s}
		} else if arr, ok := e.Value().ArrayOK(); ok {
			vals, _ := arr.Values()
			for _, v := range vals {
				s, ok := v.StringValueOK()
				if !ok {
					return fmt.Errorf("$unset lists a %s, not a field name", v.Type)
				}
				paths = append(paths, s)
			}
		}
		for _, p := range paths {
			if field, ok := f.overlaps(p); ok {
				return fmt.Errorf("$unset of %q, which the lock owns (field %q)", p, field)
			}
		}
	}
	return nil
}

// acquireFilter is the caller's filter narrowed to documents the lock may
// take: unlocked ones; with breakLock, any.
func acquireFilter(user bson.Raw, f fieldSet, breakLock bool) any {
	if breakLock {
		return user
	}
	return and(user, bson.D{{Key: f.lock, Value: nil}})
}

// expiredFilter matches the documents of user whose holder record declares a
// lease that ran out by now. Whether the record names the current holder
// cannot be asked of every server (it needs $expr): the caller checks each
// candidate with holderOf, then takes it with takeoverFilter.
func expiredFilter(user bson.Raw, f fieldSet, now time.Time) any {
	return and(user, bson.D{
		{Key: f.lock, Value: bson.D{{Key: "$ne", Value: nil}}},
		{Key: HolderKey + ".expires", Value: bson.D{{Key: "$lte", Value: bson.NewDateTimeFromTime(now)}}},
	})
}

// takeoverFilter matches candidate doc only while it is still held by the
// acquisition whose expired lease h describes: a holder that refreshed in
// between, released, or was taken over by someone else no longer matches.
func takeoverFilter(user bson.Raw, f fieldSet, doc bson.Raw, h holder) any {
	return and(user, bson.D{
		{Key: "_id", Value: doc.Lookup("_id")},
		{Key: f.lock, Value: h.lockID},
		{Key: f.time, Value: lookup(doc, f.time)},
		{Key: HolderKey + ".lock_id", Value: h.lockID},
		{Key: HolderKey + ".expires", Value: bson.NewDateTimeFromTime(h.expires)},
	})
}

// lockedFilter matches the documents of user that are locked.
func lockedFilter(user bson.Raw, f fieldSet) any {
	return and(user, bson.D{{Key: f.lock, Value: bson.D{{Key: "$ne", Value: nil}}}})
}

// and matches the documents of user that also match cond: cond's fields are
// added to user's when none of their keys meet (a plain filter is what
// servers such as FerretDB push down to their storage), else both go under
// $and.
func and(user bson.Raw, cond bson.D) any {
	if len(user) <= len(emptyDoc) {
		return cond
	}
	elems, err := user.Elements()
	if err != nil {
		return bson.D{{Key: "$and", Value: bson.A{user, cond}}}
	}
	merged := make(bson.D, 0, len(elems)+len(cond))
	for _, e := range elems {
		for _, c := range cond {
			if e.Key() == c.Key {
				return bson.D{{Key: "$and", Value: bson.A{user, cond}}}
			}
		}
		merged = append(merged, bson.E{Key: e.Key(), Value: e.Value()})
	}
	return append(merged, cond...)
}

// acquireUpdate merges the caller's update (already checked) with the lock's
// own: lock_id and the holder record by $set, lock_time by $currentDate (the
// server's clock), and the fencing counter by $inc.
func acquireUpdate(user bson.Raw, f fieldSet, lockID string, record bson.D) bson.D {
	ours := map[string]bson.D{
		"$set":         {{Key: f.lock, Value: lockID}, {Key: HolderKey, Value: record}},
		"$currentDate": {{Key: f.time, Value: true}},
	}
	if f.seq != "" {
		ours["$inc"] = bson.D{{Key: f.seq, Value: int64(1)}}
	}
	out := make(bson.D, 0, 3)
	if user != nil {
		elems, _ := user.Elements()
		for _, e := range elems {
			op := e.Key()
			args := e.Value().Document()
			own, mine := ours[op]
			if !mine {
				out = append(out, bson.E{Key: op, Value: args})
				continue
			}
			delete(ours, op)
			merged := append(bson.D{}, own...)
			vals, _ := args.Elements()
			for _, v := range vals {
				merged = append(merged, bson.E{Key: v.Key(), Value: v.Value()})
			}
			out = append(out, bson.E{Key: op, Value: merged})
		}
	}
	for _, op := range []string{"$set", "$currentDate", "$inc"} {
		if own, ok := ours[op]; ok {
			out = append(out, bson.E{Key: op, Value: own})
		}
	}
	return out
}

// identity is what names one acquisition: the document, the lock id, the
// server time it was taken (or last refreshed) and the fencing token.
// pending holds the lock times of refreshes whose reply was lost: the server
// may have written any of them, so until a reply says which, all name the
// acquisition.
type identity struct {
	docID   bson.RawValue
	lockID  string
	time    bson.DateTime
	pending []bson.DateTime
	token   int64
}

// heldFilter matches the document only while this acquisition holds it, so a
// late or retried release or refresh never touches a newer lock, even one
// taken with the same custom lock id.
func heldFilter(id identity, f fieldSet) bson.D {
	var t any = id.time
	if len(id.pending) > 0 {
		in := bson.A{id.time}
		for _, p := range id.pending {
			in = append(in, p)
		}
		t = bson.D{{Key: "$in", Value: in}}
	}
	filter := bson.D{
		{Key: "_id", Value: id.docID},
		{Key: f.lock, Value: id.lockID},
		{Key: f.time, Value: t},
	}
	if f.seq != "" {
		filter = append(filter, bson.E{Key: f.seq, Value: id.token})
	}
	return filter
}

// unlockUpdate clears the lock fields for an administrator (Unlock) and
// removes the holder record, where a holder's own release sets it to null:
// a holder whose release reply was lost can tell the two apart.
func unlockUpdate(f fieldSet) bson.D {
	return bson.D{
		{Key: "$set", Value: bson.D{{Key: f.lock, Value: nil}, {Key: f.time, Value: nil}}},
		{Key: "$unset", Value: bson.D{{Key: HolderKey, Value: ""}}},
	}
}

// refreshUpdate renews lock_time to t, a time the client chose (the server's
// time by its estimate), so that a refresh whose reply is lost leaves a lock
// time the Lock knows; with a lease it also moves the holder's expiry.
func refreshUpdate(f fieldSet, t bson.DateTime, expires time.Time) bson.D {
	set := bson.D{{Key: f.time, Value: t}}
	if !expires.IsZero() {
		set = append(set, bson.E{Key: HolderKey + ".expires", Value: bson.NewDateTimeFromTime(expires)})
	}
	return bson.D{{Key: "$set", Value: set}}
}

// clearUpdate adds the clearing of the lock fields and the holder record to a
// checked update on release: into its $set, or as a last pipeline stage.
// Cleared fields are set to null, as the Python original does.
func clearUpdate(update any, f fieldSet) any {
	clear := bson.D{{Key: f.lock, Value: nil}, {Key: f.time, Value: nil}, {Key: HolderKey, Value: nil}}
	switch u := update.(type) {
	case bson.A:
		return append(u[:len(u):len(u)], bson.D{{Key: "$set", Value: clear}})
	case bson.Raw:
		out := bson.D{}
		merged := false
		elems, _ := u.Elements()
		for _, e := range elems {
			if e.Key() != "$set" {
				out = append(out, bson.E{Key: e.Key(), Value: e.Value()})
				continue
			}
			set := append(bson.D{}, clear...)
			vals, _ := e.Value().Document().Elements()
			for _, v := range vals {
				set = append(set, bson.E{Key: v.Key(), Value: v.Value()})
			}
			out = append(out, bson.E{Key: "$set", Value: set})
			merged = true
		}
		if !merged {
			out = append(out, bson.E{Key: "$set", Value: clear})
		}
		return out
	}
	return bson.D{{Key: "$set", Value: clear}}
}

// markedClearUpdate is clearUpdate that also writes the release marker:
// releasedKey set to name, the acquisition's own name, so that a release
// whose reply was lost can later tell its own work from someone else's.
func markedClearUpdate(update any, f fieldSet, name string) any {
	marker := bson.E{Key: releasedKey, Value: name}
	switch u := clearUpdate(update, f).(type) {
	case bson.A: // the last stage is the clearing $set; a literal, never a field path
		last := u[len(u)-1].(bson.D)
		set := append(last[0].Value.(bson.D), bson.E{Key: releasedKey, Value: bson.D{{Key: "$literal", Value: name}}})
		u[len(u)-1] = bson.D{{Key: "$set", Value: set}}
		return u
	case bson.D:
		for i, e := range u {
			if e.Key == "$set" {
				u[i].Value = append(e.Value.(bson.D), marker)
			}
		}
		return u
	default:
		return u
	}
}

// lockProjection returns the caller's projection with the _id and lock
// fields always included (or, for an exclusion projection, never excluded).
// A []string lists the fields to include, as the Python original allows.
func lockProjection(v any, f fieldSet) (any, error) {
	if v == nil {
		return nil, nil
	}
	if names, ok := v.([]string); ok {
		p := make(bson.D, 0, len(names)+3)
		for _, n := range names {
			p = append(p, bson.E{Key: n, Value: 1})
		}
		return withLockFields(p, f), nil
	}
	doc, err := toDocument("projection", v)
	if err != nil {
		return nil, err
	}
	elems, _ := doc.Elements()
	var p bson.D
	inclusion := false
	for _, e := range elems {
		k := e.Key()
		if k == "_id" {
			continue // always returned
		}
		if _, ours := f.overlaps(k); ours {
			continue
		}
		if truthy(e.Value()) {
			inclusion = true
		}
		p = append(p, bson.E{Key: k, Value: e.Value()})
	}
	if !inclusion {
		if len(p) == 0 {
			return nil, nil // nothing left to exclude: the whole document
		}
		return p, nil // exclusion: the lock fields come anyway
	}
	return withLockFields(p, f), nil
}

func withLockFields(p bson.D, f fieldSet) bson.D {
	for _, field := range f.all() {
		p = append(p, bson.E{Key: field, Value: 1})
	}
	return p
}

// truthy reports whether a projection value includes its field.
func truthy(v bson.RawValue) bool {
	switch v.Type {
	case bson.TypeBoolean:
		return v.Boolean()
	case bson.TypeInt32, bson.TypeInt64, bson.TypeDouble:
		n, _ := v.AsFloat64OK()
		return n != 0
	}
	return false // operators such as $slice or $elemMatch
}

// holderProjection is what a holder lookup returns without WithLockedDocument.
func holderProjection(f fieldSet) bson.D {
	return withLockFields(bson.D{{Key: "_id", Value: 1}}, f)
}

// lookup finds a dotted path in doc; the zero RawValue when it is missing.
func lookup(doc bson.Raw, path string) bson.RawValue {
	v, err := doc.LookupErr(strings.Split(path, ".")...)
	if err != nil {
		return bson.RawValue{}
	}
	return v
}
