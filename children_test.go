package mongolock_test

import (
	"bytes"
	"os/exec"
	"testing"
	"time"
)

// A child is a process a test started. Every wait on one has a deadline: on
// expiry the child is killed and the test fails saying what it was waiting
// for, with what the child wrote.
type child struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	done           chan error
}

// spawn starts cmd, collecting its output, and kills it when the test
// ends if it is still running.
func spawn(t testing.TB, cmd *exec.Cmd) *child {
	t.Helper()
	c := &child{cmd: cmd, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = &c.stdout, &c.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if err, ok := <-c.done; ok {
			c.done <- err
		}
	})
	return c
}

// wait waits for the child to exit successfully within timeout.
func (c *child) wait(t testing.TB, timeout time.Duration, what string) {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err := <-c.done:
		c.done <- err
		if err != nil {
			t.Fatalf("waiting for %s: %v\nstdout:\n%s\nstderr:\n%s", what, err, tail(c.stdout.Bytes()), tail(c.stderr.Bytes()))
		}
	case <-timer.C:
		_ = c.cmd.Process.Kill()
		err := <-c.done
		c.done <- err
		t.Fatalf("gave up after %v waiting for %s (killed: %v)\nstdout:\n%s\nstderr:\n%s", timeout, what, err, tail(c.stdout.Bytes()), tail(c.stderr.Bytes()))
	}
}

// tail is the end of a child's output, enough to see why it stopped.
func tail(b []byte) []byte {
	const keep = 8 << 10
	if len(b) > keep {
		return append([]byte("...\n"), b[len(b)-keep:]...)
	}
	return b
}
