package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/mongolock/mongolock"
	"github.com/mongolock/mongolock/internal/testserver"
)

// doctorJSON runs doctor -json with args and parses its report back.
func doctorJSON(t *testing.T, args ...string) (int, doctorReport) {
	t.Helper()
	code, out, errOut := runCmd(append([]string{"doctor", "-json"}, args...)...)
	var r doctorReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("doctor -json: exit %d, not one JSON object (%v):\n%s%s", code, err, out, errOut)
	}
	return code, r
}

// findingOf is the report's finding of check; it fails the test when there
// is none.
func findingOf(t *testing.T, r doctorReport, check string) finding {
	t.Helper()
	for _, f := range r.Findings {
		if f.Check == check {
			return f
		}
	}
	t.Fatalf("no %q finding in %+v", check, r.Findings)
	return finding{}
}

// shellWords splits a command line as doctor quotes it (single quotes).
func shellWords(s string) []string {
	var words []string
	var w strings.Builder
	in, started, escaped := false, false, false
	for _, c := range s {
		switch {
		case escaped:
			w.WriteRune(c)
			escaped = false
		case c == '\\' && !in:
			escaped, started = true, true
		case c == '\'':
			in, started = !in, true
		case c == ' ' && !in:
			if started {
				words = append(words, w.String())
			}
			w.Reset()
			started = false
		default:
			w.WriteRune(c)
			started = true
		}
	}
	if started {
		words = append(words, w.String())
	}
	return words
}

// runPrinted runs a mongolock command line that doctor printed, with -yes,
// and fails unless it unlocked want documents.
func runPrinted(t *testing.T, command string, want int) {
	t.Helper()
	words := shellWords(command)
	if len(words) < 2 || words[0] != "mongolock" {
		t.Fatalf("not a mongolock command: %q", command)
	}
	if i := slices.Index(words, "#"); i > 0 { // a comment: where to run it
		words = words[:i]
	}
	code, out, errOut := runCmd(append(words[1:], "-yes")...)
	done := fmt.Sprintf("unlocked %d document(s)", want)
	if want == 0 {
		done = "nothing to do"
	}
	if code != exitOK || !strings.Contains(out, done) {
		t.Fatalf("%s: exit %d, want %d unlocked\n%s%s", command, code, want, out, errOut)
	}
}

