package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
)

// conn holds the flags every subcommand that talks to a server shares.
type conn struct {
	uri        string
	db         string
	collection string
	timeout    time.Duration
}

const defaultURI = "mongodb://127.0.0.1:27017"

func (c *conn) register(fs *flag.FlagSet) {
	c.registerServer(fs)
	fs.StringVar(&c.collection, "collection", "jobs", "collection `name`")
}

// registerServer registers the flags that name the server and database.
func (c *conn) registerServer(fs *flag.FlagSet) {
	fs.StringVar(&c.uri, "uri", defaultURI, "MongoDB `URI` to connect to")
	fs.StringVar(&c.db, "db", "mongolock", "database `name`")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "how long to wait for the server (must be positive)")
}

// usageErr is a connection problem that lies in the command line.
type usageErr struct{ error }

// connect opens a client and checks that the server answers within the
// timeout. A server that refuses connections fails at once: before the
// driver (whose server selection would wait out the whole timeout), every
// host of the URI is dialled, and the command gives up when none accepts.
func (c *conn) connect(ctx context.Context) (*mongo.Client, error) {
	opts := options.Client().ApplyURI(c.uri).SetServerSelectionTimeout(c.timeout).SetConnectTimeout(c.timeout)
	if err := opts.Validate(); err != nil {
		if dnsErr := (*net.DNSError)(nil); errors.As(err, &dnsErr) { // a mongodb+srv:// lookup
			return nil, fmt.Errorf("cannot reach %s: %s", c.uri, oneLine(dnsErr))
		}
		return nil, usageErr{fmt.Errorf("bad -uri %q: %s", c.uri, oneLine(err))}
	}
	dctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := dialAny(dctx, opts.Hosts); err != nil {
		return nil, fmt.Errorf("cannot reach %s: %s", c.uri, oneLine(err))
	}
	client, err := mongo.Connect(opts)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to %s: %s", c.uri, oneLine(err))
	}
	if err := client.Ping(dctx, nil); err != nil {
		_ = client.Disconnect(context.Background())
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("no answer from %s within %v: %s", c.uri, c.timeout, oneLine(err))
	}
	return client, nil
}

// dialAny returns nil as soon as one of hosts accepts a connection, and the
// first host's error when none does.
func dialAny(ctx context.Context, hosts []string) error {
	if len(hosts) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(hosts))
	for _, h := range hosts {
		go func() {
			network := "tcp"
			if strings.HasSuffix(h, ".sock") {
				network = "unix"
			}
			var d net.Dialer
			nc, err := d.DialContext(ctx, network, h)
			if err == nil {
				_ = nc.Close()
			}
			errs <- err
		}()
	}
	var first error
	for range hosts {
		err := <-errs
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	return first
}

// connectOrFail connects, or reports why not and returns the exit code.
func (c *conn) connectOrFail(ctx context.Context, name string, stderr io.Writer) (*mongo.Client, int) {
	client, err := c.connect(ctx)
	var ue usageErr
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "mongolock %s: %s\n", name, ue.Error())
		return nil, exitUsage
	case err != nil:
		return nil, fail(stderr, name, err)
	}
	return client, exitOK
}

// coll is the collection named by the flags. Lock state is read from the
// primary, as the library reads it.
func (c *conn) coll(client *mongo.Client) *mongo.Collection {
	return client.Database(c.db).Collection(c.collection, options.Collection().SetReadPreference(readpref.Primary()))
}

// filterFlag is a -filter: one Extended JSON document, checked as the flag
// is parsed so that a bad one is a usage error.
type filterFlag struct {
	doc bson.D
	raw string
	set bool
}

func (f *filterFlag) String() string { return f.raw }

func (f *filterFlag) Set(s string) error {
	d, err := parseFilter(s)
	if err != nil {
		return err
	}
	f.doc, f.raw, f.set = d, s, true
	return nil
}

// parseFilter reads a filter given as one Extended JSON document and nothing
// else. An empty string (an unset shell variable, often) is an error, never
// "everything".
func parseFilter(s string) (bson.D, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("empty filter (an unset shell variable?); a filter is a document such as '{\"_id\": \"job-1\"}'")
	}
	dec := json.NewDecoder(strings.NewReader(s))
	var first json.RawMessage
	if err := dec.Decode(&first); err != nil {
		return nil, fmt.Errorf(`not JSON (%v); -filter takes Extended JSON: keys in double quotes, ObjectIds as {"$oid": "..."}`, err)
	}
	if off := dec.InputOffset(); strings.TrimSpace(s[off:]) != "" {
		return nil, fmt.Errorf("text after the filter document: %q", strings.TrimSpace(s[off:]))
	}
	// Wrapped, the value may be anything Extended JSON: say what it is when it
	// is not a document.
	var wrapped bson.Raw
	if err := bson.UnmarshalExtJSON(append(append([]byte(`{"v":`), first...), '}'), false, &wrapped); err != nil {
		return nil, fmt.Errorf("not Extended JSON: %v", err)
	}
	v := wrapped.Lookup("v")
	if v.Type != bson.TypeEmbeddedDocument {
		hint := ""
		if bytes.HasPrefix(bytes.TrimSpace(first), []byte("{")) { // {"$oid": ...}, {"$date": ...}
			hint = fmt.Sprintf(`; to select by _id, write {"_id": %s}`, first)
		}
		return nil, fmt.Errorf("a filter must be a document {...}, not %s%s", typeName(v.Type), hint)
	}
	var d bson.D
	if err := bson.Unmarshal(v.Document(), &d); err != nil {
		return nil, err
	}
	return d, nil
}

func typeName(t bson.Type) string {
	switch t {
	case bson.TypeNull:
		return "null"
	case bson.TypeArray:
		return "an array"
	case bson.TypeString:
		return "a string"
	case bson.TypeBoolean:
		return "a boolean"
	case bson.TypeInt32, bson.TypeInt64, bson.TypeDouble, bson.TypeDecimal128:
		return "a number"
	case bson.TypeObjectID:
		return "an ObjectId"
	case bson.TypeDateTime:
		return "a date"
	}
	return "a " + t.String()
}

// idJSON renders a document id as relaxed Extended JSON ("job1",
// {"$oid":"..."}), which -filter reads back.
func idJSON(v any) string {
	b, err := bson.MarshalExtJSON(bson.D{{Key: "v", Value: v}}, false, false)
	if err != nil {
		return fmt.Sprint(v)
	}
	s := strings.TrimPrefix(string(b), `{"v":`)
	return strings.TrimSuffix(s, "}")
}

// idEnv renders a document id for a command's environment: strings bare,
// others as idJSON.
func idEnv(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return idJSON(v)
}
