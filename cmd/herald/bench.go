package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/heraldhq/herald/internal/e2ebench"
)

func newBenchCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure Herald against the raw broker client",
	}
	cmd.AddCommand(newBenchE2ECmd(a))
	return cmd
}

func newBenchE2ECmd(a *app) *cobra.Command {
	var (
		cfg      e2ebench.Config
		asJSON   bool
		profile  string
		brokerTo string
	)
	cmd := &cobra.Command{
		Use:   "e2e",
		Short: "Publish -> router -> ack end to end, beside the raw broker client",
		Long: `Publish events with the SDK to a router (at-least-once, retry and dead-letter
middleware on, per-key order within the instance) that acknowledges them, and
do the same loop twice with the raw nats.go JetStream client (one consumer, a
work queue) against the same server in the same run:

  plain  the fastest raw loop: one asynchronous publisher with 4096
         confirmations outstanding, no headers, pull consume + ack
  raw    like for like: the same CloudEvents headers and dedup id as Herald,
         published as Herald publishes (--publishers goroutines, each
         sending --batch events and waiting for their confirmation)

--key-order adds per-key order across instances (the router's default), which
the raw loops do not offer. Prints throughput end to end and of publishing
alone, latency percentiles (publish start to handler, and of a publish call
until all its events are confirmed), CPU per event and lost events (must be 0)
for each, and Herald's ratio to both raw loops. At a --rate each publisher
sleeps until its next event is due.

--publishers 64 --batch 1 is what a service handling requests does: many
goroutines each publishing one event and waiting for its confirmation.

--broker kafka://host:port or amqp://user:pass@host:port/ measures Herald on
Kafka or RabbitMQ beside that broker's plain raw loop (there is no like for like
loop there):

  kafka  franz-go: one producer with the client's batching and 4096 records
         buffered, no headers; a group consumer marking each record handled
         and committing the marks
  amqp   amqp091-go: a durable quorum queue (what a Herald group is), one
         publisher with 4096 confirmations outstanding, persistent messages;
         a consumer acking each message, prefetch 4096

Without --broker or --url it starts an embedded NATS server on a loopback port
in a temporary directory. --rate 0 publishes as fast as confirmations allow.`,
		Example: `  herald bench e2e --duration 10s --json
  herald bench e2e --publishers 64 --batch 1
  herald bench e2e --rate 5000 --duration 20s
  herald bench e2e --url nats://127.0.0.1:4222
  herald bench e2e --broker kafka://127.0.0.1:9092
  herald bench e2e --broker amqp://guest:guest@127.0.0.1:5672/`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.URL = a.url
			if brokerTo != "" {
				cfg.URL = brokerTo
			}
			if !asJSON && a.output != "json" {
				cfg.Progress = func(s string) { fmt.Fprintln(cmd.ErrOrStderr(), s) }
			}
			if profile != "" {
				f, err := os.Create(profile)
				if err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				defer f.Close()
				cfg.CPUProfile = f
			}
			res, err := e2ebench.Run(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if asJSON || a.output == "json" {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(res)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%-8s %12s %12s %10s %10s %10s %10s %6s %11s %11s\n", "", "msgs/s", "pub msgs/s", "p50 µs", "p99 µs", "max µs", "cpu µs/ev", "lost", "pub p50 µs", "pub p99 µs")
			rows := []struct {
				name string
				side e2ebench.Side
			}{{"plain", res.Plain}, {"raw", res.Raw}, {"herald", res.Herald}}
			if res.Broker != "nats" {
				rows = slices.Delete(rows, 1, 2) // no like-for-like loop
			}
			for _, s := range rows {
				pub50, pub99 := "-", "-" // the plain loops do not wait for confirmations per call
				if s.side.PubP99us > 0 {
					pub50, pub99 = strconv.FormatFloat(s.side.PubP50us, 'f', 0, 64), strconv.FormatFloat(s.side.PubP99us, 'f', 0, 64)
				}
				fmt.Fprintf(w, "%-8s %12.0f %12.0f %10.0f %10.0f %10.0f %10.1f %6d %11s %11s\n", s.name, s.side.MsgsPerS, s.side.PubMsgsPerS, s.side.P50us, s.side.P99us, s.side.MaxUs, s.side.CPUus, s.side.Lost, pub50, pub99)
			}
			fmt.Fprintf(w, "ratio herald/plain: %.2f (publishing alone %.2f)\n", res.PlainRatio, res.PubRatio)
			if res.Broker == "nats" {
				fmt.Fprintf(w, "ratio herald/raw:   %.2f\n", res.Ratio)
			}
			if res.Lost != 0 || res.RawLost != 0 || res.PlainLost != 0 {
				return exitError{code: 2}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.DurationVar(&cfg.Duration, "duration", 10*time.Second, "publishing time per side")
	fl.IntVar(&cfg.Rate, "rate", 0, "events per second (0: as fast as confirmations allow)")
	fl.IntVar(&cfg.Size, "size", 256, "payload bytes (at least 16)")
	fl.IntVar(&cfg.Batch, "batch", 100, "events per publish call at full speed")
	fl.IntVar(&cfg.Publishers, "publishers", 1, "goroutines publishing at once, each waiting for its confirmations")
	fl.IntVar(&cfg.Keys, "keys", 1024, "distinct partition keys")
	fl.IntVar(&cfg.Partitions, "partitions", 0, "partitions of the Herald topic (0: the broker's default)")
	fl.BoolVar(&cfg.KeyOrder, "key-order", false, "also keep per-key order across instances (pinned partition consumers), to measure its cost")
	fl.StringVar(&profile, "cpuprofile", "", "write a CPU profile of the Herald side to this file (go tool pprof)")
	fl.BoolVar(&asJSON, "json", false, "print one JSON object (same as -o json)")
	fl.StringVar(&brokerTo, "broker", "", "broker to measure on: nats://, kafka:// or amqp:// URL (default: --url, else an embedded NATS server)")
	return cmd
}
