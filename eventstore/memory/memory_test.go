package memory_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/heraldhq/herald/eventstore"
	"github.com/heraldhq/herald/eventstore/memory"
	"github.com/heraldhq/herald/eventstore/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	storetest.Run(t, func(*testing.T) eventstore.Store { return memory.New() })
}
