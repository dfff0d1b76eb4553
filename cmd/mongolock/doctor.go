package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"

	"github.com/mongolock/mongolock"
)

// Doctor's verdicts. A problem is something that breaks locking or leaves a
// lock stuck until an operator acts; a warning is worth a look.
const (
	verdictOK      = "ok"
	verdictWarn    = "warn"
	verdictProblem = "problem"
)

// exitProblem is doctor's exit code when a finding is a problem (as check's
// exitNotAtomic).
const exitProblem = 3

const (
	clockWarnOffset = time.Second // past this, times written by clients (Python's lock_time) mislead
	indexWarnDocs   = 1000        // below this many documents a scanning claim is cheap
	doctorAtomicRun = time.Second // each of -atomic's two measurements
)

// doctorNow is this machine's clock as doctor reads it; tests skew it.
var doctorNow = time.Now

// finding is one line of doctor's report.
type finding struct {
	Check   string `json:"check"`
	Verdict string `json:"verdict"`
	Message string `json:"message"`
	Command string `json:"command,omitempty"` // what an operator can run about it
}

// doctorReport is doctor's whole report, as -json prints it.
type doctorReport struct {
	URI        string    `json:"uri"` // password hidden
	Database   string    `json:"database"`
	Collection string    `json:"collection"`
	Verdict    string    `json:"verdict"` // the worst of the findings'
	Findings   []finding `json:"findings"`
}

func (r *doctorReport) add(check, verdict, format string, args ...any) *finding {
	r.Findings = append(r.Findings, finding{Check: check, Verdict: verdict, Message: fmt.Sprintf(format, args...)})
	return &r.Findings[len(r.Findings)-1]
}

// worst is the report's verdict.
func (r *doctorReport) worst() string {
	v := verdictOK
	for _, f := range r.Findings {
		switch {
		case f.Verdict == verdictProblem:
			return verdictProblem
		case f.Verdict == verdictWarn:
			v = verdictWarn
		}
	}
	return v
}

// doctor holds doctor's flags and what it learned on the way.
type doctor struct {
	conn
	filter    filterFlag
	sort      filterFlag
	olderThan time.Duration
	atomic    bool

	client   *mongo.Client
	coll     *mongo.Collection
	uriOpts  *options.ClientOptions
	offset   time.Duration // the server's clock minus this machine's
	ferret   bool          // the server is FerretDB
	topology string
}

func runDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("doctor", stderr)
	var d doctor
	d.register(fs)
	fs.Var(&d.filter, "filter", "the claim query's filter, as Extended JSON `document` (as your workers pass it; default {})")
	fs.Var(&d.sort, "sort", "the claim query's sort, as Extended JSON `document`, e.g. '{\"priority\": -1}' (default none)")
	fs.DurationVar(&d.olderThan, "older-than", 24*time.Hour, "locks without a holder record (Python holders) older than this `duration` are reported as stale")
	fs.BoolVar(&d.atomic, "atomic", false, "also run check's measurement (2s, in a scratch collection) of whether writes are atomic")
	asJSON := fs.Bool("json", false, "print the report as one JSON object")
	if ok, code := parse(fs, args); !ok {
		return code
	}
	if d.olderThan <= 0 {
		return usageError(stderr, fs, "-older-than must be positive, not %v", d.olderThan)
	}
	client, code := d.connectOrFail(ctx, "doctor", stderr)
	if client == nil {
		return code
	}
	defer client.Disconnect(context.Background())
	d.client, d.coll = client, d.conn.coll(client)
	d.uriOpts = options.Client().ApplyURI(d.uri)

	r := &doctorReport{URI: redactURI(d.uri), Database: d.db, Collection: d.collection}
	if err := d.examine(ctx, r); err != nil {
		return fail(stderr, "doctor", err)
	}
	r.Verdict = r.worst()
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return fail(stderr, "doctor", err)
		}
	} else {
		printReport(stdout, r)
	}
	if r.Verdict == verdictProblem {
		return exitProblem
	}
	return exitOK
}

