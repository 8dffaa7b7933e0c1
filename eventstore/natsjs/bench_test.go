package natsjs_test

import (
	"testing"

	"github.com/heraldhq/herald/broker/natsjs"
	esnats "github.com/heraldhq/herald/eventstore/natsjs"
	"github.com/heraldhq/herald/eventstore/storetest"
)

// The embedded server of TestMain runs with fast durability;
// BenchmarkAppendSync runs one that fsyncs before acknowledging.
func BenchmarkAppend(b *testing.B) {
	b.Run("single", func(b *testing.B) { storetest.BenchAppend(b, newStore(b), 1) })
	b.Run("batch10", func(b *testing.B) { storetest.BenchAppend(b, newStore(b), 10) })
}

func BenchmarkAppendSync(b *testing.B) {
	e, err := natsjs.RunEmbedded(b.Context(), natsjs.EmbeddedConfig{DataDir: b.TempDir(), Durability: natsjs.Sync})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Shutdown)
	nc, err := e.Connect()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	s, err := esnats.New(b.Context(), nc)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("single", func(b *testing.B) { storetest.BenchAppend(b, s, 1) })
	b.Run("batch10", func(b *testing.B) { storetest.BenchAppend(b, s, 10) })
}

// BenchmarkLoad1000 loads a stream written in appends of 100 events;
// BenchmarkLoad1000Single one written an event per append.
func BenchmarkLoad1000(b *testing.B)       { storetest.BenchLoad(b, newStore(b), 1000) }
func BenchmarkLoad1000Single(b *testing.B) { storetest.BenchLoadSingle(b, newStore(b), 1000) }