// TestDoctor plants each kind of lock an operator must hear about, checks
// doctor's verdict, exit code and command, then runs the command and checks
// that it cleared exactly that class.
func TestDoctor(t *testing.T) {
	host, err := deadCheckHost()
	if err != nil {
		t.Skip("this host cannot tell dead holders:", err)
	}
	live := func(t *testing.T, coll *mongo.Collection) { // a lock of this (live) process, lease running
		t.Helper()
		if _, err := mongolock.New(coll, mongolock.WithLease(time.Hour)).TryAcquire(context.Background(), bson.D{{Key: "_id", Value: "job3"}}); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name     string
		args     []string
		plant    func(t *testing.T, coll *mongo.Collection)
		code     int
		verdicts map[string]string // check: verdict (others: ok)
		command  string            // the printed command's selectors
		clears   []string          // the _ids that command clears
	}{
		{name: "unlocked documents", code: exitOK},
		{name: "a live holder", plant: live, code: exitOK},
		{
			name: "stale Python lock",
			plant: func(t *testing.T, coll *mongo.Collection) {
				lockAs(t, coll, "job1", "py-old", 48*time.Hour, nil)
				lockAs(t, coll, "job2", "py-young", time.Hour, nil)
				live(t, coll)
			},
			code: exitProblem, verdicts: map[string]string{"stale": verdictProblem},
			command: "mongolock unlock -no-holder -older-than 24h", clears: []string{"job1"},
		},
		{
			name: "stale Python lock, -older-than 30m",
			args: []string{"-older-than", "30m"},
			plant: func(t *testing.T, coll *mongo.Collection) {
				lockAs(t, coll, "job1", "py-old", 48*time.Hour, nil)
				lockAs(t, coll, "job2", "py-young", time.Hour, nil)
				live(t, coll)
			},
			code: exitProblem, verdicts: map[string]string{"stale": verdictProblem},
			command: "mongolock unlock -no-holder -older-than 30m", clears: []string{"job1", "job2"},
		},
		{
			name: "a record naming an earlier lock is no holder",
			plant: func(t *testing.T, coll *mongo.Collection) {
				lockAs(t, coll, "job1", "py", 48*time.Hour, &holderRec{lockID: "before", host: host, pid: os.Getpid()})
			},
			code: exitProblem, verdicts: map[string]string{"stale": verdictProblem},
			command: "mongolock unlock -no-holder -older-than 24h", clears: []string{"job1"},
		},
		{
			name: "dead holder",
			plant: func(t *testing.T, coll *mongo.Collection) {
				lockAs(t, coll, "job1", "go-dead", time.Minute, &holderRec{lockID: "go-dead", host: host, pid: deadPID(t)})
				lockAs(t, coll, "job2", "go-elsewhere", time.Minute, &holderRec{lockID: "go-elsewhere", host: "node-7", pid: deadPID(t)})
				live(t, coll)
			},
			code: exitProblem, verdicts: map[string]string{"dead": verdictProblem},
			command: "mongolock unlock -dead", clears: []string{"job1"},
		},
		{
			name: "expired lease",
			plant: func(t *testing.T, coll *mongo.Collection) {
				lockAs(t, coll, "job1", "go-expired", time.Minute, &holderRec{lockID: "go-expired", host: "node-7", pid: 4242, expires: time.Now().Add(-30 * time.Second)})
				lockAs(t, coll, "job2", "go-running", time.Minute, &holderRec{lockID: "go-running", host: "node-7", pid: 4242, expires: time.Now().Add(time.Hour)})
				live(t, coll)
			},
			code: exitOK, verdicts: map[string]string{"expired": verdictWarn},
			command: "mongolock unlock -expired", clears: []string{"job1"},
		},
		{
			name: "old lock of another host, without a lease",
			plant: func(t *testing.T, coll *mongo.Collection) {
				lockAs(t, coll, "job1", "go-old", 48*time.Hour, &holderRec{lockID: "go-old", host: "node-7", pid: 4242})
				lockAs(t, coll, "job2", "go-young", time.Hour, &holderRec{lockID: "go-young", host: "node-7", pid: 4242})
			},
			code: exitOK, verdicts: map[string]string{"elsewhere": verdictWarn},
			command: "mongolock unlock -dead", clears: nil, // to be run on node-7: here it clears nothing
		},
		{
			name: "everything at once",
			plant: func(t *testing.T, coll *mongo.Collection) {
				lockAs(t, coll, "job1", "go-expired", time.Minute, &holderRec{lockID: "go-expired", host: "node-7", pid: 4242, expires: time.Now().Add(-time.Second)})
				lockAs(t, coll, "job2", "go-dead", time.Minute, &holderRec{lockID: "go-dead", host: host, pid: deadPID(t)})
				lockAs(t, coll, "job3", "py-old", 25*time.Hour, nil)
			},
			code:     exitProblem,
			verdicts: map[string]string{"expired": verdictWarn, "dead": verdictProblem, "stale": verdictProblem},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			coll, flags := newJobs(t, 3)
			if tc.plant != nil {
				tc.plant(t, coll)
			}
			args := append(append([]string{}, flags...), tc.args...)
			code, r := doctorJSON(t, args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d: %+v", code, tc.code, r)
			}
			worst := verdictOK
			for _, f := range r.Findings {
				want := tc.verdicts[f.Check]
				if want == "" {
					want = verdictOK
				}
				if f.Verdict != want {
					t.Errorf("%s: %s (%s), want %s", f.Check, f.Verdict, f.Message, want)
				}
				if f.Verdict == verdictProblem || (f.Verdict == verdictWarn && worst == verdictOK) {
					worst = f.Verdict
				}
			}
			if r.Verdict != worst {
				t.Errorf("report's verdict %s, want %s", r.Verdict, worst)
			}
			for check := range tc.verdicts {
				findingOf(t, r, check)
			}
			if tc.command == "" {
				return
			}
			var f finding
			for _, g := range r.Findings {
				if g.Command != "" && g.Verdict != verdictOK {
					f = g
				}
			}
			if !strings.HasPrefix(f.Command, tc.command+" ") {
				t.Fatalf("command %q, want %q and the flags of the collection", f.Command, tc.command)
			}
			// The text report prints the same command.
			if _, out, _ := runCmd(append([]string{"doctor"}, args...)...); !strings.Contains(out, "run: "+f.Command+"\n") {
				t.Errorf("the text report lacks %q:\n%s", f.Command, out)
			}
			before := map[string]any{}
			for _, id := range []string{"job1", "job2", "job3"} {
				before[id] = lockOf(t, coll, id)
			}
			runPrinted(t, f.Command, len(tc.clears))
			for id, was := range before {
				got := lockOf(t, coll, id)
				if cleared := strings.Contains(strings.Join(tc.clears, " "), id); (cleared && got != nil) || (!cleared && got != was) {
					t.Errorf("%s: lock %v after the command (was %v; cleared: %v)", id, got, was, cleared)
				}
			}
			if code, r := doctorJSON(t, args...); code != exitOK || r.Verdict == verdictProblem {
				t.Errorf("after the command: exit %d, %+v", code, r)
			}
		})
	}
}

