// Package testserver runs an embedded MongoDB-wire server for tests and for
// the mongolock command: FerretDB (SQLite backend, in-process) behind a front
// that forwards write commands one at a time.
//
// FerretDB 1.x does not apply findAndModify or update atomically when several
// run at once; serialized, every violation disappears. Options.Raw leaves the
// front out, to show the difference.
package testserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// Options configure Start.
type Options struct {
	// Listen is the address clients connect to. The default is a free
	// loopback port.
	Listen string
	// DataDir keeps the SQLite files. The default is a temporary directory
	// removed by Close.
	DataDir string
	// Raw serves FerretDB without the one-write-at-a-time front.
	Raw bool
	// Logger receives FerretDB's logs. The default discards them.
	Logger *slog.Logger
}

// Server is a running embedded server.
type Server struct {
	uri     string
	front   *Front
	cancel  context.CancelFunc
	done    chan error
	tempDir string
}

// Start runs FerretDB on a private loopback port and the front on
// opts.Listen. Close stops both.
func Start(opts Options) (*Server, error) {
	s := &Server{done: make(chan error, 1)}
	dir := opts.DataDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "mongolock-ferretdb-")
		if err != nil {
			return nil, err
		}
		s.tempDir, dir = tmp, tmp
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: "127.0.0.1:0"},
		Handler:   "sqlite",
		SQLiteURL: "file:" + filepath.ToSlash(dir) + "/",
		Logger:    logger,
	})
	if err != nil {
		s.removeTemp()
		return nil, fmt.Errorf("testserver: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.done <- f.Run(ctx) }()

	backend, err := hostOf(f.MongoDBURI())
	if err == nil {
		err = waitListening(backend)
	}
	if err != nil {
		s.stopFerret()
		return nil, fmt.Errorf("testserver: %w", err)
	}
	listen := opts.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	s.front, err = NewFront(listen, backend, !opts.Raw)
	if err != nil {
		s.stopFerret()
		return nil, fmt.Errorf("testserver: %w", err)
	}
	s.uri = "mongodb://" + s.front.Addr() + "/"
	return s, nil
}

// URI is the mongodb:// address of the front.
func (s *Server) URI() string { return s.uri }

// Addr is the front's host:port, to restart on (Options.Listen) or to put a
// proxy in front of.
func (s *Server) Addr() string { return s.front.Addr() }

// Close stops the front and FerretDB, and removes the temporary data directory.
func (s *Server) Close() error {
	err := s.front.Close()
	return errors.Join(err, s.stopFerret())
}

func (s *Server) stopFerret() error {
	s.cancel()
	err := <-s.done
	s.removeTemp()
	return err
}

func (s *Server) removeTemp() {
	if s.tempDir != "" {
		os.RemoveAll(s.tempDir)
	}
}

func hostOf(uri string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return "", err
	}
	return u.Host, nil
}

// waitListening returns once addr accepts connections.
func waitListening(addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := dialTimeout(addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}
