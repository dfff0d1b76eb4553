// Command mongolock runs the demo and the embedded development server, and
// lists, unlocks and holds locks of mongolock (and jobflow-remote) in a
// collection.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// Exit codes. exec also exits with its command's code, check with
// exitNotAtomic and doctor with exitProblem.
const (
	exitOK          = 0
	exitFail        = 1  // the work failed: unreachable server, operation failed, not confirmed
	exitUsage       = 2  // bad command line
	exitNotAtomic   = 3  // check: the server does not apply writes atomically
	exitLockTimeout = 75 // exec: the lock was not obtained in time (EX_TEMPFAIL: try again later)
)

// command is one subcommand; its help is in helps.
type command struct {
	name string
	run  func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"demo", runDemo},
		{"dev-server", runDevServer},
		{"list", runList},
		{"unlock", runUnlock},
		{"exec", runExec},
		{"check", runCheck},
		{"doctor", runDoctor},
		{"demo-worker", runDemoWorker}, // the demo's other processes
		{"exec-guard", runExecGuard},   // exec's guard of its command (Linux)
	}
}

func lookupCommand(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// run is the whole command: it returns the exit code. SIGINT, SIGTERM and
// SIGHUP cancel the context given to the subcommand.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		return runHelp(args[1:], stdout, stderr)
	}
	c, ok := lookupCommand(args[0])
	if !ok {
		fmt.Fprintf(stderr, "mongolock: unknown command %q; run 'mongolock help' for the list\n", args[0])
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	return c.run(ctx, args[1:], stdout, stderr)
}

// runHelp prints the general help, or a command's to stdout.
func runHelp(args []string, stdout, stderr io.Writer) int {
	switch len(args) {
	case 0:
		usage(stdout)
		return exitOK
	case 1:
		c, ok := lookupCommand(args[0])
		if !ok || helps[c.name].summary == "" {
			fmt.Fprintf(stderr, "mongolock help: unknown command %q; run 'mongolock help' for the list\n", args[0])
			return exitUsage
		}
		// The command prints its own help, flags included.
		return c.run(context.Background(), []string{"-h"}, stdout, stdout)
	}
	fmt.Fprintf(stderr, "mongolock help: unexpected arguments %s; usage: mongolock help [command]\n", quoteAll(args[1:]))
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: mongolock <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		if h := helps[c.name]; h.summary != "" {
			fmt.Fprintf(w, "  %-11s %s\n", c.name, h.summary)
		}
	}
	fmt.Fprint(w, `
Run 'mongolock help <command>' or 'mongolock <command> -h' for a command's
description, flags and examples.

Exit codes: 0 done; 1 failed (server unreachable, operation failed); 2 usage
error; exec: its command's code, 75 when the lock was not obtained in time,
126/127 when the command cannot be run / is not found; check: 3 when the
server is not atomic; doctor: 3 when a finding is a problem.
`)
}

// flagOutput swallows the flag package's own messages, so that parse can
// report an error in one line, and remembers where messages belong.
type flagOutput struct{ w io.Writer }

func (flagOutput) Write(p []byte) (int, error) { return len(p), nil }

// newFlags returns a flag set that reports errors instead of exiting.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("mongolock "+name, flag.ContinueOnError)
	fs.SetOutput(flagOutput{stderr})
	fs.Usage = func() {}
	return fs
}

// errWriter is where fs's messages go.
func errWriter(fs *flag.FlagSet) io.Writer {
	if o, ok := fs.Output().(flagOutput); ok {
		return o.w
	}
	return fs.Output()
}

// parse parses args, which must hold flags only, and reports whether the
// command should go on; code is the exit code when it should not. -h prints
// the command's help.
func parse(fs *flag.FlagSet, args []string) (ok bool, code int) {
	if ok, code := parseFlags(fs, args); !ok {
		return false, code
	}
	if fs.NArg() > 0 {
		return false, usageError(errWriter(fs), fs, "unexpected arguments %s (this command takes flags only)", quoteAll(fs.Args()))
	}
	return true, exitOK
}

// parseFlags is parse for a command that takes arguments after its flags.
func parseFlags(fs *flag.FlagSet, args []string) (ok bool, code int) {
	w := errWriter(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printHelp(w, fs)
			return false, exitOK
		}
		return false, usageError(w, fs, "%v; see 'mongolock help %s'", err, strings.TrimPrefix(fs.Name(), "mongolock "))
	}
	// Every command's -timeout: 0 or less would report a reachable server as
	// unreachable.
	if f := fs.Lookup("timeout"); f != nil {
		if d, _ := f.Value.(flag.Getter).Get().(time.Duration); d <= 0 {
			return false, usageError(w, fs, "-timeout must be positive, not %v", d)
		}
	}
	return true, exitOK
}

// printHelp prints the help of fs's command: what it does, its flags with
// their defaults, examples and notes.
func printHelp(w io.Writer, fs *flag.FlagSet) {
	name := strings.TrimPrefix(fs.Name(), "mongolock ")
	c := helps[name]
	fmt.Fprintf(w, "usage: mongolock %s %s\n", name, c.usage)
	if c.about != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.about))
	}
	fmt.Fprintln(w, "\nflags:")
	out := fs.Output()
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(out)
	if c.notes != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.notes))
	}
	if c.examples != "" {
		fmt.Fprintf(w, "\nexamples:\n%s\n", strings.TrimRight(c.examples, "\n"))
	}
}

// usageError reports a bad command line in one line and returns exitUsage.
func usageError(stderr io.Writer, fs *flag.FlagSet, format string, args ...any) int {
	fmt.Fprintf(stderr, "%s: %s\n", fs.Name(), fmt.Sprintf(format, args...))
	return exitUsage
}

// fail prints a one-line error and returns exitFail.
func fail(stderr io.Writer, name string, err error) int {
	fmt.Fprintf(stderr, "mongolock %s: %s\n", name, oneLine(err))
	return exitFail
}

// oneLine is err's message on one line, without the driver's dump of the
// topology (which names the last error of each server: that is kept).
func oneLine(err error) string {
	msg := strings.Join(strings.Fields(err.Error()), " ")
	i := strings.Index(msg, ", current topology:")
	if i < 0 {
		i = strings.Index(msg, " current topology:")
	}
	if i < 0 {
		return msg
	}
	dump := msg[i:]
	msg = msg[:i]
	if j := strings.Index(dump, "Last error: "); j >= 0 {
		last := dump[j+len("Last error: "):]
		if k := strings.Index(last, " }"); k >= 0 {
			last = last[:k]
		}
		msg += ": " + strings.TrimSuffix(last, ",")
	}
	return msg
}

func quoteAll(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = fmt.Sprintf("%q", a)
	}
	return strings.Join(q, " ")
}
