package mongolock_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/mongolock/mongolock"
	"github.com/mongolock/mongolock/internal/faultproxy"
	"github.com/mongolock/mongolock/internal/testserver"
)

// An independent check of the lock: worker goroutines in several processes
// lock a few documents through a proxy that loses replies, cuts requests and
// partitions the network, and record every acquire, release, loss and
// fenced write with its real-time interval. Porcupine then checks the
// history against lockModel (linmodel_test.go): a mutex per document with
// strictly increasing fencing tokens, and a guarded counter that takes only
// greater tokens.

const (
	linDocs  = 2
	linLease = time.Second // short, so that partitions make take-overs
	linRole  = "linearizable"
)

func init() { childRoles[linRole] = linChild }

func TestLinearizability(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	srv := ownServer(t)
	p, err := faultproxy.Start(srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	defer p.Heal(false)
	coll := srv.coll(t)
	for i := range linDocs {
		if _, err := coll.InsertMany(testCtx(t), []any{bson.D{{Key: "_id", Value: linDoc(i)}}, bson.D{{Key: "_id", Value: "fence-" + linDoc(i)}, {Key: "fence", Value: int64(0)}}}); err != nil {
			t.Fatal(err)
		}
	}
	procs, workers, rounds := 3, 3, stress(15, 1700) // long: 15 300 acquisitions, 45 000 operations

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { injectFaults(t, p, srv, stop) })
	children := make([]*child, procs)
	for i := range children {
		cmd := childCommand(linRole, coll, workers, rounds)
		cmd.Env = append(cmd.Env, childURI+"="+p.URI(), linProcEnv+"="+fmt.Sprint(i))
		children[i] = spawn(t, cmd)
	}
	timeout := 3 * time.Minute
	if os.Getenv(stressEnv) == "long" {
		timeout = 2 * time.Hour
	}
	var ops []linOp
	for i, c := range children {
		c.wait(t, timeout, fmt.Sprintf("linearizability child %d to record its %d rounds", i, workers*rounds))
		ops = append(ops, parseOps(t, c.stdout.Bytes())...)
	}
	close(stop)
	wg.Wait()
	counts := map[opKind]int{}
	for _, op := range ops {
		counts[op.Kind]++
	}
	t.Logf("%d operations: %v; %d server restarts", len(ops), counts, srv.restarts)
	if counts[opAcquire] < procs*workers*rounds/4 {
		t.Fatalf("only %d acquisitions of %d: the faults left too little to check", counts[opAcquire], procs*workers*rounds)
	}
	start := time.Now()
	res, path := checkHistory(t, ops)
	t.Logf("Porcupine checked the history in %v", time.Since(start).Round(time.Millisecond))
	if res != porcupine.Ok {
		t.Fatalf("the history is not linearizable (%s); visualization: %s", res, path)
	}
}

// A planted overlap: a raw write clears A's lock so that B takes it, and
// puts A's back after B's release, so both releases succeed. The checker
// must call that history what it is.
func TestLinearizabilityPlantedOverlap(t *testing.T) {
	ctx := testCtx(t)
	coll := newColl(t)
	doc := bson.D{{Key: "_id", Value: linDoc(0)}}
	insert(t, coll, doc)
	lk := mongolock.New(coll, mongolock.WithFencing(""))
	rec := &recorder{}
	a, err := rec.acquire(ctx, lk, 0, 1, linDoc(0))
	if err != nil {
		t.Fatal(err)
	}
	held := get(t, coll, linDoc(0))
	clear := bson.D{{Key: "$set", Value: bson.D{{Key: mongolock.LockKey, Value: nil}, {Key: mongolock.LockTimeKey, Value: nil}, {Key: mongolock.HolderKey, Value: nil}}}}
	if _, err := coll.UpdateOne(ctx, doc, clear); err != nil {
		t.Fatal(err)
	}
	b, err := rec.acquire(ctx, lk, 1, 2, linDoc(0))
	if err != nil {
		t.Fatal(err)
	}
	rec.release(ctx, b, 1, 2, linDoc(0), 0)
	restore := bson.D{{Key: "$set", Value: bson.D{{Key: mongolock.LockKey, Value: held[mongolock.LockKey]},
		{Key: mongolock.LockTimeKey, Value: held[mongolock.LockTimeKey]}, {Key: mongolock.HolderKey, Value: held[mongolock.HolderKey]},
		{Key: "lock_seq", Value: held["lock_seq"]}}}}
	if _, err := coll.UpdateOne(ctx, doc, restore); err != nil {
		t.Fatal(err)
	}
	rec.release(ctx, a, 0, 1, linDoc(0), 0)
	for _, op := range rec.ops {
		if op.Kind != opAcquire && op.Kind != opRelease {
			t.Fatalf("planted history %v: want two acquires and two releases that succeeded", rec.ops)
		}
	}
	res, path := checkHistory(t, rec.ops)
	if res != porcupine.Illegal {
		t.Fatalf("a history with two holders at once was judged %q; want illegal", res)
	}
	t.Logf("the planted overlap is reported as not linearizable; visualization: %s", path)
}

