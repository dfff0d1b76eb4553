package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
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
	var code int
	runWithDeadline(args, func() { code = run(args, &stdout, &stderr) })
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

// refusedURI is the URI of a port where nothing listens.
func refusedURI(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return "mongodb://" + addr
}

// TestExitCodes runs every command's refusals and outcomes: the exit code,
// and the one line that says why.
func TestExitCodes(t *testing.T) {
	raw, err := testserver.Start(testserver.Options{Raw: true})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	refused := refusedURI(t)
	notExecutable := t.TempDir() + "/script.sh"
	if err := os.WriteFile(notExecutable, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	lockJob1 := func(t *testing.T, coll *mongo.Collection) {
		if _, err := mongolock.New(coll).TryAcquire(context.Background(), bson.D{{Key: "_id", Value: "job1"}}); err != nil {
			t.Fatal(err)
		}
	}
	const S = "@server" // the flags of a fresh collection with job1..job3
	cases := []struct {
		name   string
		args   []string
		setup  func(t *testing.T, coll *mongo.Collection)
		code   int
		stderr string // in stderr
		stdout string // in stdout
	}{
		// The command and its help.
		{"no command", nil, nil, exitUsage, "usage: mongolock", ""},
		{"help", []string{"help"}, nil, exitOK, "", "usage: mongolock"},
		{"help exec", []string{"help", "exec"}, nil, exitOK, "", "MONGOLOCK_LOCK_ID"},
		{"help unknown", []string{"help", "frob"}, nil, exitUsage, `unknown command "frob"`, ""},
		{"help stray", []string{"help", "list", "x"}, nil, exitUsage, `unexpected arguments "x"`, ""},
		{"unknown command", []string{"frobnicate"}, nil, exitUsage, `unknown command "frobnicate"`, ""},
		{"exec -h", []string{"exec", "-h"}, nil, exitOK, "MONGOLOCK_DOCUMENT_ID", ""},
		{"list -h", []string{"list", "-h"}, nil, exitOK, `-collection name`, ""},
		{"unknown flag", []string{"list", "-bogus"}, nil, exitUsage, "flag provided but not defined: -bogus", ""},

		// Stray arguments are refused, never ignored.
		{"unlock stray", []string{"unlock", "-yes", "job-1"}, nil, exitUsage, `unexpected arguments "job-1"`, ""},
		{"unlock stray before flags", []string{"unlock", "job-1", "-all"}, nil, exitUsage, `unexpected arguments "job-1" "-all"`, ""},
		{"list stray", []string{"list", "jobs"}, nil, exitUsage, `unexpected arguments "jobs"`, ""},
		{"check stray", []string{"check", "now"}, nil, exitUsage, `unexpected arguments "now"`, ""},
		{"demo stray", []string{"demo", "fast"}, nil, exitUsage, `unexpected arguments "fast"`, ""},
		{"dev-server stray", []string{"dev-server", "extra"}, nil, exitUsage, `unexpected arguments "extra"`, ""},
		{"exec without --", []string{"exec", "-filter", `{"_id": 1}`, "true"}, nil, exitUsage, "put -- before the command", ""},
		{"exec without command", []string{"exec", "-filter", `{"_id": 1}`, "--"}, nil, exitUsage, "no command given", ""},
		{"exec without filter", []string{"exec", "--", "true"}, nil, exitUsage, "-filter is required", ""},

		// unlock says which locks.
		{"unlock no selector", []string{"unlock", "-yes"}, nil, exitUsage, "say which locks to clear", ""},
		{"unlock empty filter", []string{"unlock", "-filter", "", "-yes"}, nil, exitUsage, "empty filter", ""},
		{"unlock {} filter", []string{"unlock", "-filter", "{}", "-yes"}, nil, exitUsage, "say -all", ""},
		{"unlock -all and -filter", []string{"unlock", "-all", "-filter", `{"a": 1}`}, nil, exitUsage, "cannot be combined", ""},
		{"unlock -older-than 0", []string{"unlock", "-older-than", "0s"}, nil, exitUsage, "-older-than must be positive", ""},
		{"unlock -older-than negative", []string{"unlock", "-older-than", "-1m"}, nil, exitUsage, "-older-than must be positive", ""},

		// Filters: one document and nothing else.
		{"filter empty", []string{"list", "-filter", " "}, nil, exitUsage, "empty filter", ""},
		{"filter null", []string{"list", "-filter", "null"}, nil, exitUsage, "must be a document {...}, not null", ""},
		{"filter array", []string{"list", "-filter", "[1]"}, nil, exitUsage, "not an array", ""},
		{"filter string", []string{"list", "-filter", `"job1"`}, nil, exitUsage, "not a string", ""},
		{"filter bare ObjectId", []string{"list", "-filter", `{"$oid": "65f0c0ffee0000000000beef"}`}, nil, exitUsage, `write {"_id": {"$oid": "65f0c0ffee0000000000beef"}}`, ""},
		{"filter trailing text", []string{"list", "-filter", `{"a": 1} x`}, nil, exitUsage, `text after the filter document: "x"`, ""},
		{"filter two documents", []string{"list", "-filter", `{"a": 1}{"b": 2}`}, nil, exitUsage, "text after the filter document", ""},
		{"filter mongosh syntax", []string{"list", "-filter", `{_id: 1}`}, nil, exitUsage, "Extended JSON", ""},
		{"exec filter null", []string{"exec", "-filter", "null", "--", "true"}, nil, exitUsage, "not null", ""},

		// Durations and counts.
		{"timeout 0", []string{"list", "-timeout", "0"}, nil, exitUsage, "-timeout must be positive", ""},
		{"timeout negative", []string{"unlock", "-all", "-timeout", "-1s"}, nil, exitUsage, "-timeout must be positive", ""},
		{"demo timeout 0", []string{"demo", "-timeout", "0s"}, nil, exitUsage, "-timeout must be positive", ""},
		{"exec lease 0", []string{"exec", "-filter", `{"_id": 1}`, "-lease", "0s", "--", "true"}, nil, exitUsage, "-lease must be positive", ""},
		{"exec kill-after 0", []string{"exec", "-filter", `{"_id": 1}`, "-kill-after", "0s", "--", "true"}, nil, exitUsage, "-kill-after must be positive", ""},
		{"check goroutines", []string{"check", "-goroutines", "1"}, nil, exitUsage, "-goroutines must be at least 2", ""},
		{"demo jobs", []string{"demo", "-jobs", "0"}, nil, exitUsage, "-jobs must be positive", ""},
		{"demo procs", []string{"demo", "-workers", "2", "-procs", "3"}, nil, exitUsage, "-procs", ""},

		// Servers: unreachable fails at once, in one line.
		{"refused list", []string{"list", "-uri", refused, "-timeout", "1h"}, nil, exitFail, "cannot reach " + refused + ": dial tcp", ""},
		{"refused unlock", []string{"unlock", "-all", "-yes", "-uri", refused, "-timeout", "1h"}, nil, exitFail, "connection refused", ""},
		{"refused exec", []string{"exec", "-filter", "{}", "-uri", refused, "-timeout", "1h", "--", "true"}, nil, exitFail, "connection refused", ""},
		{"refused check", []string{"check", "-uri", refused, "-timeout", "1h"}, nil, exitFail, "connection refused", ""},
		{"bad uri", []string{"list", "-uri", "notauri"}, nil, exitUsage, `bad -uri "notauri"`, ""},

		// Outcomes.
		{"list", []string{"list", S}, lockJob1, exitOK, "", `"job1"`},
		{"list nothing", []string{"list", S}, nil, exitOK, "", "no locked documents"},
		{"unlock nothing", []string{"unlock", "-all", S}, nil, exitOK, "", "nothing to do"},
		{"unlock not confirmed", []string{"unlock", "-all", S}, lockJob1, exitFail, "not confirmed", "will unlock 1 document"},
		{"unlock -all -yes", []string{"unlock", "-all", "-yes", S}, lockJob1, exitOK, "", "unlocked 1 document"},
		{"exec child's code", []string{"exec", "-filter", `{"_id": "job1"}`, S, "--", "sh", "-c", "exit 7"}, nil, 7, "", ""},
		{"exec child's 1", []string{"exec", "-filter", `{"_id": "job1"}`, S, "--", "false"}, nil, 1, "", ""},
		{"exec lock not obtained", []string{"exec", "-filter", `{"_id": "job1"}`, "-timeout", "1s", S, "--", "true"}, lockJob1, exitLockTimeout, "lock not obtained within -timeout 1s: document job1 is locked", ""},
		{"exec no document", []string{"exec", "-filter", `{"_id": "nope"}`, S, "--", "true"}, nil, exitFail, "no document matches -filter", ""},
		{"exec not found", []string{"exec", "-filter", `{"_id": "job1"}`, S, "--", "/nonexistent/mongolock-test"}, nil, exitNotFound, "cannot run /nonexistent/mongolock-test", ""},
		{"exec not found in PATH", []string{"exec", "-filter", `{"_id": "job1"}`, S, "--", "mongolock-test-no-such-command"}, nil, exitNotFound, "executable file not found", ""},
		{"exec not executable", []string{"exec", "-filter", `{"_id": "job1"}`, S, "--", notExecutable}, nil, exitCannotRun, "permission denied", ""},
		{"check atomic", []string{"check", "-uri", serverURI, "-duration", "300ms"}, nil, exitOK, "", "atomic: no overlap"},
		{"check not atomic", []string{"check", "-uri", raw.URI(), "-duration", "1s"}, nil, exitNotAtomic, "", "not atomic"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stdin = strings.NewReader("") // no one answers a question
			defer func() { stdin = os.Stdin }()
			var args []string
			for _, a := range tc.args {
				if a != S {
					args = append(args, a)
					continue
				}
				coll, flags := newJobs(t, 3)
				if tc.setup != nil {
					tc.setup(t, coll)
				}
				args = append(args, flags...)
			}
			code, stdout, stderr := runCmd(args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, stdout, stderr)
			}
			if !strings.Contains(stderr, tc.stderr) {
				t.Errorf("stderr does not say %q:\n%s", tc.stderr, stderr)
			}
			if !strings.Contains(stdout, tc.stdout) {
				t.Errorf("stdout does not say %q:\n%s", tc.stdout, stdout)
			}
			if code != exitOK && tc.stderr != "" && tc.name != "no command" {
				errLines := strings.TrimPrefix(stderr, unlockPrompt+"\n") // the question is not part of the error
				if n := strings.Count(strings.TrimSuffix(errLines, "\n"), "\n") + 1; n != 1 {
					t.Errorf("an error is one line, not %d:\n%s", n, stderr)
				}
			}
			if strings.Contains(stderr, "topology") {
				t.Errorf("the driver's topology dump reached the user:\n%s", stderr)
			}
		})
	}
}

