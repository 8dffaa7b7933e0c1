package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/heraldhq/herald/internal/localstate"
	"github.com/heraldhq/herald/schema"
	"github.com/heraldhq/herald/schema/serde"
)

// schemaRegistryURL resolves the registry URL: --registry-url,
// $HERALD_REGISTRY_URL (via applyEnv), the local herald recorded by
// serve/dev, then http://127.0.0.1:8081.
func (a *app) schemaRegistryURL() string {
	if a.registryURL != "" {
		return a.registryURL
	}
	if s, err := localstate.Read(); err == nil && s.RegistryURL != "" {
		return s.RegistryURL
	}
	return "http://127.0.0.1:8081"
}

func (a *app) schemaClient() (*serde.Client, error) {
	hc, err := a.httpClient(a.schemaRegistryURL(), 30*time.Second)
	if err != nil {
		return nil, err
	}
	return serde.NewClient(a.schemaRegistryURL(), serde.WithHTTPClient(hc))
}

func newSchemaCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "schema",
		Short: "Register, inspect and check schemas in the schema registry",
		Long: `Talk to a Confluent-compatible schema registry (Herald's, by default the local
one, or any other with --registry-url). Every subcommand prints JSON with -o json.`,
	}
	cmd.AddCommand(newSchemaRegisterCmd(a), newSchemaGetCmd(a), newSchemaListCmd(a),
		newSchemaCheckCmd(a), newSchemaDiffCmd(a), newSchemaConfigCmd(a))
	return cmd
}

// schemaFlags are the flags that describe a schema read from a file.
type schemaFlags struct {
	typ  string
	refs []string
}

func (f *schemaFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.typ, "type", "t", "", "schema type: avro, json or protobuf (default: from the file extension: .avsc, .json, .proto)")
	cmd.Flags().StringArrayVar(&f.refs, "ref", nil, "a reference NAME=SUBJECT:VERSION (repeatable; VERSION may be latest)")
}

// read loads a schema file ("-" for stdin).
func (f *schemaFlags) read(path string, stdin io.Reader) (schema.Schema, error) {
	var (
		b   []byte
		err error
	)
	if path == "-" {
		b, err = io.ReadAll(io.LimitReader(stdin, 16<<20))
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return schema.Schema{}, fmt.Errorf("read schema %s: %w", path, err)
	}
	typ := f.typ
	if typ == "" {
		switch strings.ToLower(filepath.Ext(path)) {
		case ".proto":
			typ = "PROTOBUF"
		case ".json":
			typ = "JSON"
		case ".avsc", ".avro":
			typ = "AVRO"
		default:
			return schema.Schema{}, fmt.Errorf("schema %s: cannot tell its type from the extension; use --type avro|json|protobuf", path)
		}
	}
	t, err := schema.ParseType(typ)
	if err != nil {
		return schema.Schema{}, fmt.Errorf("--type: %w", err)
	}
	s := schema.Schema{Type: t, Text: string(b)}
	for _, r := range f.refs {
		ref, err := parseRef(r)
		if err != nil {
			return schema.Schema{}, err
		}
		s.References = append(s.References, ref)
	}
	return s, nil
}

// parseRef parses NAME=SUBJECT:VERSION.
func parseRef(s string) (schema.Reference, error) {
	name, rest, ok := strings.Cut(s, "=")
	i := strings.LastIndexByte(rest, ':')
	if !ok || name == "" || i <= 0 {
		return schema.Reference{}, fmt.Errorf("--ref %q: want NAME=SUBJECT:VERSION", s)
	}
	v, err := parseVersion(rest[i+1:])
	if err != nil {
		return schema.Reference{}, fmt.Errorf("--ref %q: %w", s, err)
	}
	return schema.Reference{Name: name, Subject: rest[:i], Version: v}, nil
}

// parseVersion parses "latest" or a positive version number.
func parseVersion(s string) (int, error) {
	if s == "latest" || s == "-1" {
		return schema.Latest, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("version %q: want a positive number or latest", s)
	}
	return n, nil
}

func (a *app) printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

type versionOut struct {
	Subject    string             `json:"subject"`
	Version    int                `json:"version"`
	ID         int                `json:"id"`
	SchemaType schema.Type        `json:"schemaType"`
	Schema     string             `json:"schema"`
	References []schema.Reference `json:"references,omitempty"`
}

