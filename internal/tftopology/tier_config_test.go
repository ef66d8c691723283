package tftopology

import (
	"bytes"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arborid/arbor/topology"
)

// TestRenderTierMatchesRender renders every node (replicas included) of
// every valid file in every format and compares with what the topology
// package writes for `arbor topology render`.
func TestRenderTierMatchesRender(t *testing.T) {
	for _, path := range validFiles(t) {
		f, _ := parse(t, path, nil)
		for _, s := range f.Servers {
			for _, r := range s.ReplicaList() {
				node := r.Node()
				t.Run(filepath.Base(path)+"/"+node, func(t *testing.T) {
					checkRenderTier(t, f, r, node)
				})
			}
		}
	}
}

func checkRenderTier(t *testing.T, f *topology.File, s *topology.Server, node string) {
	for _, format := range []string{formatHCL, formatJSON, formatSPIRE} {
		got, err := renderTier(f, node, format)
		if err != nil {
			t.Fatalf("renderTier(%q, %s): %v", node, format, err)
		}
		var server, agent bytes.Buffer
		switch format {
		case formatSPIRE:
			cfg, err := topology.RenderSPIRE(f, node)
			if err != nil {
				t.Fatal(err)
			}
			if err := cfg.WriteServerConf(&server); err != nil {
				t.Fatal(err)
			}
			if cfg.Agent != nil {
				if err := cfg.WriteAgentConf(&agent); err != nil {
					t.Fatal(err)
				}
			}
		default:
			cfg, err := topology.Render(f, node)
			if err != nil {
				t.Fatal(err)
			}
			write := cfg.WriteHCL
			if format == formatJSON {
				write = cfg.WriteJSON
			}
			if err := write(&server); err != nil {
				t.Fatal(err)
			}
			if s.Agent != nil {
				// The agent part carries the agent block exactly as the
				// whole render does.
				if got.AgentConfig == "" {
					t.Fatalf("renderTier(%q, %s).agent_config is empty for a node with an agent", node, format)
				}
				block := agentBlockText(t, got.AgentConfig, format)
				if !strings.Contains(server.String(), block) {
					t.Errorf("renderTier(%q, %s): the agent block of agent_config is not in the render:\n%s", node, format, block)
				}
				agent.WriteString(got.AgentConfig)
			}
		}
		if format == formatJSON {
			for what, text := range map[string]string{"server_config": got.ServerConfig, "agent_config": got.AgentConfig} {
				if text != "" && !json.Valid([]byte(text)) {
					t.Errorf("renderTier(%q, json).%s is not JSON:\n%s", node, what, text)
				}
			}
		}
		if got.ServerConfig != server.String() {
			t.Errorf("renderTier(%q, %s).server_config:\n%s\nwant:\n%s", node, format, got.ServerConfig, server.String())
		}
		if got.AgentConfig != agent.String() {
			t.Errorf("renderTier(%q, %s).agent_config:\n%s\nwant:\n%s", node, format, got.AgentConfig, agent.String())
		}
		want := tierConfig{
			ServerConfig: server.String(),
			AgentConfig:  agent.String(),
			AdminSocket:  s.AdminSocket,
			StateDir:     s.StateDir,
			Listen:       s.Listen,
			Address:      s.Address,
			SPIFFEID:     s.SPIFFEID.String(),
			Parent:       s.Parent,
		}
		if s.Agent != nil {
			want.AgentSPIFFEID = s.Agent.SPIFFEID.String()
			want.AgentSocketPath = s.Agent.SocketPath
		}
		if got != want {
			t.Errorf("renderTier(%q, %s) = %+v\nwant %+v", node, format, got, want)
		}
	}
}

// agentBlockText cuts the agent block out of an agent_config.
func agentBlockText(t *testing.T, cfg, format string) string {
	t.Helper()
	marker := "\nagent {\n"
	if format == formatJSON {
		marker = "\n  \"agent\": {\n"
	}
	i := strings.Index(cfg, marker)
	if i < 0 {
		t.Fatalf("agent_config has no agent block:\n%s", cfg)
	}
	block := cfg[i:]
	if format == formatJSON {
		// Up to the closing brace of the whole document.
		block = strings.TrimRight(strings.TrimSuffix(strings.TrimRight(block, "\n"), "}"), "\n")
	}
	return block
}

func TestRenderTierUnknownNode(t *testing.T) {
	f, _ := parse(t, filepath.Join(repoRoot(t), "examples/quickstart.hcl"), nil)
	_, err := renderTier(f, "leaf-c", formatHCL)
	if !errors.Is(err, topology.ErrUnknownServer) {
		t.Fatalf("renderTier(leaf-c) = %v, want ErrUnknownServer", err)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") {
		t.Errorf("error is more than one line: %q", msg)
	}
	for _, s := range f.Servers {
		if !strings.Contains(msg, s.Name) {
			t.Errorf("error %q does not name server %q", msg, s.Name)
		}
	}
	if _, err := renderTier(f, "leaf-a", "yaml"); err == nil || !strings.Contains(err.Error(), `"yaml"`) {
		t.Errorf("renderTier(format yaml) = %v, want an error naming the format", err)
	}
}
