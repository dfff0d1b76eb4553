package main

import (
	"context"
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

// TestREADMESnippet: the README's Go code is readme_snippet_test.go, which
// compiles, passes go vet, and does what the README says.
func TestREADMESnippet(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("readme_snippet_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, snippet, ok := strings.Cut(string(src), "package main\n\n")
	if !ok {
		t.Fatal("readme_snippet_test.go has no package clause")
	}
	blocks := goBlock.FindAllStringSubmatch(string(readme), -1)
	if len(blocks) != 1 {
		t.Fatalf("README.md has %d Go blocks; each must be a file the tests compile, like readme_snippet_test.go", len(blocks))
	}
	if blocks[0][1] != snippet {
		t.Fatalf("README.md's Go block is not readme_snippet_test.go after its package clause:\n%s", blocks[0][1])
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
