package otelmongolock_test

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// metricsBlock is the README's Go block of the Metrics section; its fence
// says "go otelmongolock" so that the command's README test, which compiles
// the other blocks in its own module, leaves it to this one.
var metricsBlock = regexp.MustCompile("(?s)\n```go otelmongolock\n(.*?)```\n")

// TestREADMEMetrics: the README's Metrics snippet is readme_snippet_test.go,
// and it does what the README says.
func TestREADMEMetrics(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := metricsBlock.FindAllStringSubmatch(string(readme), -1)
	src, err := os.ReadFile("readme_snippet_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, snippet, _ := strings.Cut(string(src), "package otelmongolock_test\n\n")
	if len(blocks) != 1 || blocks[0][1] != snippet {
		t.Fatalf("README.md's Metrics block is not readme_snippet_test.go after its package clause (%d blocks)", len(blocks))
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer provider.Shutdown(context.Background())
	jobs := client.Database("otelmongolock_test").Collection("readme")
	defer jobs.Drop(context.Background())
	if _, err := jobs.InsertOne(ctx, bson.D{{Key: "state", Value: "READY"}, {Key: "priority", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	lk, err := newObservedLocker(jobs, provider)
	if err != nil {
		t.Fatal(err)
	}
	if err := stepOnce(ctx, lk); err != nil {
		t.Fatal(err)
	}
	counts, _ := values(t, reader)
	if counts["mongolock.lock.acquisitions"]["readme"] != 1 || counts["mongolock.lock.releases"]["readme"] != 1 {
		t.Errorf("the README's locker did not report its step: %v", counts)
	}
}
