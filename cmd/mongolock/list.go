package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/mongolock/mongolock"
)

func runList(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("list", stderr)
	var c conn
	c.register(fs)
	var filter filterFlag
	fs.Var(&filter, "filter", "only documents matching this Extended JSON `document` (default: every locked document)")
	asJSON := fs.Bool("json", false, "print one JSON object per lock instead of a table")
	if ok, code := parse(fs, args); !ok {
		return code
	}
	client, code := c.connectOrFail(ctx, "list", stderr)
	if client == nil {
		return code
	}
	defer client.Disconnect(context.Background())
	infos, now, err := listLocks(ctx, c.coll(client), filter.doc)
	if err != nil {
		return fail(stderr, "list", err)
	}
	if *asJSON {
		if err := printLocksJSON(stdout, infos, now); err != nil {
			return fail(stderr, "list", err)
		}
		return exitOK
	}
	printLocks(stdout, infos, now)
	return exitOK
}

// listLocks returns the locks matching filter, with their holders where the
// holder record names them, and the server's time.
func listLocks(ctx context.Context, coll *mongo.Collection, filter bson.D) ([]mongolock.LockInfo, time.Time, error) {
	if filter == nil {
		filter = bson.D{}
	}
	infos, err := mongolock.New(coll).ListLocked(ctx, filter)
	if err != nil {
		return nil, time.Time{}, err
	}
	now, err := serverTime(ctx, coll.Database().Client())
	return infos, now, err
}

// printLocks prints a table of locks. _IDs are Extended JSON, ready to paste
// into -filter; ages and lease times are by the server's clock.
func printLocks(w io.Writer, infos []mongolock.LockInfo, now time.Time) {
	if len(infos) == 0 {
		fmt.Fprintln(w, "no locked documents")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "_ID\tLOCK ID\tSINCE (UTC)\tAGE\tHOST\tPID\tLEASE")
	for _, in := range infos {
		host, pid := "-", "-"
		if in.Host != "" {
			host = in.Host
		}
		if in.PID != 0 {
			pid = strconv.Itoa(in.PID)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%s\t%s\n", idJSON(in.DocumentID), in.LockID,
			in.LockTime.UTC().Format("2006-01-02 15:04:05"), now.Sub(in.LockTime).Round(time.Second),
			host, pid, leaseString(in.Expires, now))
	}
	tw.Flush()
}

// leaseString says when a holder's declared lease runs out.
func leaseString(expires, now time.Time) string {
	switch {
	case expires.IsZero():
		return "-"
	case expires.After(now):
		return "ends in " + expires.Sub(now).Round(time.Second).String()
	default:
		return "ended " + now.Sub(expires).Round(time.Second).String() + " ago"
	}
}

// lockJSON is one line of list -json. Unknown holder fields are null.
type lockJSON struct {
	ID         json.RawMessage `json:"_id"` // Extended JSON
	LockID     string          `json:"lock_id"`
	LockTime   string          `json:"lock_time"`
	AgeSeconds float64         `json:"age_seconds"`
	Token      int64           `json:"token"`
	Host       *string         `json:"host"`
	PID        *int            `json:"pid"`
	Expires    *string         `json:"expires"`
}

func printLocksJSON(w io.Writer, infos []mongolock.LockInfo, now time.Time) error {
	enc := json.NewEncoder(w)
	for _, in := range infos {
		line := lockJSON{
			ID: json.RawMessage(idJSON(in.DocumentID)), LockID: in.LockID,
			LockTime: in.LockTime.UTC().Format(time.RFC3339Nano), AgeSeconds: now.Sub(in.LockTime).Seconds(),
			Token: in.Token,
		}
		if in.Host != "" {
			line.Host = &in.Host
		}
		if in.PID != 0 {
			line.PID = &in.PID
		}
		if !in.Expires.IsZero() {
			e := in.Expires.UTC().Format(time.RFC3339Nano)
			line.Expires = &e
		}
		if err := enc.Encode(line); err != nil {
			return err
		}
	}
	return nil
}

// serverTime reads the server's clock, so that ages do not depend on this
// machine's.
func serverTime(ctx context.Context, client *mongo.Client) (time.Time, error) {
	raw, err := client.Database("admin").RunCommand(ctx, bson.D{{Key: "hello", Value: 1}}).Raw()
	if err != nil {
		return time.Time{}, err
	}
	dt, ok := raw.Lookup("localTime").DateTimeOK()
	if !ok {
		return time.Now(), nil
	}
	return time.UnixMilli(dt), nil
}
