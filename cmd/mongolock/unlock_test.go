package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/mongolock/mongolock"
)

// holderRec is a holder record as the library writes it.
type holderRec struct {
	lockID  string
	host    string
	pid     int
	expires time.Time
}

// lockAs locks document id by hand, as another process (or Python) would:
// lock_id, a lock_time since ago, and the holder record rec when not nil.
func lockAs(t *testing.T, coll *mongo.Collection, id any, lockID string, ago time.Duration, rec *holderRec) {
	t.Helper()
	set := bson.D{
		{Key: mongolock.LockKey, Value: lockID},
		{Key: mongolock.LockTimeKey, Value: bson.NewDateTimeFromTime(time.Now().Add(-ago))},
	}
	if rec != nil {
		r := bson.D{{Key: "lock_id", Value: rec.lockID}, {Key: "host", Value: rec.host}, {Key: "pid", Value: int64(rec.pid)}}
		if !rec.expires.IsZero() {
			r = append(r, bson.E{Key: "expires", Value: bson.NewDateTimeFromTime(rec.expires)})
		}
		set = append(set, bson.E{Key: mongolock.HolderKey, Value: r})
	}
	res, err := coll.UpdateOne(context.Background(), bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$set", Value: set}})
	if err != nil || res.MatchedCount != 1 {
		t.Fatalf("locking %v: %v, %d matched", id, err, res.MatchedCount)
	}
}

// holderOf is the document's holder record, nil when cleared.
func holderOf(t *testing.T, coll *mongo.Collection, id any) any {
	t.Helper()
	var doc bson.M
	if err := coll.FindOne(context.Background(), bson.D{{Key: "_id", Value: id}}).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	return doc[mongolock.HolderKey]
}

// deadPID is the pid of a process that has ended.
func deadPID(t *testing.T) int {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

// answerAfter is a stdin that runs hook while the question is open, then
// answers.
type answerAfter struct {
	hook   func()
	answer string
	done   bool
}

func (a *answerAfter) Read(p []byte) (int, error) {
	if a.done {
		return 0, io.EOF
	}
	a.done = true
	a.hook()
	return copy(p, a.answer), nil
}

func setStdin(t *testing.T, r io.Reader) {
	stdin = r
	t.Cleanup(func() { stdin = os.Stdin })
}

func TestListAndUnlock(t *testing.T) {
	ctx := context.Background()
	coll, flags := newJobs(t, 3)
	lk := mongolock.New(coll)
	a, err := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: "job1"}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: "job2"}})
	if err != nil {
		t.Fatal(err)
	}

	code, out, errOut := runCmd(append([]string{"list"}, flags...)...)
	if code != exitOK || !strings.Contains(out, a.ID()) || !strings.Contains(out, b.ID()) || strings.Contains(out, "job3") {
		t.Fatalf("list: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = runCmd(append([]string{"list", "-json"}, flags...)...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var first map[string]any
	if code != exitOK || len(lines) != 2 || json.Unmarshal([]byte(lines[0]), &first) != nil || first["lock_id"] == nil || first["_id"] != "job1" {
		t.Fatalf("list -json: exit %d\n%s", code, out)
	}

	// Asked, and refused: nothing changes.
	setStdin(t, strings.NewReader("n\n"))
	code, out, _ = runCmd(append([]string{"unlock", "-filter", `{"_id": "job1"}`}, flags...)...)
	if code != exitFail || !strings.Contains(out, "will unlock 1 document") {
		t.Fatalf("unlock refused: exit %d\n%s", code, out)
	}
	// Too young for -older-than.
	code, out, _ = runCmd(append([]string{"unlock", "-older-than", "1h", "-yes"}, flags...)...)
	if code != exitOK || !strings.Contains(out, "nothing to do") {
		t.Fatalf("unlock -older-than 1h: exit %d\n%s", code, out)
	}
	// Asked, and accepted.
	setStdin(t, strings.NewReader("y\n"))
	code, out, _ = runCmd(append([]string{"unlock", "-filter", `{"_id": "job1"}`}, flags...)...)
	if code != exitOK || !strings.Contains(out, "unlocked 1 document") {
		t.Fatalf("unlock accepted: exit %d\n%s", code, out)
	}
	if err := a.Release(ctx); err == nil {
		t.Error("job1's holder could still release after unlock")
	}
	code, out, _ = runCmd(append([]string{"unlock", "-all", "-yes"}, flags...)...)
	if code != exitOK || !strings.Contains(out, "unlocked 1 document") {
		t.Fatalf("unlock -all -yes: exit %d\n%s", code, out)
	}
	if n, _ := coll.CountDocuments(ctx, bson.D{{Key: mongolock.LockKey, Value: bson.D{{Key: "$ne", Value: nil}}}}); n != 0 {
		t.Errorf("%d locks left", n)
	}
}

func TestUnlockOlderThan(t *testing.T) {
	coll, flags := newJobs(t, 2)
	lockAs(t, coll, "job1", "old", 2*time.Hour, nil)
	lockAs(t, coll, "job2", "young", time.Minute, nil)
	code, out, errOut := runCmd(append([]string{"unlock", "-older-than", "1h", "-yes"}, flags...)...)
	if code != exitOK || !strings.Contains(out, "unlocked 1 document") || strings.Contains(out, "young") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if lockOf(t, coll, "job1") != nil || lockOf(t, coll, "job2") != "young" {
		t.Errorf("job1 %v (want cleared), job2 %v (want young)", lockOf(t, coll, "job1"), lockOf(t, coll, "job2"))
	}
}

// TestUnlockClearsExactlyWhatItShowed: locks taken, or taken again, while
// the question is open are not cleared by the answer.
func TestUnlockClearsExactlyWhatItShowed(t *testing.T) {
	ctx := context.Background()
	coll, flags := newJobs(t, 3)
	lk := mongolock.New(coll)
	first, err := lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: "job1"}})
	if err != nil {
		t.Fatal(err)
	}
	var job2, job3 *mongolock.Lock
	setStdin(t, &answerAfter{answer: "y\n", hook: func() {
		var err error
		if job2, err = lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: "job2"}}); err != nil {
			t.Fatal(err)
		}
		if job3, err = lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: "job3"}}); err != nil {
			t.Fatal(err)
		}
	}})
	code, out, errOut := runCmd(append([]string{"unlock", "-filter", `{"state": "READY"}`}, flags...)...)
	if code != exitOK || !strings.Contains(out, "will unlock 1 document") || !strings.Contains(out, "unlocked 1 document") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if lockOf(t, coll, "job1") != nil {
		t.Error("job1, shown, is still locked")
	}
	if lockOf(t, coll, "job2") != job2.ID() || lockOf(t, coll, "job3") != job3.ID() {
		t.Error("a lock taken while the question was open was cleared")
	}
	if err := first.Release(ctx); err == nil {
		t.Error("job1's holder could still release")
	}

	// job2 released and taken again while the question is open: a new lock,
	// left alone.
	var again *mongolock.Lock
	setStdin(t, &answerAfter{answer: "yes\n", hook: func() {
		if err := job2.Release(ctx); err != nil {
			t.Fatal(err)
		}
		var err error
		if again, err = lk.TryAcquire(ctx, bson.D{{Key: "_id", Value: "job2"}}); err != nil {
			t.Fatal(err)
		}
	}})
	code, out, errOut = runCmd(append([]string{"unlock", "-filter", `{"_id": "job2"}`}, flags...)...)
	if code != exitOK || !strings.Contains(out, "unlocked 0 of the 1 document(s) shown; the other 1 were released or locked again meanwhile") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if lockOf(t, coll, "job2") != again.ID() {
		t.Error("the lock taken again was cleared")
	}
}

