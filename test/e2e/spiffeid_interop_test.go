package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// TestSPIFFEIDRulesLikeSpireServer runs the real spire-server CLI against
// arbor's admin socket and against a real spire-server of the default SPIRE
// release, with every SPIFFE ID form SPIRE 1.13 refuses as an entry's
// SPIFFE ID, an entry's parent ID or a join token's alias: both refuse each
// one (non-zero exit; for the forms only the server can judge, an
// InvalidArgument from the server), both accept the control IDs, and neither
// stores anything it refused.
func TestSPIFFEIDRulesLikeSpireServer(t *testing.T) {
	requireSetup(t)
	t.Parallel()
	a := newArbor(t, `datastore "sqlite" {}`)
	a.start(t)
	s := startAgentSpireServer(t, defaultSpire())

	type target struct {
		name string
		run  func(args ...string) (string, error)
	}
	targets := []target{
		{"arbor", func(args ...string) (string, error) {
			r := a.cliRun(t, args...)
			return r.stdout + r.stderr, r.err
		}},
		{"spire-server " + s.peer.version, func(args ...string) (string, error) { return s.cli(t, args...) }},
	}

	base := td.IDString()

	// Entries to update, one per server, and the count each holds.
	updateIDs := map[string]string{}
	for _, tg := range targets {
		out, err := tg.run("entry", "create", "-parentID", base+"/node", "-spiffeID", base+"/to-update", "-selector", "unix:uid:1")
		id := entryIDIn(out)
		if err != nil || id == "" {
			t.Fatalf("%s: entry create of the entry to update: %v\n%s", tg.name, err, out)
		}
		updateIDs[tg.name] = id
	}
	counts := func() map[string]string {
		m := map[string]string{}
		for _, tg := range targets {
			out, err := tg.run("entry", "count")
			if err != nil {
				t.Fatalf("%s: entry count: %v\n%s", tg.name, err, out)
			}
			m[tg.name] = strings.TrimSpace(out)
		}
		return m
	}

	// server: the CLI parses the ID and sends it; the server refuses it.
	// client: the CLI's own go-spiffe parse refuses it before any call.
	type form struct {
		id     string
		server bool
	}
	entryIDForms := []form{
		{base, true},
		{base + "/spire", true},
		{base + "/spire/foo", true},
		{base + "/spire/server", true},
		{base + "/spire/agent", true},
		{base + "/spire/agent/x", true},
		{base + "/spire/agent/join_token/abc", true},
		{"spiffe://other.org/web", true},
		{base + "/web/", false},
		{base + "//web", false},
		{base + "/a/../spire/server", false},
		{base + "/%73pire/server", false},
		{"spiffe://EXAMPLE.org/web", false},
	}
	parentIDForms := []form{
		{base, true},
		{"spiffe://other.org/node", true},
		{"spiffe://other.org/spire/agent/x", true},
		{base + "/node/", false},
		{base + "/a/./b", false},
	}

	type cliCall struct {
		name string
		args func(tg target) []string
		// server reports whether the server, not the CLI, refuses it.
		server bool
	}
	var refused []cliCall
	for i, f := range entryIDForms {
		sel := fmt.Sprintf("unix:uid:%d", 100+i)
		refused = append(refused,
			cliCall{"entry create -spiffeID " + f.id, func(target) []string {
				return []string{"entry", "create", "-parentID", base + "/node", "-spiffeID", f.id, "-selector", sel}
			}, f.server},
			cliCall{"entry update -spiffeID " + f.id, func(tg target) []string {
				return []string{"entry", "update", "-entryID", updateIDs[tg.name], "-parentID", base + "/node", "-spiffeID", f.id, "-selector", "unix:uid:1"}
			}, f.server},
			cliCall{"token generate -spiffeID " + f.id, func(target) []string {
				return []string{"token", "generate", "-spiffeID", f.id}
			}, f.server},
		)
	}
	for i, f := range parentIDForms {
		sel := fmt.Sprintf("unix:uid:%d", 200+i)
		refused = append(refused,
			cliCall{"entry create -parentID " + f.id, func(target) []string {
				return []string{"entry", "create", "-parentID", f.id, "-spiffeID", base + "/web", "-selector", sel}
			}, f.server},
			cliCall{"entry update -parentID " + f.id, func(tg target) []string {
				return []string{"entry", "update", "-entryID", updateIDs[tg.name], "-parentID", f.id, "-spiffeID", base + "/to-update", "-selector", "unix:uid:1"}
			}, f.server},
		)
	}

	before := counts()
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			for _, tg := range targets {
				out, err := tg.run(c.args(tg)...)
				if err == nil {
					t.Errorf("%s accepted spire-server %s:\n%s", tg.name, strings.Join(c.args(tg), " "), out)
					continue
				}
				if c.server && !strings.Contains(out, "InvalidArgument") {
					t.Errorf("%s refused spire-server %s without InvalidArgument from the server:\n%s", tg.name, strings.Join(c.args(tg), " "), out)
				}
			}
		})
	}
	if after := counts(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("entry counts changed over the refused calls: before %v, after %v", before, after)
	}

	// Controls: the same commands with IDs SPIRE accepts.
	accepted := [][]string{
		{"entry", "create", "-parentID", base + "/node", "-spiffeID", base + "/Web/UPPER", "-selector", "unix:uid:300"},
		{"entry", "create", "-parentID", base + "/spire/server", "-spiffeID", base + "/spirex/y", "-selector", "unix:uid:301"},
		{"entry", "create", "-parentID", base + "/spire/agent/x", "-spiffeID", base + "/x/spire/server", "-selector", "unix:uid:302"},
		{"entry", "create", "-parentID", base + "/spire", "-spiffeID", base + "/spire-agent", "-selector", "unix:uid:303"},
		{"token", "generate", "-spiffeID", base + "/host"},
	}
	for _, args := range accepted {
		for _, tg := range targets {
			if out, err := tg.run(args...); err != nil {
				t.Errorf("%s refused the control spire-server %s: %v\n%s", tg.name, strings.Join(args, " "), err, out)
			}
		}
	}
	for _, tg := range targets {
		args := []string{"entry", "update", "-entryID", updateIDs[tg.name], "-parentID", base + "/spire/agent/y", "-spiffeID", base + "/updated", "-selector", "unix:uid:1"}
		if out, err := tg.run(args...); err != nil {
			t.Errorf("%s refused the control spire-server %s: %v\n%s", tg.name, strings.Join(args, " "), err, out)
		}
	}
}

// entryIDIn returns the entry ID of `entry create`'s pretty output.
func entryIDIn(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "Entry ID" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
