//go:build unix && !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package main

// On these systems exec does not hand the terminal to its command: the
// command runs in a background process group and stops if it reads the
// terminal.

func foregroundTerminal() (int, bool) { return 0, false }

func takeTerminal(int) {}

func giveTerminal(int, int) {}