// TestUnlockClearsARefreshedLock: a holder that refreshes its lock while the
// question is open (every third of its lease) still holds the lock shown,
// and the answer clears it; a custom lock id released and taken again
// meanwhile (same lock id, new acquisition) is left alone.
func TestUnlockClearsARefreshedLock(t *testing.T) {
	ctx := context.Background()
	coll, flags := newJobs(t, 2)
	leased, err := mongolock.New(coll, mongolock.WithLease(time.Minute)).TryAcquire(ctx, bson.D{{Key: "_id", Value: "job1"}})
	if err != nil {
		t.Fatal(err)
	}
	runner := mongolock.New(coll, mongolock.WithLockID("runner-1"))
	custom, err := runner.TryAcquire(ctx, bson.D{{Key: "_id", Value: "job2"}})
	if err != nil {
		t.Fatal(err)
	}
	var again *mongolock.Lock
	setStdin(t, &answerAfter{answer: "y\n", hook: func() {
		time.Sleep(2 * time.Millisecond) // lock_time has millisecond precision
		if err := leased.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		if err := custom.Release(ctx); err != nil {
			t.Fatal(err)
		}
		var err error
		if again, err = runner.TryAcquire(ctx, bson.D{{Key: "_id", Value: "job2"}}); err != nil {
			t.Fatal(err)
		}
	}})
	code, out, errOut := runCmd(append([]string{"unlock", "-all"}, flags...)...)
	if code != exitOK || !strings.Contains(out, "will unlock 2 document") || !strings.Contains(out, "unlocked 1 of the 2 document(s) shown") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if lockOf(t, coll, "job1") != nil {
		t.Error("job1, shown and refreshed by its holder since, is still locked")
	}
	if err := leased.Refresh(ctx); !errors.Is(err, mongolock.ErrLockLost) {
		t.Errorf("the refreshed lock's holder: %v; want ErrLockLost", err)
	}
	if lockOf(t, coll, "job2") != "runner-1" {
		t.Error("job2, released and taken again under the same lock id, was cleared")
	}
	if err := again.Release(ctx); err != nil {
		t.Errorf("the new acquisition of job2 could not release: %v", err)
	}
}

