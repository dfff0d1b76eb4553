package main

import (
	"bufio"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cmdDeadline bounds every wait on a command a test started, so that a
// command that hangs fails its test saying what was awaited instead of
// running into go test's -timeout. It is a bound against hanging, not a
// timing claim.
const cmdDeadline = 2 * time.Minute

// readLine reads the next line cmd prints on out. When none comes within
// cmdDeadline, it aborts cmd and fails the test naming what it waited for.
func readLine(t *testing.T, cmd *exec.Cmd, out *bufio.Reader, what string) (string, error) {
	t.Helper()
	type read struct {
		line string
		err  error
	}
	c := make(chan read, 1)
	go func() {
		line, err := out.ReadString('\n')
		c <- read{line, err}
	}()
	timer := time.NewTimer(cmdDeadline)
	defer timer.Stop()
	select {
	case r := <-c:
		return r.line, r.err
	case <-timer.C:
		stderr, err := abort(cmd, nil)
		t.Fatalf("gave up after %v waiting for %s: the command (%s) printed no line; aborted it: %v\nits stderr, with its goroutines:\n%s",
			cmdDeadline, what, strings.Join(cmd.Args, " "), err, stderr)
		return "", nil
	}
}

// waitCmd waits for cmd to exit. When it has not within cmdDeadline, it
// aborts cmd and fails the test naming what it waited for.
func waitCmd(t *testing.T, cmd *exec.Cmd, what string) error {
	t.Helper()
	c := make(chan error, 1)
	go func() { c <- cmd.Wait() }()
	timer := time.NewTimer(cmdDeadline)
	defer timer.Stop()
	select {
	case err := <-c:
		return err
	case <-timer.C:
		stderr, err := abort(cmd, c)
		t.Fatalf("gave up after %v waiting for %s: the command (%s) was still running; aborted it: %v\nits stderr, with its goroutines:\n%s",
			cmdDeadline, what, strings.Join(cmd.Args, " "), err, stderr)
		return nil
	}
}

// runCmdDeadline bounds runCmd, which runs the command in this process:
// a run that hangs panics with what it was running, the stack of every
// goroutine showing where, rather than waiting for go test's -timeout.
const runCmdDeadline = 3 * time.Minute

func runWithDeadline(args []string, run func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		run()
	}()
	timer := time.NewTimer(runCmdDeadline)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		panic(fmt.Sprintf("gave up after %v waiting for the in-process command mongolock %s to return", runCmdDeadline, strings.Join(args, " ")))
	}
}

// abort ends cmd with SIGABRT, which makes a Go process print every
// goroutine's stack on its stderr before it dies, so that a test that gave
// up shows where the command hung; it kills cmd if that does not end it. It
// returns the command's stderr when the test captured it, and Wait's error
// (from waited, when a goroutine already waits).
func abort(cmd *exec.Cmd, waited <-chan error) (string, error) {
	if waited == nil {
		c := make(chan error, 1)
		go func() { c <- cmd.Wait() }()
		waited = c
	}
	_ = cmd.Process.Signal(syscall.SIGABRT)
	var err error
	select {
	case err = <-waited:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		err = <-waited // WaitDelay bounds this once the process is gone
	}
	stderr := "(on the test's stderr)"
	if s, ok := cmd.Stderr.(fmt.Stringer); ok {
		stderr = s.String()
	}
	return stderr, err
}
