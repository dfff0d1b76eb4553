// Package otelmongolock records mongolock's lock events as OpenTelemetry
// metrics. It is an adapter beside the library, in a module of its own, so
// that mongolock itself depends on the MongoDB driver only.
//
//	obs, err := otelmongolock.New(nil) // the global MeterProvider
//	if err != nil { ... }
//	lk := mongolock.New(coll, mongolock.WithObserver(obs))
//
// Every metric carries the lock collection's name (db.collection.name), and
// the durations whether the wait or hold ended well (outcome): a bounded set
// of attributes, never document or lock ids.
package otelmongolock

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/mongolock/mongolock"
)

// ScopeName is the instrumentation scope of the metrics.
const ScopeName = "github.com/mongolock/mongolock/otelmongolock"

// Attribute keys.
const (
	CollectionKey = attribute.Key("db.collection.name")
	OutcomeKey    = attribute.Key("outcome")
)

// Outcomes of the duration histograms.
const (
	OutcomeAcquired = "acquired" // wait: the lock was taken
	OutcomeGaveUp   = "gave_up"  // wait: the wait ran out or its context ended
	OutcomeReleased = "released" // hold: released by its holder
	OutcomeLost     = "lost"     // hold: found gone (broken, unlocked, lease taken over)
)

// durationBuckets suit both a round trip (ms) and a long hold (minutes).
var durationBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}

// Observer implements mongolock.Observer, StepObserver and SweepObserver with
// OpenTelemetry instruments. It is safe for concurrent use; one Observer can
// serve many Lockers.
type Observer struct {
	acquisitions, contentions, giveUps, releases, lost metric.Int64Counter
	stepRetries, stepGiveUps                           metric.Int64Counter
	sweepUnsettled, sweepReleased                      metric.Int64Counter
	acquireDuration, waitDuration, holdDuration        metric.Float64Histogram

	mu    sync.Mutex
	held  map[string]int64 // locks this process holds, by collection
	attrs map[string]*collectionAttrs
}

var (
	_ mongolock.Observer      = (*Observer)(nil)
	_ mongolock.StepObserver  = (*Observer)(nil)
	_ mongolock.SweepObserver = (*Observer)(nil)
)

// collectionAttrs are a collection's attribute sets, built once (as the
// option slices the instruments take) so that recording does not allocate.
type collectionAttrs struct {
	coll                             []metric.AddOption
	observe                          []metric.ObserveOption
	acquire                          []metric.RecordOption // collection only
	acquired, gaveUp, released, lost []metric.RecordOption
}

// New returns an Observer whose instruments come from mp's meter
// ScopeName; a nil mp means otel.GetMeterProvider().
//
// Counters: mongolock.lock.acquisitions, .contentions, .give_ups, .releases,
// .lost, mongolock.step.retries and .give_ups, mongolock.sweep.unsettled and
// .released. Histograms (seconds):
// mongolock.lock.acquire.duration (the acquiring write's round trip),
// mongolock.lock.wait.duration (outcome acquired or gave_up) and
// mongolock.lock.hold.duration (outcome released or lost). Gauge:
// mongolock.lock.held, the locks this process holds now.
func New(mp metric.MeterProvider) (*Observer, error) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(ScopeName)
	o := &Observer{held: map[string]int64{}, attrs: map[string]*collectionAttrs{}}
	var err error
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, e := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		if err == nil {
			err = e
		}
		return c
	}
	histogram := func(name, desc string) metric.Float64Histogram {
		h, e := m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc), metric.WithExplicitBucketBoundaries(durationBuckets...))
		if err == nil {
			err = e
		}
		return h
	}
	o.acquisitions = counter("mongolock.lock.acquisitions", "{acquisition}", "Locks taken.")
	o.contentions = counter("mongolock.lock.contentions", "{attempt}", "Attempts that found every matching document locked by another holder.")
	o.giveUps = counter("mongolock.lock.give_ups", "{wait}", "Waits for a lock that ran out, or whose context ended, without the lock.")
	o.releases = counter("mongolock.lock.releases", "{release}", "Locks released by their holder.")
	o.lost = counter("mongolock.lock.lost", "{lock}", "Locks found gone while held: broken, unlocked, or taken over after their lease ran out.")
	o.stepRetries = counter("mongolock.step.retries", "{step}", "Failed steps counted in their document, to be tried again.")
	o.stepGiveUps = counter("mongolock.step.give_ups", "{step}", "Steps that gave up on their document (attempts ran out, or a permanent error).")
	o.sweepUnsettled = counter("mongolock.sweep.unsettled", "{acquisition}", "Acquiring writes whose reply was lost and whose lock was not found: the Locker sweeps for them.")
	o.sweepReleased = counter("mongolock.sweep.released", "{lock}", "Locks taken by an acquiring write that landed after its caller was told it failed, found and released by the sweep.")
	o.acquireDuration = histogram("mongolock.lock.acquire.duration", "Round trip of the write that took a lock.")
	o.waitDuration = histogram("mongolock.lock.wait.duration", "Time from the start of Acquire or Do to the lock, or to giving up.")
	o.holdDuration = histogram("mongolock.lock.hold.duration", "Time a lock was held, until released or found lost.")
	if err != nil {
		return nil, err
	}
	gauge, err := m.Int64ObservableGauge("mongolock.lock.held", metric.WithUnit("{lock}"), metric.WithDescription("Locks this process holds now."))
	if err != nil {
		return nil, err
	}
	if _, err := m.RegisterCallback(func(_ context.Context, ob metric.Observer) error {
		o.mu.Lock()
		defer o.mu.Unlock()
		for coll, n := range o.held {
			ob.ObserveInt64(gauge, n, o.attrs[coll].observe...)
		}
		return nil
	}, gauge); err != nil {
		return nil, err
	}
	return o, nil
}