// TestListShowsHolders: host, pid and lease come from a holder record that
// names the lock; a record of another lock id, or none, shows nothing.
func TestListShowsHolders(t *testing.T) {
	coll, flags := newJobs(t, 3)
	expires := time.Now().Add(time.Hour)
	lockAs(t, coll, "job1", "with-record", time.Minute, &holderRec{lockID: "with-record", host: "node-7", pid: 4242, expires: expires})
	lockAs(t, coll, "job2", "python", time.Minute, nil)
	lockAs(t, coll, "job3", "stale-record", time.Minute, &holderRec{lockID: "someone-before", host: "node-8", pid: 999})

	code, out, errOut := runCmd(append([]string{"list"}, flags...)...)
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			rows[f[0]] = line
		}
	}
	if r := rows[`"job1"`]; !strings.Contains(r, "node-7") || !strings.Contains(r, "4242") || !strings.Contains(r, "ends in ") {
		t.Errorf("job1's holder is not shown:\n%s", out)
	}
	for _, id := range []string{`"job2"`, `"job3"`} {
		if f := strings.Fields(rows[id]); len(f) < 3 || f[len(f)-3] != "-" || f[len(f)-2] != "-" || f[len(f)-1] != "-" {
			t.Errorf("%s shows a holder it has not:\n%s", id, out)
		}
	}
	if !strings.Contains(out, "HOST") || !strings.Contains(out, "PID") || !strings.Contains(out, "LEASE") || strings.Contains(out, "node-8") {
		t.Errorf("list:\n%s", out)
	}

	code, out, _ = runCmd(append([]string{"list", "-json"}, flags...)...)
	var got []lockJSON
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var l lockJSON
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("list -json: %v\n%s", err, out)
		}
		got = append(got, l)
	}
	if code != exitOK || len(got) != 3 {
		t.Fatalf("list -json: exit %d\n%s", code, out)
	}
	for _, l := range got {
		switch string(l.ID) {
		case `"job1"`:
			if l.Host == nil || *l.Host != "node-7" || l.PID == nil || *l.PID != 4242 || l.Expires == nil {
				t.Errorf("job1: %s", out)
			}
		default:
			if l.Host != nil || l.PID != nil || l.Expires != nil {
				t.Errorf("%s has a holder: %s", l.ID, out)
			}
		}
	}
}

// TestObjectIDsRoundTrip: what list prints as an _id, -filter reads back.
func TestObjectIDsRoundTrip(t *testing.T) {
	ctx := context.Background()
	coll, flags := newJobs(t, 0)
	oid := bson.NewObjectID()
	if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: oid}, {Key: "state", Value: "READY"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := mongolock.New(coll).TryAcquire(ctx, bson.D{{Key: "_id", Value: oid}}); err != nil {
		t.Fatal(err)
	}
	want := `{"$oid":"` + oid.Hex() + `"}`
	code, out, _ := runCmd(append([]string{"list"}, flags...)...)
	if code != exitOK || !strings.Contains(out, "\n"+want+" ") {
		t.Fatalf("list does not print the _id as %s:\n%s", want, out)
	}
	code, out, _ = runCmd(append([]string{"list", "-json"}, flags...)...)
	var line struct {
		ID json.RawMessage `json:"_id"`
	}
	if err := json.Unmarshal([]byte(out), &line); code != exitOK || err != nil || string(line.ID) != want {
		t.Fatalf("list -json: exit %d, %v\n%s", code, err, out)
	}
	filter := `{"_id": ` + string(line.ID) + `}`
	code, out, errOut := runCmd(append([]string{"unlock", "-yes", "-filter", filter}, flags...)...)
	if code != exitOK || !strings.Contains(out, "unlocked 1 document") {
		t.Fatalf("unlock -filter %s: exit %d\n%s%s", filter, code, out, errOut)
	}
}

