package mongolock

import (
	"os"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// HolderKey is the field of the holder record: who took the lock, from
// where, and until when its lease runs. Every acquisition writes it in the
// same write that takes the lock, and a release clears it. WithFields does
// not rename it. Only a record whose lock_id equals the document's lock id
// describes the holder: a record left behind by a Python release, an admin
// unlock or a Python break_lock counts for nothing. Python ignores it.
const HolderKey = "lock_holder"

// holder is a holder record as read from a document.
type holder struct {
	lockID  string
	host    string
	pid     int
	expires time.Time // zero without a declared lease
}

// thisProcess names the process in the holder records it writes; it is
// read once.
var thisProcess = sync.OnceValues(func() (host string, pid int) {
	host, _ = os.Hostname()
	return host, os.Getpid()
})

// holderRecord is the record an acquisition writes: its lock id, this
// process, a nonce that names this acquisition alone when the lock id is a
// custom one that others may share ("" for none), and with a lease the time
// it runs out.
func holderRecord(lockID, nonce string, expires time.Time) bson.D {
	host, pid := thisProcess()
	rec := bson.D{{Key: "lock_id", Value: lockID}, {Key: "host", Value: host}, {Key: "pid", Value: int64(pid)}}
	if nonce != "" {
		rec = append(rec, bson.E{Key: "nonce", Value: nonce})
	}
	if !expires.IsZero() {
		rec = append(rec, bson.E{Key: "expires", Value: bson.NewDateTimeFromTime(expires)})
	}
	return rec
}

// holderOf reads the holder record of doc that describes the lock it holds
// under lockKey; ok is false when the document is not locked, has no record,
// or its record names another lock id.
func holderOf(doc bson.Raw, lockKey string) (h holder, ok bool) {
	lockID, ok := lookup(doc, lockKey).StringValueOK()
	if !ok {
		return h, false
	}
	rec, ok := doc.Lookup(HolderKey).DocumentOK()
	if !ok {
		return h, false
	}
	if h.lockID, ok = rec.Lookup("lock_id").StringValueOK(); !ok || h.lockID != lockID {
		return holder{}, false
	}
	h.host, _ = rec.Lookup("host").StringValueOK()
	if pid, ok := rec.Lookup("pid").AsInt64OK(); ok {
		h.pid = int(pid)
	}
	if dt, ok := rec.Lookup("expires").DateTimeOK(); ok {
		h.expires = time.UnixMilli(dt).UTC()
	}
	return h, true
}

// releasedKey is the release marker: every release by this library sets it,
// in the write that frees the document, to the name of the acquisition it
// frees (its nonce with a custom lock id, else its lock id). Nothing else
// writes it and only this library reads it: a release whose reply was lost
// reads it to tell its own work from that of whoever broke, took over or
// released the lock meanwhile. It stays on the free document (Python
// ignores it) and is overwritten by the next release.
const releasedKey = "lock_released"
