package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.uber.org/goleak"

	"github.com/mongolock/mongolock"
	"github.com/mongolock/mongolock/internal/testserver"
)

var (
	serverURI string
	client    *mongo.Client
)

func TestMain(m *testing.M) {
	testserver.ServeIfHelper()
	if os.Getenv(childCommandEnv) == "1" { // started as the command itself
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	uri, _, stop, err := testserver.ForTests()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	serverURI = uri
	client, err = mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	_ = client.Database("mongolock_cmd_test").Drop(context.Background())
	_ = client.Disconnect(context.Background())
	if err := stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left running:", err)
			code = 1
		}
	}
	return code
}

// runCmd runs the command in this process and returns its exit code and
// outputs.
func runCmd(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

var collSeq atomic.Int64

// newJobs returns a fresh collection with documents job1..jobN and the flags
// that point the command at it.
func newJobs(t *testing.T, n int) (*mongo.Collection, []string) {
	t.Helper()
	name := fmt.Sprintf("jobs_%d", collSeq.Add(1))
	coll := client.Database("mongolock_cmd_test").Collection(name)
	t.Cleanup(func() { _ = coll.Drop(context.Background()) })
	for i := 1; i <= n; i++ {
		if _, err := coll.InsertOne(context.Background(), bson.D{{Key: "_id", Value: fmt.Sprintf("job%d", i)}, {Key: "state", Value: "READY"}}); err != nil {
			t.Fatal(err)
		}
	}
	return coll, []string{"-uri", serverURI, "-db", "mongolock_cmd_test", "-collection", name}
}

func TestUsageAndExitCodes(t *testing.T) {
	cases := []struct {
		args []string
		code int
		says string // in stderr
	}{
		{nil, exitUsage, "usage: mongolock"},
		{[]string{"help"}, exitOK, "usage: mongolock"},
		{[]string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{[]string{"demo", "-bogus"}, exitUsage, "-bogus"},
		{[]string{"demo", "-jobs", "0"}, exitUsage, "-jobs must be positive"},
		{[]string{"demo", "-workers", "2", "-procs", "3"}, exitUsage, "-procs"},
		{[]string{"demo", "-work", "-1s"}, exitUsage, "-work"},
		{[]string{"list", "-h"}, exitOK, "-collection"},
		{[]string{"list", "-filter", "{not json"}, exitUsage, "-filter"},
		{[]string{"unlock", "-older-than", "-1m"}, exitUsage, "-older-than"},
		{[]string{"exec", "--", "true"}, exitUsage, "-filter is required"},
		{[]string{"exec", "-filter", `{"_id":1}`}, exitUsage, "no command given"},
		{[]string{"exec", "-filter", `{"_id":1}`, "-lease", "0s", "--", "true"}, exitUsage, "-lease"},
		{[]string{"check", "-goroutines", "1"}, exitUsage, "-goroutines"},
		{[]string{"dev-server", "extra"}, exitUsage, "unexpected argument"},
		{[]string{"list", "-uri", "mongodb://127.0.0.1:1", "-timeout", "300ms"}, exitFail, "cannot reach mongodb://127.0.0.1:1"},
		{[]string{"unlock", "-uri", "mongodb://127.0.0.1:1", "-timeout", "300ms", "-yes"}, exitFail, "cannot reach"},
		{[]string{"list", "-uri", "notauri"}, exitFail, "-uri"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, _, stderr := runCmd(tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tc.code, stderr)
			}
			if !strings.Contains(stderr, tc.says) {
				t.Errorf("stderr does not say %q:\n%s", tc.says, stderr)
			}
			if tc.code == exitFail && strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Errorf("a failure is one line:\n%s", stderr)
			}
		})
	}
}

