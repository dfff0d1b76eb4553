// Package faultproxy is a loopback proxy between the MongoDB driver and a
// MongoDB-wire server that injects network faults per command, so that tests
// can prove through the real driver that every write survives them.
//
// Each client connection gets its own backend connection. The proxy reads
// whole wire messages (OP_MSG, and the OP_QUERY of a connection's first hello)
// and names each request by its command ("insert", "update", "delete",
// "findAndModify", "hello", ...; case-insensitive). It matches a reply to its
// request by the header's responseTo. The faults, and what each models:
//
//   - LoseReply: the request reaches the server and is applied; its reply is
//     dropped and the client connection closed. A connection cut after the
//     server acted: the client cannot know whether its write happened.
//   - CutRequest: the request is never forwarded; the client connection is
//     closed. A connection cut before the server saw anything.
//   - Delay: the request waits before it is forwarded. A slow network or
//     server; with a context deadline shorter than the delay, a write that
//     lands after its caller gave up.
//   - Hold and Heal: a network partition. While held, nothing passes in
//     either direction (requests, replies, heartbeats, and the news that the
//     server closed a connection); connections stay open. Heal(true) ends the
//     partition with every held message delivered in the order it was held;
//     Heal(false) ends it with every held message lost and its connection cut.
//
// The server may stop and start again on the same address at any time: a
// backend connection that dies closes its client connection, and each new
// client connection dials the backend anew.
//
// A client goes through the proxy with
//
//	options.Client().ApplyURI(p.URI()).SetServerSelectionTimeout(2 * time.Second).SetRetryWrites(false)
//
// URI sets directConnection=true, so that the driver never bypasses the proxy
// for the hosts a replica set advertises. The driver retries writes on its own
// on replica sets, which would hide a lost reply; on a standalone (the
// embedded test server) it never retries a write. It retries a read (find,
// aggregate, ...) once after a network error, on any server.
//
// What the driver does with a fault: a cut connection fails the call at once
// with a network error (mongo.IsNetworkError). It also clears the driver's
// pool: calls waiting for a connection then fail unsent with the pool's
// error (a driver.RetryablePoolError), and the next call waits, about half a
// second, for the driver to check the server again. During a hold a call
// returns only at its context's deadline (mongo.IsTimeout), so give every
// call one. A call that needs a new connection during a hold holds its
// handshake, not its command: to hold a command, leave a connection in the
// pool before Hold, and poll Held to know the command is held.
//
// This package is for tests only; the library never imports it (CI checks
// that the library imports only the driver and the standard library).
package faultproxy
