package postgres_test

import (
	"testing"

	"github.com/heraldhq/herald/eventstore/storetest"
	"github.com/heraldhq/herald/internal/testenv"
)

func BenchmarkAppend(b *testing.B) {
	p := testenv.PGPool(b, 16)
	b.Run("single", func(b *testing.B) { storetest.BenchAppend(b, newStore(b, p), 1) })
	b.Run("batch10", func(b *testing.B) { storetest.BenchAppend(b, newStore(b, p), 10) })
}

func BenchmarkLoad1000(b *testing.B) { storetest.BenchLoad(b, newStore(b, testenv.PGPool(b, 4)), 1000) }
