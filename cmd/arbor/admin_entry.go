package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/arborid/arbor/internal/cli/admin"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

func newEntryCommand() *cobra.Command {
	return adminGroup("entry", "Manage registration entries",
		`Registration entries say which workloads (by selectors, under a parent
agent) get which SPIFFE ID. The flags mirror spire-server's entry commands;
spire-server's spellings (-parentID, -spiffeID, -socketPath, ...) are accepted too.`,
		newEntryCreateCommand(), newEntryShowCommand(), newEntryUpdateCommand(),
		newEntryDeleteCommand(), newEntryCountCommand())
}

// entryFlagNames are the flags that describe one entry; --data excludes them.
var entryFlagNames = []string{"entry-id", "parent-id", "spiffe-id", "node", "selector", "x509-svid-ttl",
	"jwt-svid-ttl", "dns", "federates-with", "admin", "downstream", "store-svid", "entry-expiry", "hint"}

func registerEntrySpec(fs *pflag.FlagSet, s *admin.EntrySpec, data *string) {
	fs.StringVar(&s.EntryID, "entry-id", "", "entry ID (create: optional custom ID; update: the entry to replace)")
	fs.StringVar(&s.ParentID, "parent-id", "", "SPIFFE ID of the parent (an agent, or another entry's SPIFFE ID)")
	fs.StringVar(&s.SPIFFEID, "spiffe-id", "", "SPIFFE ID the entry issues")
	fs.BoolVar(&s.Node, "node", false, "make a node entry: the parent is the server (spiffe://<td>/spire/server)")
	fs.StringArrayVar(&s.Selectors, "selector", nil, "selector type:value, e.g. unix:uid:1000 (repeatable)")
	fs.Var(secondsValue{&s.X509SVIDTTL}, "x509-svid-ttl", "X509-SVID lifetime in seconds or as a duration (default: the server's)")
	fs.Var(secondsValue{&s.JWTSVIDTTL}, "jwt-svid-ttl", "JWT-SVID lifetime in seconds or as a duration (default: the server's)")
	fs.StringArrayVar(&s.DNSNames, "dns", nil, "DNS SAN for the X509-SVID (repeatable)")
	fs.StringArrayVar(&s.FederatesWith, "federates-with", nil, "trust domain whose bundle workloads also get (repeatable)")
	fs.BoolVar(&s.Admin, "admin", false, "workloads of this entry are admins of the server API")
	fs.BoolVar(&s.Downstream, "downstream", false, "the entry is a downstream server: it may get an intermediate CA")
	fs.BoolVar(&s.StoreSVID, "store-svid", false, "the agent stores the SVID with an SVIDStore plugin")
	fs.Var(unixTimeValue{&s.EntryExpiry}, "entry-expiry", "when the entry expires: Unix seconds or RFC 3339")
	fs.StringVar(&s.Hint, "hint", "", "hint for workloads to tell their SVIDs apart")
	fs.StringVar(data, "data", "", `JSON file of entries {"entries": [...]} (spire-server's -data format), "-" for stdin`)
}

// entriesFromFlags returns the entries of --data, or the one entry of the flags.
func entriesFromFlags(cmd *cobra.Command, spec admin.EntrySpec, data string) ([]*types.Entry, error) {
	if data == "" {
		e, err := spec.Entry()
		if err != nil {
			return nil, err
		}
		return []*types.Entry{e}, nil
	}
	for _, n := range entryFlagNames {
		if cmd.Flags().Changed(n) {
			return nil, fmt.Errorf("--data cannot be combined with --%s: put every field in the file", n)
		}
	}
	r, closeFn, err := openInput(cmd, data)
	if err != nil {
		return nil, err
	}
	defer closeFn()
	return admin.ParseEntryData(r)
}