func newSchemaRegisterCmd(a *app) *cobra.Command {
	var f schemaFlags
	var normalize bool
	cmd := &cobra.Command{
		Use:   "register SUBJECT FILE",
		Short: "Register the schema in FILE (- for stdin) under SUBJECT",
		Long: `Register the schema in FILE under SUBJECT and print its id. Registering a schema
the subject already has prints its existing id. An incompatible schema is refused
with every incompatibility listed.`,
		Example: `  herald schema register orders-value order.avsc
  herald schema register orders-value order.proto --ref money.proto=money-value:latest`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := f.read(args[1], cmd.InOrStdin())
			if err != nil {
				return err
			}
			cl, err := a.schemaClient()
			if err != nil {
				return err
			}
			id, err := cl.Register(cmd.Context(), args[0], s, normalize)
			if err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(cmd.OutOrStdout(), map[string]any{"subject": args[0], "id": id})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "registered %s under %s: id %d\n", args[1], args[0], id)
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&normalize, "normalize", false, "compare schemas in normal form when looking for an existing id")
	return cmd
}

func newSchemaGetCmd(a *app) *cobra.Command {
	var id int
	cmd := &cobra.Command{
		Use:   "get SUBJECT [VERSION] | get --id ID",
		Short: "Print a schema: a subject's version (default latest) or the schema with an id",
		Example: `  herald schema get orders-value
  herald schema get orders-value 2 -o json
  herald schema get --id 7`,
		Args: func(cmd *cobra.Command, args []string) error {
			if id > 0 {
				return cobra.NoArgs(cmd, args)
			}
			return cobra.RangeArgs(1, 2)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.schemaClient()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if id > 0 {
				s, err := cl.SchemaByID(cmd.Context(), id)
				if err != nil {
					return err
				}
				if a.output == "json" {
					return a.printJSON(out, versionOut{ID: id, SchemaType: s.Type, Schema: s.Text, References: s.References})
				}
				fmt.Fprintf(out, "id %d (%s)\n%s\n", id, s.Type, s.Text)
				return nil
			}
			v := schema.Latest
			if len(args) == 2 {
				if v, err = parseVersion(args[1]); err != nil {
					return err
				}
			}
			sv, err := cl.Version(cmd.Context(), args[0], v)
			if err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(out, versionOut{Subject: sv.Subject, Version: sv.Version, ID: sv.ID,
					SchemaType: sv.Schema.Type, Schema: sv.Schema.Text, References: sv.Schema.References})
			}
			fmt.Fprintf(out, "%s version %d, id %d (%s)\n", sv.Subject, sv.Version, sv.ID, sv.Schema.Type)
			for _, r := range sv.Schema.References {
				fmt.Fprintf(out, "reference %s = %s version %d\n", r.Name, r.Subject, r.Version)
			}
			fmt.Fprintln(out, sv.Schema.Text)
			return nil
		},
	}
	cmd.Flags().IntVar(&id, "id", 0, "print the schema with this id instead")
	return cmd
}

func newSchemaListCmd(a *app) *cobra.Command {
	var deleted bool
	cmd := &cobra.Command{
		Use:   "list [SUBJECT]",
		Short: "List the subjects, or the versions of SUBJECT",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.schemaClient()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(args) == 0 {
				subs, err := cl.Subjects(cmd.Context(), deleted)
				if err != nil {
					return err
				}
				if a.output == "json" {
					return a.printJSON(out, subs)
				}
				for _, s := range subs {
					fmt.Fprintln(out, s)
				}
				return nil
			}
			vs, err := cl.Versions(cmd.Context(), args[0], deleted)
			if err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(out, vs)
			}
			for _, v := range vs {
				fmt.Fprintln(out, v)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&deleted, "deleted", false, "include soft-deleted subjects or versions")
	return cmd
}

type checkOut struct {
	Subject    string   `json:"subject"`
	Compatible bool     `json:"is_compatible"`
	Messages   []string `json:"messages"`
}

