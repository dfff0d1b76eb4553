//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package main

import (
	"os"
	"os/signal"
	"syscall"
	"unsafe"
)

// foregroundTerminal returns stdin's descriptor and whether it is a terminal
// whose foreground process group is exec's.
func foregroundTerminal() (tty int, ok bool) {
	tty = int(os.Stdin.Fd())
	var pgrp int32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(tty), uintptr(syscall.TIOCGPGRP), uintptr(unsafe.Pointer(&pgrp))); errno != 0 {
		return tty, false
	}
	return tty, int(pgrp) == syscall.Getpgrp()
}

// takeTerminal makes exec's process group the terminal's foreground group
// again.
func takeTerminal(tty int) { giveTerminal(tty, syscall.Getpgrp()) }

// giveTerminal makes process group pgrp the terminal's foreground group.
// exec may be in the background when it does, where the kernel would stop
// it for trying: SIGTTOU is ignored meanwhile.
func giveTerminal(tty, pgrp int) {
	signal.Ignore(syscall.SIGTTOU)
	defer signal.Reset(syscall.SIGTTOU)
	p := int32(pgrp)
	_, _, _ = syscall.Syscall(syscall.SYS_IOCTL, uintptr(tty), uintptr(syscall.TIOCSPGRP), uintptr(unsafe.Pointer(&p)))
}
