package mongolock

import (
	"context"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// LockInfo describes one locked document, as ListLocked reports it. Host,
// PID and Expires come from the holder record (HolderKey) and are zero when
// the record is missing or names another lock id (a Python holder writes
// none).
type LockInfo struct {
	DocumentID any
	LockID     string
	LockTime   time.Time
	Token      int64     // 0 when the document has no fencing field
	Host       string    // the holder's host name
	PID        int       // the holder's process id
	Expires    time.Time // when the holder's declared lease runs out; zero without a lease
}

// Unlock clears the lock of every locked document that matches filter, whoever
// holds it, and returns how many it cleared. It is for administrators: the
// holders' releases then report ErrLockLost. The Locker's WithFields applies.
func (lk *Locker) Unlock(ctx context.Context, filter any) (int64, error) {
	r, err := lk.newRequest(filter, nil)
	if err != nil {
		return 0, err
	}
	res, err := lk.coll.UpdateMany(ctx, lockedFilter(r.filter, r.fields), unlockUpdate(r.fields))
	if err != nil {
		return 0, ioError(ctx, "unlocking", err)
	}
	if res.ModifiedCount > 0 {
		lk.waiters.wakeAll(nil)
	}
	return res.ModifiedCount, nil
}

// ListLocked returns the locked documents that match filter, oldest lock
// first, read from the primary. The Locker's WithFields and WithFencing apply.
func (lk *Locker) ListLocked(ctx context.Context, filter any) ([]LockInfo, error) {
	r, err := lk.newRequest(filter, nil)
	if err != nil {
		return nil, err
	}
	f := r.fields
	if f.seq == "" {
		f.seq = defaultFencingField // report a token where the document has one
	}
	o := options.Find().SetProjection(holderProjection(f)).SetSort(bson.D{{Key: f.time, Value: 1}})
	cur, err := lk.primary.Find(ctx, lockedFilter(r.filter, f), o)
	if err != nil {
		return nil, ioError(ctx, "listing locks", err)
	}
	defer cur.Close(context.WithoutCancel(ctx))
	var out []LockInfo
	for cur.Next(ctx) {
		doc := cur.Current
		e := lockedErrorFromDoc(doc, f.lock, f.time)
		info := LockInfo{LockID: e.LockID, LockTime: e.LockTime}
		if err := doc.Lookup("_id").Unmarshal(&info.DocumentID); err != nil {
			return nil, ioError(ctx, "listing locks", err)
		}
		info.Token, _ = lookup(doc, f.seq).AsInt64OK()
		if h, ok := holderOf(doc, f.lock); ok {
			info.Host, info.PID, info.Expires = h.host, h.pid, h.expires
		}
		out = append(out, info)
	}
	if err := cur.Err(); err != nil {
		return nil, ioError(ctx, "listing locks", err)
	}
	return out, nil
}