// TestDoctorFreshServer: a new user's first run against an empty server is
// all ok, in the text report too.
func TestDoctorFreshServer(t *testing.T) {
	for _, args := range [][]string{
		{"-uri", serverURI, "-db", "mongolock_cmd_doctor_fresh"},
		{"-uri", serverURI, "-db", "mongolock_cmd_doctor_fresh", "-filter", `{"state": "READY"}`, "-sort", `{"priority": -1}`},
	} {
		code, out, errOut := runCmd(append([]string{"doctor"}, args...)...)
		if code != exitOK || errOut != "" {
			t.Fatalf("doctor %v: exit %d\n%s%s", args, code, out, errOut)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		for _, l := range lines[1 : len(lines)-1] {
			if !strings.HasPrefix(l, "ok ") {
				t.Errorf("not ok on a fresh server: %s", l)
			}
		}
		for _, want := range []string{"server ", "clock ", "index ", "locks ", "does not exist yet", "{state: 1, lock_id: 1, priority: -1}"} {
			if want == "{state: 1, lock_id: 1, priority: -1}" && len(args) == 4 {
				continue
			}
			if !strings.Contains(out, want) {
				t.Errorf("doctor %v lacks %q:\n%s", args, want, out)
			}
		}
		if !strings.HasPrefix(lines[len(lines)-1], "ok: ") {
			t.Errorf("summary: %s", lines[len(lines)-1])
		}
		code, r := doctorJSON(t, args...)
		if code != exitOK || r.Verdict != verdictOK || r.URI != serverURI || r.Database != "mongolock_cmd_doctor_fresh" || r.Collection != "jobs" || len(r.Findings) != len(lines)-2 {
			t.Errorf("doctor -json %v: exit %d, %+v; want the text report's %d findings", args, code, r, len(lines)-2)
		}
	}
}

// TestDoctorClock: a clock off by more than a second is a warning, either
// way; lock verdicts follow the server's clock whatever this machine's says.
func TestDoctorClock(t *testing.T) {
	coll, flags := newJobs(t, 2)
	lockAs(t, coll, "job1", "go-expired", time.Minute, &holderRec{lockID: "go-expired", host: "node-7", pid: 4242, expires: time.Now().Add(-30 * time.Second)})
	lockAs(t, coll, "job2", "go-running", time.Minute, &holderRec{lockID: "go-running", host: "node-7", pid: 4242, expires: time.Now().Add(10 * time.Minute)})
	for _, tc := range []struct {
		skew    time.Duration
		verdict string
		says    string
	}{
		{0, verdictOK, ""},
		{time.Hour, verdictWarn, "behind this machine's"},
		{-time.Hour, verdictWarn, "ahead of this machine's"},
		{-3 * time.Second, verdictWarn, "ahead of this machine's"},
	} {
		t.Run(fmt.Sprint(tc.skew), func(t *testing.T) {
			doctorNow = func() time.Time { return time.Now().Add(tc.skew) }
			defer func() { doctorNow = time.Now }()
			code, r := doctorJSON(t, flags...)
			clock := findingOf(t, r, "clock")
			if code != exitOK || clock.Verdict != tc.verdict || !strings.Contains(clock.Message, tc.says) {
				t.Errorf("exit %d, clock %+v; want %s saying %q", code, clock, tc.verdict, tc.says)
			}
			if tc.verdict == verdictWarn && clock.Command == "" {
				t.Error("a skewed clock without advice")
			}
			// An hour's skew would make the running lease look expired
			// (ahead), or the expired one running (behind).
			if e := findingOf(t, r, "expired"); e.Verdict != verdictWarn || !strings.Contains(e.Message, `1 lock(s)`) || !strings.Contains(e.Message, `(_id "job1")`) {
				t.Errorf("expired leases judged by this machine's clock: %+v", e)
			}
		})
	}
}

// TestDoctorIndex: a collection the claim must scan is fine while small and
// a warning once large; on MongoDB the printed createIndex makes it ok, on
// FerretDB the report says that no index can serve the claim.
func TestDoctorIndex(t *testing.T) {
	ctx := context.Background()
	coll, flags := newJobs(t, 1)
	args := append(flags, "-filter", `{"state": "READY"}`, "-sort", `{"priority": -1}`)
	_, r := doctorJSON(t, args...)
	if f := findingOf(t, r, "index"); f.Verdict != verdictOK || !strings.Contains(f.Message, "1 document(s)") {
		t.Errorf("one document: %+v", f)
	}
	docs := make([]any, indexWarnDocs)
	for i := range docs {
		docs[i] = bson.D{{Key: "state", Value: "READY"}, {Key: "priority", Value: i}}
	}
	if _, err := coll.InsertMany(ctx, docs); err != nil {
		t.Fatal(err)
	}
	code, r := doctorJSON(t, args...)
	f := findingOf(t, r, "index")
	if code != exitOK || f.Verdict != verdictWarn {
		t.Fatalf("%d documents without an index: exit %d, %+v", indexWarnDocs+1, code, f)
	}
	if !strings.Contains(f.Message, "{state: 1, lock_id: 1, priority: -1}") && !strings.Contains(f.Command, "{state: 1, lock_id: 1, priority: -1}") {
		t.Errorf("no index suggested: %+v", f)
	}
	if r.Verdict != verdictWarn {
		t.Errorf("report verdict %s", r.Verdict)
	}
	if strings.Contains(f.Message, "FerretDB") {
		if f.Command != "" || !strings.Contains(f.Message, "no index can serve it") {
			t.Errorf("FerretDB: an index offered where none would help: %+v", f)
		}
		return
	}
	// MongoDB: the printed command's index serves the claim.
	want := `--eval 'db.getSiblingDB("` + coll.Database().Name() + `").getCollection("` + coll.Name() + `").createIndex({state: 1, lock_id: 1, priority: -1})'`
	if !strings.HasPrefix(f.Command, "mongosh ") || !strings.HasSuffix(f.Command, want) {
		t.Fatalf("command %q, want mongosh ... %s", f.Command, want)
	}
	if _, err := coll.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "state", Value: 1}, {Key: mongolock.LockKey, Value: 1}, {Key: "priority", Value: -1}}}); err != nil {
		t.Fatal(err)
	}
	if _, r := doctorJSON(t, args...); findingOf(t, r, "index").Verdict != verdictOK || !strings.Contains(findingOf(t, r, "index").Message, "served by an index") {
		t.Errorf("with the index: %+v", findingOf(t, r, "index"))
	}
}

