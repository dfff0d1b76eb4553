package main

import (
	"context"
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/mongolock/mongolock"
)

// readmeProcessed is what the README's process saw, in order.
var readmeProcessed []string

// process is the work of the README's snippet.
func process(_ context.Context, doc bson.Raw) error {
	readmeProcessed = append(readmeProcessed, doc.Lookup("_id").StringValue())
	return nil
}

var goBlock = regexp.MustCompile("(?s)\n```go\n(.*?)```\n")

// readmeSnippets are the README's Go blocks, in order: each is one of these
// files after its package clause, so that it compiles, passes go vet, and
// runs in a test.
var readmeSnippets = []string{"readme_snippet_test.go", "readme_step_snippet_test.go", "readme_group_snippet_test.go", "readme_batch_snippet_test.go"}

// TestREADMESnippet: the README's Go code is the readmeSnippets files, and
// the first does what the README says.
func TestREADMESnippet(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := goBlock.FindAllStringSubmatch(string(readme), -1)
	if len(blocks) != len(readmeSnippets) {
		t.Fatalf("README.md has %d Go blocks, want %d; each must be a file the tests compile, like readme_snippet_test.go", len(blocks), len(readmeSnippets))
	}
	for i, name := range readmeSnippets {
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		_, snippet, ok := strings.Cut(string(src), "package main\n\n")
		if !ok {
			t.Fatalf("%s has no package clause", name)
		}
		if blocks[i][1] != snippet {
			t.Fatalf("README.md's Go block %d is not %s after its package clause:\n%s", i+1, name, blocks[i][1])
		}
	}

	ctx := context.Background()
	jobs := client.Database("work").Collection("jobs")
	defer jobs.Database().Drop(ctx)
	docs := []any{
		bson.D{{Key: "_id", Value: "low"}, {Key: "state", Value: "READY"}, {Key: "priority", Value: 1}},
		bson.D{{Key: "_id", Value: "high"}, {Key: "state", Value: "READY"}, {Key: "priority", Value: 9}},
		bson.D{{Key: "_id", Value: "done"}, {Key: "state", Value: "DONE"}, {Key: "priority", Value: 5}},
	}
	if _, err := jobs.InsertMany(ctx, docs); err != nil {
		t.Fatal(err)
	}
	readmeProcessed = nil
	if err := processReadyJobs(ctx, client); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(readmeProcessed, []string{"high", "low"}) {
		t.Errorf("processed %v, want high then low", readmeProcessed)
	}
	n, err := jobs.CountDocuments(ctx, bson.D{{Key: "state", Value: "DONE"}, {Key: mongolock.LockKey, Value: nil}})
	if err != nil || n != 3 {
		t.Errorf("%d unlocked DONE jobs, want 3 (%v)", n, err)
	}
}

// send is the work of the README's Step snippet: it fails the job "flaky"
// once.
func send(_ context.Context, doc bson.Raw) error {
	if doc.Lookup("_id").StringValue() == "flaky" && doc.Lookup("remote", "step_attempts").Type == 0 {
		return errors.New("network down")
	}
	return nil
}

