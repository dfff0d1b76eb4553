package main

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The demo with failing steps: retries, back-off and give-ups, and still
// no job processed twice.

// summaryNumber reads the first number after label in the demo's summary.
func summaryNumber(t *testing.T, stdout, label string) int {
	t.Helper()
	m := regexp.MustCompile(regexp.QuoteMeta(label) + `\s+(\d+)`).FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("summary lacks %q:\n%s", label, stdout)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func TestDemoFailures(t *testing.T) {
	for _, procs := range []string{"1", "2"} {
		t.Run("procs="+procs, func(t *testing.T) {
			t.Setenv(childCommandEnv, "1") // for the worker processes
			code, stdout, stderr := runCmd("demo", "-uri", serverURI, "-jobs", "40", "-workers", "4", "-procs", procs, "-work", "2ms", "-fail", "0.5")
			if code != exitOK {
				t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
			}
			for _, want := range []string{"jobs processed twice:   0", "locks left behind:      0", "throughput:", "lock waits:", "ok: every job"} {
				if !strings.Contains(stdout, want) {
					t.Errorf("summary lacks %q:\n%s", want, stdout)
				}
			}
			done, gaveUp := summaryNumber(t, stdout, "jobs done:"), summaryNumber(t, stdout, "given up:")
			if done+gaveUp != 40 {
				t.Errorf("%d done and %d given up of 40 jobs:\n%s", done, gaveUp, stdout)
			}
			// Half the steps fail: some are retried (the chance that none
			// of 40 jobs failed is 2^-40).
			if n := summaryNumber(t, stdout, "retried:"); n == 0 {
				t.Errorf("no step retried:\n%s", stdout)
			}
		})
	}
}

// Every step fails: each job is retried twice, after a back-off, and given
// up at its third failure.
func TestDemoEveryStepFails(t *testing.T) {
	code, stdout, stderr := runCmd("demo", "-uri", serverURI, "-jobs", "10", "-workers", "3", "-work", "1ms", "-fail", "1")
	if code != exitOK {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	for _, want := range []string{
		"jobs done:              0 of 10",
		"given up:               10 (REMOTE_ERROR at their failure 3)",
		fmt.Sprintf("retried:                %d failed steps (of %d steps)", 10*demoMaxAttempts, 10*(demoMaxAttempts+1)),
		"jobs processed twice:   0",
		"ok: every job done once or given up",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout)
		}
	}
}

func TestDemoFailFlag(t *testing.T) {
	for _, v := range []string{"-0.1", "1.5", "NaN", "often"} {
		code, _, stderr := runCmd("demo", "-fail", v)
		if code != exitUsage || !strings.Contains(stderr, "-fail") {
			t.Errorf("-fail %s: exit %d, want %d naming -fail:\n%s", v, code, exitUsage, stderr)
		}
	}
}