func TestDemo(t *testing.T) {
	for _, procs := range []string{"1", "2"} {
		t.Run("procs="+procs, func(t *testing.T) {
			t.Setenv(childCommandEnv, "1") // for the worker processes
			code, stdout, stderr := runCmd("demo", "-uri", serverURI, "-jobs", "40", "-workers", "4", "-procs", procs, "-work", "2ms")
			if code != exitOK {
				t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
			}
			for _, want := range []string{"jobs done:              40 of 40", "jobs processed twice:   0", "locks left behind:      0", "throughput:", "lock waits:"} {
				if !strings.Contains(stdout, want) {
					t.Errorf("summary lacks %q:\n%s", want, stdout)
				}
			}
		})
	}
}

func TestDemoRefusesACollectionInUse(t *testing.T) {
	coll, _ := newJobs(t, 1)
	code, _, stderr := runCmd("demo", "-uri", serverURI, "-db", coll.Database().Name(), "-collection", coll.Name(), "-jobs", "5")
	if code != exitFail || !strings.Contains(stderr, "holds 1 documents") {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	if n, _ := coll.CountDocuments(context.Background(), bson.D{}); n != 1 {
		t.Errorf("the demo touched a collection in use: %d documents", n)
	}
}

func TestCheckVerdicts(t *testing.T) {
	for _, raw := range []bool{true, false} {
		t.Run(fmt.Sprintf("raw=%v", raw), func(t *testing.T) {
			srv, err := testserver.Start(testserver.Options{Raw: raw})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			code, stdout, stderr := runCmd("check", "-uri", srv.URI(), "-duration", "1s")
			want, verdict := exitOK, "atomic: no overlap"
			if raw {
				want, verdict = exitNotAtomic, "not atomic"
			}
			if code != want || !strings.Contains(stdout, verdict) {
				t.Fatalf("exit %d, want %d with %q\n%s\n%s", code, want, verdict, stdout, stderr)
			}
			c := clientFor(t, srv.URI())
			names, err := c.Database("mongolock").ListCollectionNames(context.Background(), bson.D{})
			_ = c.Disconnect(context.Background())
			if err != nil || len(names) != 0 {
				t.Errorf("check left collections behind: %v %v", names, err)
			}
		})
	}
}

func clientFor(t *testing.T, uri string) *mongo.Client {
	c, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c
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
	if code != exitOK || len(lines) != 2 || json.Unmarshal([]byte(lines[0]), &first) != nil || first["lock_id"] == nil {
		t.Fatalf("list -json: exit %d\n%s", code, out)
	}

	// Asked, and refused: nothing changes.
	stdin = strings.NewReader("n\n")
	defer func() { stdin = os.Stdin }()
	code, out, _ = runCmd(append([]string{"unlock", "-filter", `{"_id": "job1"}`}, flags...)...)
	if code != exitFail || !strings.Contains(out, "will unlock 1 document") || !strings.Contains(out, "nothing unlocked") {
		t.Fatalf("unlock refused: exit %d\n%s", code, out)
	}
	// Too young for -older-than.
	code, out, _ = runCmd(append([]string{"unlock", "-older-than", "1h", "-yes"}, flags...)...)
	if code != exitOK || !strings.Contains(out, "nothing to do") {
		t.Fatalf("unlock -older-than 1h: exit %d\n%s", code, out)
	}
	// Asked, and accepted.
	stdin = strings.NewReader("y\n")
	code, out, _ = runCmd(append([]string{"unlock", "-filter", `{"_id": "job1"}`}, flags...)...)
	if code != exitOK || !strings.Contains(out, "unlocked 1 document") {
		t.Fatalf("unlock accepted: exit %d\n%s", code, out)
	}
	if err := a.Release(ctx); err == nil {
		t.Error("job1's holder could still release after unlock")
	}
	time.Sleep(20 * time.Millisecond)
	code, out, _ = runCmd(append([]string{"unlock", "-older-than", "10ms", "-yes"}, flags...)...)
	if code != exitOK || !strings.Contains(out, "unlocked 1 document") {
		t.Fatalf("unlock -older-than -yes: exit %d\n%s", code, out)
	}
	if n, _ := coll.CountDocuments(ctx, bson.D{{Key: mongolock.LockKey, Value: bson.D{{Key: "$ne", Value: nil}}}}); n != 0 {
		t.Errorf("%d locks left", n)
	}
}

func TestExecPassesExitCode(t *testing.T) {
	coll, flags := newJobs(t, 1)
	envFile := t.TempDir() + "/env"
	script := fmt.Sprintf(`echo "$%s $%s" > %s; exit 7`, envLockID, envDocumentID, envFile)
	args := append(append([]string{"exec", "-filter", `{"_id": "job1"}`}, flags...), "--", "sh", "-c", script)
	code, out, errOut := runCmd(args...)
	if code != 7 {
		t.Fatalf("exit %d, want the command's 7\n%s%s", code, out, errOut)
	}
	env, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(env))
	if len(fields) != 2 || len(fields[0]) != 36 || fields[1] != "job1" {
		t.Errorf("the command saw %q, want a lock id and job1", env)
	}
	if doc := lockOf(t, coll, "job1"); doc != nil {
		t.Errorf("lock left after exec: %v", doc)
	}

	// A locked document: exec waits -timeout, then fails without running.
	l, err := mongolock.New(coll).TryAcquire(context.Background(), bson.D{{Key: "_id", Value: "job1"}})
	if err != nil {
		t.Fatal(err)
	}
	args = append(append([]string{"exec", "-filter", `{"_id": "job1"}`, "-timeout", "200ms"}, flags...), "--", "sh", "-c", "exit 0")
	code, _, errOut = runCmd(args...)
	if code != exitFail || !strings.Contains(errOut, "is locked with lock_id "+l.ID()) {
		t.Errorf("exec on a locked document: exit %d\n%s", code, errOut)
	}
	args = append(append([]string{"exec", "-filter", `{"_id": "nope"}`}, flags...), "--", "true")
	if code, _, errOut = runCmd(args...); code != exitFail || !strings.Contains(errOut, "no document matches") {
		t.Errorf("exec on no document: exit %d\n%s", code, errOut)
	}
}

