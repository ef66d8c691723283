package main

import (
	"encoding/json"
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/arborid/arbor/internal/cli/output"
)

// buildVersion is what the binary knows of its build, from the build
// information the go command embeds. Its JSON field names are stable.
type buildVersion struct {
	Module  string `json:"module"`
	Version string `json:"version"` // the module version, "(devel)" when unknown
	Go      string `json:"go"`
	// The version control state of the build, when built from a checkout
	// (empty otherwise, e.g. go install module@version).
	Revision string `json:"vcs_revision,omitempty"`
	Time     string `json:"vcs_time,omitempty"`
	Modified bool   `json:"vcs_modified"`
}

// versionOf reads info (from debug.ReadBuildInfo; nil when unavailable).
func versionOf(info *debug.BuildInfo) buildVersion {
	v := buildVersion{Module: "github.com/arborid/arbor", Version: "(devel)"}
	if info == nil {
		return v
	}
	if info.Main.Path != "" {
		v.Module = info.Main.Path
	}
	if info.Main.Version != "" {
		v.Version = info.Main.Version
	}
	v.Go = info.GoVersion
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

// String is the one line arbor --version prints.
func (v buildVersion) String() string {
	s := "arbor " + v.Version
	if v.Revision != "" {
		s += " (revision " + v.Revision
		if v.Time != "" {
			s += ", " + v.Time
		}
		if v.Modified {
			s += ", modified"
		}
		s += ")"
	}
	if v.Go != "" {
		s += " " + v.Go
	}
	if v.Revision == "" {
		s += " (no version control information: built outside a checkout or with -buildvcs=false)"
	}
	return s
}

// currentVersion is this binary's version.
func currentVersion() buildVersion {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		info = nil
	}
	return versionOf(info)
}

func newVersionCommand() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print arbor's version and the revision it was built from",
		Long: `Print the module version of this arbor binary and, when it was built from a
checkout, the version control revision, its commit time and whether the
working tree had uncommitted changes ("modified"), then the Go version. The
same line as arbor --version; --output json prints the fields (module,
version, go, vcs_revision, vcs_time, vcs_modified).`,
		Example: `  arbor version
  arbor --version
  arbor version --output json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := output.ParseFormat(format)
			if err != nil {
				return err
			}
			v := currentVersion()
			if f == output.FormatJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(v)
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), v)
			return err
		},
	}
	cmd.Flags().StringVarP(&format, "output", "o", "pretty", "output format: pretty or json")
	return cmd
}