// checkHistory runs Porcupine over ops. When the result is not Ok it writes
// the visualization to a temporary directory and returns its path.
func checkHistory(t *testing.T, ops []linOp) (porcupine.CheckResult, string) {
	t.Helper()
	model := lockModel.ToModel()
	res, info := porcupine.CheckOperationsVerbose(model, operations(ops), time.Minute)
	if res == porcupine.Ok {
		return res, ""
	}
	path := filepath.Join(t.TempDir(), "linearizability.html")
	if err := porcupine.VisualizePath(model, info, path); err != nil {
		t.Errorf("writing the visualization: %v", err)
	}
	t.Logf("Porcupine's visualization: %s", path)
	return res, path
}

func linDoc(i int) string { return fmt.Sprintf("doc%d", i) }

const linProcEnv = "MONGOLOCK_TEST_PROC"

// injectFaults arms a random fault every few hundred milliseconds until
// stop: a lost reply or a cut request on an acquire or a release, a
// partition that outlasts the lease now and then and then delivers or drops
// what it held, or (every few seconds at most) a restart of the server.
func injectFaults(t *testing.T, p *faultproxy.Proxy, srv *linServer, stop <-chan struct{}) {
	cmds := []string{"findAndModify", "update"}
	timer := time.NewTimer(0)
	defer timer.Stop()
	lastRestart := time.Now()
	for {
		timer.Reset(time.Duration(100+rand.IntN(300)) * time.Millisecond)
		select {
		case <-stop:
			return
		case <-timer.C:
		}
		cmd := cmds[rand.IntN(len(cmds))]
		switch rand.IntN(6) {
		case 0, 1:
			p.LoseReply(cmd, 1)
		case 2, 3:
			p.CutRequest(cmd, 1)
		case 4:
			p.Hold()
			timer.Reset(time.Duration(200+rand.IntN(1300)) * time.Millisecond)
			select {
			case <-stop:
			case <-timer.C:
			}
			p.Heal(rand.IntN(2) == 0)
		case 5:
			if srv.restart != nil && time.Since(lastRestart) > 3*time.Second {
				if err := srv.restart(); err != nil {
					t.Errorf("restarting the server: %v", err)
					return
				}
				srv.restarts++
				lastRestart = time.Now()
			}
		}
	}
}

// linServer is the server the linearizability test runs against: its own
// embedded one, which it can restart on the same data and address, or
// MONGODB_URI's, which it cannot.
type linServer struct {
	addr     string
	client   *mongo.Client
	restart  func() error // nil when the server is not ours
	restarts int
}

func ownServer(t *testing.T) *linServer {
	t.Helper()
	if !embedded {
		addr, err := singleHost(uri)
		if err != nil {
			t.Skipf("the fault proxy needs a single-host MONGODB_URI: %v", err)
		}
		return &linServer{addr: addr, client: client}
	}
	dir := t.TempDir()
	s, err := testserver.StartProcess(testserver.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ls := &linServer{addr: s.Addr()}
	ls.restart = func() error {
		if err := s.Close(); err != nil {
			return err
		}
		s, err = testserver.StartProcess(testserver.Options{DataDir: dir, Listen: ls.addr})
		return err
	}
	t.Cleanup(func() {
		if s != nil {
			_ = s.Close()
		}
	})
	c, err := connect(s.URI())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) }) // before the server stops
	ls.client = c
	return ls
}

// coll is a fresh collection of the server.
func (s *linServer) coll(t *testing.T) *mongo.Collection {
	name := newColl(t).Name() // a fresh name; dropped where it was made
	return s.client.Database(testDB).Collection(name)
}

