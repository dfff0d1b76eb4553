package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// procStart is a process's start time (field 22 of /proc/PID/stat), so that
// a reused pid is not taken for the process; "" when the process is gone or
// a zombie.
func procStart(pid int) string {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // after "pid (comm)"
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return ""
	}
	return f[19]
}

// waitGone waits until the process that started at start has ended. It
// polls: the process is not ours to wait for.
func waitGone(t *testing.T, pid int, start, what string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute) // a bound against hanging, not a timing claim
	for procStart(pid) == start {
		if time.Now().After(deadline) {
			t.Fatalf("%s (pid %d) still runs", what, pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readPID reads a line holding a pid from out.
func readPID(t *testing.T, cmd *exec.Cmd, out *bufio.Reader) (int, string) {
	t.Helper()
	line, err := readLine(t, cmd, out, "the command to print a pid")
	pid, perr := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || perr != nil {
		t.Fatalf("the command said %q: %v %v", line, err, perr)
	}
	start := procStart(pid)
	if start == "" {
		t.Fatalf("process %d is not running", pid)
	}
	return pid, start
}

// TestExecCommandDiesWithExec: kill -9 of exec ends its command, which would
// otherwise run on without the lock.
func TestExecCommandDiesWithExec(t *testing.T) {
	_, flags := newJobs(t, 1)
	cmd, out := startCommand(t, append(append([]string{"exec", "-filter", `{"_id": "job1"}`}, flags...),
		"--", "sh", "-c", `echo $$; while :; do sleep 0.05; done`)...)
	pid, start := readPID(t, cmd, out)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = waitCmd(t, cmd, "the killed exec to exit")
	waitGone(t, pid, start, "the command of a killed exec")
}

// TestExecScriptDiesWithExec: kill -9 of exec ends what its command
// started too, in the foreground or not: a script's own commands would
// otherwise run on without the lock, since the kernel's parent-death signal
// reaches only the process exec started.
func TestExecScriptDiesWithExec(t *testing.T) {
	_, flags := newJobs(t, 1)
	script := `sh -c 'echo $$; while :; do sleep 0.05; done' & sh -c 'echo $$; while :; do sleep 0.05; done'`
	cmd, out := startCommand(t, append(append([]string{"exec", "-filter", `{"_id": "job1"}`}, flags...), "--", "sh", "-c", script)...)
	pid1, start1 := readPID(t, cmd, out)
	pid2, start2 := readPID(t, cmd, out)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = waitCmd(t, cmd, "the killed exec to exit")
	waitGone(t, pid1, start1, "a command the script ran")
	waitGone(t, pid2, start2, "a command the script ran")
}

// TestExecSignalsReachTheProcessGroup: a signal to exec reaches the
// processes its command started too.
func TestExecSignalsReachTheProcessGroup(t *testing.T) {
	_, flags := newJobs(t, 1)
	cmd, out := startCommand(t, append(append([]string{"exec", "-filter", `{"_id": "job1"}`}, flags...),
		"--", "sh", "-c", `sleep 1000 & echo $!; wait`)...)
	pid, start := readPID(t, cmd, out)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = waitCmd(t, cmd, "exec to exit after SIGTERM")
	if code := cmd.ProcessState.ExitCode(); code != 128+int(syscall.SIGTERM) {
		t.Errorf("exit %d, want %d for a command ended by SIGTERM", code, 128+int(syscall.SIGTERM))
	}
	waitGone(t, pid, start, "the command's child after SIGTERM to exec")
}

// openPTY opens a pseudo-terminal pair.
func openPTY(t *testing.T) (ptmx, pts *os.File) {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { _ = ptmx.Close() })
	var unlock int32
	var n uint32
	if err := ioctl(ptmx, syscall.TIOCSPTLCK, unsafe.Pointer(&unlock)); err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	if err := ioctl(ptmx, syscall.TIOCGPTN, unsafe.Pointer(&n)); err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	pts, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	return ptmx, pts
}

func ioctl(f *os.File, req uintptr, arg unsafe.Pointer) error {
	c, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno syscall.Errno
	if err := c.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, req, uintptr(arg))
	}); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// screen collects what a terminal shows.
type screen struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	more *sync.Cond
	done bool
}

