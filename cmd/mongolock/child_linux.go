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
lock. Processes the command started in the background are not covered:
have it wait for them (or end with exec in a shell script).`
