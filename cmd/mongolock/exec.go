package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/mongolock/mongolock"
)

// Environment of the command that exec runs.
const (
	envLockID     = "MONGOLOCK_LOCK_ID"
	envDocumentID = "MONGOLOCK_DOCUMENT_ID"
)

// Exit codes of exec when its command cannot be started, as shells have them.
const (
	exitCannotRun = 126 // found but not executable
	exitNotFound  = 127
)

// forwarded are the signals exec passes on to its command.
var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT}

type execFlags struct {
	conn
	filter    filterFlag
	lease     time.Duration
	killAfter time.Duration
}

func runExec(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("exec", stderr)
	var f execFlags
	f.register(fs)
	fs.Lookup("timeout").Usage = "how long to wait for the server, and for the lock (must be positive)"
	fs.Var(&f.filter, "filter", "Extended JSON `document` that picks the document to lock (required)")
	fs.DurationVar(&f.lease, "lease", 30*time.Second, "the lock's lease, renewed every third of it while the command runs")
	fs.DurationVar(&f.killAfter, "kill-after", 10*time.Second, "when the lock is lost, SIGKILL the command this long after its SIGTERM")
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	argv, err := commandArgs(fs, args)
	switch {
	case err != nil:
		return usageError(stderr, fs, "%v", err)
	case !f.filter.set:
		return usageError(stderr, fs, "-filter is required: mongolock exec -filter F -- command [args]")
	case f.lease <= 0:
		return usageError(stderr, fs, "-lease must be positive, not %v", f.lease)
	case f.killAfter <= 0:
		return usageError(stderr, fs, "-kill-after must be positive, not %v", f.killAfter)
	}
	client, code := f.connectOrFail(ctx, "exec", stderr)
	if client == nil {
		return code
	}
	defer client.Disconnect(context.Background())
	return holdAndRun(ctx, &f, f.coll(client), argv, stdout, stderr)
}

// commandArgs is the command after "--", which must be there: without it a
// stray word would be run as a command.
func commandArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	rest := fs.Args()
	if len(rest) == 0 {
		return nil, errors.New("no command given: mongolock exec -filter F -- command [args]")
	}
	if used := len(args) - len(rest); used == 0 || args[used-1] != "--" {
		return nil, fmt.Errorf("unexpected arguments %s: put -- before the command: mongolock exec -filter F -- command [args]", quoteAll(rest))
	}
	return rest, nil
}

// startError is a command that could not be started.
type startError struct {
	code int
	err  error
}

func (e *startError) Error() string { return e.err.Error() }
func (e *startError) Unwrap() error { return e.err }

// holdAndRun locks the document and runs argv while it holds the lock.
// Signals abort the wait for the lock; once the command runs they are passed
// to it, and the lock is released when it ends.
func holdAndRun(ctx context.Context, f *execFlags, coll *mongo.Collection, argv []string, stdout, stderr io.Writer) int {
	var running atomic.Bool
	holdCtx, abort := context.WithCancel(context.WithoutCancel(ctx))
	defer abort()
	stop := context.AfterFunc(ctx, func() {
		if !running.Load() {
			abort()
		}
	})
	defer stop()

	code := exitFail
	lk := mongolock.New(coll, mongolock.WithLease(f.lease), mongolock.WithMaxWait(f.timeout))
	err := lk.Do(holdCtx, f.filter.doc, func(lockCtx context.Context, l *mongolock.Lock) error {
		running.Store(true)
		var err error
		code, err = runHeld(ctx, lockCtx, l, argv, f.killAfter, stdout, stderr)
		return err
	})
	var se *startError
	switch {
	case err == nil:
		return code
	case errors.As(err, &se):
		fmt.Fprintf(stderr, "mongolock exec: %s\n", oneLine(se))
		return se.code
	case errors.Is(err, mongolock.ErrLockLost):
		fmt.Fprintf(stderr, "mongolock exec: %s\n", oneLine(err))
		if code == exitOK { // the work may have been done twice: not a success
			code = exitFail
		}
		return code
	case errors.Is(err, mongolock.ErrNotFound):
		return fail(stderr, "exec", fmt.Errorf("no document matches -filter %s", f.filter.raw))
	case errors.Is(err, mongolock.ErrLocked) && errors.Is(err, context.DeadlineExceeded):
		var held *mongolock.LockedDocumentError
		if errors.As(err, &held) {
			err = held
		}
		fmt.Fprintf(stderr, "mongolock exec: lock not obtained within -timeout %v: %s\n", f.timeout, oneLine(err))
		return exitLockTimeout
	case errors.Is(err, context.Canceled) && ctx.Err() != nil: // a signal before the command ran
		return fail(stderr, "exec", errors.New("interrupted; the command did not run"))
	default:
		return fail(stderr, "exec", err)
	}
}

// runHeld runs the command while the lock is held and returns its exit code.
// Forwarded signals go to the command's process group; when the lock is lost
// the group gets SIGTERM, and SIGKILL killAfter later.
func runHeld(ctx, lockCtx context.Context, l *mongolock.Lock, argv []string, killAfter time.Duration, stdout, stderr io.Writer) (int, error) {
	var docID any
	_ = l.Document().Lookup("_id").Unmarshal(&docID)
	cmd, err := childCommand(argv)
	if err != nil {
		return exitFail, startFailure(argv[0], err)
	}
	cmd.Env = append(cmd.Environ(), envLockID+"="+l.ID(), envDocumentID+"="+idEnv(docID))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	cmd.WaitDelay = time.Second // a background grandchild holding our pipes does not hold exec

	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)
	conts := make(chan os.Signal, 1)
	if len(resumed) > 0 {
		signal.Notify(conts, resumed...)
		defer signal.Stop(conts)
	}
	if ctx.Err() != nil { // interrupted just as the lock was taken: run nothing
		return exitFail, ctx.Err()
	}
	done, err := startChild(cmd)
	if err != nil {
		return exitFail, startFailure(argv[0], err)
	}
	lost := lockCtx.Done()
	var kill <-chan time.Time
	for {
		select {
		case s := <-sigs:
			signalChild(cmd, s)
		case <-conts:
			resumeChild(cmd)
		case <-lost:
			lost = nil
			fmt.Fprintf(stderr, "mongolock exec: %v; stopping %s (SIGTERM, SIGKILL after %v)\n", context.Cause(lockCtx), argv[0], killAfter)
			signalChild(cmd, syscall.SIGTERM)
			t := time.NewTimer(killAfter)
			defer t.Stop()
			kill = t.C
		case <-kill:
			kill = nil
			signalChild(cmd, syscall.SIGKILL)
		case <-done:
			return exitCode(cmd), nil
		}
	}
}

// startFailure is the error for a command that did not start, with the exit
// code a shell would give.
func startFailure(name string, err error) error {
	code := exitCannotRun
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
		code = exitNotFound
	}
	return &startError{code: code, err: fmt.Errorf("cannot run %s: %w", name, err)}
}

// exitCode is the command's exit code, or 128+signal when a signal ended it,
// as shells report it.
func exitCode(cmd *exec.Cmd) int {
	if cmd.ProcessState == nil {
		return exitFail
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	if code := cmd.ProcessState.ExitCode(); code >= 0 {
		return code
	}
	return exitFail
}