// TestDoctorAtomic: -atomic reports check's verdict; a server that loses
// updates is a problem.
func TestDoctorAtomic(t *testing.T) {
	if testing.Short() {
		t.Skip("runs check's measurement twice, 2s each")
	}
	raw, err := testserver.Start(testserver.Options{Raw: true})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for _, tc := range []struct {
		uri     string
		code    int
		verdict string
	}{
		{serverURI, exitOK, verdictOK},
		{raw.URI(), exitProblem, verdictProblem},
	} {
		code, r := doctorJSON(t, "-atomic", "-uri", tc.uri, "-db", "mongolock_cmd_doctor_atomic")
		if f := findingOf(t, r, "atomic"); code != tc.code || f.Verdict != tc.verdict {
			t.Errorf("%s: exit %d, %+v; want %d, %s", tc.uri, code, f, tc.code, tc.verdict)
		}
	}
}

func TestDoctorExitCodes(t *testing.T) {
	refused := refusedURI(t)
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"stray argument", []string{"now"}, exitUsage, `unexpected arguments "now"`},
		{"bad -sort", []string{"-sort", "[1]"}, exitUsage, "not an array"},
		{"empty -filter", []string{"-filter", ""}, exitUsage, "empty filter"},
		{"-older-than 0", []string{"-older-than", "0s"}, exitUsage, "-older-than must be positive"},
		{"unreachable", []string{"-uri", refused, "-timeout", "1h"}, exitFail, "connection refused"},
		{"help", []string{"-h"}, exitOK, "3 a finding is a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCmd(append([]string{"doctor"}, tc.args...)...)
			if code != tc.code || !strings.Contains(errOut, tc.stderr) {
				t.Errorf("exit %d, want %d; stderr lacks %q?\n%s%s", code, tc.code, tc.stderr, out, errOut)
			}
			if code != exitOK && strings.Count(errOut, "\n") != 1 {
				t.Errorf("an error is one line:\n%s", errOut)
			}
		})
	}
}

