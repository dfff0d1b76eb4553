package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mongolock/mongolock"
)

// Environment of the command that exec runs.
const (
	envLockID     = "MONGOLOCK_LOCK_ID"
	envDocumentID = "MONGOLOCK_DOCUMENT_ID"
)

func runExec(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("exec", stderr)
	var c conn
	c.register(fs)
	filter := fs.String("filter", "", "Extended JSON `filter` of the document to lock (required)")
	lease := fs.Duration("lease", 30*time.Second, "lease of the lock, renewed every third of it while the command runs")
	if ok, code := parse(fs, args); !ok {
		return code
	}
	if *filter == "" {
		return usageError(stderr, fs, "-filter is required")
	}
	f, err := parseFilter(*filter)
	if err != nil {
		return usageError(stderr, fs, "%v", err)
	}
	if *lease <= 0 {
		return usageError(stderr, fs, "-lease must be positive")
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return usageError(stderr, fs, "no command given: mongolock exec -filter F -- command [args]")
	}
	client, err := c.connect(ctx)
	if err != nil {
		return fail(stderr, "exec", err)
	}
	defer client.Disconnect(context.Background())

	// Signals abort the wait for the lock; once the command runs they are
	// passed to it, and the lock is released when it ends.
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
	lk := mongolock.New(c.coll(client), mongolock.WithLease(*lease), mongolock.WithMaxWait(c.timeout))
	err = lk.Do(holdCtx, f, func(lockCtx context.Context, l *mongolock.Lock) error {
		running.Store(true)
		if ctx.Err() != nil { // interrupted just as the lock was taken
			return ctx.Err()
		}
		var err error
		code, err = runHeld(lockCtx, l, argv, stdout, stderr)
		return err
	})
	switch {
	case err == nil:
		return code
	case errors.Is(err, mongolock.ErrLockLost):
		fmt.Fprintf(stderr, "mongolock exec: %s\n", oneLine(err))
		if code == exitOK {
			code = exitFail
		}
		return code
	case errors.Is(err, mongolock.ErrNotFound):
		return fail(stderr, "exec", fmt.Errorf("no document matches -filter %s", *filter))
	default:
		return fail(stderr, "exec", err)
	}
}

// runHeld runs the command while the lock is held and returns its exit code.
// SIGINT and SIGTERM are passed on; when the lock is lost the command gets
// SIGTERM.
func runHeld(lockCtx context.Context, l *mongolock.Lock, argv []string, stdout, stderr io.Writer) (int, error) {
	var docID any
	_ = l.Document().Lookup("_id").Unmarshal(&docID)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), envLockID+"="+l.ID(), envDocumentID+"="+idString(docID))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return exitFail, fmt.Errorf("starting %s: %w", argv[0], err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	lost := lockCtx.Done()
	for {
		select {
		case s := <-sigs:
			_ = cmd.Process.Signal(s)
		case <-lost:
			lost = nil
			fmt.Fprintf(stderr, "mongolock exec: %v; stopping %s\n", context.Cause(lockCtx), argv[0])
			_ = cmd.Process.Signal(syscall.SIGTERM)
		case <-done:
			return exitCode(cmd), nil
		}
	}
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
