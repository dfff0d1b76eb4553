package mongolock

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Fuzz targets for the rules that check caller input. Their seeds run in
// every go test; go test -fuzz FuzzX explores further.

func seedDocs(f *testing.F, docs ...any) {
	for _, d := range docs {
		b, err := bson.Marshal(d)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{5, 0, 0, 0, 0})
	f.Add([]byte{})
	f.Add([]byte{7, 0, 0, 0, 3, 0, 0})
}

// FuzzOperatorUpdate: an accepted acquiring update is made of operators
// with documents, never touches a lock field, and merges into a valid update
// that sets the lock.
func FuzzOperatorUpdate(f *testing.F) {
	fenced := fieldSet{lock: LockKey, time: LockTimeKey, seq: "lock_seq"}
	seedDocs(f,
		bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "RUNNING"}}}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "a", Value: 1}}}, {Key: "$currentDate", Value: bson.D{{Key: "t", Value: true}}}, {Key: "$inc", Value: bson.D{{Key: "n", Value: 1}}}},
		bson.D{{Key: "$unset", Value: bson.D{{Key: LockKey, Value: ""}}}},
		bson.D{{Key: "$rename", Value: bson.D{{Key: "x", Value: LockTimeKey}}}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "lock_seq.a", Value: 1}}}},
		bson.D{{Key: "state", Value: "X"}},
		bson.D{{Key: "$set", Value: "x"}},
	)
	f.Fuzz(func(t *testing.T, data []byte) {
		u, err := operatorUpdate("update", bson.Raw(data), fenced)
		if err != nil {
			if !errors.Is(err, ErrInvalidOption) {
				t.Fatalf("rejected without ErrInvalidOption: %v", err)
			}
			return
		}
		elems, err := u.Elements()
		if err != nil {
			t.Fatalf("accepted an unreadable update: %v", err)
		}
		for _, e := range elems {
			args, ok := e.Value().DocumentOK()
			if !strings.HasPrefix(e.Key(), "$") || !ok {
				t.Fatalf("accepted %q: %v", e.Key(), e.Value())
			}
			fields, _ := args.Elements()
			for _, a := range fields {
				if _, ours := fenced.overlaps(a.Key()); ours {
					t.Fatalf("accepted %s of %q", e.Key(), a.Key())
				}
			}
		}
		merged, err := bson.Marshal(acquireUpdate(u, fenced, "L", holderRecord("L", "N", time.Time{})))
		if err != nil {
			t.Fatalf("merged update does not marshal: %v", err)
		}
		if got := bson.Raw(merged).Lookup("$set", LockKey).StringValue(); got != "L" {
			t.Fatalf("merged update does not set the lock: %v", bson.Raw(merged))
		}
	})
}

// FuzzReleaseUpdate: an accepted update on release, as a document or as a
// one-stage pipeline, becomes a valid update that clears the lock.
func FuzzReleaseUpdate(f *testing.F) {
	seedDocs(f,
		bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "DONE"}}}},
		bson.D{{Key: "$unset", Value: bson.A{"a", LockKey}}},
		bson.D{{Key: "$addFields", Value: bson.D{{Key: LockTimeKey, Value: 1}}}},
		bson.D{{Key: "$set", Value: bson.D{}}, {Key: "$unset", Value: "a"}},
		bson.D{{Key: "$unset", Value: bson.A{"a", 3}}},
		bson.D{{Key: "$unset", Value: bson.A{bson.D{}}}},
		bson.D{{Key: "$set", Value: bson.D{{Key: HolderKey + ".pid", Value: 1}}}},
	)
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, in := range []any{bson.Raw(data), bson.A{bson.Raw(data)}, bson.A{bson.D{{Key: "$set", Value: bson.D{{Key: "a", Value: 1}}}}, bson.Raw(data)}} {
			u, err := releaseUpdate(in, defaultFields)
			if err != nil {
				if !errors.Is(err, ErrInvalidOption) {
					t.Fatalf("rejected without ErrInvalidOption: %v", err)
				}
				continue
			}
			out := clearUpdate(u, defaultFields)
			if stages, ok := out.(bson.A); ok {
				last, err := bson.Marshal(stages[len(stages)-1])
				if err != nil || !clears(bson.Raw(last)) {
					t.Fatalf("pipeline does not end by clearing the lock: %v", stages)
				}
				continue
			}
			doc, err := bson.Marshal(out)
			if err != nil {
				t.Fatalf("release update does not marshal: %v", err)
			}
			if !clears(bson.Raw(doc)) {
				t.Fatalf("release update does not clear the lock: %v", bson.Raw(doc))
			}
		}
	})
}

