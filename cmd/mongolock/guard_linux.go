package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
)

// On Linux, exec runs its command under a guard: this program again, as the
// hidden command exec-guard, leader of the process group the command runs
// in. The kernel's parent-death signal reaches only the process exec
// started, not what that process starts in turn (a shell script's
// commands). The guard gets that signal (guardDeathSignal, which it can
// catch) when exec dies in any way, kill -9 included, and then kills the
// whole group: nothing the command started runs on without the lock.

// guardDeathSignal is what the kernel sends the guard when exec dies; exec
// never forwards it.
const guardDeathSignal = syscall.SIGUSR2

// childAttr starts the guard as the leader of a process group of its own,
// told of exec's death by guardDeathSignal.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: guardDeathSignal}
}

// childCommand is the command exec starts for argv: the guard, which runs
// argv. argv[0] is looked up here, so that a command that cannot be found is
// exec's own error, as without the guard.
func childCommand(argv []string) (*exec.Cmd, error) {
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, append([]string{"exec-guard", "--", path}, argv[1:]...)...)
	cmd.Env = append(os.Environ(), childCommandEnv+"=1") // a test binary runs as the command
	return cmd, nil
}

// runExecGuard is the guard: it runs its arguments after "--" in its own
// process group and exits as they do (128+N when signal N ended them). The
// signals exec forwards reach the whole group, the command included; the
// guard only outlives them. On guardDeathSignal it kills the group; on
// Ctrl-Z it stops exec as well as the command.
func runExecGuard(_ context.Context, args []string, _, stderr io.Writer) int {
	if len(args) < 2 || args[0] != "--" {
		fmt.Fprintln(stderr, "mongolock exec-guard: usage: exec-guard -- command [args]")
		return exitUsage
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, append(slices.Clone(forwarded), guardDeathSignal, syscall.SIGTSTP)...)
	defer signal.Stop(sigs)
	if os.Getppid() == 1 { // exec died before the guard could hear of it
		_ = syscall.Kill(0, syscall.SIGKILL)
	}
	cmd := exec.Command(args[1], args[2:]...)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, childCommandEnv+"=") })
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "mongolock exec: cannot run %s: %v\n", args[1], err)
		return exitCannotRun
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	for {
		select {
		case s := <-sigs:
			switch s {
			case guardDeathSignal:
				_ = syscall.Kill(0, syscall.SIGKILL) // the group, the guard included
			case syscall.SIGTSTP:
				// Ctrl-Z stopped the command, in the terminal's foreground
				// group, but not exec, which waits in its own: stop exec
				// too, so that the shell gets the terminal back. exec
				// resumes the command when it is continued (fg).
				_ = syscall.Kill(os.Getppid(), syscall.SIGTSTP)
			}
		case <-done:
			return exitCode(cmd)
		}
	}
}