// examine runs every check in turn. An error means the server could not be
// asked at all; a question it cannot answer is a finding.
func (d *doctor) examine(ctx context.Context, r *doctorReport) error {
	// A server that stops answering midway fails the report, as an
	// unreachable one does: the whole report gets six times -timeout.
	limit := 6 * d.timeout
	if d.atomic {
		limit += 2 * doctorAtomicRun
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	if err := d.checkServer(ctx, r); err != nil {
		return err
	}
	if err := d.checkClock(ctx, r); err != nil {
		return err
	}
	n, err := d.coll.EstimatedDocumentCount(ctx)
	if err != nil {
		return fmt.Errorf("counting the documents of %s.%s: %w", d.db, d.collection, err)
	}
	names, err := d.client.Database(d.db).ListCollectionNames(ctx, bson.D{{Key: "name", Value: d.collection}})
	if err != nil {
		return fmt.Errorf("listing the collections of %s: %w", d.db, err)
	}
	d.checkIndex(ctx, r, n, len(names) > 0)
	if err := d.checkLocks(ctx, r, n); err != nil {
		return err
	}
	if d.atomic {
		d.checkAtomic(ctx, r)
	}
	return nil
}

// checkServer reports the server's kind, version and topology, and on a
// replica set whether locks are durable (majority writes) and read from the
// primary.
func (d *doctor) checkServer(ctx context.Context, r *doctorReport) error {
	admin := d.client.Database("admin")
	hello, err := admin.RunCommand(ctx, bson.D{{Key: "hello", Value: 1}}).Raw()
	if err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	// A server that answers hello but keeps its build to itself is still
	// worth examining.
	build, err := admin.RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Raw()
	version, ok := build.Lookup("version").StringValueOK()
	if err != nil || !ok {
		version = "(version unknown)"
	}
	_, d.ferret = build.Lookup("ferretdbVersion").StringValueOK()
	d.topology = topologyOf(hello)
	server := "MongoDB " + version
	if d.ferret {
		server = "FerretDB (speaks MongoDB " + version + ")"
	}
	f := r.add("server", verdictOK, "%s, %s", server, d.topology)
	if primary, ok := hello.Lookup("isWritablePrimary").BooleanOK(); ok && !primary && d.topology != "sharded (mongos)" {
		f.Verdict = verdictProblem
		f.Message += "; connected to a member that is not the primary: locks cannot be taken through it"
		f.Command = "connect to the replica set, not one member: mongodb://host1,host2,host3/?replicaSet=NAME"
	}
	if d.ferret {
		f.Message += "; FerretDB 1.x applies writes atomically only behind a one-write-at-a-time front such as mongolock dev-server's: -atomic measures it"
	}

	clustered := d.topology != "standalone"
	_, sessions := hello.Lookup("logicalSessionTimeoutMinutes").AsInt64OK()
	switch {
	case clustered && sessions && d.uriOpts.RetryWrites != nil && !*d.uriOpts.RetryWrites:
		r.add("writes", verdictOK, "retryable writes available but turned off by the URI (retryWrites=false); mongolock recovers its lost replies without them")
	case clustered && sessions:
		r.add("writes", verdictOK, "retryable writes available")
	default:
		r.add("writes", verdictOK, "retryable writes not available (they need a replica set or sharded cluster); mongolock recovers its lost replies without them")
	}
	d.checkChangeStreams(ctx, r, clustered)
	if strings.HasPrefix(d.topology, "replica set") || strings.HasPrefix(d.topology, "sharded") {
		d.checkDurability(ctx, r)
	}
	return nil
}

// topologyOf names the deployment a hello reply describes.
func topologyOf(hello bson.Raw) string {
	if msg, _ := hello.Lookup("msg").StringValueOK(); msg == "isdbgrid" {
		return "sharded (mongos)"
	}
	if set, ok := hello.Lookup("setName").StringValueOK(); ok {
		return fmt.Sprintf("replica set %q", set)
	}
	return "standalone"
}

// checkChangeStreams opens and closes a change stream where the topology
// allows one. mongolock does not need them; the line says whether they are
// there for other uses (a waiter woken by a change, say).
func (d *doctor) checkChangeStreams(ctx context.Context, r *doctorReport, clustered bool) {
	if !clustered {
		r.add("changes", verdictOK, "change streams not available (they need a replica set or sharded cluster); mongolock does not use them")
		return
	}
	cctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	cs, err := d.client.Database(d.db).Watch(cctx, mongo.Pipeline{})
	if err != nil {
		r.add("changes", verdictOK, "change streams not available here (%s); mongolock does not use them", oneLine(err))
		return
	}
	_ = cs.Close(context.WithoutCancel(ctx))
	r.add("changes", verdictOK, "change streams available")
}

// checkDurability checks, on a replica set or cluster, that lock writes wait
// for a majority (else a failover can roll back a granted lock) and says
// where lock state is read.
func (d *doctor) checkDurability(ctx context.Context, r *doctorReport) {
	wc := d.uriOpts.WriteConcern
	switch {
	case wc != nil && wc.W == "majority":
		r.add("durability", verdictOK, "the URI's write concern is majority: a granted lock survives a failover")
	case wc != nil && wc.W != nil:
		f := r.add("durability", verdictProblem, "the URI's write concern is w=%v: a failover can roll back a lock that was granted, and two holders then hold it", wc.W)
		f.Command = "add w=majority to the URI: " + withQuery(redactURI(d.uri), "w=majority")
	default:
		w, source := d.defaultWriteConcern(ctx)
		if w == "majority" {
			r.add("durability", verdictOK, "the URI sets no write concern; the server's default (%s) is majority", source)
			break
		}
		f := r.add("durability", verdictWarn, "the URI sets no write concern and the server's default is %s: a failover may roll back a granted lock", w)
		f.Command = "add w=majority to the URI: " + withQuery(redactURI(d.uri), "w=majority")
	}
	rp := "primary"
	if p := d.uriOpts.ReadPreference; p != nil && p.Mode() != readpref.PrimaryMode {
		rp = p.Mode().String()
	}
	r.add("reads", verdictOK, "lock state is read from the primary: mongolock (and doctor) ask the primary whatever the URI's read preference (%s)", rp)
}

// defaultWriteConcern asks the server for its default write concern; it
// says "unknown" when the server will not tell.
func (d *doctor) defaultWriteConcern(ctx context.Context) (w any, source string) {
	raw, err := d.client.Database("admin").RunCommand(ctx, bson.D{{Key: "getDefaultRWConcern", Value: 1}}).Raw()
	if err != nil {
		return "unknown (getDefaultRWConcern: " + oneLine(err) + ")", ""
	}
	source, _ = raw.Lookup("defaultWriteConcernSource").StringValueOK()
	v := raw.Lookup("defaultWriteConcern", "w")
	switch v.Type {
	case bson.TypeString:
		return v.StringValue(), source
	case 0:
		return "unknown", source
	}
	return v.String(), source
}

// checkClock measures this machine's clock against the server's, from
// hello's localTime, compensated by half the round trip. mongolock's leases
// follow the server's clock; times clients write themselves (Python's
// lock_time) and logs do not.
func (d *doctor) checkClock(ctx context.Context, r *doctorReport) error {
	start := doctorNow()
	raw, err := d.client.Database("admin").RunCommand(ctx, bson.D{{Key: "hello", Value: 1}}).Raw()
	end := doctorNow()
	if err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	dt, ok := raw.Lookup("localTime").DateTimeOK()
	if !ok {
		r.add("clock", verdictWarn, "unknown: the server's hello reply has no localTime; mongolock's leases cannot be timed on it")
		return nil
	}
	rtt := end.Sub(start)
	d.offset = time.UnixMilli(dt).Add(rtt / 2).Sub(end)
	v := verdictOK
	if d.offset.Abs() > clockWarnOffset {
		v = verdictWarn
	}
	dir := "ahead of"
	if d.offset < 0 {
		dir = "behind"
	}
	f := r.add("clock", v, "the server's clock is %s %s this machine's (round trip %s; localTime has ms resolution)",
		shortDur(d.offset.Abs()), dir, shortDur(rtt))
	if v == verdictWarn {
		f.Message += "; mongolock's leases follow the server's clock, but lock times written by Python clients and this machine's logs are off by as much"
		f.Command = "synchronise the clocks (NTP), e.g. timedatectl set-ntp true, on this machine and the server"
	}
	return nil
}

// shortDur prints a duration in ms below a second, else to 10ms.
func shortDur(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%dms", d.Milliseconds())
	}
	return d.Round(10 * time.Millisecond).String()
}