// attrsOf returns coll's attribute sets, and adds delta to its held locks.
func (o *Observer) attrsOf(coll string, delta int64) *collectionAttrs {
	o.mu.Lock()
	defer o.mu.Unlock()
	a, ok := o.attrs[coll]
	if !ok {
		c := CollectionKey.String(coll)
		only := metric.WithAttributeSet(attribute.NewSet(c))
		with := func(outcome string) []metric.RecordOption {
			return []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(c, OutcomeKey.String(outcome)))}
		}
		a = &collectionAttrs{
			coll: []metric.AddOption{only}, observe: []metric.ObserveOption{only}, acquire: []metric.RecordOption{only},
			acquired: with(OutcomeAcquired), gaveUp: with(OutcomeGaveUp),
			released: with(OutcomeReleased), lost: with(OutcomeLost),
		}
		o.attrs[coll] = a
	}
	if delta != 0 {
		o.held[coll] += delta
	}
	return a
}

// bg is the context of measurements: the Observer interface carries none.
var bg = context.Background()

// Acquired implements mongolock.Observer.
func (o *Observer) Acquired(collection string, latency, waited time.Duration) {
	a := o.attrsOf(collection, 1)
	o.acquisitions.Add(bg, 1, a.coll...)
	o.acquireDuration.Record(bg, latency.Seconds(), a.acquire...)
	o.waitDuration.Record(bg, waited.Seconds(), a.acquired...)
}

// Contended implements mongolock.Observer.
func (o *Observer) Contended(collection string) {
	o.contentions.Add(bg, 1, o.attrsOf(collection, 0).coll...)
}

// GaveUp implements mongolock.Observer.
func (o *Observer) GaveUp(collection string, waited time.Duration) {
	a := o.attrsOf(collection, 0)
	o.giveUps.Add(bg, 1, a.coll...)
	o.waitDuration.Record(bg, waited.Seconds(), a.gaveUp...)
}

// Released implements mongolock.Observer.
func (o *Observer) Released(collection string, held time.Duration) {
	a := o.attrsOf(collection, -1)
	o.releases.Add(bg, 1, a.coll...)
	o.holdDuration.Record(bg, held.Seconds(), a.released...)
}

// Lost implements mongolock.Observer.
func (o *Observer) Lost(collection string, held time.Duration) {
	a := o.attrsOf(collection, -1)
	o.lost.Add(bg, 1, a.coll...)
	o.holdDuration.Record(bg, held.Seconds(), a.lost...)
}

// StepRetried implements mongolock.StepObserver.
func (o *Observer) StepRetried(collection string) {
	o.stepRetries.Add(bg, 1, o.attrsOf(collection, 0).coll...)
}

// StepGaveUp implements mongolock.StepObserver.
func (o *Observer) StepGaveUp(collection string) {
	o.stepGiveUps.Add(bg, 1, o.attrsOf(collection, 0).coll...)
}

// Unsettled implements mongolock.SweepObserver.
func (o *Observer) Unsettled(collection string) {
	o.sweepUnsettled.Add(bg, 1, o.attrsOf(collection, 0).coll...)
}

// Swept implements mongolock.SweepObserver.
func (o *Observer) Swept(collection string) {
	o.sweepReleased.Add(bg, 1, o.attrsOf(collection, 0).coll...)
}
