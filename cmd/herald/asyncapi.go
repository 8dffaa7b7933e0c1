package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
)

func newAsyncAPICmd(a *app) *cobra.Command {
	var out string
	sample := 1000
	cmd := &cobra.Command{
		Use:   "asyncapi [--out FILE] [--sample N]",
		Short: "Export an AsyncAPI 3.0 document of the running system",
		Long: `Export an AsyncAPI 3.0 document of the running Herald, drawn from live traffic:
channels are the topics, messages the event types seen on them with their
registered schemas, operations the services that publish them (send) and the
consumer groups that read the topics (receive). The types and publishers come
from the newest --sample messages of each topic.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if sample < 1 || sample > 10_000 {
				return fmt.Errorf("--sample %d: want 1 to 10000", sample)
			}
			base := strings.TrimRight(a.adminBaseURL(), "/")
			hc, err := a.httpClient(base, a.timeout)
			if err != nil {
				return err
			}
			req, err := http.NewRequestWithContext(cmd.Context(), http.MethodGet,
				base+"/asyncapi.json?"+url.Values{"sample": {strconv.Itoa(sample)}}.Encode(), nil)
			if err != nil {
				return fmt.Errorf("--admin-url %q: %w", base, err)
			}
			req.Header.Set("Accept", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				return fmt.Errorf("asyncapi: %w", err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
			if err != nil {
				return fmt.Errorf("asyncapi: read the answer: %w", err)
			}
			if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
				return fmt.Errorf("asyncapi: %s answered %s", base, resp.Status)
			}
			if out == "" || out == "-" {
				_, err = cmd.OutOrStdout().Write(body)
				return err
			}
			if err := os.WriteFile(out, body, 0o644); err != nil {
				return fmt.Errorf("--out: %w", err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s\n", out)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "write the document to this file (default: standard output)")
	cmd.Flags().IntVar(&sample, "sample", sample, "newest messages of each topic to read")
	return cmd
}