// TestReadPlan reads the explain replies of MongoDB's planners and of
// FerretDB's backends.
func TestReadPlan(t *testing.T) {
	for _, tc := range []struct {
		name   string
		json   string
		sorted bool
		want   int
	}{
		{"collscan", `{"queryPlanner": {"winningPlan": {"stage": "UPDATE", "inputStage": {"stage": "SORT", "inputStage": {"stage": "COLLSCAN"}}}}}`, true, planScan},
		{"in-memory sort", `{"queryPlanner": {"winningPlan": {"stage": "UPDATE", "inputStage": {"stage": "SORT", "inputStage": {"stage": "FETCH", "inputStage": {"stage": "IXSCAN"}}}}}}`, true, planScan},
		{"index", `{"queryPlanner": {"winningPlan": {"stage": "UPDATE", "inputStage": {"stage": "FETCH", "inputStage": {"stage": "IXSCAN", "keyPattern": {"state": 1}}}}}}`, true, planServed},
		{"sbe", `{"queryPlanner": {"winningPlan": {"queryPlan": {"stage": "FETCH", "inputStage": {"stage": "IXSCAN"}}, "slotBasedPlan": {"stages": "..."}}}}`, true, planServed},
		{"express", `{"queryPlanner": {"winningPlan": {"stage": "EXPRESS_IXSCAN"}}}`, false, planServed},
		{"sharded", `{"queryPlanner": {"winningPlan": {"stage": "SINGLE_SHARD", "shards": [{"shardName": "s0", "winningPlan": {"stage": "UPDATE", "inputStage": {"stage": "COLLSCAN"}}}]}}}`, false, planScan},
		{"no collection", `{"queryPlanner": {"winningPlan": {"stage": "EOF"}}}`, false, planUnknown},
		{"unknown stage", `{"queryPlanner": {"winningPlan": {"stage": "TEXT_MATCH"}}}`, false, planUnknown},
		{"no plan", `{"ok": 1}`, false, planUnknown},
		{"ferretdb sqlite, not pushed down", `{"queryPlanner": {"Plan": ["id=2 parent=0 notused=0 detail=SCAN jobs_e407107d"]}, "filterPushdown": false, "sortPushdown": false}`, true, planNoIndexPossible},
		{"ferretdb sqlite, sort not pushed down", `{"queryPlanner": {"Plan": ["detail=SEARCH jobs USING INDEX x"]}, "filterPushdown": true, "sortPushdown": false}`, true, planNoIndexPossible},
		{"ferretdb sqlite, index", `{"queryPlanner": {"Plan": ["id=3 parent=0 notused=0 detail=SEARCH jobs_1 USING INDEX jobs_1_state"]}, "filterPushdown": true, "sortPushdown": false}`, false, planServed},
		{"ferretdb sqlite, scan", `{"queryPlanner": {"Plan": ["id=2 parent=0 notused=0 detail=SCAN jobs_1"]}, "filterPushdown": true, "sortPushdown": true}`, true, planScan},
		{"ferretdb postgresql, index", `{"queryPlanner": [{"Plan": {"Node Type": "Limit", "Plans": [{"Node Type": "Index Scan", "Relation Name": "jobs"}]}}], "filterPushdown": true, "sortPushdown": true}`, true, planServed},
		{"ferretdb postgresql, seq scan", `{"queryPlanner": [{"Plan": {"Node Type": "Seq Scan", "Relation Name": "jobs"}}], "filterPushdown": true, "sortPushdown": true}`, true, planScan},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var raw bson.Raw
			if err := bson.UnmarshalExtJSON([]byte(tc.json), false, &raw); err != nil {
				t.Fatal(err)
			}
			if got := readPlan(raw, tc.sorted); got.served != tc.want || got.detail == "" {
				t.Errorf("readPlan: %+v, want %d", got, tc.want)
			}
		})
	}
}

