//go:build unix

package main

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"syscall"
)

// startChild starts cmd in a process group of its own, so that signals
// reach the children it starts too, and returns a channel that receives
// cmd.Wait's result. When exec's stdin is the terminal and exec runs in its
// foreground, the group takes the terminal while the command runs (so that
// it may read it and Ctrl-C reaches it) and exec takes it back afterwards.
func startChild(cmd *exec.Cmd) (<-chan error, error) {
	tty, fg := foregroundTerminal()
	cmd.SysProcAttr = childAttr()
	if fg {
		cmd.SysProcAttr.Foreground, cmd.SysProcAttr.Ctty = true, tty
	}
	started := make(chan error, 1)
	done := make(chan error, 1)
	go func() {
		// The kernel's parent-death signal (Linux) follows the thread that
		// started the child, not the process: keep this thread until the
		// child is gone.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		err := cmd.Wait()
		if fg {
			takeTerminal(tty)
		}
		done <- err
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return done, nil
}

// resumed are the signals after which exec resumes its command: SIGCONT,
// when exec itself was stopped (Ctrl-Z) and is continued (fg).
var resumed = []os.Signal{syscall.SIGCONT}

// resumeChild continues the command's process group after exec was
// continued, and hands it the terminal back when exec has it (a shell's fg
// gives the terminal to exec's group).
func resumeChild(cmd *exec.Cmd) {
	if tty, fg := foregroundTerminal(); fg {
		giveTerminal(tty, cmd.Process.Pid)
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGCONT)
}

// signalChild sends sig to the command's process group.
func signalChild(cmd *exec.Cmd, sig os.Signal) {
	s, ok := sig.(syscall.Signal)
	if !ok || syscall.Kill(-cmd.Process.Pid, s) != nil {
		_ = cmd.Process.Signal(sig)
	}
}

// processExists reports whether a process with this pid runs on this host
// (kill(pid, 0): ESRCH means none; EPERM means one that is not ours).
func processExists(pid int) (bool, error) {
	err := syscall.Kill(pid, 0)
	switch {
	case err == nil, errors.Is(err, syscall.EPERM):
		return true, nil
	case errors.Is(err, syscall.ESRCH):
		return false, nil
	}
	return false, err
}