// TestHelp checks that every command's help describes it, lists its flags
// with defaults, and has examples, the same from 'help CMD' and 'CMD -h'.
func TestHelp(t *testing.T) {
	for _, c := range commands() {
		h := helps[c.name]
		if h.summary == "" {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			code, viaHelp, errOut := runCmd("help", c.name)
			if code != exitOK || errOut != "" {
				t.Fatalf("help %s: exit %d\n%s", c.name, code, errOut)
			}
			code, _, viaFlag := runCmd(c.name, "-h")
			if code != exitOK || viaFlag != viaHelp {
				t.Errorf("%s -h: exit %d, and it differs from help %s:\n%s", c.name, code, c.name, viaFlag)
			}
			for _, want := range []string{"usage: mongolock " + c.name, strings.TrimSpace(h.about)[:30], "flags:", "(default ", "examples:\n  mongolock " + c.name, "Exit codes"} {
				if !strings.Contains(viaHelp, want) {
					t.Errorf("help %s lacks %q:\n%s", c.name, want, viaHelp)
				}
			}
		})
	}
	_, out, _ := runCmd("help", "exec")
	for _, want := range []string{"-- command", "MONGOLOCK_LOCK_ID", "MONGOLOCK_DOCUMENT_ID", "75 ", "127", "-kill-after duration", "SIGKILL"} {
		if !strings.Contains(out, want) {
			t.Errorf("help exec lacks %q", want)
		}
	}
	_, out, _ = runCmd("help")
	for _, c := range []string{"demo", "dev-server", "list", "unlock", "exec", "check"} {
		if !strings.Contains(out, "\n  "+c+" ") {
			t.Errorf("help does not list %s:\n%s", c, out)
		}
	}
	if strings.Contains(out, "demo-worker") {
		t.Errorf("help lists the demo's worker process:\n%s", out)
	}
}

