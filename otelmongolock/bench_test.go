package otelmongolock_test

import (
	"context"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/mongolock/mongolock/otelmongolock"
)

// BenchmarkObserver is the cost the adapter adds to one lock's life: taken,
// held, released (no I/O: the library's round trips are the same with or
// without it).
func BenchmarkObserver(b *testing.B) {
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer provider.Shutdown(context.Background())
	obs, err := otelmongolock.New(provider)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		obs.Acquired("jobs", time.Millisecond, 0)
		obs.Released("jobs", 100*time.Millisecond)
	}
}
