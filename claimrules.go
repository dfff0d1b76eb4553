package mongolock

import (
	"fmt"

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
// typically) share one write, so that a server without a usable index
// scans once for them all. members[k] lists the locks that write k covers.
//
// Locks of one claim whose lock id is random (random[i]) share it, and no one
// else writes it: their shared write matches {_id: {$in: ...}, lock_id: id,
// lock_time: {$in: ...}}, which can only match documents this claim holds.
// Any other lock joins a shared write by its own held filter, under $or.
func releaseWrites(ids []identity, f fieldSet, acts []releaseAction, random []bool, names []string) (models []mongo.WriteModel, members [][]int) {
	type group struct {
		update  any
		members []int
	}
	at := map[string]int{}
	var groups []group
	for i, a := range acts {
		var u any
		key := "delete"
		if !a.delete {
			u = markedClearUpdate(a.update, f, names[i])
			b, err := bson.Marshal(bson.D{{Key: "u", Value: u}})
			key = string(b)
			if err != nil {
				key = fmt.Sprintf("unique\x00%d", i) // the server will say what is wrong with it
			}
		}
		if random[i] && f.seq == "" && len(ids[i].pending) == 0 {
			key += "\x00" + ids[i].lockID
		} else {
			key += fmt.Sprintf("\x00own\x00%d", i)
		}
		k, ok := at[key]
		if !ok {
			k = len(groups)
			at[key] = k
			groups = append(groups, group{update: u})
		}
		groups[k].members = append(groups[k].members, i)
	}
	for _, g := range groups {
		var filter any = heldFilter(ids[g.members[0]], f)
		if len(g.members) > 1 {
			docs := make([]bson.RawValue, len(g.members))
			var times bson.A
			seen := map[bson.DateTime]bool{}
			for j, i := range g.members {
				docs[j] = ids[i].docID
				if t := ids[i].time; !seen[t] {
					seen[t] = true
					times = append(times, t)
				}
			}
			var t any = times[0]
			if len(times) > 1 {
				t = bson.D{{Key: "$in", Value: times}}
			}
			filter = append(idsFilter(docs), bson.E{Key: f.lock, Value: ids[g.members[0]].lockID}, bson.E{Key: f.time, Value: t})
		}
		one := len(g.members) == 1
		switch {
		case g.update == nil && one:
			models = append(models, mongo.NewDeleteOneModel().SetFilter(filter))
		case g.update == nil:
			models = append(models, mongo.NewDeleteManyModel().SetFilter(filter))
		case one:
			models = append(models, mongo.NewUpdateOneModel().SetFilter(filter).SetUpdate(g.update))
		default:
			models = append(models, mongo.NewUpdateManyModel().SetFilter(filter).SetUpdate(g.update))
		}
		members = append(members, g.members)
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

// releasedByUs reports whether doc (nil when it is gone), read back after a
// bulk release that did not free every lock it named, shows that the
// release of the acquisition named name freed it: the document carries that
// acquisition's release marker, or it is gone after a delete.
func releasedByUs(doc bson.Raw, a releaseAction, name string) bool {
	if a.delete {
		return doc == nil
	}
	marker, _ := lookup(doc, releasedKey).StringValueOK()
	return doc != nil && marker == name
}