func TestRefusedConnectionIsOneLine(t *testing.T) {
	// Without the dial check, the driver would wait out -timeout (1h) here.
	code, _, stderr := runCmd("list", "-uri", refusedURI(t), "-timeout", "1h")
	if code != exitFail || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "connection refused") {
		t.Fatalf("exit %d:\n%s", code, stderr)
	}
}

func TestOneLineDropsTheTopologyDump(t *testing.T) {
	err := fmt.Errorf("listing locks: %w", fmt.Errorf(`server selection error: context deadline exceeded, current topology: { Type: Unknown, Servers: [{ Addr: 127.0.0.1:1, Type: Unknown, Last error: dial tcp 127.0.0.1:1: connect: connection refused }, ] }`))
	got := oneLine(err)
	want := "listing locks: server selection error: context deadline exceeded: dial tcp 127.0.0.1:1: connect: connection refused"
	if got != want {
		t.Errorf("oneLine:\n got %s\nwant %s", got, want)
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

// TestCheckCollection: check works in the collection -collection names, or
// a new one, refuses one in use, and leaves nothing behind.
func TestCheckCollection(t *testing.T) {
	coll, _ := newJobs(t, 1)
	code, _, stderr := runCmd("check", "-uri", serverURI, "-db", coll.Database().Name(), "-collection", coll.Name(), "-duration", "100ms")
	if code != exitFail || !strings.Contains(stderr, "holds 1 documents") {
		t.Fatalf("check on a collection in use: exit %d\n%s", code, stderr)
	}
	if n, _ := coll.CountDocuments(context.Background(), bson.D{}); n != 1 {
		t.Errorf("check touched a collection in use: %d documents", n)
	}
	db := client.Database("mongolock_cmd_check")
	defer db.Drop(context.Background())
	for _, args := range [][]string{{"-collection", "scratch"}, nil} {
		args = append([]string{"check", "-uri", serverURI, "-db", db.Name(), "-duration", "100ms"}, args...)
		if code, stdout, stderr := runCmd(args...); code != exitOK {
			t.Fatalf("%v: exit %d\n%s%s", args, code, stdout, stderr)
		}
		names, err := db.ListCollectionNames(context.Background(), bson.D{})
		if err != nil || len(names) != 0 {
			t.Errorf("%v left collections behind: %v %v", args, names, err)
		}
	}
}

func lockOf(t *testing.T, coll *mongo.Collection, id any) any {
	t.Helper()
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
	return startCommandStderr(t, os.Stderr, args...)
}

// startCommandStderr is startCommand with the command's stderr going to w.
func startCommandStderr(t *testing.T, w io.Writer, args ...string) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), childCommandEnv+"=1")
	cmd.Stderr = w
	cmd.WaitDelay = 10 * time.Second // a grandchild that keeps stderr open cannot hold Wait
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

func TestDevServer(t *testing.T) {
	cmd, out := startCommand(t, "dev-server", "-listen", "127.0.0.1:0")
	line, err := readLine(t, cmd, out, "dev-server to print its URI")
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
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := waitCmd(t, cmd, "dev-server to stop on SIGINT"); err != nil {
		t.Fatalf("dev-server did not stop cleanly on SIGINT: %v", err)
	}
}
