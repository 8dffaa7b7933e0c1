package natsjs

// CommittedBatches returns how many group-commit batches b committed whole.
func CommittedBatches(b *Broker) uint64 { return b.batches.Load() }
