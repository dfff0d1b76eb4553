package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestDemoFigures: p50 and p99 by nearest rank, and a worker process's
// samples read back whole by the parent.
func TestDemoFigures(t *testing.T) {
	var child demoFigures
	for i := 1; i <= 100; i++ {
		child.add("hold", time.Duration(i)*time.Millisecond)
		child.add("acquire", time.Duration(i)*time.Microsecond)
	}
	child.add("wait", 0)
	var lines bytes.Buffer
	child.write(&lines)
	var parent demoFigures
	parent.add("hold", 500*time.Millisecond) // the parent's own
	for _, l := range strings.Split(strings.TrimSpace(lines.String()), "\n") {
		k, v, _ := strings.Cut(l, "=")
		var n int64
		for _, c := range v {
			n = n*10 + int64(c-'0')
		}
		if !parent.read(k, n) {
			t.Fatalf("line %q not read", l)
		}
	}
	if parent.read("waits", 3) {
		t.Error("read a line that is not a figure")
	}
	var out bytes.Buffer
	parent.print(&out)
	for _, want := range []string{
		"lock wait p50/p99:      0s / 0s",
		"lock write p50/p99:     51µs / 100µs",
		"lock hold p50/p99:      51ms / 100ms  (101 holds)\n", // the parent's and the child's: rank 50 is 51ms, rank 99 is 100ms
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in:\n%s", want, out.String())
		}
	}
	var empty demoFigures
	out.Reset()
	empty.print(&out)
	if !strings.Contains(out.String(), "lock hold p50/p99:      none") {
		t.Errorf("no samples:\n%s", out.String())
	}
}

// TestDemoPrintsFigures: the demo's summary has the figures, from both of
// its processes.
func TestDemoPrintsFigures(t *testing.T) {
	t.Setenv(childCommandEnv, "1") // for the worker process
	code, stdout, stderr := runCmd("demo", "-uri", serverURI, "-jobs", "20", "-workers", "2", "-procs", "2", "-work", "5ms")
	if code != exitOK {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	// Every job's one step, locked and released in one process or the other.
	for _, want := range []string{"lock wait p50/p99:      0s / 0s  (20 waits", "lock write p50/p99:", "(20 round trips", "(20 holds)"} {
		if !strings.Contains(stdout, want) || strings.Contains(stdout, "none") {
			t.Errorf("summary lacks %q:\n%s", want, stdout)
		}
	}
}