// openInput opens path, or stdin for "-".
func openInput(cmd *cobra.Command, path string) (io.Reader, func(), error) {
	if path == "-" {
		return cmd.InOrStdin(), func() {}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}

func newEntryCreateCommand() *cobra.Command {
	var o adminOpts
	var spec admin.EntrySpec
	var data string
	return adminLeaf("create", "Create registration entries",
		`Create one entry from flags, or many from a JSON file with --data. Each
created entry is printed; entries that fail (for example because a similar
entry exists) are reported one per line and the command exits 1.`,
		`  arbor entry create --socket-path examples/.arbor/single-server/root/admin.sock \
      --parent-id spiffe://example.org/host --spiffe-id spiffe://example.org/web \
      --selector unix:uid:1000 --x509-svid-ttl 1h
  # A node alias: every agent with selector x509pop:subject:cn:web is spiffe://example.org/host
  arbor entry create --node --spiffe-id spiffe://example.org/host --selector x509pop:subject:cn:web
  # Batch, in spire-server's format:
  arbor entry create --data entries.json
  # spire-server spelling works too:
  arbor entry create -socketPath examples/.arbor/single-server/root/admin.sock -parentID spiffe://example.org/host \
      -spiffeID spiffe://example.org/web -selector unix:uid:1000`,
		func(fs *pflag.FlagSet) {
			o.register(fs)
			registerEntrySpec(fs, &spec, &data)
		},
		func(cmd *cobra.Command) error {
			entries, err := entriesFromFlags(cmd, spec, data)
			if err != nil {
				return fmt.Errorf("entry create: %w", err)
			}
			return o.run(cmd, func(ctx context.Context, c *admin.Client, p admin.Printer) error {
				return c.CreateEntries(ctx, p, entries)
			})
		})
}

func newEntryUpdateCommand() *cobra.Command {
	var o adminOpts
	var spec admin.EntrySpec
	var data string
	return adminLeaf("update", "Replace registration entries",
		`Replace the entry --entry-id with the one the flags describe: like
spire-server, every field is replaced, so give all of them (fields left out
are cleared). With --data, every entry in the file must carry its "id".`,
		`  arbor entry update --entry-id 6f1c... --parent-id spiffe://example.org/host \
      --spiffe-id spiffe://example.org/web --selector unix:uid:1001
  arbor entry update --data entries.json --output json`,
		func(fs *pflag.FlagSet) {
			o.register(fs)
			registerEntrySpec(fs, &spec, &data)
		},
		func(cmd *cobra.Command) error {
			if data == "" && spec.EntryID == "" {
				return errors.New("entry update: --entry-id is required")
			}
			entries, err := entriesFromFlags(cmd, spec, data)
			if err != nil {
				return fmt.Errorf("entry update: %w", err)
			}
			return o.run(cmd, func(ctx context.Context, c *admin.Client, p admin.Printer) error {
				return c.UpdateEntries(ctx, p, entries)
			})
		})
}

func registerEntryFilter(fs *pflag.FlagSet, f *admin.EntryFilter, withID bool) {
	if withID {
		fs.StringVar(&f.EntryID, "entry-id", "", "show only the entry with this ID")
	}
	fs.StringVar(&f.SPIFFEID, "spiffe-id", "", "only entries with this SPIFFE ID")
	fs.StringVar(&f.ParentID, "parent-id", "", "only entries with this parent ID")
	fs.StringArrayVar(&f.Selectors, "selector", nil, "selector type:value to match (repeatable; see --match)")
	fs.StringVar(&f.MatchSelectors, "match", "superset", "how --selector matches: exact, subset, superset or any (spire-server: -matchSelectorsOn)")
	fs.StringArrayVar(&f.FederatesWith, "federates-with", nil, "trust domain to match (repeatable; see --match-federates-with)")
	fs.StringVar(&f.MatchFederatesWith, "match-federates-with", "superset", "how --federates-with matches: exact, subset, superset or any")
	fs.StringVar(&f.Hint, "hint", "", "only entries with this hint")
	fs.BoolVar(&f.Downstream, "downstream", false, "only downstream entries")
}

func newEntryShowCommand() *cobra.Command {
	var o adminOpts
	var f admin.EntryFilter
	return adminLeaf("show", "List registration entries",
		`List the entries matching every given filter (all entries without one),
sorted by SPIFFE ID. With --output json the result is a ListEntriesResponse
holding every matching entry.`,
		`  arbor entry show
  arbor entry show --spiffe-id spiffe://example.org/web
  arbor entry show --selector unix:uid:1000 --match any --output json
  arbor entry show --entry-id 6f1c...`,
		func(fs *pflag.FlagSet) {
			o.register(fs)
			registerEntryFilter(fs, &f, true)
		},
		func(cmd *cobra.Command) error {
			return o.run(cmd, func(ctx context.Context, c *admin.Client, p admin.Printer) error {
				return c.ShowEntries(ctx, p, f)
			})
		})
}

func newEntryCountCommand() *cobra.Command {
	var o adminOpts
	var f admin.EntryFilter
	return adminLeaf("count", "Count registration entries",
		"Count the entries matching every given filter (all entries without one).",
		`  arbor entry count
  arbor entry count --parent-id spiffe://example.org/host`,
		func(fs *pflag.FlagSet) {
			o.register(fs)
			registerEntryFilter(fs, &f, false)
		},
		func(cmd *cobra.Command) error {
			return o.run(cmd, func(ctx context.Context, c *admin.Client, p admin.Printer) error {
				return c.CountEntries(ctx, p, f)
			})
		})
}

func newEntryDeleteCommand() *cobra.Command {
	var o adminOpts
	var ids []string
	var file string
	return adminLeaf("delete", "Delete registration entries",
		`Delete entries by ID: --entry-id (repeatable) and/or --file, a JSON file
{"ids": [...]} ("-" for stdin). IDs that fail are reported one per line and
the command exits 1.`,
		`  arbor entry delete --entry-id 6f1c...
  arbor entry delete --entry-id 6f1c... --entry-id 9a2b...
  echo '{"ids": ["6f1c..."]}' | arbor entry delete --file -`,
		func(fs *pflag.FlagSet) {
			o.register(fs)
			fs.StringArrayVar(&ids, "entry-id", nil, "ID of an entry to delete (repeatable)")
			fs.StringVar(&file, "file", "", `JSON file {"ids": [...]} of entries to delete, "-" for stdin`)
		},
		func(cmd *cobra.Command) error {
			all := ids
			if file != "" {
				r, closeFn, err := openInput(cmd, file)
				if err != nil {
					return fmt.Errorf("entry delete: %w", err)
				}
				more, err := admin.ReadEntryIDs(r)
				closeFn()
				if err != nil {
					return fmt.Errorf("entry delete: %w", err)
				}
				all = append(all, more...)
			}
			if len(all) == 0 {
				return errors.New("entry delete: give --entry-id or --file")
			}
			return o.run(cmd, func(ctx context.Context, c *admin.Client, p admin.Printer) error {
				return c.DeleteEntries(ctx, p, all)
			})
		})
}
