package natsjs_test

import (
	"testing"

	"github.com/heraldhq/herald/eventstore/storetest"
)

// The embedded server of TestMain runs with fast durability; see
// BenchmarkAppendSync for fsync per acknowledgement.
func BenchmarkAppend(b *testing.B) {
	b.Run("single", func(b *testing.B) { storetest.BenchAppend(b, newStore(b), 1) })
	b.Run("batch10", func(b *testing.B) { storetest.BenchAppend(b, newStore(b), 10) })
}

func BenchmarkLoad1000(b *testing.B) { storetest.BenchLoad(b, newStore(b), 1000) }
