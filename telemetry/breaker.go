package telemetry

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald/consumer"
)

// Values of herald_breaker_state.
const (
	BreakerClosedValue   = 0
	BreakerHalfOpenValue = 1
	BreakerOpenValue     = 2
)

// breakerValue maps a breaker state to the gauge's scale, which orders the
// states by how much they hold back.
func breakerValue(s consumer.BreakerState) float64 {
	switch s {
	case consumer.BreakerOpen:
		return BreakerOpenValue
	case consumer.BreakerHalfOpen:
		return BreakerHalfOpenValue
	default:
		return BreakerClosedValue
	}
}

// breakerSource is where one group's breaker state comes from: the
// breaker itself when watched, else the last state reported by OnChange.
type breakerSource struct {
	state   atomic.Int32
	breaker atomic.Pointer[consumer.Breaker]
}

func (s *breakerSource) value() float64 {
	if b := s.breaker.Load(); b != nil {
		return breakerValue(b.State())
	}
	return breakerValue(consumer.BreakerState(s.state.Load()))
}

// breakerCollector exports herald_breaker_state for every group that has a
// breaker source.
type breakerCollector struct {
	desc   *prometheus.Desc
	mu     sync.Mutex
	groups map[string]*breakerSource
}

func newBreakerCollector() *breakerCollector {
	return &breakerCollector{
		desc: prometheus.NewDesc("herald_breaker_state",
			"State of the group's circuit breaker: 0 closed, 1 half-open, 2 open.",
			[]string{"group"}, nil),
		groups: map[string]*breakerSource{},
	}
}

func (c *breakerCollector) source(group string) *breakerSource {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.groups[group]
	if !ok {
		s = &breakerSource{}
		s.state.Store(int32(consumer.BreakerClosed))
		c.groups[group] = s
	}
	return s
}

// Describe implements prometheus.Collector.
func (c *breakerCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *breakerCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	type row struct {
		group string
		src   *breakerSource
	}
	rows := make([]row, 0, len(c.groups))
	for g, s := range c.groups {
		rows = append(rows, row{g, s})
	}
	c.mu.Unlock()
	// Breaker.State takes the breaker's lock: read it outside ours.
	for _, r := range rows {
		ch <- constMetric(c.desc, prometheus.GaugeValue, r.src.value(), r.group)
	}
}

// constMetric is prometheus.MustNewConstMetric without the panic: a label
// value that is not valid UTF-8 makes an invalid metric, which the registry
// reports as an error.
func constMetric(desc *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) prometheus.Metric {
	m, err := prometheus.NewConstMetric(desc, t, v, labels...)
	if err != nil {
		return prometheus.NewInvalidMetric(desc, err)
	}
	return m
}