// clears reports whether an update's $set nulls every field of the lock.
func clears(update bson.Raw) bool {
	for _, field := range []string{LockKey, LockTimeKey, HolderKey} {
		if v, err := update.LookupErr("$set", field); err != nil || v.Type != bson.TypeNull {
			return false
		}
	}
	return true
}

// FuzzFilterAndProjection: an accepted filter gives an acquire filter that
// still requires a free lock; an accepted inclusion projection keeps the lock
// fields.
func FuzzFilterAndProjection(f *testing.F) {
	seedDocs(f,
		bson.D{{Key: "state", Value: "READY"}},
		bson.D{{Key: LockKey, Value: "x"}},
		bson.D{{Key: "$or", Value: bson.A{bson.D{{Key: "a", Value: 1}}}}},
		bson.D{{Key: "a", Value: 1}, {Key: "_id", Value: 0}},
		bson.D{{Key: "a", Value: 0}, {Key: LockKey, Value: 0}},
	)
	f.Fuzz(func(t *testing.T, data []byte) {
		user, err := toDocument("filter", bson.Raw(data))
		if err != nil {
			if !errors.Is(err, ErrInvalidOption) {
				t.Fatalf("rejected without ErrInvalidOption: %v", err)
			}
			return
		}
		b, err := bson.Marshal(acquireFilter(user, defaultFields, false))
		if err != nil {
			t.Fatalf("acquire filter does not marshal: %v", err)
		}
		if !requiresFreeLock(bson.Raw(b)) {
			t.Fatalf("acquire filter %v does not require a free lock", bson.Raw(b))
		}
		p, err := lockProjection(user, defaultFields)
		if err != nil {
			t.Fatalf("a valid document was refused as a projection: %v", err)
		}
		pd, _ := p.(bson.D)
		for _, e := range pd {
			if _, ours := defaultFields.overlaps(e.Key); ours && e.Value != 1 {
				t.Fatalf("projection %v can leave out a lock field", pd)
			}
		}
	})
}

// requiresFreeLock reports whether a filter's top level (or one $and
// branch) is the lock condition.
func requiresFreeLock(filter bson.Raw) bool {
	if v, err := filter.LookupErr(LockKey); err == nil && v.Type == bson.TypeNull {
		return true
	}
	if _, err := filter.LookupErr("$or", "0", LockKey); err == nil {
		return true
	}
	branches, ok := filter.Lookup("$and").ArrayOK()
	if !ok {
		return false
	}
	vals, _ := branches.Values()
	return len(vals) == 2 && requiresFreeLock(vals[1].Document())
}

// FuzzOptions: durations and field names are accepted exactly when valid.
func FuzzOptions(f *testing.F) {
	f.Add(int64(time.Second), "lock_id", "lock_time")
	f.Add(int64(0), "", "t")
	f.Add(int64(-1), "a", "a")
	f.Add(int64(1), "$x", "_id")
	f.Add(int64(5), "a.b", "a..b")
	f.Fuzz(func(t *testing.T, d int64, lockKey, timeKey string) {
		dur := time.Duration(d)
		for _, tc := range []struct {
			opt   Option
			valid bool
		}{
			{WithPollInterval(dur), dur > 0},
			{WithMaxWait(dur), dur >= 0},
			{WithLease(dur), dur > 0},
			{WithAutoRefresh(dur), dur > 0},
			{WithFields(lockKey, timeKey), checkFieldName(lockKey) == nil && checkFieldName(timeKey) == nil &&
				!meet(lockKey, timeKey, HolderKey)},
			{WithFencing(lockKey), lockKey == "" || checkFieldName(lockKey) == nil && !meet(lockKey, LockKey, LockTimeKey, HolderKey)},
		} {
			c := defaultConfig().with([]Option{tc.opt})
			err := c.check()
			if (err == nil) != tc.valid || (err != nil && !errors.Is(err, ErrInvalidOption)) {
				t.Fatalf("d=%v keys %q %q: err = %v, valid = %v", dur, lockKey, timeKey, err, tc.valid)
			}
		}
	})
}

// meet reports whether two of paths meet: one is, or contains, another
// (written out here, apart from the rule under test).
func meet(paths ...string) bool {
	for i, a := range paths {
		for _, b := range paths[i+1:] {
			as, bs := strings.Split(a, "."), strings.Split(b, ".")
			n := min(len(as), len(bs))
			if slices.Equal(as[:n], bs[:n]) {
				return true
			}
		}
	}
	return false
}
