package faultproxy

import (
	"net"
	"strings"
	"sync"
	"time"

	"github.com/mongolock/mongolock/internal/wire"
)

// dialTimeout bounds how long a new client connection waits for the backend.
const dialTimeout = 5 * time.Second

// Proxy forwards client connections to a backend and injects faults. Its
// methods are safe for concurrent use.
type Proxy struct {
	backend string // host:port
	ln      net.Listener
	done    chan struct{} // closed by Close
	wg      sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	links   map[*link]struct{}
	lose    map[string]int // commands whose next replies are lost
	cut     map[string]int // commands whose next requests are cut
	delay   map[string]time.Duration
	count   map[string]int // commands forwarded to the backend
	holding bool
	held    []*held // in the order they were held
}

// Start listens on a free loopback port and forwards each client connection
// to backend (host:port) on a backend connection of its own.
func Start(backend string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		backend: backend,
		ln:      ln,
		done:    make(chan struct{}),
		links:   map[*link]struct{}{},
		lose:    map[string]int{},
		cut:     map[string]int{},
		delay:   map[string]time.Duration{},
		count:   map[string]int{},
	}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URI is the mongodb:// address of the proxy, with directConnection=true so
// that the driver talks to this address only.
func (p *Proxy) URI() string { return "mongodb://" + p.Addr() + "/?directConnection=true" }

// Close stops accepting, closes every connection, drops what is held, and
// returns once all of the proxy's goroutines have ended. It is safe to call
// more than once.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	links := p.links
	p.links = nil
	p.held = nil
	p.mu.Unlock()

	err := p.ln.Close()
	for l := range links {
		l.close()
	}
	p.wg.Wait()
	return err
}

// LoseReply makes the next n commands named cmd reach the server, which
// applies them, while their reply is dropped and the client connection
// closed, as a connection cut after the server acted. It replaces any earlier
// count for cmd; 0 removes the fault.
func (p *Proxy) LoseReply(cmd string, n int) { p.set(p.lose, cmd, n) }

// CutRequest makes the next n commands named cmd go nowhere: they are not
// forwarded, and the client connection is closed. It replaces any earlier
// count for cmd; 0 removes the fault.
func (p *Proxy) CutRequest(cmd string, n int) { p.set(p.cut, cmd, n) }

// Delay makes every command named cmd wait d before it is forwarded; 0
// removes the delay. Other commands on other connections are not held up.
func (p *Proxy) Delay(cmd string, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if d <= 0 {
		delete(p.delay, key(cmd))
		return
	}
	p.delay[key(cmd)] = d
}

// Hold starts a partition: from now on every message, in either direction
// and whatever its command, is held, neither forwarded nor answered, and
// connections stay open. A backend connection that closes meanwhile closes
// its client connection only at Heal.
func (p *Proxy) Hold() {
	p.mu.Lock()
	p.holding = true
	p.mu.Unlock()
}

// Heal ends the partition. With deliver, the held messages are forwarded in
// the order they were held (replies reach the clients that are still
// connected); otherwise they are dropped and their connections closed.
func (p *Proxy) Heal(deliver bool) {
	p.mu.Lock()
	p.holding = false
	held := p.held
	p.held = nil
	p.mu.Unlock()

	for _, h := range held {
		ok := deliver && p.send(h.link, h.toServer, h.msg)
		if !ok {
			h.link.close()
		}
		h.done <- ok
	}
}

// Held is how many requests named cmd are held now. A test polls it to know
// that the request it wants to hold has reached the proxy.
func (p *Proxy) Held(cmd string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, h := range p.held {
		if h.toServer && key(commandName(h.msg)) == key(cmd) {
			n++
		}
	}
	return n
}

// Count is how many commands named cmd the proxy has forwarded to the
// server, lost replies included and cut or still held requests not.
func (p *Proxy) Count(cmd string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count[key(cmd)]
}

// Armed is how many lost replies and cut requests are still waiting for a
// command named cmd: 0 once the faults a test set have all been met.
func (p *Proxy) Armed(cmd string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lose[key(cmd)] + p.cut[key(cmd)]
}

func key(cmd string) string { return strings.ToLower(cmd) }

// commandName is the command msg carries, or "" for none.
func commandName(msg []byte) string {
	if msg == nil {
		return ""
	}
	name, err := wire.CommandName(msg)
	if err != nil {
		return ""
	}
	return name
}

func (p *Proxy) set(faults map[string]int, cmd string, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n <= 0 {
		delete(faults, key(cmd))
		return
	}
	faults[key(cmd)] = n
}

// take reports whether the command called name uses up one of its faults.
func (p *Proxy) take(faults map[string]int, name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if faults[name] <= 0 {
		return false
	}
	faults[name]--
	return true
}

func (p *Proxy) delayOf(name string) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delay[name]
}

// sleep waits d, or less when the proxy closes; it reports whether it waited d.
func (p *Proxy) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.done:
		return false
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		l := &link{client: c}
		if !p.track(l) {
			c.Close()
			continue
		}
		p.wg.Add(1)
		go p.serve(l)
	}
}

// track registers l so that Close can close it; it reports false once the
// proxy is closing.
func (p *Proxy) track(l *link) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.links[l] = struct{}{}
	return true
}

func (p *Proxy) untrack(l *link) {
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
	l.close()
}
