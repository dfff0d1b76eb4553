package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/mongolock/mongolock"
)

func TestExecPassesExitCodeAndEnvironment(t *testing.T) {
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
}

func TestExecObjectIDEnvironment(t *testing.T) {
	coll, flags := newJobs(t, 0)
	oid := bson.NewObjectID()
	if _, err := coll.InsertOne(context.Background(), bson.D{{Key: "_id", Value: oid}}); err != nil {
		t.Fatal(err)
	}
	envFile := t.TempDir() + "/env"
	args := append(append([]string{"exec", "-filter", `{"_id": {"$oid": "` + oid.Hex() + `"}}`}, flags...),
		"--", "sh", "-c", fmt.Sprintf(`printf %%s "$%s" > %s`, envDocumentID, envFile))
	if code, out, errOut := runCmd(args...); code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	env, err := os.ReadFile(envFile)
	if want := `{"$oid":"` + oid.Hex() + `"}`; err != nil || string(env) != want {
		t.Errorf("%s = %q, %v; want %s", envDocumentID, env, err, want)
	}
}

func TestExecReleasesOnSignal(t *testing.T) {
	coll, flags := newJobs(t, 1)
	script := `trap 'exit 3' TERM; echo ready; while :; do sleep 0.05; done`
	cmd, out := startCommand(t, append(append([]string{"exec", "-filter", `{"_id": "job1"}`}, flags...), "--", "sh", "-c", script)...)
	if line, err := readLine(t, cmd, out, "the command to say ready"); err != nil || line != "ready\n" {
		t.Fatalf("child said %q, %v", line, err)
	}
	if lockOf(t, coll, "job1") == nil {
		t.Fatal("document not locked while the command runs")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := waitCmd(t, cmd, "exec to exit after SIGTERM")
	if code := cmd.ProcessState.ExitCode(); code != 3 {
		t.Fatalf("exit %d (%v), want the command's 3 after it got SIGTERM", code, err)
	}
	if doc := lockOf(t, coll, "job1"); doc != nil {
		t.Errorf("lock left after a signal: %v", doc)
	}
}

// TestExecStopsTheCommandWhenTheLockIsLost: an unlock while the command
// runs gets it SIGTERM, and exec says why.
func TestExecStopsTheCommandWhenTheLockIsLost(t *testing.T) {
	coll, flags := newJobs(t, 1)
	script := `trap 'exit 4' TERM; echo ready; while :; do sleep 0.05; done`
	var errOut strings.Builder
	cmd, out := startCommandStderr(t, &errOut, append(append([]string{"exec", "-filter", `{"_id": "job1"}`, "-lease", "300ms"}, flags...), "--", "sh", "-c", script)...)
	if line, err := readLine(t, cmd, out, "the command to say ready"); err != nil || line != "ready\n" {
		t.Fatalf("child said %q, %v", line, err)
	}
	// The lease is refreshed every 100 ms: the unlock must clear it all the
	// same, or exec would run on.
	if code, stdout, stderr := runCmd(append([]string{"unlock", "-all", "-yes"}, flags...)...); code != exitOK || !strings.Contains(stdout, "unlocked 1 document") {
		t.Fatalf("unlock: exit %d\n%s%s", code, stdout, stderr)
	}
	_ = waitCmd(t, cmd, "exec to exit after the unlock")
	if code := cmd.ProcessState.ExitCode(); code != 4 {
		t.Errorf("exit %d, want the command's 4 after its SIGTERM\n%s", code, errOut.String())
	}
	if !strings.Contains(errOut.String(), mongolock.ErrLockLost.Error()) || !strings.Contains(errOut.String(), "stopping sh (SIGTERM") {
		t.Errorf("exec does not say the lock was lost:\n%s", errOut.String())
	}
	if doc := lockOf(t, coll, "job1"); doc != nil {
		t.Errorf("lock after unlock: %v", doc)
	}
}
