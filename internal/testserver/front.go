package testserver

import (
	"encoding/binary"
	"net"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/mongolock/mongolock/internal/wire"
)

// writeCommands are the commands that FerretDB 1.x does not apply atomically
// under concurrency; the front forwards them one at a time.
var writeCommands = map[string]bool{
	"insert":        true,
	"update":        true,
	"delete":        true,
	"findandmodify": true,
}

// Front is a wire-level proxy in front of a MongoDB-wire server. With Serialize
// set, write commands from all connections go through one mutex: a message is
// read whole from the client, forwarded, and its reply read back before the
// next write starts. Reads stay concurrent.
type Front struct {
	backend   string
	serialize bool

	ln    net.Listener
	write sync.Mutex // held for the whole round trip of a write command

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// NewFront listens on addr and forwards every connection to backend.
func NewFront(addr, backend string, serialize bool) (*Front, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	f := &Front{backend: backend, serialize: serialize, ln: ln, conns: map[net.Conn]struct{}{}}
	f.wg.Add(1)
	go f.accept()
	return f, nil
}

// Addr is the address clients connect to.
func (f *Front) Addr() string { return f.ln.Addr().String() }

// Close stops accepting, closes every open connection and waits for their
// goroutines to end.
func (f *Front) Close() error {
	err := f.ln.Close()
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
	return err
}

func (f *Front) accept() {
	defer f.wg.Done()
	for {
		client, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.wg.Add(1)
		go f.serve(client)
	}
}

// track registers c so that Close can interrupt it; it reports false, and
// closes c, when the front is already closing.
func (f *Front) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		c.Close()
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *Front) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
}

func (f *Front) serve(client net.Conn) {
	defer f.wg.Done()
	if !f.track(client) {
		return
	}
	defer f.untrack(client)
	server, err := net.Dial("tcp", f.backend)
	if err != nil || !f.track(server) {
		return
	}
	defer f.untrack(server)

	for {
		msg, err := wire.ReadMessage(client)
		if err != nil {
			return
		}
		if err := f.roundTrip(withoutMaxTime(msg), client, server); err != nil {
			return
		}
	}
}

// roundTrip forwards one client message and, unless the client said it wants
// no reply, one reply back.
func (f *Front) roundTrip(msg []byte, client, server net.Conn) error {
	if f.serialize && isWrite(msg) {
		f.write.Lock()
		defer f.write.Unlock()
	}
	if _, err := server.Write(msg); err != nil {
		return err
	}
	if !wire.ExpectsReply(msg) {
		return nil
	}
	reply, err := wire.ReadMessage(server)
	if err != nil {
		return err
	}
	_, err = client.Write(reply)
	return err
}

// isWrite reports whether msg is a command (the first key of its body
// section) named in writeCommands.
func isWrite(msg []byte) bool {
	name, err := wire.CommandName(msg)
	return err == nil && writeCommands[strings.ToLower(name)]
}

func dialTimeout(addr string, d time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", addr, d)
}

// withoutMaxTime returns msg with the maxTimeMS field of its command removed.
//
// The driver derives maxTimeMS from a context's deadline. When FerretDB 1.x
// times a command out, it interrupts the SQLite connection, and the interrupt
// can land on the next statement run on that connection, which belongs to
// another client's command: an unrelated update then fails, or matches
// nothing. Without maxTimeMS the client still gives up at its deadline, and
// the server finishes each command it started, as MongoDB does.
func withoutMaxTime(msg []byte) []byte {
	if wire.OpCode(msg) != wire.OpMsg || len(msg) < wire.HeaderLen+5 || binary.LittleEndian.Uint32(msg[wire.HeaderLen:])&wire.FlagChecksum != 0 {
		return msg
	}
	bodyAt := wire.HeaderLen + 4
	if msg[bodyAt] != 0 {
		return msg // the body section comes first in what drivers send
	}
	size := int(int32(binary.LittleEndian.Uint32(msg[bodyAt+1:])))
	if size < 5 || bodyAt+1+size > len(msg) {
		return msg
	}
	body := bson.Raw(msg[bodyAt+1 : bodyAt+1+size])
	elems, err := body.Elements()
	if err != nil {
		return msg
	}
	doc := make([]byte, 4, size)
	found := false
	for _, e := range elems {
		if e.Key() == "maxTimeMS" {
			found = true
			continue
		}
		doc = append(doc, e...)
	}
	if !found {
		return msg
	}
	doc = append(doc, 0)
	binary.LittleEndian.PutUint32(doc, uint32(len(doc)))
	out := make([]byte, 0, len(msg)-size+len(doc))
	out = append(out, msg[:bodyAt+1]...)
	out = append(out, doc...)
	out = append(out, msg[bodyAt+1+size:]...)
	binary.LittleEndian.PutUint32(out, uint32(len(out)))
	return out
}