// serverNow is the server's time estimated from the clock check.
func (d *doctor) serverNow() time.Time { return doctorNow().Add(d.offset) }

// checkIndex asks the server to explain the claim (a findAndModify of the
// filter plus lock_id: null, in the sort) and reports whether an index
// serves it, with the index that would.
func (d *doctor) checkIndex(ctx context.Context, r *doctorReport, docs int64, exists bool) {
	keys := indexKeys(d.filter.doc, d.sort.doc)
	create := mongoshCreateIndex(redactURI(d.uri), d.db, d.collection, keys)
	if !exists {
		msg := "the collection does not exist yet: nothing to explain; the claim wants the index %s"
		if d.ferret {
			msg += " on MongoDB (FerretDB 1.x does not use one for it)"
		}
		r.add("index", verdictOK, msg, keysString(keys))
		return
	}
	claim := bson.D{
		{Key: "findAndModify", Value: d.collection},
		{Key: "query", Value: claimQuery(d.filter.doc)},
		{Key: "update", Value: bson.D{{Key: "$set", Value: bson.D{{Key: mongolock.LockKey, Value: "mongolock-doctor-explain"}}}}},
	}
	if len(d.sort.doc) > 0 {
		claim = append(claim, bson.E{Key: "sort", Value: d.sort.doc})
	}
	raw, err := d.client.Database(d.db).RunCommand(ctx, bson.D{{Key: "explain", Value: claim}, {Key: "verbosity", Value: "queryPlanner"}}).Raw()
	var p planVerdict
	if err != nil {
		p = planVerdict{served: planUnknown, detail: "the server cannot explain the claim: " + oneLine(err)}
	} else {
		p = readPlan(raw, len(d.sort.doc) > 0)
	}
	v := verdictOK
	if p.served != planServed && docs >= indexWarnDocs {
		v = verdictWarn // each claim, and each waiter's poll, reads every candidate
	}
	size := fmt.Sprintf("%d document(s)", docs)
	switch p.served {
	case planServed:
		r.add("index", v, "the claim is served by an index (%s)", p.detail)
	case planUnknown:
		f := r.add("index", v, "unknown whether an index serves the claim: %s; %s", p.detail, size)
		f.Command = create
	case planNoIndexPossible:
		r.add("index", v, "the claim scans the collection (%s): FerretDB does not pass it to its backend, so no index can serve it there; on MongoDB the index would be %s; %s",
			p.detail, keysString(keys), size)
	default:
		f := r.add("index", v, "the claim is not served by an index (%s); %s", p.detail, size)
		if v == verdictOK {
			f.Message += ", cheap to scan now: create the index before the collection grows"
		}
		f.Command = create
	}
}

