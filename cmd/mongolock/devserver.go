package main

import (
	"context"
	"fmt"
	"io"

	"github.com/mongolock/mongolock/internal/testserver"
)

func runDevServer(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("dev-server", stderr)
	listen := fs.String("listen", "127.0.0.1:27017", "`address` to listen on")
	data := fs.String("data", "", "`directory` that keeps the data across runs (default: a temporary one, removed at exit)")
	raw := fs.Bool("raw", false, "serve FerretDB without the one-write-at-a-time front, to show its lost updates")
	if ok, code := parse(fs, args); !ok {
		return code
	}
	srv, err := testserver.Start(testserver.Options{Listen: *listen, DataDir: *data, Raw: *raw})
	if err != nil {
		return fail(stderr, "dev-server", err)
	}
	mode := "one write at a time"
	if *raw {
		mode = "raw: writes are NOT atomic under concurrency"
	}
	fmt.Fprintf(stdout, "%s\n", srv.URI())
	fmt.Fprintf(stderr, "mongolock dev-server: FerretDB (%s) at %s; stop with Ctrl-C\n", mode, srv.URI())
	<-ctx.Done()
	if err := srv.Close(); err != nil {
		return fail(stderr, "dev-server", err)
	}
	fmt.Fprintln(stderr, "mongolock dev-server: stopped")
	return exitOK
}