func watchScreen(r io.Reader) *screen {
	s := &screen{}
	s.more = sync.NewCond(&s.mu)
	go func() {
		b := make([]byte, 1024)
		for {
			n, err := r.Read(b)
			s.mu.Lock()
			s.buf.Write(b[:n])
			s.done = err != nil
			s.more.Broadcast()
			s.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return s
}

// shows reports whether the terminal has shown text.
func (s *screen) shows(text string) bool { return strings.Contains(s.text(), text) }

// text is what the terminal has shown.
func (s *screen) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// waitFor waits until the terminal has shown text.
func (s *screen) waitFor(t *testing.T, text string) {
	t.Helper()
	expired := false
	timer := time.AfterFunc(time.Minute, func() { // a bound against hanging, not a timing claim
		s.mu.Lock()
		expired = true
		s.more.Broadcast()
		s.mu.Unlock()
	})
	defer timer.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for !strings.Contains(s.buf.String(), text) {
		if s.done || expired {
			t.Fatalf("the terminal never showed %q:\n%s", text, s.buf.String())
		}
		s.more.Wait()
	}
}

// TestExecOnATerminal: with stdin a terminal, the command can read it and
// Ctrl-C reaches it; exec then takes the terminal back and releases.
func TestExecOnATerminal(t *testing.T) {
	ptmx, pts := openPTY(t)
	coll, flags := newJobs(t, 1)
	script := `trap 'echo interrupted; exit 5' INT; echo ready; read line; echo "got $line"; while :; do sleep 0.05; done`
	cmd := exec.Command(os.Args[0], append(append([]string{"exec", "-filter", `{"_id": "job1"}`}, flags...), "--", "sh", "-c", script)...)
	cmd.Env = append(os.Environ(), childCommandEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0} // the terminal is exec's
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_ = pts.Close()
	waited := false
	t.Cleanup(func() {
		if !waited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	scr := watchScreen(ptmx)
	scr.waitFor(t, "ready")
	if _, err := ptmx.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	// A command in a background process group would be stopped instead.
	scr.waitFor(t, "got hello")
	if _, err := ptmx.Write([]byte{3}); err != nil { // Ctrl-C
		t.Fatal(err)
	}
	scr.waitFor(t, "interrupted")
	err := waitCmd(t, cmd, "exec to exit after Ctrl-C")
	waited = true
	if code := cmd.ProcessState.ExitCode(); code != 5 {
		t.Errorf("exit %d (%v), want the command's 5", code, err)
	}
	if doc := lockOf(t, coll, "job1"); doc != nil {
		t.Errorf("lock left after Ctrl-C: %v", doc)
	}
}

// TestExecCtrlZ: in an interactive shell, Ctrl-Z stops the command and exec
// with it, so that the shell gets its terminal back (instead of exec waiting
// on a stopped command with the lock held and the terminal lost); fg
// continues exec, which resumes the command on the terminal.
func TestExecCtrlZ(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("needs bash for job control")
	}
	ptmx, pts := openPTY(t)
	_, flags := newJobs(t, 1)
	sh := exec.Command(bash, "--norc", "--noprofile", "-i")
	sh.Env = append(os.Environ(), childCommandEnv+"=1", "PS1=$ ")
	sh.Stdin, sh.Stdout, sh.Stderr = pts, pts, pts
	sh.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	_ = pts.Close()
	t.Cleanup(func() {
		_ = sh.Process.Kill()
		_ = sh.Wait()
	})
	scr := watchScreen(ptmx)
	scr.waitFor(t, "$ ") // bash reads the terminal now
	line := os.Args[0] + " exec -filter '{\"_id\": \"job1\"}' " + strings.Join(flags, " ") +
		` -- sh -c 'echo ready-$((1+1)); read line; echo "got $line"'` + "\n"
	if _, err := ptmx.Write([]byte(line)); err != nil {
		t.Fatal(err)
	}
	scr.waitFor(t, "ready-2") // the command runs (its echo on the terminal says ready-$((1+1)))
	// Ctrl-Z, again while bash is still handing the terminal over at the
	// start of the job (a keystroke then is lost): until bash says Stopped.
	for i := 0; !scr.shows("Stopped"); i++ {
		if i == 60 {
			t.Fatalf("Ctrl-Z never stopped the job:\n%s", scr.text())
		}
		if _, err := ptmx.Write([]byte{26}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if _, err := ptmx.Write([]byte("fg\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := ptmx.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	scr.waitFor(t, "got hello")
}
