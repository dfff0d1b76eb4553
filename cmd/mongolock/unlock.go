package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/mongolock/mongolock"
)

// stdin is where unlock reads its confirmation; tests replace it.
var stdin io.Reader = os.Stdin

const unlockPrompt = "unlock them? [y/N] "

// unlockSelection is what unlock clears: the locks that pass every selector
// given.
type unlockSelection struct {
	filter    filterFlag
	olderThan time.Duration
	olderSet  bool // -older-than was given, even as 0
	dead      bool
	expired   bool // the holder's declared lease ran out
	noHolder  bool // no holder record names the lock (a Python holder)
	all       bool
}

func runUnlock(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("unlock", stderr)
	var c conn
	c.register(fs)
	var sel unlockSelection
	fs.Var(&sel.filter, "filter", "only locks of documents matching this Extended JSON `document`")
	fs.DurationVar(&sel.olderThan, "older-than", 0, "only locks taken longer ago than this `duration`, by the server's clock")
	fs.BoolVar(&sel.dead, "dead", false, "only locks whose holder record names this host and a process that no longer runs")
	fs.BoolVar(&sel.expired, "expired", false, "only locks whose holder declared a lease that has run out, by the server's clock")
	fs.BoolVar(&sel.noHolder, "no-holder", false, "only locks without a holder record that names them (taken by Python, which never expire)")
	fs.BoolVar(&sel.all, "all", false, "every lock of the collection (required when no other selector is given)")
	yes := fs.Bool("yes", false, "do not ask before unlocking")
	if ok, code := parse(fs, args); !ok {
		return code
	}
	fs.Visit(func(f *flag.Flag) { sel.olderSet = sel.olderSet || f.Name == "older-than" })
	if err := sel.check(); err != nil {
		return usageError(stderr, fs, "%v", err)
	}
	var host string
	if sel.dead {
		var err error
		if host, err = deadCheckHost(); err != nil {
			return usageError(stderr, fs, "-dead: %v", err)
		}
	}
	client, code := c.connectOrFail(ctx, "unlock", stderr)
	if client == nil {
		return code
	}
	defer client.Disconnect(context.Background())
	coll := c.coll(client)
	infos, now, err := listLocks(ctx, coll, sel.filter.doc)
	if err != nil {
		return fail(stderr, "unlock", err)
	}
	infos, err = sel.keep(infos, now, host)
	if err != nil {
		return fail(stderr, "unlock", err)
	}
	if len(infos) == 0 {
		fmt.Fprintln(stdout, "no lock matches; nothing to do")
		return exitOK
	}
	ids, err := lockIdentities(ctx, coll, infos)
	if err != nil {
		return fail(stderr, "unlock", err)
	}
	fmt.Fprintf(stdout, "will unlock %d document(s) in %s.%s:\n", len(infos), c.db, c.collection)
	printLocks(stdout, infos, now)
	if !*yes && !confirm(stderr, unlockPrompt) {
		fmt.Fprintln(stderr, "mongolock unlock: not confirmed; nothing unlocked (-yes skips the question)")
		return exitFail
	}
	n, err := clearLocks(ctx, coll, ids)
	if err != nil {
		return fail(stderr, "unlock", fmt.Errorf("after clearing %d lock(s): %w", n, err))
	}
	if int(n) == len(infos) {
		fmt.Fprintf(stdout, "unlocked %d document(s)\n", n)
	} else {
		fmt.Fprintf(stdout, "unlocked %d of the %d document(s) shown; the other %d were released or locked again meanwhile and were left alone\n",
			n, len(infos), int64(len(infos))-n)
	}
	return exitOK
}

// check refuses a selection that would clear every lock by accident.
func (s *unlockSelection) check() error {
	if s.olderSet && s.olderThan <= 0 {
		return errors.New("-older-than must be positive")
	}
	narrowing := s.olderThan > 0 || s.dead || s.expired || s.noHolder
	selective := s.filter.set || narrowing
	switch {
	case s.all && selective:
		return errors.New("-all clears every lock: it cannot be combined with -filter, -older-than, -dead, -expired or -no-holder")
	case s.filter.set && len(s.filter.doc) == 0 && !narrowing:
		return errors.New("-filter {} matches every document; say -all to clear every lock")
	case !s.all && !selective:
		return errors.New("say which locks to clear: -filter, -older-than, -dead, -expired, -no-holder, or -all for every lock")
	}
	return nil
}

// keep returns the locks that pass -older-than, -expired, -no-holder and
// -dead; now is the server's time, host this machine's name for -dead.
func (s *unlockSelection) keep(infos []mongolock.LockInfo, now time.Time, host string) ([]mongolock.LockInfo, error) {
	var kept []mongolock.LockInfo
	for _, in := range infos {
		if s.olderThan > 0 && !in.LockTime.Before(now.Add(-s.olderThan)) {
			continue
		}
		if s.expired && (in.Expires.IsZero() || in.Expires.After(now)) {
			continue
		}
		if s.noHolder && hasHolder(in) {
			continue
		}
		if s.dead {
			dead, err := holderIsDead(in, host)
			if err != nil {
				return nil, err
			}
			if !dead {
				continue
			}
		}
		kept = append(kept, in)
	}
	return kept, nil
}

// hasHolder reports whether a holder record names the lock.
func hasHolder(in mongolock.LockInfo) bool { return in.Host != "" || in.PID != 0 }

