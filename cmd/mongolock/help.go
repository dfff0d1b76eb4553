package main

// helpText is a command's help: 'mongolock help CMD' and 'mongolock CMD -h'
// print it with the command's flags and their defaults.
type helpText struct {
	usage    string // the arguments after the command's name
	summary  string // one line, for the list of commands; none for hidden commands
	about    string // what it does
	notes    string // after the flags: environment, exit codes
	examples string
}

var helps = map[string]helpText{
	"demo":        demoHelp,
	"dev-server":  devServerHelp,
	"list":        listHelp,
	"unlock":      unlockHelp,
	"exec":        execHelp,
	"check":       checkHelp,
	"doctor":      doctorHelp,
	"demo-worker": {usage: "[flags]"},
	"exec-guard":  {usage: "-- command [args]"},
}

var demoHelp = helpText{
	usage:   "[flags]",
	summary: "run workers that lock READY jobs on the embedded server and count double processing",
	about: `
Starts the embedded server (FerretDB behind a one-write-at-a-time front;
-uri uses any MongoDB instead), seeds -jobs READY jobs with random
priorities in a new collection (with the index a queue wants on MongoDB),
and runs -workers workers with Work, spread over -procs OS processes: each
step locks the highest-priority due READY job, works about -work, and
publishes DONE in the write that releases the lock. With -fail, that share
of steps fail: a failed job is retried after a back-off (2x and 4x -work)
and given up into REMOTE_ERROR at its third failure. Shows progress, then
jobs done, given up, retried, wall time, throughput, lock waits and the
jobs processed twice, which must be 0. The collection is dropped at the
end.`,
	notes: `Exit codes: 0 every job done or given up, none processed twice; 1 failed
(or a job was processed twice, or left unfinished); 2 usage error.`,
	examples: `  mongolock demo
  mongolock demo -jobs 1000 -workers 16 -procs 4 -work 20ms -fail 0.2`,
}

var devServerHelp = helpText{
	usage:   "[flags]",
	summary: "run the embedded MongoDB-wire server (FerretDB) for local development",
	about: `
Runs the embedded server (FerretDB v1 with its SQLite backend, behind a
front that applies writes one at a time) and prints its mongodb:// URI on
stdout. Stops on Ctrl-C or SIGTERM. For development and tests only: do not
keep data you care about in it.`,
	notes: `Exit codes: 0 stopped cleanly; 1 failed; 2 usage error.`,
	examples: `  mongolock dev-server
  mongolock dev-server -listen 127.0.0.1:27018 -data ./devdata
  mongolock dev-server -raw      # then: mongolock check -uri ... exits 3`,
}

var listHelp = helpText{
	usage:   "[flags]",
	summary: "list the locked documents of a collection",
	about: `
Lists the locked documents of the collection, oldest lock first: the _id
as Extended JSON (paste it into -filter), the lock id, when the lock was
taken and its age by the server's clock, and the holder's host, pid and
lease end where its holder record names the lock. Locks taken by
jobflow-remote (Python) have no holder record: they show "-".`,
	notes: `Exit codes: 0 listed (also when nothing is locked); 1 failed; 2 usage error.`,
	examples: `  mongolock list -db jobflow -collection jobs
  mongolock list -filter '{"state": "RUNNING"}' -json`,
}

var unlockHelp = helpText{
	usage:   "{-filter DOCUMENT | -older-than DURATION | -dead | -expired | -no-holder | -all} [flags]",
	summary: "clear locks, by filter, age, dead holder or expired lease",
	about: `
Clears locks, whoever holds them: their holders' releases then fail with
ErrLockLost. Say which locks: -filter, -older-than, -dead, -expired and
-no-holder select (a lock must pass all that are given), and -all alone
takes every lock.

unlock shows the locks and asks before it acts unless -yes, then clears
exactly the locks it showed, each named by its _id, lock id and what names
its acquisition (the holder record's nonce or lock id; for a Python lock,
its lock time): a lock released or taken again meanwhile is left alone, one
its holder refreshed meanwhile is cleared. The holder record
goes with the lock. It prints how many locks it cleared.

-dead selects the locks whose holder record names this host (its host
name) and a process id that no longer exists here (kill(pid, 0) fails with
ESRCH). A lock without a holder record (taken by Python) is never dead, nor
is one whose pid now belongs to another process. Do not use -dead where
machines, or containers with separate process ids, share a host name.

-expired selects the locks whose holder declared a lease (mongolock's
WithLease) that has run out by the server's clock. -no-holder selects the
locks that no holder record names: those of Python's MongoLock, which never
expire; with -older-than, the old ones. 'mongolock doctor' prints these
commands for the locks it finds.`,
	notes: `Exit codes: 0 done (also when no lock matched); 1 failed, or not confirmed;
2 usage error.`,
	examples: `  mongolock unlock -filter '{"_id": {"$oid": "65f0c0ffee0000000000beef"}}'
  mongolock unlock -older-than 2h -filter '{"state": "RUNNING"}'
  mongolock unlock -dead -yes
  mongolock unlock -expired
  mongolock unlock -no-holder -older-than 24h
  mongolock unlock -all`,
}