func newSchemaCheckCmd(a *app) *cobra.Command {
	var f schemaFlags
	var version string
	cmd := &cobra.Command{
		Use:   "check SUBJECT FILE",
		Short: "Check whether the schema in FILE could be registered under SUBJECT",
		Long: `Check the schema in FILE against SUBJECT's versions at the subject's compatibility
level (or against one version with --version) and list every incompatibility.
Exits with status 1 when the schema is incompatible.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := f.read(args[1], cmd.InOrStdin())
			if err != nil {
				return err
			}
			v := schema.CheckAll
			if version != "" {
				if v, err = parseVersion(version); err != nil {
					return fmt.Errorf("--version: %w", err)
				}
			}
			cl, err := a.schemaClient()
			if err != nil {
				return err
			}
			res, err := cl.Check(cmd.Context(), args[0], v, s)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if a.output == "json" {
				msgs := res.Messages
				if msgs == nil {
					msgs = []string{}
				}
				if err := a.printJSON(out, checkOut{Subject: args[0], Compatible: res.Compatible, Messages: msgs}); err != nil {
					return err
				}
			} else if res.Compatible {
				fmt.Fprintf(out, "%s: compatible with %s\n", args[1], args[0])
			} else {
				fmt.Fprintf(out, "%s: incompatible with %s:\n", args[1], args[0])
				for _, m := range res.Messages {
					fmt.Fprintf(out, "  - %s\n", m)
				}
			}
			if !res.Compatible {
				return exitError{code: 1}
			}
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&version, "version", "", "check against this version only (a number or latest)")
	return cmd
}

type diffOut struct {
	From     string   `json:"from"`
	To       string   `json:"to"`
	Backward []string `json:"backward"`
	Forward  []string `json:"forward"`
}

func newSchemaDiffCmd(a *app) *cobra.Command {
	var f schemaFlags
	cmd := &cobra.Command{
		Use:   "diff SUBJECT FROM TO",
		Short: "Show how two schemas of SUBJECT relate: what breaks readers each way",
		Long: `Compare FROM and TO, each a version of SUBJECT (a number or latest) or a schema
file, and list what stops TO from reading data written with FROM (backward) and
FROM from reading data written with TO (forward). Nothing listed on a side means
that direction is compatible.`,
		Example: `  herald schema diff orders-value 1 2
  herald schema diff orders-value latest order.avsc`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.schemaClient()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			load := func(arg string) (schema.Schema, error) {
				if _, err := os.Stat(arg); err == nil || arg == "-" {
					return f.read(arg, cmd.InOrStdin())
				}
				v, err := parseVersion(arg)
				if err != nil {
					return schema.Schema{}, fmt.Errorf("%q is neither a schema file nor a version: %w", arg, err)
				}
				sv, err := cl.Version(ctx, args[0], v)
				return sv.Schema, err
			}
			from, err := load(args[1])
			if err != nil {
				return err
			}
			to, err := load(args[2])
			if err != nil {
				return err
			}
			if from.Type != to.Type {
				return fmt.Errorf("cannot compare a %s schema with a %s schema", from.Type, to.Type)
			}
			pf, err := cl.Parse(ctx, from)
			if err != nil {
				return fmt.Errorf("%s: %w", args[1], err)
			}
			pt, err := cl.Parse(ctx, to)
			if err != nil {
				return fmt.Errorf("%s: %w", args[2], err)
			}
			bw, fw, err := schema.Compare(ctx, from.Type, pf, pt)
			if err != nil {
				return err
			}
			d := diffOut{From: args[1], To: args[2], Backward: strs(bw), Forward: strs(fw)}
			out := cmd.OutOrStdout()
			if a.output == "json" {
				return a.printJSON(out, d)
			}
			for _, side := range []struct {
				name, what string
				msgs       []string
			}{{"backward", fmt.Sprintf("%s reads data written with %s", d.To, d.From), d.Backward},
				{"forward", fmt.Sprintf("%s reads data written with %s", d.From, d.To), d.Forward}} {
				if len(side.msgs) == 0 {
					fmt.Fprintf(out, "%s: compatible (%s)\n", side.name, side.what)
					continue
				}
				fmt.Fprintf(out, "%s: incompatible (%s):\n", side.name, side.what)
				for _, m := range side.msgs {
					fmt.Fprintf(out, "  - %s\n", m)
				}
			}
			return nil
		},
	}
	f.register(cmd)
	return cmd
}

func strs(incs []schema.Incompatibility) []string {
	out := make([]string, len(incs))
	for i, inc := range incs {
		out[i] = inc.String()
	}
	return out
}

func newSchemaConfigCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config [SUBJECT] [LEVEL]",
		Short: "Print or set the compatibility level, global or of SUBJECT",
		Long: `Print the global compatibility level, or SUBJECT's (falling back to the global
one), or set it with LEVEL: NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD,
FORWARD_TRANSITIVE, FULL or FULL_TRANSITIVE. Use "" as SUBJECT for the global level.`,
		Example: `  herald schema config
  herald schema config orders-value FULL_TRANSITIVE`,
		Args: cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.schemaClient()
			if err != nil {
				return err
			}
			subject := ""
			if len(args) > 0 {
				subject = args[0]
			}
			if len(args) == 2 {
				level, err := schema.ParseLevel(args[1])
				if err != nil {
					return err
				}
				if err := cl.SetConfig(cmd.Context(), subject, level); err != nil {
					return err
				}
			}
			level, err := cl.Config(cmd.Context(), subject)
			if err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(cmd.OutOrStdout(), map[string]string{"subject": subject, "compatibilityLevel": string(level)})
			}
			name := subject
			if name == "" {
				name = "global"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", name, level)
			return nil
		},
	}
	return cmd
}
