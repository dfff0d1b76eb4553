package testserver

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// URIEnv names the variable that points tests at a real MongoDB.
const URIEnv = "MONGODB_URI"

// helperEnv marks the helper process that serves the embedded server for a
// test binary.
const helperEnv = "MONGOLOCK_TESTSERVER_HELPER"

// ForTests returns the server the tests run against: MONGODB_URI when set
// (embedded is then false), otherwise an embedded server in a helper process,
// a copy of the test binary, so that the server's goroutines and allocations
// stay out of the tests' leak checks and benchmarks. The test binary's
// TestMain must call ServeIfHelper first. stop ends what was started.
func ForTests() (uri string, embedded bool, stop func() error, err error) {
	if uri := os.Getenv(URIEnv); uri != "" {
		return uri, false, func() error { return nil }, nil
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return "", false, nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", false, nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", false, nil, err
	}
	line, err := readLine(out, helperDeadline)
	if err != nil || !strings.HasPrefix(line, "mongodb://") {
		in.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return "", false, nil, fmt.Errorf("testserver: waiting for the helper process to print the server's URI: it said %q: %v", line, err)
	}
	stop = func() error {
		in.Close() // the helper stops at end of input
		return waitExit(cmd, helperDeadline)
	}
	return strings.TrimSpace(line), true, stop, nil
}

// helperDeadline bounds each wait on the helper process (its start, its
// stop), so that a helper that hangs fails the test binary saying so rather
// than running into go test's -timeout. A bound, not a timing claim.
const helperDeadline = 2 * time.Minute

// readLine reads a line from r, or gives up after d.
func readLine(r io.Reader, d time.Duration) (string, error) {
	type read struct {
		line string
		err  error
	}
	c := make(chan read, 1)
	go func() {
		line, err := bufio.NewReader(r).ReadString('\n')
		c <- read{line, err}
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case r := <-c:
		return r.line, r.err
	case <-t.C:
		return "", fmt.Errorf("nothing within %v", d)
	}
}

// waitExit waits for cmd to exit; after d it kills it and says so.
func waitExit(cmd *exec.Cmd, d time.Duration) error {
	c := make(chan error, 1)
	go func() { c <- cmd.Wait() }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-c:
		return err
	case <-t.C:
		_ = cmd.Process.Kill()
		<-c
		return fmt.Errorf("testserver: waiting for the helper process to stop: still running after %v; killed it", d)
	}
}

// ServeIfHelper makes the helper process started by ForTests serve: it prints
// the server's URI, serves until its standard input ends, and exits. In any
// other process it returns at once.
func ServeIfHelper() {
	if os.Getenv(helperEnv) != "1" {
		return
	}
	s, err := Start(Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(s.URI())
	_, _ = io.Copy(io.Discard, os.Stdin)
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}
