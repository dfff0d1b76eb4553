package main

import "syscall"

// childAttr puts the command in a process group of its own and has the
// kernel kill it with SIGKILL when exec dies, however it dies (kill -9
// included), so that it never runs without the lock.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// childGuarantee says, in exec's help, what becomes of the command when exec
// dies.
const childGuarantee = `If exec itself dies, even by SIGKILL, the kernel sends SIGKILL to the
command (Linux's parent-death signal), so it never runs on without the
lock. The kernel does not pass that on: processes the command started
(a shell script's commands, in the foreground or not) are not covered
when exec dies by SIGKILL. Run the program itself, or end the script with
"exec program", so that the command is the process doing the work.`
