package mongolock

import (
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// The sweep's release names the one acquisition it found: the document, the
// lock id, the lock time and, for a custom lock id, the nonce.
func TestSweepFilter(t *testing.T) {
	doc, err := bson.Marshal(bson.D{{Key: "_id", Value: "job"}, {Key: "lock_id", Value: "runner"}, {Key: "lock_time", Value: bson.DateTime(42)}})
	if err != nil {
		t.Fatal(err)
	}
	f := fieldSet{lock: "lock_id", time: "lock_time"}
	for _, c := range []struct {
		nonce string
		want  bson.D
	}{
		{"", bson.D{{Key: "_id", Value: "job"}, {Key: "lock_id", Value: "runner"}, {Key: "lock_time", Value: bson.DateTime(42)}}},
		{"n1", bson.D{{Key: "_id", Value: "job"}, {Key: "lock_id", Value: "runner"}, {Key: "lock_time", Value: bson.DateTime(42)}, {Key: HolderKey + ".nonce", Value: "n1"}}},
	} {
		got, err := bson.MarshalExtJSON(sweepFilter(doc, &unsettled{fields: f, lockID: "runner", nonce: c.nonce}), true, false)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := bson.MarshalExtJSON(c.want, true, false)
		if string(got) != string(want) {
			t.Errorf("nonce %q: %s; want %s", c.nonce, got, want)
		}
	}
}