var execHelp = helpText{
	usage:   "-filter DOCUMENT [flags] -- command [args...]",
	summary: "hold a lock on a document while a command runs",
	about: `
Locks the document that -filter picks, waiting up to -timeout for it, runs
the command while it holds the lock, releases the lock, and exits with the
command's exit code. Everything after -- is the command; -- is required.

The lock has a lease (-lease), renewed while the command runs. If the lock
is lost all the same (someone unlocked it), the command gets SIGTERM, and
SIGKILL -kill-after later. SIGINT, SIGTERM, SIGHUP and SIGQUIT are passed
to the command; the lock is released when it ends.

The command runs in a process group of its own, so that signals reach the
processes it starts too; when stdin is the terminal, that group has the
terminal while the command runs (Ctrl-C goes to it).

` + childGuarantee,
	notes: `Environment of the command:
  MONGOLOCK_LOCK_ID       the lock id, as written in the document's lock_id
  MONGOLOCK_DOCUMENT_ID   the locked document's _id: a string as it is,
                          any other value as Extended JSON

Exit codes:
  the command's own, or 128+N when signal N ended it
  75    the lock was not obtained within -timeout (the document stayed locked)
  126   the command could not be run; 127: it was not found
  1     failed: server unreachable, no document matches -filter, or the lock
        was lost while the command ran and the command exited 0
  2     usage error`,
	examples: `  mongolock exec -filter '{"_id": "nightly-report"}' -- ./make-report.sh
  mongolock exec -filter '{"_id": "backup"}' -timeout 1h -lease 2m -- sh -c 'pg_dump db > db.sql'`,
}

var checkHelp = helpText{
	usage:   "[flags]",
	summary: "measure whether a server applies findAndModify atomically",
	about: `
Measures whether the server applies writes atomically under concurrency, as
locks need: -goroutines clients contend on one document with bare
findAndModify, then on a concurrent $inc, for -duration each. Reports
overlapping holders and lost updates. It works in a scratch collection that
it drops at the end: -collection names it (it must be empty or absent);
by default it is a new mongolock_check_<random>.`,
	notes: `Exit codes: 0 atomic; 3 not atomic (locks on this server are not safe);
1 failed; 2 usage error.`,
	examples: `  mongolock check -uri mongodb://db.internal:27017
  mongolock check -uri "$MONGODB_URI" -db scratch -collection lockcheck -duration 10s`,
}

var doctorHelp = helpText{
	usage:   "[flags]",
	summary: "check a server and a lock collection, and say what to do about each finding",
	about: `
Examines the server and the lock collection and prints one line per
finding with its verdict (ok, warn or problem) and, where an operator can
act, the command to run:

  server      version, FerretDB or MongoDB, topology (standalone, replica
              set, sharded); whether the member is the primary
  writes      whether retryable writes are available
  changes     whether change streams are available
  durability  replica sets and clusters: whether lock writes wait for a
              majority (the URI's w, or the server's default)
  reads       replica sets and clusters: where lock state is read
  clock       this machine's clock against the server's (hello's localTime,
              half the round trip added); warn past 1s
  index       whether an index serves the claim (-filter plus lock_id: null,
              sorted by -sort), from the server's explain, and the mongosh
              createIndex that would; "unknown" where the server cannot
              tell. FerretDB 1.x never serves this claim from an index.
              No index is a warning from 1000 documents on, fine below.
  locks       of the whole collection (-filter does not narrow them): how
              many, and the oldest
  expired     locks whose declared lease ran out (warn: mongolock acquirers
              take them over, Python's MongoLock does not)
  dead        locks held by a process of this host that is gone (problem)
  stale       locks without a holder record (Python) older than -older-than
              (problem: they never expire)
  elsewhere   locks older than -older-than held without a lease from other
              hosts (warn: run unlock -dead there)
  atomic      with -atomic: check's measurement, 2s (problem when not atomic)

Lock ages and leases are judged by the server's clock. Pass -filter and
-sort as your workers pass them to WithSort and the claim.`,
	notes: `Exit codes: 0 nothing is a problem (warnings allowed); 3 a finding is a
problem; 1 the server cannot be asked; 2 usage error.`,
	examples: `  mongolock doctor
  mongolock doctor -uri mongodb://db1,db2,db3/?replicaSet=rs0 -db jobflow -collection jobs \
      -filter '{"state": "READY"}' -sort '{"priority": -1}'
  mongolock doctor -json -older-than 2h
  mongolock doctor -atomic -uri mongodb://127.0.0.1:27018`,
}
