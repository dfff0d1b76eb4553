//go:build !unix

package main

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
)

// startChild starts cmd and returns a channel that receives cmd.Wait's
// result. This system has no process groups or parent-death signal as exec
// uses them on Unix: see childGuarantee.
func startChild(cmd *exec.Cmd) (<-chan error, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return done, nil
}

// resumed is empty: this system has no job control signals.
var resumed []os.Signal

func resumeChild(*exec.Cmd) {}

// signalChild passes sig to the command; where the system cannot, it kills it.
func signalChild(cmd *exec.Cmd, sig os.Signal) {
	if cmd.Process.Signal(sig) != nil {
		_ = cmd.Process.Kill()
	}
}

// processExists cannot tell, here, whether a process runs.
func processExists(int) (bool, error) {
	return false, errors.New("not supported on " + runtime.GOOS + ": cannot tell whether a process runs")
}

const childGuarantee = `On this system (not Unix) signals cannot be passed on: a signal to exec
kills the command, and the command is not ended when exec itself is killed:
it runs on without the lock until it ends, and once the lease runs out
another holder may take the document.`
