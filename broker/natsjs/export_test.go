package natsjs

// CommittedBatches returns how many group-commit batches b committed whole.
func CommittedBatches(b *Broker) uint64 { return b.batches.Load() }

// FailResets makes b refuse its next n consumer resets.
func FailResets(b *Broker, n int32) { b.failResets.Store(n) }

// StallConsumerCreates leaves b's next n consumer creations unanswered
// until their request times out.
func StallConsumerCreates(b *Broker, n int32) { b.stallCreates.Store(n) }

// StallCreatesLeft returns how many of those are still to come.
func StallCreatesLeft(b *Broker) int32 { return b.stallCreates.Load() }

// ResetsToFail returns how many of the resets FailResets asked for are
// still to be refused.
func ResetsToFail(b *Broker) int32 { return b.failResets.Load() }

// The headers of JetStream's atomic batch publish, for tests that send
// batches with the raw client.
const (
	BatchIDHeader     = batchIDHeader
	BatchSeqHeader    = batchSeqHeader
	BatchCommitHeader = batchCommitHeader
)
