package mongolock

import (
	"errors"
	"regexp"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Pure rules, no server: how the commands are built.

var defaultFields = fieldSet{lock: LockKey, time: LockTimeKey}

func ext(t *testing.T, v any) string {
	t.Helper()
	if v == nil {
		return "nil"
	}
	if a, ok := v.(bson.A); ok {
		v = bson.D{{Key: "pipeline", Value: a}}
	}
	b, err := bson.MarshalExtJSON(v, false, false)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func mustDoc(t *testing.T, v any) bson.Raw {
	t.Helper()
	d, err := toDocument("test", v)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestAcquireFilter(t *testing.T) {
	ready := bson.D{{Key: "state", Value: "READY"}}
	cases := []struct {
		name      string
		user      any
		f         fieldSet
		breakLock bool
		want      string
	}{
		{"empty filter", nil, defaultFields, false, `{"lock_id":null}`},
		{"filter", ready, defaultFields, false, `{"state":"READY","lock_id":null}`},
		{"filter naming the lock field", bson.D{{Key: "lock_id", Value: bson.D{{Key: "$exists", Value: true}}}}, defaultFields, false,
			`{"$and":[{"lock_id":{"$exists":true}},{"lock_id":null}]}`},
		{"filter with its own $or", bson.D{{Key: "$or", Value: bson.A{bson.D{{Key: "a", Value: 1}}}}}, defaultFields, false,
			`{"$or":[{"a":1}],"lock_id":null}`},
		{"break lock", ready, defaultFields, true, `{"state":"READY"}`},
		{"custom field", bson.M{"a": 1}, fieldSet{lock: "owner", time: "since"}, false, `{"a":1,"owner":null}`},
		{"dotted field", bson.M{"a": 1}, fieldSet{lock: "lock.id", time: "lock.time"}, false, `{"a":1,"lock.id":null}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := ext(t, acquireFilter(mustDoc(t, tc.user), tc.f, tc.breakLock))
			if got != tc.want {
				t.Errorf("\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestTakeoverFilters(t *testing.T) {
	now := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	ready := mustDoc(t, bson.D{{Key: "state", Value: "READY"}})
	if got, want := ext(t, expiredFilter(ready, defaultFields, now)),
		`{"state":"READY","lock_id":{"$ne":null},"lock_holder.expires":{"$lte":{"$date":"2024-01-01T00:00:00Z"}}}`; got != want {
		t.Errorf("expired:\n got %s\nwant %s", got, want)
	}
	doc := mustDoc(t, bson.D{{Key: "_id", Value: 7}, {Key: "lock_id", Value: "L"}, {Key: "lock_time", Value: bson.DateTime(1700000000000)}})
	h := holder{lockID: "L", expires: now}
	if got, want := ext(t, takeoverFilter(ready, defaultFields, doc, h)),
		`{"state":"READY","_id":7,"lock_id":"L","lock_time":{"$date":"2023-11-14T22:13:20Z"},"lock_holder.lock_id":"L","lock_holder.expires":{"$date":"2024-01-01T00:00:00Z"}}`; got != want {
		t.Errorf("takeover:\n got %s\nwant %s", got, want)
	}
}

func TestHolderOf(t *testing.T) {
	exp := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	rec := holderRecord("L", "N", exp)
	cases := []struct {
		name string
		doc  bson.D
		ok   bool
	}{
		{"names the lock", bson.D{{Key: "lock_id", Value: "L"}, {Key: HolderKey, Value: rec}}, true},
		{"left behind by another lock id", bson.D{{Key: "lock_id", Value: "P"}, {Key: HolderKey, Value: rec}}, false},
		{"left behind on an unlocked document", bson.D{{Key: "lock_id", Value: nil}, {Key: HolderKey, Value: rec}}, false},
		{"python holder: no record", bson.D{{Key: "lock_id", Value: "L"}, {Key: "lock_time", Value: bson.DateTime(0)}}, false},
		{"cleared record", bson.D{{Key: "lock_id", Value: "L"}, {Key: HolderKey, Value: nil}}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, ok := holderOf(mustDoc(t, tc.doc), LockKey)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			host, pid := thisProcess()
			if ok && (h.lockID != "L" || !h.expires.Equal(exp) || h.host != host || h.pid != pid) {
				t.Errorf("holder = %+v", h)
			}
		})
	}
}

func TestAcquireUpdate(t *testing.T) {
	fenced := fieldSet{lock: LockKey, time: LockTimeKey, seq: "lock_seq"}
	cases := []struct {
		name string
		user any
		f    fieldSet
		want string
	}{
		{"no update", nil, defaultFields, `{"$set":{"lock_id":"L","lock_holder":{"lock_id":"L","host":"H","pid":1}},"$currentDate":{"lock_time":true}}`},
		{"$set merged", bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: "RUNNING"}}}}, defaultFields,
			`{"$set":{"lock_id":"L","lock_holder":{"lock_id":"L","host":"H","pid":1},"state":"RUNNING"},"$currentDate":{"lock_time":true}}`},
		{"other operators kept", bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: 1}}}, {Key: "$currentDate", Value: bson.D{{Key: "seen", Value: true}}}}, defaultFields,
			`{"$inc":{"n":1},"$currentDate":{"lock_time":true,"seen":true},"$set":{"lock_id":"L","lock_holder":{"lock_id":"L","host":"H","pid":1}}}`},
		{"fencing", bson.D{{Key: "$inc", Value: bson.D{{Key: "n", Value: 1}}}}, fenced,
			`{"$inc":{"lock_seq":1,"n":1},"$set":{"lock_id":"L","lock_holder":{"lock_id":"L","host":"H","pid":1}},"$currentDate":{"lock_time":true}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var user bson.Raw
			if tc.user != nil {
				var err error
				if user, err = operatorUpdate("update", tc.user, tc.f); err != nil {
					t.Fatal(err)
				}
			}
			record := bson.D{{Key: "lock_id", Value: "L"}, {Key: "host", Value: "H"}, {Key: "pid", Value: 1}}
			if got := ext(t, acquireUpdate(user, tc.f, "L", record)); got != tc.want {
				t.Errorf("\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestOperatorUpdateRejects(t *testing.T) {
	fenced := fieldSet{lock: "lock.id", time: LockTimeKey, seq: "seq"}
	cases := []struct {
		name   string
		update any
	}{
		{"replacement", bson.D{{Key: "state", Value: "X"}}},
		{"mixed", bson.D{{Key: "$set", Value: bson.D{}}, {Key: "state", Value: "X"}}},
		{"operator takes a number", bson.D{{Key: "$set", Value: 3}}},
		{"pipeline", mongo.Pipeline{}},
		{"string", "x"},
		{"the lock field", bson.M{"$set": bson.M{"lock.id": "x"}}},
		{"inside the lock field", bson.M{"$set": bson.M{"lock.id.a": "x"}}},
		{"a parent of the lock field", bson.M{"$unset": bson.M{"lock": ""}}},
		{"the fencing field", bson.M{"$inc": bson.M{"seq": 1}}},
		{"rename onto a lock field", bson.M{"$rename": bson.M{"a": LockTimeKey}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := operatorUpdate("update", tc.update, fenced); !errors.Is(err, ErrInvalidOption) {
				t.Errorf("err = %v, want ErrInvalidOption", err)
			}
		})
	}
	for _, ok := range []any{bson.M{"$set": bson.M{"lockx": 1, "lock_time_2": 1, "seq2": 1}}, bson.D{}, nil} {
		if _, err := operatorUpdate("update", ok, fenced); err != nil {
			t.Errorf("%v: %v", ok, err)
		}
	}
}

// Every release write carries the release marker in its clearing $set.
func TestMarkedClearUpdate(t *testing.T) {
	cases := []struct {
		name   string
		update any
		want   string
	}{
		{"plain", nil, `{"$set":{"lock_id":null,"lock_time":null,"lock_holder":null,"lock_released":"N"}}`},
		{"$set merged", bson.M{"$set": bson.M{"state": "DONE"}}, `{"$set":{"lock_id":null,"lock_time":null,"lock_holder":null,"state":"DONE","lock_released":"N"}}`},
		{"other operator", bson.D{{Key: "$inc", Value: bson.D{{Key: "runs", Value: 1}}}}, `{"$inc":{"runs":1},"$set":{"lock_id":null,"lock_time":null,"lock_holder":null,"lock_released":"N"}}`},
		{"pipeline", bson.A{bson.M{"$unset": "tmp"}},
			`{"pipeline":[{"$unset":"tmp"},{"$set":{"lock_id":null,"lock_time":null,"lock_holder":null,"lock_released":{"$literal":"N"}}}]}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, err := releaseUpdate(tc.update, defaultFields)
			if err != nil {
				t.Fatal(err)
			}
			if got := ext(t, markedClearUpdate(u, defaultFields, "N")); got != tc.want {
				t.Errorf("\n got %s\nwant %s", got, tc.want)
			}
		})
	}
	if err := checkFieldSet(fieldSet{lock: releasedKey, time: "t"}); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("the release marker as a lock field: %v; want ErrInvalidOption", err)
	}
	if _, err := releaseUpdate(bson.M{"$set": bson.M{releasedKey: 1}}, defaultFields); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("an update on release that writes the release marker: %v; want ErrInvalidOption", err)
	}
}

func TestReleaseUpdate(t *testing.T) {
	cases := []struct {
		name   string
		update any
		want   string
	}{
		{"plain", nil, `{"$set":{"lock_id":null,"lock_time":null,"lock_holder":null}}`},
		{"$set merged", bson.M{"$set": bson.M{"state": "DONE"}}, `{"$set":{"lock_id":null,"lock_time":null,"lock_holder":null,"state":"DONE"}}`},
		{"other operator", bson.D{{Key: "$inc", Value: bson.D{{Key: "runs", Value: 1}}}}, `{"$inc":{"runs":1},"$set":{"lock_id":null,"lock_time":null,"lock_holder":null}}`},
		{"pipeline", mongo.Pipeline{{{Key: "$set", Value: bson.D{{Key: "a", Value: "$b"}}}}},
			`{"pipeline":[{"$set":{"a":"$b"}},{"$set":{"lock_id":null,"lock_time":null,"lock_holder":null}}]}`},
		{"pipeline as bson.A", bson.A{bson.M{"$unset": "tmp"}}, `{"pipeline":[{"$unset":"tmp"},{"$set":{"lock_id":null,"lock_time":null,"lock_holder":null}}]}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, err := releaseUpdate(tc.update, defaultFields)
			if err != nil {
				t.Fatal(err)
			}
			if got := ext(t, clearUpdate(u, defaultFields)); got != tc.want {
				t.Errorf("\n got %s\nwant %s", got, tc.want)
			}
		})
	}
	for _, bad := range []any{
		bson.A{bson.M{"$unset": bson.A{"x", LockKey}}},
		bson.A{bson.M{"$addFields": bson.M{LockTimeKey: 1}}},
		bson.A{bson.M{"set": bson.M{}}},
		bson.A{"$set"},
		bson.A{bson.M{"$unset": bson.A{"x", 3}}},
		bson.A{bson.M{"$unset": bson.A{HolderKey + ".pid"}}},
		bson.M{"$set": bson.M{HolderKey: nil}},
	} {
		if _, err := releaseUpdate(bad, defaultFields); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("%v: err = %v, want ErrInvalidOption", bad, err)
		}
	}
}

func TestHeldFilter(t *testing.T) {
	id := identity{docID: bson.RawValue{Type: bson.TypeInt32, Value: []byte{7, 0, 0, 0}}, lockID: "L", time: bson.DateTime(1700000000000), token: 9}
	if got, want := ext(t, heldFilter(id, defaultFields)), `{"_id":7,"lock_id":"L","lock_time":{"$date":"2023-11-14T22:13:20Z"}}`; got != want {
		t.Errorf("\n got %s\nwant %s", got, want)
	}
	fenced := fieldSet{lock: LockKey, time: LockTimeKey, seq: "lock_seq"}
	if got, want := ext(t, heldFilter(id, fenced)), `{"_id":7,"lock_id":"L","lock_time":{"$date":"2023-11-14T22:13:20Z"},"lock_seq":9}`; got != want {
		t.Errorf("\n got %s\nwant %s", got, want)
	}
	// A refresh whose reply was lost: either time names the acquisition.
	id.pending = []bson.DateTime{1700000001000}
	if got, want := ext(t, heldFilter(id, defaultFields)), `{"_id":7,"lock_id":"L","lock_time":{"$in":[{"$date":"2023-11-14T22:13:20Z"},{"$date":"2023-11-14T22:13:21Z"}]}}`; got != want {
		t.Errorf("\n got %s\nwant %s", got, want)
	}
}

func TestLockProjection(t *testing.T) {
	cases := []struct {
		name string
		in   any
		want string
	}{
		{"none", nil, "nil"},
		{"inclusion", bson.D{{Key: "state", Value: 1}}, `{"state":1,"lock_id":1,"lock_time":1,"lock_holder":1}`},
		{"inclusion drops _id:0", bson.D{{Key: "_id", Value: 0}, {Key: "state", Value: true}}, `{"state":true,"lock_id":1,"lock_time":1,"lock_holder":1}`},
		{"field names", []string{"state", "n"}, `{"state":1,"n":1,"lock_id":1,"lock_time":1,"lock_holder":1}`},
		{"exclusion keeps the lock", bson.D{{Key: "big", Value: 0}, {Key: LockKey, Value: 0}, {Key: "_id", Value: 0}}, `{"big":0}`},
		{"only _id:0 is the whole document", bson.D{{Key: "_id", Value: 0}}, "nil"},
		{"only lock fields is the whole document", bson.D{{Key: LockKey, Value: 1}, {Key: LockTimeKey, Value: 0}}, "nil"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := lockProjection(tc.in, defaultFields)
			if err != nil {
				t.Fatal(err)
			}
			if got := ext(t, p); got != tc.want {
				t.Errorf("\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestOptionValidation(t *testing.T) {
	cases := []struct {
		name string
		opt  Option
		bad  bool
	}{
		{"poll interval", WithPollInterval(time.Millisecond), false},
		{"zero poll interval", WithPollInterval(0), true},
		{"zero max wait", WithMaxWait(0), false},
		{"negative max wait", WithMaxWait(-1), true},
		{"lease", WithLease(time.Second), false},
		{"zero lease", WithLease(0), true},
		{"auto refresh", WithAutoRefresh(time.Second), false},
		{"negative auto refresh", WithAutoRefresh(-time.Second), true},
		{"fields", WithFields("owner", "since"), false},
		{"empty field", WithFields("", "since"), true},
		{"dotted field", WithFields("lock.id", "lock.time"), false},
		{"bad path", WithFields("lock..id", "t"), true},
		{"fencing default", WithFencing(""), false},
		{"fencing $", WithFencing("$inc"), true},
		{"lock id", WithLockID("x"), false},
		{"empty lock id", WithLockID(""), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := defaultConfig().with([]Option{tc.opt})
			if got := c.err != nil; got != tc.bad {
				t.Errorf("error = %v, want error: %v", c.err, tc.bad)
			}
			if c.err != nil && !errors.Is(c.err, ErrInvalidOption) {
				t.Errorf("error %v does not match ErrInvalidOption", c.err)
			}
		})
	}
	if c := defaultConfig().with([]Option{WithFencing("")}); c.fencingField != "lock_seq" {
		t.Errorf("WithFencing(\"\") field = %q", c.fencingField)
	}
	if c := defaultConfig(); c.pollInterval != time.Second || c.maxWait != 600*time.Second || c.refreshEvery() != 0 {
		t.Errorf("defaults: %+v", c)
	}
	if c := defaultConfig().with([]Option{WithLease(9 * time.Second)}); c.refreshEvery() != 3*time.Second {
		t.Errorf("refresh with a lease = %v, want ttl/3", c.refreshEvery())
	}
}

func TestConfigCopies(t *testing.T) {
	o := options.FindOneAndUpdate()
	base := defaultConfig().with([]Option{WithFindOptions(o)})
	a := base.with([]Option{WithFindOptions(o, o)})
	b := base.with([]Option{WithFindOptions(o)})
	if len(base.findOpts) != 1 || len(a.findOpts) != 3 || len(b.findOpts) != 2 {
		t.Errorf("calls share their Locker's options: base %d, a %d, b %d", len(base.findOpts), len(a.findOpts), len(b.findOpts))
	}
}

func TestBackoff(t *testing.T) {
	for attempt, limit := range map[int]time.Duration{0: time.Second, 3: time.Second, 10: time.Second, 100: 5 * time.Second, 2: time.Millisecond} {
		want := min(firstBackoff<<min(attempt, 30), limit)
		for range 100 {
			if d := backoff(attempt, limit); d < want/2 || d > want {
				t.Fatalf("backoff(%d, %v) = %v, want in [%v, %v]", attempt, limit, d, want/2, want)
			}
		}
	}
}

func TestNewUUID(t *testing.T) {
	v4 := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 1000 {
		id := newUUID()
		if !v4.MatchString(id) || seen[id] {
			t.Fatalf("bad or repeated UUID %q", id)
		}
		seen[id] = true
	}
}

// Issue 18 (seen-2): a projection given through WithFindOptions is merged
// like WithProjection's, so that the acquiring write always returns the
// lock fields; WithProjection still wins.
func TestFindOptionsProjection(t *testing.T) {
	lk := &Locker{base: defaultConfig()}
	state := bson.D{{Key: "state", Value: 1}}
	cases := []struct {
		name string
		opts []Option
		want string
	}{
		{"inclusion", []Option{WithFindOptions(options.FindOneAndUpdate().SetProjection(state))},
			`{"state":1,"lock_id":1,"lock_time":1,"lock_holder":1}`},
		{"excludes a lock field", []Option{WithFindOptions(options.FindOneAndUpdate().SetProjection(bson.D{{Key: "lock_id", Value: 0}}))}, "nil"},
		{"WithProjection wins", []Option{WithFindOptions(options.FindOneAndUpdate().SetProjection(bson.D{{Key: "n", Value: 1}})), WithProjection([]string{"state"})},
			`{"state":1,"lock_id":1,"lock_time":1,"lock_holder":1}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := lk.newRequest(bson.D{}, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			var o options.FindOneAndUpdateOptions
			for _, l := range r.findOpts {
				for _, set := range l.List() {
					if err := set(&o); err != nil {
						t.Fatal(err)
					}
				}
			}
			if got := ext(t, o.Projection); got != tc.want {
				t.Errorf("projection sent: %s, want %s", got, tc.want)
			}
		})
	}
	if _, err := lk.newRequest(bson.D{}, []Option{WithFindOptions(options.FindOneAndUpdate().SetProjection(3))}); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("a projection that is not a document: %v; want ErrInvalidOption", err)
	}
}
