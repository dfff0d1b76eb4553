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

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1 // the work failed: unreachable server, lock not taken, ...
	exitUsage = 2 // bad command line; for check, a server that is not atomic
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"demo", "run workers that lock READY jobs on the embedded server and count double processing", runDemo},
		{"dev-server", "run the embedded MongoDB-wire server (FerretDB) for local development", runDevServer},
		{"list", "list the locked documents of a collection", runList},
		{"unlock", "clear locks, by filter and/or age", runUnlock},
		{"exec", "hold a lock on a document while a command runs", runExec},
		{"check", "measure whether a server applies findAndModify atomically", runCheck},
		{"demo-worker", "", runDemoWorker}, // the demo's other processes
	}
}

// run is the whole command: it returns the exit code. SIGINT and SIGTERM
// cancel the context given to the subcommand.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range commands() {
		if c.name == args[0] {
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "mongolock: unknown command %q\n", args[0])
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: mongolock <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		if c.summary != "" {
			fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
		}
	}
	fmt.Fprintln(w, "\nRun 'mongolock <command> -h' for a command's flags.")
}

// conn holds the flags every subcommand that talks to a server shares.
type conn struct {
	uri        string
	db         string
	collection string
	timeout    time.Duration
}

func (c *conn) register(fs *flag.FlagSet) {
	fs.StringVar(&c.uri, "uri", "mongodb://127.0.0.1:27017", "MongoDB `URI` to connect to")
	fs.StringVar(&c.db, "db", "mongolock", "database `name`")
	fs.StringVar(&c.collection, "collection", "jobs", "collection `name`")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "how long to wait for the server (and, for exec, for the lock)")
}

// newFlags returns a flag set that reports errors instead of exiting.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("mongolock "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parse parses args and reports whether the command should go on; code is
// the exit code when it should not.
func parse(fs *flag.FlagSet, args []string) (ok bool, code int) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return false, exitOK
		}
		return false, exitUsage
	}
	return true, exitOK
}

// usageError reports a bad flag value and returns exitUsage.
func usageError(stderr io.Writer, fs *flag.FlagSet, format string, args ...any) int {
	fmt.Fprintf(stderr, "%s: %s\n", fs.Name(), fmt.Sprintf(format, args...))
	return exitUsage
}

// connect opens a client and checks that the server answers within the
// timeout.
func (c *conn) connect(ctx context.Context) (*mongo.Client, error) {
	client, err := mongo.Connect(options.Client().ApplyURI(c.uri).SetServerSelectionTimeout(c.timeout).SetConnectTimeout(c.timeout))
	if err != nil {
		return nil, fmt.Errorf("bad -uri %q: %s", c.uri, oneLine(err))
	}
	pctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := client.Ping(pctx, nil); err != nil {
		_ = client.Disconnect(context.Background())
		return nil, fmt.Errorf("cannot reach %s within %v: %s", c.uri, c.timeout, oneLine(err))
	}
	return client, nil
}

func (c *conn) coll(client *mongo.Client) *mongo.Collection {
	return client.Database(c.db).Collection(c.collection)
}

// fail prints a one-line error and returns exitFail.
func fail(stderr io.Writer, name string, err error) int {
	fmt.Fprintf(stderr, "mongolock %s: %s\n", name, oneLine(err))
	return exitFail
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// parseFilter reads a filter given as Extended JSON; empty means all.
func parseFilter(s string) (bson.D, error) {
	if strings.TrimSpace(s) == "" {
		return bson.D{}, nil
	}
	var d bson.D
	if err := bson.UnmarshalExtJSON([]byte(s), false, &d); err != nil {
		return nil, fmt.Errorf("-filter is not an Extended JSON document: %v", err)
	}
	return d, nil
}

// idString renders a document id for people: strings bare, others as
// Extended JSON.
func idString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case bson.ObjectID:
		return x.Hex()
	}
	b, err := bson.MarshalExtJSON(bson.D{{Key: "v", Value: v}}, false, false)
	if err != nil {
		return fmt.Sprint(v)
	}
	s := strings.TrimPrefix(string(b), `{"v":`)
	return strings.TrimSuffix(s, "}")
}