func lockOf(t *testing.T, coll *mongo.Collection, id string) any {
	var doc bson.M
	if err := coll.FindOne(context.Background(), bson.D{{Key: "_id", Value: id}}).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	return doc[mongolock.LockKey]
}

// startCommand runs the command as a separate process (this test binary),
// so that signals can be sent to it.
func startCommand(t *testing.T, args ...string) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), childCommandEnv+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd, bufio.NewReader(out)
}

func TestExecReleasesOnSignal(t *testing.T) {
	coll, flags := newJobs(t, 1)
	script := `trap 'exit 3' TERM; echo ready; while :; do sleep 0.05; done`
	cmd, out := startCommand(t, append(append([]string{"exec", "-filter", `{"_id": "job1"}`}, flags...), "--", "sh", "-c", script)...)
	if line, err := out.ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("child said %q, %v", line, err)
	}
	if lockOf(t, coll, "job1") == nil {
		t.Fatal("document not locked while the command runs")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 3 {
		t.Fatalf("exit %d (%v), want the command's 3 after it got SIGTERM", code, err)
	}
	if doc := lockOf(t, coll, "job1"); doc != nil {
		t.Errorf("lock left after a signal: %v", doc)
	}
}

func TestDevServer(t *testing.T) {
	cmd, out := startCommand(t, "dev-server", "-listen", "127.0.0.1:0")
	line, err := out.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "mongodb://127.0.0.1:") {
		t.Fatalf("dev-server printed %q, %v", line, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := mongo.Connect(options.Client().ApplyURI(strings.TrimSpace(line)))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Ping(ctx, nil)
	_ = c.Disconnect(ctx) // before the server goes, or it waits to end sessions
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("dev-server did not stop cleanly on SIGINT: %v", err)
	}
}