// TestUnlockDead clears only the locks whose holder record names this host
// and a process that has ended, and their records with them.
func TestUnlockDead(t *testing.T) {
	host, err := deadCheckHost()
	if err != nil {
		t.Skipf("-dead cannot run here: %v", err)
	}
	coll, flags := newJobs(t, 5)
	dead := deadPID(t)
	lockAs(t, coll, "job1", "dead-here", time.Minute, &holderRec{lockID: "dead-here", host: host, pid: dead})
	lockAs(t, coll, "job2", "alive-here", time.Minute, &holderRec{lockID: "alive-here", host: host, pid: os.Getpid()})
	lockAs(t, coll, "job3", "elsewhere", time.Minute, &holderRec{lockID: "elsewhere", host: "elsewhere.invalid", pid: dead})
	lockAs(t, coll, "job4", "python", time.Minute, nil)
	lockAs(t, coll, "job5", "stale-record", time.Minute, &holderRec{lockID: "before", host: host, pid: dead})

	code, out, errOut := runCmd(append([]string{"unlock", "-dead", "-yes"}, flags...)...)
	if code != exitOK || !strings.Contains(out, "will unlock 1 document") || !strings.Contains(out, "unlocked 1 document") || !strings.Contains(out, strconv.Itoa(dead)) {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if lockOf(t, coll, "job1") != nil || holderOf(t, coll, "job1") != nil {
		t.Errorf("job1: lock %v, holder record %v; want both cleared", lockOf(t, coll, "job1"), holderOf(t, coll, "job1"))
	}
	for id, lockID := range map[string]string{"job2": "alive-here", "job3": "elsewhere", "job4": "python", "job5": "stale-record"} {
		if got := lockOf(t, coll, id); got != lockID {
			t.Errorf("%s: lock %v, want %s kept", id, got, lockID)
		}
	}
	// With a filter, -dead narrows it.
	code, out, _ = runCmd(append([]string{"unlock", "-dead", "-yes", "-filter", `{"_id": "job2"}`}, flags...)...)
	if code != exitOK || !strings.Contains(out, "nothing to do") {
		t.Errorf("unlock -dead of a live holder: exit %d\n%s", code, out)
	}
}

// TestUnlockExpiredAndNoHolder: -expired takes the locks whose declared
// lease ran out, -no-holder those no holder record names (Python's, or one
// whose record names an earlier lock); each leaves every other lock alone,
// and -older-than narrows -no-holder.
func TestUnlockExpiredAndNoHolder(t *testing.T) {
	plant := func(t *testing.T) (*mongo.Collection, []string) {
		coll, flags := newJobs(t, 5)
		lockAs(t, coll, "job1", "expired", time.Minute, &holderRec{lockID: "expired", host: "node-7", pid: 4242, expires: time.Now().Add(-time.Minute)})
		lockAs(t, coll, "job2", "running", 3*time.Hour, &holderRec{lockID: "running", host: "node-7", pid: 4242, expires: time.Now().Add(time.Hour)})
		lockAs(t, coll, "job3", "no-lease", 3*time.Hour, &holderRec{lockID: "no-lease", host: "node-7", pid: 4242})
		lockAs(t, coll, "job4", "python-old", 3*time.Hour, nil)
		lockAs(t, coll, "job5", "python-young", time.Minute, &holderRec{lockID: "before", host: "node-8", pid: 1, expires: time.Now().Add(-time.Hour)})
		return coll, flags
	}
	for _, tc := range []struct {
		args    []string
		cleared []string
	}{
		{[]string{"-expired"}, []string{"job1"}},
		{[]string{"-no-holder"}, []string{"job4", "job5"}},
		{[]string{"-no-holder", "-older-than", "1h"}, []string{"job4"}},
		{[]string{"-expired", "-filter", `{"_id": "job2"}`}, nil},
		{[]string{"-expired", "-no-holder"}, nil},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			coll, flags := plant(t)
			code, out, errOut := runCmd(append(append([]string{"unlock", "-yes"}, tc.args...), flags...)...)
			want := fmt.Sprintf("unlocked %d document(s)", len(tc.cleared))
			if len(tc.cleared) == 0 {
				want = "nothing to do"
			}
			if code != exitOK || !strings.Contains(out, want) {
				t.Fatalf("exit %d, want %q\n%s%s", code, want, out, errOut)
			}
			for _, id := range []string{"job1", "job2", "job3", "job4", "job5"} {
				if got, cleared := lockOf(t, coll, id), slices.Contains(tc.cleared, id); cleared != (got == nil) {
					t.Errorf("%s: lock %v; want cleared: %v", id, got, cleared)
				}
			}
		})
	}
	code, _, errOut := runCmd("unlock", "-all", "-expired")
	if code != exitUsage || !strings.Contains(errOut, "cannot be combined") {
		t.Errorf("-all -expired: exit %d\n%s", code, errOut)
	}
}