func TestIndexKeys(t *testing.T) {
	doc := func(s string) bson.D {
		d, err := parseFilter(s)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for _, tc := range []struct{ filter, sort, want string }{
		{`{}`, `{}`, `{lock_id: 1}`},
		{`{"state": "READY"}`, `{"priority": -1}`, `{state: 1, lock_id: 1, priority: -1}`},
		{`{"state": {"$eq": "READY"}, "size": {"$gt": 3}}`, `{"priority": -1, "_id": 1}`, `{state: 1, lock_id: 1, priority: -1, _id: 1, size: 1}`},
		{`{"$or": [{"a": 1}], "remote.state": "X"}`, `{"remote.priority": 1.0}`, `{"remote.state": 1, lock_id: 1, "remote.priority": 1}`},
		{`{"state": "READY", "lock_id": null}`, `{"state": 1}`, `{state: 1, lock_id: 1}`},
	} {
		if got := keysString(indexKeys(doc(tc.filter), doc(tc.sort))); got != tc.want {
			t.Errorf("filter %s sort %s: %s, want %s", tc.filter, tc.sort, got, tc.want)
		}
	}
}

func TestClaimQuery(t *testing.T) {
	got, _ := bson.MarshalExtJSON(claimQuery(bson.D{{Key: "state", Value: "READY"}}), false, false)
	if string(got) != `{"state":"READY","lock_id":null}` {
		t.Errorf("claimQuery: %s", got)
	}
	got, _ = bson.MarshalExtJSON(claimQuery(bson.D{{Key: "lock_id", Value: bson.D{{Key: "$exists", Value: true}}}}), false, false)
	if string(got) != `{"$and":[{"lock_id":{"$exists":true}},{"lock_id":null}]}` {
		t.Errorf("claimQuery with lock_id: %s", got)
	}
}

func TestDoctorText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"mongodb://127.0.0.1:27017", "mongodb://127.0.0.1:27017"},
		{"mongodb://u:secret@h:1/?replicaSet=rs0", "mongodb://u:PASSWORD@h:1/?replicaSet=rs0"},
		{"mongodb://u@h:1", "mongodb://u@h:1"},
	} {
		if got := redactURI(tc.in); got != tc.want {
			t.Errorf("redactURI(%s) = %s", tc.in, got)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"mongodb://h:1", "mongodb://h:1/?w=majority"},
		{"mongodb://h:1/", "mongodb://h:1/?w=majority"},
		{"mongodb://h:1/?replicaSet=rs0", "mongodb://h:1/?replicaSet=rs0&w=majority"},
	} {
		if got := withQuery(tc.in, "w=majority"); got != tc.want {
			t.Errorf("withQuery(%s) = %s", tc.in, got)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"-older-than", "-older-than"},
		{"mongodb://h:1/?a=1&b=2", "'mongodb://h:1/?a=1&b=2'"},
		{"it's", `'it'\''s'`},
		{"", "''"},
	} {
		if got := shellQuote(tc.in); got != tc.want {
			t.Errorf("shellQuote(%q) = %s", tc.in, got)
		}
		if tc.in != "" {
			if w := shellWords(shellQuote(tc.in)); len(w) != 1 || w[0] != tc.in {
				t.Errorf("shellWords(shellQuote(%q)) = %q", tc.in, w)
			}
		}
	}
	for d, want := range map[time.Duration]string{24 * time.Hour: "24h", 30 * time.Minute: "30m", 90 * time.Minute: "1h30m", 1500 * time.Millisecond: "1.5s", time.Hour + time.Second: "1h0m1s"} {
		if got := flagDuration(d); got != want {
			t.Errorf("flagDuration(%v) = %s, want %s", d, got, want)
		} else if back, err := time.ParseDuration(got); err != nil || back != d {
			t.Errorf("flagDuration(%v) = %s reads back as %v, %v", d, got, back, err)
		}
	}
	for _, tc := range []struct{ hello, want string }{
		{`{"isWritablePrimary": true}`, "standalone"},
		{`{"setName": "rs0"}`, `replica set "rs0"`},
		{`{"msg": "isdbgrid"}`, "sharded (mongos)"},
	} {
		var raw bson.Raw
		_ = bson.UnmarshalExtJSON([]byte(tc.hello), false, &raw)
		if got := topologyOf(raw); got != tc.want {
			t.Errorf("topologyOf(%s) = %s", tc.hello, got)
		}
	}
}
