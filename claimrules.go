package mongolock

import (
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// This file holds the pure rules of many-document claims and releases: the
// filters and writes they send and how a read-back document is judged.
// Nothing here does I/O.

// claimFilter matches the candidates ids while they still match the
// caller's filter and are unlocked (with breakLock, whether locked or not):
// a candidate that someone else took between the claim's read and its
// write is left alone. One filter for the whole batch costs a server that
// cannot use an index one scan, where a write per candidate costs one each.
func claimFilter(user bson.Raw, f fieldSet, breakLock bool, ids []bson.RawValue) any {
	cond := idsFilter(ids)
	if !breakLock {
		cond = append(cond, bson.E{Key: f.lock, Value: nil})
	}
	return and(user, cond)
}

// idsFilter matches the documents whose _id is one of ids; a server
// answers it from the _id index, whatever the size of the collection.
func idsFilter(ids []bson.RawValue) bson.D {
	in := make(bson.A, len(ids))
	for i, id := range ids {
		in[i] = id
	}
	return bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: in}}}}
}

// isMine reports whether doc is locked by the acquisition a: its lock id
// and, for a custom lock id that others may share, the nonce of its holder
// record.
func isMine(doc bson.Raw, f fieldSet, a *acquisition) bool {
	id, ok := lookup(doc, f.lock).StringValueOK()
	if !ok || id != a.lockID {
		return false
	}
	if a.nonce == "" {
		return true
	}
	nonce, ok := lookup(doc, HolderKey+".nonce").StringValueOK()
	return ok && nonce == a.nonce
}

// releaseWrites are the writes of a bulk release of locks (identities ids,
// actions acts): each lock gets the filter and update its own Release would
// send, and locks whose releases write the same update (a queue's "done",
// typically) share one write whose filter is the $or of theirs, so that a
// server without a usable index scans once for them all. members[k] lists
// the locks that write k covers.
func releaseWrites(ids []identity, f fieldSet, acts []releaseAction) (models []mongo.WriteModel, members [][]int) {
	at := map[string]int{}
	var filters []bson.A
	var updates []any
	for i, a := range acts {
		var u any
		key := "delete"
		if !a.delete {
			u = clearUpdate(a.update, f)
			b, err := bson.Marshal(bson.D{{Key: "u", Value: u}})
			key = string(b)
			if err != nil {
				key = "unique\x00" + string(rune(i)) // the server will say what is wrong with it
			}
		}
		k, ok := at[key]
		if !ok {
			k = len(members)
			at[key] = k
			members = append(members, nil)
			filters = append(filters, nil)
			updates = append(updates, u)
		}
		members[k] = append(members[k], i)
		filters[k] = append(filters[k], heldFilter(ids[i], f))
	}
	for k, fs := range filters {
		var filter any = fs[0]
		if len(fs) > 1 {
			filter = bson.D{{Key: "$or", Value: fs}}
		}
		switch {
		case updates[k] == nil && len(fs) == 1:
			models = append(models, mongo.NewDeleteOneModel().SetFilter(filter))
		case updates[k] == nil:
			models = append(models, mongo.NewDeleteManyModel().SetFilter(filter))
		case len(fs) == 1:
			models = append(models, mongo.NewUpdateOneModel().SetFilter(filter).SetUpdate(updates[k]))
		default:
			models = append(models, mongo.NewUpdateManyModel().SetFilter(filter).SetUpdate(updates[k]))
		}
	}
	return models, members
}

// stillHeld reports whether doc (read back after a release) is still
// locked by the acquisition id: the release was not applied.
func stillHeld(doc bson.Raw, id identity, f fieldSet) bool {
	if doc == nil {
		return false
	}
	if v, ok := lookup(doc, f.lock).StringValueOK(); !ok || v != id.lockID {
		return false
	}
	t, ok := lookup(doc, f.time).DateTimeOK()
	if !ok {
		return false
	}
	match := bson.DateTime(t) == id.time
	for _, p := range id.pending {
		match = match || bson.DateTime(t) == p
	}
	if f.seq != "" {
		n, _ := lookup(doc, f.seq).AsInt64OK()
		match = match && n == id.token
	}
	return match
}

// looksReleased reports whether doc (nil when it is gone), read back after
// a release that may have been applied, shows the release's work: deleted,
// for a delete; else its lock fields cleared and its holder record set to
// null, as only a holder's release does (Unlock removes the record, a Python
// release leaves it), while no one could have taken it over, since its
// lease (expires, zero for none) had not run out at now. Lock.afterLostReply
// judges a single lock the same way.
func looksReleased(doc bson.Raw, f fieldSet, a releaseAction, expires, now time.Time) bool {
	if a.delete {
		return doc == nil
	}
	if doc == nil || !isFree(doc, f) || lookup(doc, HolderKey).Type != bson.TypeNull {
		return false
	}
	return expires.IsZero() || now.Before(expires)
}
