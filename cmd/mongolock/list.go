package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/mongolock/mongolock"
)

// stdin is where unlock reads its confirmation; tests replace it.
var stdin io.Reader = os.Stdin

func runList(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("list", stderr)
	var c conn
	c.register(fs)
	filter := fs.String("filter", "", "only documents matching this Extended JSON `filter`")
	asJSON := fs.Bool("json", false, "print JSON lines instead of a table")
	if ok, code := parse(fs, args); !ok {
		return code
	}
	f, err := parseFilter(*filter)
	if err != nil {
		return usageError(stderr, fs, "%v", err)
	}
	client, err := c.connect(ctx)
	if err != nil {
		return fail(stderr, "list", err)
	}
	defer client.Disconnect(context.Background())
	infos, now, err := listLocks(ctx, c.coll(client), f)
	if err != nil {
		return fail(stderr, "list", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		for _, in := range infos {
			_ = enc.Encode(map[string]any{
				"_id": idString(in.DocumentID), "lock_id": in.LockID, "lock_time": in.LockTime.UTC().Format(time.RFC3339Nano),
				"age_seconds": now.Sub(in.LockTime).Seconds(), "token": in.Token,
			})
		}
		return exitOK
	}
	printLocks(stdout, infos, now)
	return exitOK
}

// listLocks returns the locks matching filter and the server's time.
func listLocks(ctx context.Context, coll *mongo.Collection, filter bson.D) ([]mongolock.LockInfo, time.Time, error) {
	infos, err := mongolock.New(coll).ListLocked(ctx, filter)
	if err != nil {
		return nil, time.Time{}, err
	}
	now, err := serverTime(ctx, coll.Database().Client())
	return infos, now, err
}

func printLocks(w io.Writer, infos []mongolock.LockInfo, now time.Time) {
	if len(infos) == 0 {
		fmt.Fprintln(w, "no locked documents")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "_ID\tLOCK ID\tSINCE (UTC)\tAGE")
	for _, in := range infos {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", idString(in.DocumentID), in.LockID,
			in.LockTime.UTC().Format("2006-01-02 15:04:05"), now.Sub(in.LockTime).Round(time.Second))
	}
	tw.Flush()
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

func runUnlock(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("unlock", stderr)
	var c conn
	c.register(fs)
	filter := fs.String("filter", "", "only documents matching this Extended JSON `filter`")
	olderThan := fs.Duration("older-than", 0, "only locks older than this, by the server's clock (0: any age)")
	yes := fs.Bool("yes", false, "do not ask before unlocking")
	if ok, code := parse(fs, args); !ok {
		return code
	}
	f, err := parseFilter(*filter)
	if err != nil {
		return usageError(stderr, fs, "%v", err)
	}
	if *olderThan < 0 {
		return usageError(stderr, fs, "-older-than must not be negative")
	}
	client, err := c.connect(ctx)
	if err != nil {
		return fail(stderr, "unlock", err)
	}
	defer client.Disconnect(context.Background())
	coll := c.coll(client)
	infos, now, err := listLocks(ctx, coll, f)
	if err != nil {
		return fail(stderr, "unlock", err)
	}
	if *olderThan > 0 {
		cutoff := now.Add(-*olderThan)
		f = append(f, bson.E{Key: mongolock.LockTimeKey, Value: bson.D{{Key: "$lt", Value: bson.NewDateTimeFromTime(cutoff)}}})
		kept := infos[:0]
		for _, in := range infos {
			if in.LockTime.Before(cutoff) {
				kept = append(kept, in)
			}
		}
		infos = kept
	}
	if len(infos) == 0 {
		fmt.Fprintln(stdout, "no locked documents match; nothing to do")
		return exitOK
	}
	fmt.Fprintf(stdout, "will unlock %d document(s) in %s.%s:\n", len(infos), c.db, c.collection)
	printLocks(stdout, infos, now)
	if !*yes && !confirm(stdout, "unlock them? [y/N] ") {
		fmt.Fprintln(stdout, "nothing unlocked")
		return exitFail
	}
	n, err := mongolock.New(coll).Unlock(ctx, f)
	if err != nil {
		return fail(stderr, "unlock", err)
	}
	fmt.Fprintf(stdout, "unlocked %d document(s)\n", n)
	return exitOK
}

func confirm(w io.Writer, prompt string) bool {
	fmt.Fprint(w, prompt)
	line, _ := bufio.NewReader(stdin).ReadString('\n')
	answer := strings.ToLower(strings.TrimSpace(line))
	return answer == "y" || answer == "yes"
}