// holderIsDead reports whether the lock's holder record names host and a
// process that no longer exists. A lock without a record (a Python holder)
// is never dead: nothing says who holds it.
func holderIsDead(in mongolock.LockInfo, host string) (bool, error) {
	if in.Host != host || in.PID <= 0 {
		return false, nil
	}
	alive, err := processExists(in.PID)
	if err != nil {
		return false, fmt.Errorf("-dead: %w", err)
	}
	return !alive, nil
}

// deadCheckHost is this machine's name as holder records write it, refused
// when it cannot tell machines apart.
func deadCheckHost() (string, error) {
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("cannot read this host's name: %v", err)
	}
	switch strings.ToLower(host) {
	case "", "localhost", "localhost.localdomain":
		return "", fmt.Errorf("this host's name %q does not tell it from other machines", host)
	}
	if _, err := processExists(os.Getpid()); err != nil {
		return "", err
	}
	return host, nil
}

// clearLocks clears exactly the locks whose identities are given (see
// lockIdentities), with their holder records, and returns how many it
// cleared. A lock released, or released and taken again, since it was
// listed no longer matches and is left alone; a lock its holder refreshed
// meanwhile is the same lock, and is cleared. The holder record is removed,
// not set to null as a holder's own release does, so that a holder whose
// release reply was lost does not take this for its release.
func clearLocks(ctx context.Context, coll *mongo.Collection, ids []bson.D) (int64, error) {
	const batch = 500
	clear := bson.D{
		{Key: "$set", Value: bson.D{{Key: mongolock.LockKey, Value: nil}, {Key: mongolock.LockTimeKey, Value: nil}}},
		{Key: "$unset", Value: bson.D{{Key: mongolock.HolderKey, Value: ""}}},
	}
	var n int64
	for len(ids) > 0 {
		chunk := ids[:min(batch, len(ids))]
		ids = ids[len(chunk):]
		or := make(bson.A, len(chunk))
		for i, id := range chunk {
			or[i] = id
		}
		res, err := coll.UpdateMany(ctx, bson.D{{Key: "$or", Value: or}}, clear)
		if err != nil {
			return n, err
		}
		n += res.ModifiedCount
	}
	return n, nil
}

// lockIdentities reads, right after the listing, what names each listed
// lock's acquisition for as long as it lasts, so that the answer to the
// question clears the lock shown even if its holder refreshed it meanwhile
// (a 30 s lease is refreshed every 10 s, sooner than most answers), and
// never a lock taken since: the holder record's nonce (a custom lock id),
// else the lock id itself when a holder record names it (a random lock id,
// unique to its acquisition), else the lock time (a Python holder, which
// never refreshes). A lock that changed between the listing and this read
// keeps the lock time it was listed with, which no longer matches.
func lockIdentities(ctx context.Context, coll *mongo.Collection, infos []mongolock.LockInfo) ([]bson.D, error) {
	docIDs := make(bson.A, len(infos))
	for i, in := range infos {
		docIDs[i] = in.DocumentID
	}
	cur, err := coll.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: docIDs}}}},
		options.Find().SetProjection(bson.D{{Key: mongolock.LockKey, Value: 1}, {Key: mongolock.LockTimeKey, Value: 1}, {Key: mongolock.HolderKey, Value: 1}}))
	if err != nil {
		return nil, err
	}
	var docs []bson.Raw
	if err := cur.All(ctx, &docs); err != nil {
		return nil, err
	}
	byID := map[string]bson.Raw{}
	for _, d := range docs {
		byID[rawKey(d.Lookup("_id"))] = d
	}
	ids := make([]bson.D, len(infos))
	for i, in := range infos {
		var at any // a lock without a time matches a null or missing one
		listed := bson.NewDateTimeFromTime(in.LockTime)
		if !in.LockTime.IsZero() {
			at = listed
		}
		id := bson.D{{Key: "_id", Value: in.DocumentID}, {Key: mongolock.LockKey, Value: in.LockID}}
		doc := byID[rawKey(mustRaw(in.DocumentID))]
		holder, _ := doc.Lookup(mongolock.HolderKey).DocumentOK()
		holderID, _ := holder.Lookup("lock_id").StringValueOK()
		lockTime, _ := doc.Lookup(mongolock.LockTimeKey).DateTimeOK()
		switch nonce, hasNonce := holder.Lookup("nonce").StringValueOK(); {
		case holderID != in.LockID || at == nil || lockTime != int64(listed):
			ids[i] = append(id, bson.E{Key: mongolock.LockTimeKey, Value: at})
		case hasNonce:
			ids[i] = append(id, bson.E{Key: mongolock.HolderKey + ".nonce", Value: nonce})
		default:
			ids[i] = append(id, bson.E{Key: mongolock.HolderKey + ".lock_id", Value: in.LockID})
		}
	}
	return ids, nil
}

// rawKey is a map key for a BSON value: its type and bytes.
func rawKey(v bson.RawValue) string { return string(rune(v.Type)) + string(v.Value) }

// mustRaw is v as a BSON value; the zero value when it cannot be one.
func mustRaw(v any) bson.RawValue {
	t, b, err := bson.MarshalValue(v)
	if err != nil {
		return bson.RawValue{}
	}
	return bson.RawValue{Type: t, Value: b}
}

func confirm(w io.Writer, prompt string) bool {
	fmt.Fprint(w, prompt)
	line, _ := bufio.NewReader(stdin).ReadString('\n')
	if !strings.HasSuffix(line, "\n") { // no answer: end the question's line
		fmt.Fprintln(w)
	}
	answer := strings.ToLower(strings.TrimSpace(line))
	return answer == "y" || answer == "yes"
}
