package testserver

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// URIEnv names the variable that points tests at a real MongoDB.
const URIEnv = "MONGODB_URI"

// The helper process's environment: helperEnv marks it, the others carry
// Options.
const (
	helperEnv       = "MONGOLOCK_TESTSERVER_HELPER"
	helperListenEnv = "MONGOLOCK_TESTSERVER_LISTEN"
	helperDataEnv   = "MONGOLOCK_TESTSERVER_DATA"
	helperRawEnv    = "MONGOLOCK_TESTSERVER_RAW"
)

// ForTests returns the server the tests run against: MONGODB_URI when set
// (embedded is then false), otherwise an embedded server in a helper process
// (StartProcess), so that the server's goroutines and allocations stay out of
// the tests' leak checks and benchmarks, and the race detector's cost out of
// the server. The test binary's TestMain must call ServeIfHelper first. stop
// ends what was started.
func ForTests() (uri string, embedded bool, stop func() error, err error) {
	if uri := os.Getenv(URIEnv); uri != "" {
		return uri, false, func() error { return nil }, nil
	}
	p, err := StartProcess(Options{})
	if err != nil {
		return "", false, nil, err
	}
	stop = func() error {
		err := p.Close()
		removeHelper()
		return err
	}
	return p.URI(), true, stop, nil
}

// Process is an embedded server in a helper process.
type Process struct {
	uri string
	cmd *exec.Cmd
	in  io.WriteCloser
}

// StartProcess runs the embedded server (Start with opts; opts.Logger is not
// passed on) in a helper process and returns once it serves. The helper is
// built once per test binary without the race detector: the server is not
// the code under test, and under -race it runs several times slower, which
// made the tests' own work the smaller part of a run. Where no go command is
// at hand, the helper is a copy of the test binary, whose TestMain must call
// ServeIfHelper first.
func StartProcess(opts Options) (*Process, error) {
	bin, args := helperCommand()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), helperEnv+"=1", helperListenEnv+"="+opts.Listen, helperDataEnv+"="+opts.DataDir)
	if opts.Raw {
		cmd.Env = append(cmd.Env, helperRawEnv+"=1")
	}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("testserver: starting the helper process: %w", err)
	}
	line, err := readLine(out, helperDeadline)
	if err != nil || !strings.HasPrefix(line, "mongodb://") {
		in.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("testserver: waiting for the helper process to print the server's URI: it said %q: %v", line, err)
	}
	return &Process{uri: strings.TrimSpace(line), cmd: cmd, in: in}, nil
}

// URI is the server's mongodb:// address.
func (p *Process) URI() string { return p.uri }

// Addr is the server's host:port, to restart on (Options.Listen) or to put
// a proxy in front of.
func (p *Process) Addr() string {
	host, _ := hostOf(p.uri)
	return host
}

// Close stops the helper process (it stops at the end of its input) and
// waits for it to exit.
func (p *Process) Close() error {
	p.in.Close()
	return waitExit(p.cmd, helperDeadline)
}

var helper struct {
	sync.Mutex
	dir, bin string // the built helper, while it exists
}

// helperCommand is the program that serves: the helper built without the
// race detector, or this test binary when it cannot be built.
func helperCommand() (string, []string) {
	helper.Lock()
	defer helper.Unlock()
	if helper.bin != "" {
		return helper.bin, nil
	}
	dir, err := os.MkdirTemp("", "mongolock-testserver-")
	if err == nil {
		bin := filepath.Join(dir, "helper")
		// go test puts its own go command first in PATH.
		build := exec.Command("go", "build", "-o", bin, "github.com/mongolock/mongolock/internal/testserver/helper")
		var out []byte
		if out, err = combinedOutputWithin(build, buildDeadline); err == nil {
			helper.dir, helper.bin = dir, bin
			return bin, nil
		}
		os.RemoveAll(dir)
		err = fmt.Errorf("%v\n%s", err, out)
	}
	fmt.Fprintf(os.Stderr, "testserver: the server runs in a copy of the test binary (slower under -race): building the helper failed: %v\n", err)
	return os.Args[0], []string{"-test.run=^$"}
}

// removeHelper removes the built helper.
func removeHelper() {
	helper.Lock()
	defer helper.Unlock()
	if helper.dir != "" {
		os.RemoveAll(helper.dir)
	}
	helper.dir, helper.bin = "", ""
}

// helperDeadline bounds each wait on the helper process (its start, its
// stop), so that a helper that hangs fails the test binary saying so rather
// than running into go test's -timeout. A bound, not a timing claim.
const helperDeadline = 2 * time.Minute

// buildDeadline bounds the helper's build: a cold build compiles FerretDB
// and SQLite (go vet has usually compiled them already).
const buildDeadline = 10 * time.Minute

// combinedOutputWithin runs cmd and returns its output; after d it kills it.
func combinedOutputWithin(cmd *exec.Cmd, d time.Duration) ([]byte, error) {
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	if err := waitExit(cmd, d); err != nil {
		return []byte(out.String()), err
	}
	return []byte(out.String()), nil
}

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
		return fmt.Errorf("testserver: waiting for %s to stop: still running after %v; killed it", filepath.Base(cmd.Path), d)
	}
}

// ServeIfHelper makes a helper process started by StartProcess serve: it
// prints the server's URI, serves until its standard input ends, and exits.
// In any other process it returns at once.
func ServeIfHelper() {
	if os.Getenv(helperEnv) != "1" {
		return
	}
	s, err := Start(Options{
		Listen:  os.Getenv(helperListenEnv),
		DataDir: os.Getenv(helperDataEnv),
		Raw:     os.Getenv(helperRawEnv) == "1",
	})
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
