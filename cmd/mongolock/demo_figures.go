package main

import (
	"fmt"
	"io"
	"slices"
	"sync"
	"time"
)

// demoFigures keeps every duration the otelmongolock metrics would record
// (mongolock.lock.wait.duration, .acquire.duration, .hold.duration), from
// every process, so that the summary shows their p50 and p99, exact.
type demoFigures struct {
	mu      sync.Mutex
	samples map[string][]time.Duration // by figureKinds
}

// figureKinds are the figures, as a worker process prints them.
var figureKinds = []string{"wait", "acquire", "hold"}

func (f *demoFigures) add(kind string, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.samples == nil {
		f.samples = map[string][]time.Duration{}
	}
	f.samples[kind] = append(f.samples[kind], d)
}

// write prints the samples for the parent process, one "kind_us=N" line
// each.
func (f *demoFigures) write(w io.Writer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, kind := range figureKinds {
		for _, d := range f.samples[kind] {
			fmt.Fprintf(w, "%s_us=%d\n", kind, d.Microseconds())
		}
	}
}

// read takes a line of write's, and reports whether it was one.
func (f *demoFigures) read(key string, n int64) bool {
	for _, kind := range figureKinds {
		if key == kind+"_us" {
			f.add(kind, time.Duration(n)*time.Microsecond)
			return true
		}
	}
	return false
}

// print prints p50 and p99 of each figure, in the summary's layout.
func (f *demoFigures) print(w io.Writer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range []struct{ kind, label, note string }{
		{"wait", "lock wait p50/p99:", "waits; Work's steps lock without waiting in Acquire"},
		{"acquire", "lock write p50/p99:", "round trips of the locking write"},
		{"hold", "lock hold p50/p99:", "holds"},
	} {
		s := slices.Clone(f.samples[l.kind])
		if len(s) == 0 {
			fmt.Fprintf(w, "%-23s none\n", l.label)
			continue
		}
		slices.Sort(s)
		rank := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] } // nearest rank
		fmt.Fprintf(w, "%-23s %v / %v  (%d %s)\n", l.label, roundFigure(rank(0.50)), roundFigure(rank(0.99)), len(s), l.note)
	}
}

func roundFigure(d time.Duration) time.Duration {
	if d < time.Millisecond {
		return d.Round(time.Microsecond)
	}
	return d.Round(100 * time.Microsecond)
}

// demoObserver is the demo's Observer: demoCounts's counts, and the
// figures.
type demoObserver struct{ *demoCounts }

func (o demoObserver) Acquired(c string, latency, waited time.Duration) {
	o.figures.add("wait", waited)
	o.figures.add("acquire", latency)
	o.demoCounts.Acquired(c, latency, waited)
}

func (o demoObserver) GaveUp(c string, waited time.Duration) {
	o.figures.add("wait", waited)
	o.demoCounts.GaveUp(c, waited)
}

func (o demoObserver) Released(c string, held time.Duration) {
	o.figures.add("hold", held)
	o.demoCounts.Released(c, held)
}

func (o demoObserver) Lost(c string, held time.Duration) {
	o.figures.add("hold", held)
	o.demoCounts.Lost(c, held)
}
