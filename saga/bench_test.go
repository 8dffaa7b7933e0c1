package saga_test

import (
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/saga"
)

// BenchmarkThreeStepSagas measures three-step instances completed per
// second, end to end: Start, three commands through the broker to the
// test services, their replies back through a consumer into HandleReply,
// state in the KV bucket. Starts run from 16 goroutines.
func BenchmarkThreeStepSagas(b *testing.B) {
	for _, conc := range []int{16, 64} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) { benchSagas(b, conc) })
	}
}

// benchSagas runs b.N instances, starting them from conc goroutines, with
// routers handling conc events at once.
func benchSagas(b *testing.B, conc int) {
	h := newHarnessConc(b, unique("saga_"), true, nil, definition(time.Minute), conc, saga.WithTick(saga.DefaultTick)) // the default tick, as in production
	ctx := b.Context()
	base := unique("b-")
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	next := make(chan int)
	for range conc {
		wg.Go(func() {
			for i := range next {
				if err := h.eng.Start(ctx, "order", base+strconv.Itoa(i), orderData{}); err != nil {
					b.Error(err)
				}
			}
		})
	}
	for i := range b.N {
		next <- i
	}
	close(next)
	wg.Wait()
	deadline := time.Now().Add(5 * time.Minute)
	for h.counter(b, "herald_saga_finished_total", map[string]string{"state": string(saga.Completed)}) < float64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("%d instances not completed in 5 minutes", b.N)
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "sagas/s")
}