// linChild runs workers goroutines that each lock a random document rounds
// times, and prints the history as "op <json>" lines.
func linChild(ctx context.Context, coll *mongo.Collection, workers, rounds int) int {
	proc := 0
	fmt.Sscan(os.Getenv(linProcEnv), &proc)
	// Here the proxy is the network: a held write lands at the latest when
	// a partition heals, within 1.5s; a few seconds of sweep outlive it.
	defer mongolock.SetSweep(50*time.Millisecond, 500*time.Millisecond, 3*time.Second)()
	lk := mongolock.New(coll, mongolock.WithFencing(""), mongolock.WithLease(linLease), mongolock.WithPollInterval(20*time.Millisecond))
	rec := &recorder{}
	var wg sync.WaitGroup
	for w := range workers {
		client := proc*workers + w
		wg.Go(func() {
			for r := range rounds {
				acq := int64(client)*1_000_000 + int64(r) + 1
				doc := linDoc(rand.IntN(linDocs))
				l, err := rec.acquire(ctx, lk, client, acq, doc)
				if err != nil {
					continue
				}
				rec.fence(ctx, coll, client, l, doc)
				time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
				rec.release(ctx, l, client, acq, doc, rec.calledAt(acq))
			}
		})
	}
	wg.Wait()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := lk.Close(cctx); err != nil {
		fmt.Fprintln(os.Stderr, err) // what may remain is swept no more; the history does not depend on it
	}
	for _, op := range rec.ops {
		b, _ := json.Marshal(op)
		fmt.Printf("op %s\n", b)
	}
	return 0
}

// recorder collects one process's history.
type recorder struct {
	mu  sync.Mutex
	ops []linOp
}

func (r *recorder) add(op linOp) {
	r.mu.Lock()
	r.ops = append(r.ops, op)
	r.mu.Unlock()
}

// calledAt is when acquisition acq's acquire was called: a loss can
// happen from then on.
func (r *recorder) calledAt(acq int64) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.ops) - 1; i >= 0; i-- {
		if r.ops[i].Acq == acq && r.ops[i].Kind == opAcquire {
			return r.ops[i].Call
		}
	}
	return 0
}

func now() int64 { return time.Now().UnixNano() }

// acquire waits for doc, a few seconds at most. An error is an acquire of
// unknown outcome: it returns at the end of history.
func (r *recorder) acquire(ctx context.Context, lk *mongolock.Locker, client int, acq int64, doc string) (*mongolock.Lock, error) {
	call := now()
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	l, err := lk.Acquire(actx, bson.D{{Key: "_id", Value: doc}})
	if err != nil {
		r.add(linOp{Client: client, Kind: opUnknown, Doc: doc, Acq: acq, Call: call})
		return nil, err
	}
	r.add(linOp{Client: client, Kind: opAcquire, Doc: doc, Acq: acq, Token: l.Token(), Call: call, Return: now()})
	return l, nil
}

// fence writes the holder's token to the guarded counter, if it is greater
// than the one stored.
func (r *recorder) fence(ctx context.Context, coll *mongo.Collection, client int, l *mongolock.Lock, doc string) {
	call := now()
	fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	res, err := coll.UpdateOne(fctx, bson.D{{Key: "_id", Value: "fence-" + doc}, {Key: "fence", Value: bson.D{{Key: "$lt", Value: l.Token()}}}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "fence", Value: l.Token()}}}})
	op := linOp{Client: client, Kind: opFence, Doc: doc, Token: l.Token(), Call: call}
	if err == nil {
		applied := res.ModifiedCount == 1
		op.Applied, op.Return = &applied, now()
	} // else unknown: pending to the end of history
	r.add(op)
}

// release frees l. ErrLockLost, or an error that leaves the lock's fate
// unknown, ends the acquisition at some point after from (its acquire's
// call, or 0 for its release's call).
func (r *recorder) release(ctx context.Context, l *mongolock.Lock, client int, acq int64, doc string, from int64) {
	call := now()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := l.Release(rctx)
	if from == 0 {
		from = call
	}
	switch {
	case err == nil:
		r.add(linOp{Client: client, Kind: opRelease, Doc: doc, Acq: acq, Call: call, Return: now()})
	case errors.Is(err, mongolock.ErrLockLost):
		r.add(linOp{Client: client, Kind: opLose, Doc: doc, Acq: acq, Call: from, Return: now()})
	default:
		r.add(linOp{Client: client, Kind: opLose, Doc: doc, Acq: acq, Call: from})
	}
}

func parseOps(t *testing.T, out []byte) []linOp {
	t.Helper()
	var ops []linOp
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "op ")
		if !ok {
			continue
		}
		var op linOp
		if err := json.Unmarshal([]byte(line), &op); err != nil {
			t.Fatalf("child output %q: %v", line, err)
		}
		ops = append(ops, op)
	}
	return ops
}
