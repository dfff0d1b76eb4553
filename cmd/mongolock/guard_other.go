//go:build !linux

package main

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"runtime"
)

// childCommand is the command exec starts for argv. Only Linux has the
// parent-death signal that exec's guard needs, so elsewhere it is argv
// itself: see childGuarantee.
func childCommand(argv []string) (*exec.Cmd, error) {
	return exec.Command(argv[0], argv[1:]...), nil
}

// runExecGuard exists on Linux only.
func runExecGuard(_ context.Context, _ []string, _, stderr io.Writer) int {
	fmt.Fprintf(stderr, "mongolock exec-guard: not used on %s\n", runtime.GOOS)
	return exitUsage
}