// claimQuery is the filter of the claim: the user's filter plus lock_id:
// null, added to the filter's own fields where it can be, as the library
// does (a plain filter is what some servers push down).
func claimQuery(filter bson.D) bson.D {
	free := bson.E{Key: mongolock.LockKey, Value: nil}
	for _, e := range filter {
		if e.Key == mongolock.LockKey {
			return bson.D{{Key: "$and", Value: bson.A{filter, bson.D{free}}}}
		}
	}
	return append(append(bson.D{}, filter...), free)
}

// indexKeys is the index that serves the claim: the filter's equality
// fields, then the lock field (an equality on null), then the sort, then
// the filter's range fields (MongoDB's equality-sort-range rule).
func indexKeys(filter, sort bson.D) bson.D {
	var eq, rng bson.D
	seen := map[string]bool{mongolock.LockKey: true}
	for _, e := range filter {
		if strings.HasPrefix(e.Key, "$") || seen[e.Key] {
			continue // $or, $and...: not a field of this simple index
		}
		seen[e.Key] = true
		if isEquality(e.Value) {
			eq = append(eq, bson.E{Key: e.Key, Value: 1})
		} else {
			rng = append(rng, bson.E{Key: e.Key, Value: 1})
		}
	}
	keys := append(eq, bson.E{Key: mongolock.LockKey, Value: 1})
	for _, e := range sort {
		if seen[e.Key] {
			continue
		}
		seen[e.Key] = true
		dir := 1
		if n, ok := asNumber(e.Value); ok && n < 0 {
			dir = -1
		}
		keys = append(keys, bson.E{Key: e.Key, Value: dir})
	}
	return append(keys, rng...)
}

