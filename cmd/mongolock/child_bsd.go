//go:build unix && !linux

package main

import "syscall"

// childAttr puts the command in a process group of its own. This system has
// no parent-death signal: see childGuarantee.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// childGuarantee says, in exec's help, what becomes of the command when exec
// dies.
const childGuarantee = `On this system (not Linux) the command is not ended when exec itself dies
by SIGKILL: it runs on without the lock, and once the lease runs out
another holder may take the document. Stop exec with SIGTERM or SIGINT,
which it passes on and then releases the lock.`