// The README's Step snippets: one step advances the highest-priority due
// job, and a failure is counted in the job and retried later, not at once;
// Work drains a queue.
func TestREADMEStep(t *testing.T) {
	ctx := context.Background()
	db := client.Database("readme_step")
	defer db.Drop(ctx)
	jobs := db.Collection("jobs")
	docs := []any{
		bson.D{{Key: "_id", Value: "flaky"}, {Key: "state", Value: "CHECKED_OUT"}, {Key: "priority", Value: 9}},
		bson.D{{Key: "_id", Value: "fine"}, {Key: "state", Value: "CHECKED_OUT"}, {Key: "priority", Value: 1}},
	}
	if _, err := jobs.InsertMany(ctx, docs); err != nil {
		t.Fatal(err)
	}
	if err := uploadOne(ctx, jobs); err == nil || err.Error() != "network down" {
		t.Fatalf("first step: %v, want the flaky job's failure", err)
	}
	if err := uploadOne(ctx, jobs); err != nil {
		t.Fatalf("second step: %v, want the other job uploaded", err)
	}
	if err := uploadOne(ctx, jobs); !errors.Is(err, mongolock.ErrNotFound) {
		t.Fatalf("third step: %v, want ErrNotFound while the flaky job waits for its retry", err)
	}
	var flaky struct {
		State  string
		Remote struct {
			Attempts int `bson:"step_attempts"`
		}
	}
	if err := jobs.FindOne(ctx, bson.D{{Key: "_id", Value: "flaky"}}).Decode(&flaky); err != nil {
		t.Fatal(err)
	}
	if flaky.State != "CHECKED_OUT" || flaky.Remote.Attempts != 1 {
		t.Errorf("flaky job: %+v, want CHECKED_OUT with one attempt counted", flaky)
	}

	queue := db.Collection("queue")
	if _, err := queue.InsertMany(ctx, []any{
		bson.D{{Key: "_id", Value: "a"}, {Key: "state", Value: "CHECKED_OUT"}, {Key: "priority", Value: 1}},
		bson.D{{Key: "_id", Value: "b"}, {Key: "state", Value: "CHECKED_OUT"}, {Key: "priority", Value: 2}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := uploadAll(ctx, queue); err != nil {
		t.Fatal(err)
	}
	if n, err := queue.CountDocuments(ctx, bson.D{{Key: "state", Value: "UPLOADED"}}); err != nil || n != 2 {
		t.Errorf("%d jobs uploaded by Work, want 2 (%v)", n, err)
	}
}

// The README's DoAll snippet: the job and its flow become READY together.
func TestREADMEDoAll(t *testing.T) {
	ctx := context.Background()
	db := client.Database("readme_doall")
	defer db.Drop(ctx)
	if _, err := db.Collection("jobs").InsertOne(ctx, bson.D{{Key: "db_id", Value: "7"}, {Key: "uuid", Value: "u7"}, {Key: "state", Value: "FAILED"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Collection("flows").InsertOne(ctx, bson.D{{Key: "jobs", Value: bson.A{"u7"}}, {Key: "state", Value: "FAILED"}}); err != nil {
		t.Fatal(err)
	}
	if err := rerun(ctx, db, "7"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"jobs", "flows"} {
		n, err := db.Collection(name).CountDocuments(ctx, bson.D{{Key: "state", Value: "READY"}, {Key: mongolock.LockKey, Value: nil}})
		if err != nil || n != 1 {
			t.Errorf("%s: %d unlocked READY documents, want 1 (%v)", name, n, err)
		}
	}
}

// TestREADMEBatchSnippet: the README's batch snippet claims and releases a
// batch, and its batched worker drains a queue.
func TestREADMEBatchSnippet(t *testing.T) {
	ctx := context.Background()
	jobs := client.Database("work").Collection("batch_jobs")
	defer jobs.Drop(ctx)
	var docs []any
	for i := range 40 {
		docs = append(docs, bson.D{{Key: "_id", Value: i}, {Key: "state", Value: "READY"}, {Key: "priority", Value: i % 5}})
	}
	if _, err := jobs.InsertMany(ctx, docs); err != nil {
		t.Fatal(err)
	}
	if err := claimBatch(ctx, jobs); err != nil {
		t.Fatal(err)
	}
	if n, err := jobs.CountDocuments(ctx, bson.D{{Key: "state", Value: "DONE"}}); err != nil || n != 16 {
		t.Fatalf("%d jobs DONE after one claim, want 16 (%v)", n, err)
	}
	if err := drainBatched(ctx, jobs); err != nil {
		t.Fatal(err)
	}
	n, err := jobs.CountDocuments(ctx, bson.D{{Key: "state", Value: "DONE"}, {Key: mongolock.LockKey, Value: nil}})
	if err != nil || n != 40 {
		t.Errorf("%d unlocked DONE jobs, want 40 (%v)", n, err)
	}
}