// isEquality reports whether a filter value matches by equality: a plain
// value, or an operator document with $eq only.
func isEquality(v any) bool {
	d, ok := v.(bson.D)
	if !ok || len(d) == 0 || !strings.HasPrefix(d[0].Key, "$") {
		return true
	}
	return len(d) == 1 && d[0].Key == "$eq"
}

func asNumber(v any) (float64, bool) {
	switch n := v.(type) {
	case int32:
		return float64(n), true
	case int64:
		return float64(n), true
	case float64:
		return n, true
	}
	return 0, false
}

var jsIdent = regexp.MustCompile(`^[A-Za-z_$][A-Za-z0-9_$]*$`)

// keysString is an index's keys in mongosh's syntax: {state: 1, lock_id: 1}.
func keysString(keys bson.D) string {
	parts := make([]string, len(keys))
	for i, k := range keys {
		name := k.Key
		if !jsIdent.MatchString(name) {
			b, _ := json.Marshal(name)
			name = string(b)
		}
		parts[i] = fmt.Sprintf("%s: %v", name, k.Value)
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// mongoshCreateIndex is the mongosh command line that creates the index.
func mongoshCreateIndex(uri, db, coll string, keys bson.D) string {
	dbName, _ := json.Marshal(db)
	collName, _ := json.Marshal(coll)
	js := fmt.Sprintf("db.getSiblingDB(%s).getCollection(%s).createIndex(%s)", dbName, collName, keysString(keys))
	return "mongosh " + shellQuote(uri) + " --eval " + shellQuote(js)
}

// Whether the claim is served by an index, as an explain says.
const (
	planUnknown         = iota
	planServed          // an index finds the documents in the sort's order
	planScan            // a collection scan, or an in-memory sort
	planNoIndexPossible // FerretDB did not push the query down: no index would help
)

type planVerdict struct {
	served int
	detail string
}

// readPlan reads an explain reply of MongoDB (queryPlanner.winningPlan, a
// tree of stages, sharded or not, classic or SBE) or of FerretDB (its
// backend's plan: SQLite's lines, PostgreSQL's nodes, with filterPushdown
// and sortPushdown).
func readPlan(raw bson.Raw, sorted bool) planVerdict {
	if _, ok := raw.Lookup("filterPushdown").BooleanOK(); ok {
		return readFerretPlan(raw, sorted)
	}
	wp := raw.Lookup("queryPlanner", "winningPlan")
	if wp.Type != bson.TypeEmbeddedDocument {
		return planVerdict{planUnknown, "the explain reply has no queryPlanner.winningPlan"}
	}
	var stages []string
	collectStages(wp, &stages)
	has := func(name string) bool {
		for _, s := range stages {
			if s == name {
				return true
			}
		}
		return false
	}
	chain := strings.Join(stages, " < ")
	switch {
	case has("EOF"):
		return planVerdict{planUnknown, "the collection does not exist yet, so the server has no plan (" + chain + ")"}
	case has("COLLSCAN"):
		return planVerdict{planScan, "plan " + chain}
	case has("SORT"):
		return planVerdict{planScan, "an index finds the documents but they are sorted in memory: plan " + chain}
	case has("IXSCAN") || has("EXPRESS_IXSCAN") || has("IDHACK") || has("EXPRESS_IDHACK") || has("DISTINCT_SCAN"):
		return planVerdict{planServed, "plan " + chain}
	}
	return planVerdict{planUnknown, "plan " + chain + " is not one doctor knows"}
}

// collectStages walks a plan tree and lists its stage names, top first.
func collectStages(v bson.RawValue, out *[]string) {
	switch v.Type {
	case bson.TypeEmbeddedDocument:
		doc := v.Document()
		if s, ok := doc.Lookup("stage").StringValueOK(); ok {
			*out = append(*out, s)
		}
		elems, _ := doc.Elements()
		for _, e := range elems {
			collectStages(e.Value(), out)
		}
	case bson.TypeArray:
		vals, _ := v.Array().Values()
		for _, e := range vals {
			collectStages(e, out)
		}
	}
}

// readFerretPlan reads FerretDB's explain: whether it pushed the filter and
// sort down to its backend, and whether the backend's plan uses an index.
func readFerretPlan(raw bson.Raw, sorted bool) planVerdict {
	filterDown, _ := raw.Lookup("filterPushdown").BooleanOK()
	sortDown, _ := raw.Lookup("sortPushdown").BooleanOK()
	var lines []string
	collectFerretPlan(raw.Lookup("queryPlanner"), &lines)
	plan := strings.Join(lines, "; ")
	if plan == "" {
		plan = "no backend plan"
	}
	detail := fmt.Sprintf("FerretDB: filterPushdown %v, sortPushdown %v, backend plan: %s", filterDown, sortDown, plan)
	if !filterDown || (sorted && !sortDown) {
		return planVerdict{planNoIndexPossible, detail}
	}
	usesIndex := false
	for _, l := range lines {
		if strings.Contains(l, "USING INDEX") || strings.Contains(l, "USING COVERING INDEX") || strings.Contains(l, "Index Scan") || strings.Contains(l, "Index Only Scan") {
			usesIndex = true
		}
	}
	if usesIndex {
		return planVerdict{planServed, detail}
	}
	return planVerdict{planScan, detail}
}

// collectFerretPlan gathers SQLite's plan lines ("SCAN t", "SEARCH t USING
// INDEX i") and PostgreSQL's node types ("Seq Scan", "Index Scan").
func collectFerretPlan(v bson.RawValue, out *[]string) {
	switch v.Type {
	case bson.TypeString:
		if s := v.StringValue(); strings.Contains(s, "detail=") {
			*out = append(*out, s[strings.Index(s, "detail=")+len("detail="):])
		} else {
			*out = append(*out, s)
		}
	case bson.TypeEmbeddedDocument:
		doc := v.Document()
		if s, ok := doc.Lookup("Node Type").StringValueOK(); ok {
			*out = append(*out, s)
		}
		elems, _ := doc.Elements()
		for _, e := range elems {
			if e.Value().Type != bson.TypeString {
				collectFerretPlan(e.Value(), out)
			} else if e.Key() == "Plan" {
				collectFerretPlan(e.Value(), out)
			}
		}
	case bson.TypeArray:
		vals, _ := v.Array().Values()
		for _, e := range vals {
			collectFerretPlan(e, out)
		}
	}
}

// lockClasses sorts locks into what an operator can act on. host is this
// machine's name for dead holders ("" when it cannot tell machines apart).
type lockClasses struct {
	oldest    *mongolock.LockInfo
	expired   []mongolock.LockInfo // a lease declared and run out by the server's clock
	dead      []mongolock.LockInfo // holder record on this host, process gone
	orphaned  []mongolock.LockInfo // no holder record (Python), older than -older-than
	elsewhere []mongolock.LockInfo // a holder on another host, no lease, older than -older-than
}

func classifyLocks(infos []mongolock.LockInfo, now time.Time, olderThan time.Duration, host string) (lockClasses, error) {
	var c lockClasses
	for i, in := range infos {
		if c.oldest == nil || in.LockTime.Before(c.oldest.LockTime) {
			c.oldest = &infos[i]
		}
		if !in.Expires.IsZero() && !in.Expires.After(now) {
			c.expired = append(c.expired, in)
		}
		if host != "" {
			dead, err := holderIsDead(in, host)
			if err != nil {
				return c, err
			}
			if dead {
				c.dead = append(c.dead, in)
			}
		}
		old := in.LockTime.Before(now.Add(-olderThan))
		switch {
		case !hasHolder(in) && old:
			c.orphaned = append(c.orphaned, in)
		case hasHolder(in) && in.Host != host && in.Expires.IsZero() && old:
			c.elsewhere = append(c.elsewhere, in)
		}
	}
	return c, nil
}

// checkLocks counts the locks and reports the classes that need an
// operator, each with the unlock command that clears exactly it.
func (d *doctor) checkLocks(ctx context.Context, r *doctorReport, docs int64) error {
	infos, err := mongolock.New(d.coll).ListLocked(ctx, bson.D{})
	if err != nil {
		return err
	}
	now := d.serverNow()
	if len(infos) == 0 {
		if docs == 0 {
			r.add("locks", verdictOK, "no locks: %s.%s is empty or does not exist yet (check -db and -collection if you expected documents)", d.db, d.collection)
		} else {
			r.add("locks", verdictOK, "no locks among %d document(s)", docs)
		}
		return nil
	}
	host, hostErr := deadCheckHost()
	c, err := classifyLocks(infos, now, d.olderThan, host)
	if err != nil {
		hostErr, host = err, ""
		if c, err = classifyLocks(infos, now, d.olderThan, ""); err != nil {
			return err
		}
	}
	o := c.oldest
	r.add("locks", verdictOK, "%d lock(s); the oldest: _id %s, lock id %s, taken %v ago (%s UTC)",
		len(infos), idJSON(o.DocumentID), o.LockID, now.Sub(o.LockTime).Round(time.Second), o.LockTime.UTC().Format("2006-01-02 15:04:05"))

	if len(c.expired) == 0 {
		r.add("expired", verdictOK, "no expired leases")
	} else {
		f := r.add("expired", verdictWarn, "%d lock(s) whose lease ran out by the server's clock (%s): a mongolock acquirer takes them over, a Python MongoLock waits for them",
			len(c.expired), idList(c.expired))
		f.Command = d.unlockCommand("-expired")
	}
	switch {
	case host == "":
		r.add("dead", verdictOK, "unknown whether holders on this host are alive: %v", hostErr)
	case len(c.dead) == 0:
		r.add("dead", verdictOK, "no lock held by a process of this host (%s) that is gone", host)
	default:
		f := r.add("dead", verdictProblem, "%d lock(s) whose holder was a process of this host that is gone (%s)", len(c.dead), idList(c.dead))
		f.Command = d.unlockCommand("-dead")
	}
	if len(c.orphaned) == 0 {
		r.add("stale", verdictOK, "no lock without a holder record (a Python holder) older than %s", flagDuration(d.olderThan))
	} else {
		f := r.add("stale", verdictProblem, "%d lock(s) without a holder record (Python holders, which never expire) older than %v (%s)",
			len(c.orphaned), flagDuration(d.olderThan), idList(c.orphaned))
		f.Command = d.unlockCommand("-no-holder", "-older-than", flagDuration(d.olderThan))
	}
	if len(c.elsewhere) > 0 {
		f := r.add("elsewhere", verdictWarn, "%d lock(s) older than %s without a lease, held from other hosts (%s), which cannot be asked from here whether their holders live (%s)",
			len(c.elsewhere), flagDuration(d.olderThan), hostList(c.elsewhere), idList(c.elsewhere))
		f.Command = d.unlockCommand("-dead") + "   # on each of those hosts"
	}
	return nil
}

// hostList names the hosts of the holders, each once.
func hostList(infos []mongolock.LockInfo) string {
	var hosts []string
	for _, in := range infos {
		if !slices.Contains(hosts, in.Host) {
			hosts = append(hosts, in.Host)
		}
	}
	return strings.Join(hosts, ", ")
}

// flagDuration writes d as a flag would be typed: 24h, not 24h0m0s.
func flagDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// idList names up to 5 locked documents.
func idList(infos []mongolock.LockInfo) string {
	ids := []string{"_id"}
	for i, in := range infos {
		if i == 5 {
			ids = append(ids, fmt.Sprintf("and %d more", len(infos)-5))
			break
		}
		ids = append(ids, idJSON(in.DocumentID))
	}
	return ids[0] + " " + strings.Join(ids[1:], ", ")
}

// unlockCommand is the unlock command line for the report's collection; it
// asks before it acts.
func (d *doctor) unlockCommand(selectors ...string) string {
	args := append([]string{"mongolock", "unlock"}, selectors...)
	if d.uri != defaultURI {
		args = append(args, "-uri", redactURI(d.uri))
	}
	if d.db != "mongolock" {
		args = append(args, "-db", d.db)
	}
	if d.collection != "jobs" {
		args = append(args, "-collection", d.collection)
	}
	for i, a := range args {
		args[i] = shellQuote(a)
	}
	return strings.Join(args, " ")
}

// checkAtomic runs check's two measurements in a scratch collection.
func (d *doctor) checkAtomic(ctx context.Context, r *doctorReport) {
	scratch := d.client.Database(d.db).Collection(fmt.Sprintf("mongolock_check_%d", rand.Int64()))
	defer scratch.Drop(context.WithoutCancel(ctx))
	locks, overlaps, err := checkLocking(ctx, scratch, 16, doctorAtomicRun)
	if err != nil {
		r.add("atomic", verdictWarn, "unknown: the measurement failed: %s", oneLine(err))
		return
	}
	calls, final, err := checkIncrements(ctx, scratch, 16, doctorAtomicRun)
	if err != nil {
		r.add("atomic", verdictWarn, "unknown: the measurement failed: %s", oneLine(err))
		return
	}
	if overlaps > 0 || calls != final {
		f := r.add("atomic", verdictProblem, "not atomic: %d overlapping holders in %d acquisitions, %d lost of %d updates; locks on this server are not safe",
			overlaps, locks, calls-final, calls)
		f.Command = "use MongoDB; mongolock check -uri " + shellQuote(redactURI(d.uri)) + " measures it longer"
		return
	}
	r.add("atomic", verdictOK, "atomic: no overlap in %d acquisitions, no lost update in %d by 16 clients", locks, calls)
}

// printReport prints one line per finding, its command under it, and a
// summary.
func printReport(w io.Writer, r *doctorReport) {
	fmt.Fprintf(w, "mongolock doctor: %s, collection %s.%s\n", r.URI, r.Database, r.Collection)
	counts := map[string]int{}
	for _, f := range r.Findings {
		counts[f.Verdict]++
		fmt.Fprintf(w, "%-8s %-11s %s\n", f.Verdict, f.Check, f.Message)
		if f.Command != "" {
			fmt.Fprintf(w, "%-8s %-11s run: %s\n", "", "", f.Command)
		}
	}
	fmt.Fprintf(w, "%s: %d ok, %d warning(s), %d problem(s)\n", r.Verdict, counts[verdictOK], counts[verdictWarn], counts[verdictProblem])
}

// redactURI hides the password of a URI, so that reports can be shared.
func redactURI(uri string) string {
	u, err := url.Parse(uri)
	if err != nil || u.User == nil {
		return uri
	}
	if _, ok := u.User.Password(); !ok {
		return uri
	}
	u.User = url.UserPassword(u.User.Username(), "PASSWORD")
	return u.String()
}

// withQuery adds an option to a URI's query.
func withQuery(uri, opt string) string {
	sep := "?"
	if strings.Contains(uri, "?") {
		sep = "&"
	} else if u, err := url.Parse(uri); err == nil && u.Path == "" {
		sep = "/?"
	}
	return uri + sep + opt
}

// shellQuote quotes s for a POSIX shell where it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@,+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
