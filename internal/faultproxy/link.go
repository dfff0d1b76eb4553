package faultproxy

import (
	"net"
	"sync"

	"github.com/mongolock/mongolock/internal/wire"
)

// A link is one client connection and the backend connection it was given.
// One goroutine carries requests to the server and another carries replies
// back, so that every message, exhaust replies included, passes whatever the
// driver does.
type link struct {
	client net.Conn

	mu     sync.Mutex
	server net.Conn // nil until dialled
	closed bool
	lost   map[int32]bool // requestIDs whose reply is to be dropped
}

// A held message waits for Heal. A nil msg stands for the backend connection
// having died: the news is held like a message, and delivering it closes the
// client connection.
type held struct {
	link     *link
	toServer bool
	msg      []byte
	done     chan bool // receives whether the message was delivered
}

// serve dials the backend for l and carries its requests; its reply
// goroutine carries the replies.
func (p *Proxy) serve(l *link) {
	defer p.wg.Done()
	defer p.untrack(l)
	server, err := net.DialTimeout("tcp", p.backend, dialTimeout)
	if err != nil {
		p.pass(l, false, nil)
		return
	}
	if !l.setServer(server) {
		return
	}
	p.wg.Add(1) // this goroutine is counted, so Close cannot be past Wait
	go p.replies(l)
	p.requests(l)
}

// requests carries l's requests to the server, applying the faults set for
// their command.
func (p *Proxy) requests(l *link) {
	for {
		msg, err := wire.ReadMessage(l.client)
		if err != nil {
			return
		}
		name := key(commandName(msg))
		if p.take(p.cut, name) {
			return
		}
		if d := p.delayOf(name); d > 0 && !p.sleep(d) {
			return
		}
		lose := p.take(p.lose, name)
		if lose {
			l.loseReplyTo(wire.RequestID(msg))
		}
		if !p.pass(l, true, msg) {
			return
		}
		if lose && !wire.ExpectsReply(msg) {
			p.pass(l, false, nil) // no reply to lose: cut the connection now
			return
		}
	}
}

// replies carries the server's replies back to l's client.
func (p *Proxy) replies(l *link) {
	defer p.wg.Done()
	defer l.close()
	for {
		msg, err := wire.ReadMessage(l.server)
		if err != nil {
			if l.serverDied() {
				p.pass(l, false, nil)
			}
			return
		}
		if l.isLost(wire.ResponseTo(msg)) {
			p.pass(l, false, nil) // the reply goes nowhere; the client sees the cut
			return
		}
		if !p.pass(l, false, msg) {
			return
		}
	}
}

// pass sends msg on its way, or holds it until Heal while the proxy holds.
// It reports whether msg was delivered; when it was not, l is closed.
func (p *Proxy) pass(l *link, toServer bool, msg []byte) bool {
	p.mu.Lock()
	if !p.holding || p.closed {
		p.mu.Unlock()
		return p.send(l, toServer, msg)
	}
	h := &held{link: l, toServer: toServer, msg: msg, done: make(chan bool, 1)}
	p.held = append(p.held, h)
	p.mu.Unlock()
	select {
	case ok := <-h.done:
		return ok
	case <-p.done:
		return false
	}
}

// send writes msg to the server or the client of l, counting the commands
// that reach the server. A nil msg, or a failed write, closes l.
func (p *Proxy) send(l *link, toServer bool, msg []byte) bool {
	if msg == nil {
		l.close()
		return false
	}
	to := l.client
	if toServer {
		to = l.server
		// Counted before the write, so that a reply never outruns its count.
		p.counted(msg, 1)
	}
	if _, err := to.Write(msg); err != nil {
		if toServer {
			p.counted(msg, -1)
		}
		l.close()
		return false
	}
	return true
}

func (p *Proxy) counted(msg []byte, n int) {
	if name := key(commandName(msg)); name != "" {
		p.mu.Lock()
		p.count[name] += n
		p.mu.Unlock()
	}
}

// setServer gives l its backend connection; it reports false, and closes
// server, when l is already closed.
func (l *link) setServer(server net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		server.Close()
		return false
	}
	l.server = server
	return true
}

// serverDied closes the backend side of l after a failed read and reports
// whether the server, not the proxy, ended it. The client side stays open,
// for a hold to keep the news from the client until Heal.
func (l *link) serverDied() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.server.Close()
	return !l.closed
}

func (l *link) loseReplyTo(requestID int32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost == nil {
		l.lost = map[int32]bool{}
	}
	l.lost[requestID] = true
}

func (l *link) isLost(responseTo int32) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lost[responseTo]
}

// close closes both connections of l; it may be called any number of times.
func (l *link) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	l.client.Close()
	if l.server != nil {
		l.server.Close()
	}
}
