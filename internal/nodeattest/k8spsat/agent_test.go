package k8spsat_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arborid/arbor/internal/nodeattest/k8spsat"
	"github.com/arborid/arbor/internal/nodeattest/k8spsat/k8spsattest"
)

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestAgentPayload: the payload carries the cluster name and the token
// file's content unchanged, in SPIRE's JSON.
func TestAgentPayload(t *testing.T) {
	c := newCluster(t, k8spsattest.Config{})
	c.add(defaultAgent)
	token := c.token(t, defaultAgent, k8spsattest.TokenOptions{})
	dir := t.TempDir()

	tests := []struct {
		name, cluster, token, want string
	}{
		{"projected token", "prod", token, `{"cluster":"prod","token":"` + token + `"}`},
		// SPIRE sends what the file holds, a trailing newline included,
		// and encoding/json escapes as SPIRE's does.
		{"trailing newline", "prod", token + "\n", `{"cluster":"prod","token":"` + token + `\n"}`},
		{"escaped characters", "a<b>&c", `"\` + "\u2028", `{"cluster":"a\u003cb\u003e\u0026c","token":"\"\\\u2028"}`},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "token"+string(rune('0'+i)))
			writeFile(t, path, tt.token)
			got, err := k8spsat.AgentPayload(k8spsat.AgentConfig{Cluster: tt.cluster, TokenPath: path})
			if err != nil {
				t.Fatalf("AgentPayload() = %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("AgentPayload() = %s, want %s", got, tt.want)
			}
			var back struct{ Cluster, Token string }
			if err := json.Unmarshal(got, &back); err != nil || back.Cluster != tt.cluster || back.Token != tt.token {
				t.Errorf("AgentPayload() decodes to %+v, %v; want cluster %q and the file's token", back, err, tt.cluster)
			}
		})
	}
}

func TestAgentPayloadErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	writeFile(t, empty, "")
	large := filepath.Join(dir, "large")
	writeFile(t, large, strings.Repeat("a", 64<<10+1))
	tests := []struct {
		name string
		cfg  k8spsat.AgentConfig
		want string
	}{
		{"no cluster", k8spsat.AgentConfig{TokenPath: empty}, "cluster is required"},
		{"missing file", k8spsat.AgentConfig{Cluster: "prod", TokenPath: filepath.Join(dir, "missing")}, "no such file"},
		{"empty file", k8spsat.AgentConfig{Cluster: "prod", TokenPath: empty}, "is empty"},
		{"file too large", k8spsat.AgentConfig{Cluster: "prod", TokenPath: large}, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := k8spsat.AgentPayload(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "k8s_psat: ") {
				t.Errorf("AgentPayload(%+v) = %s, %v; want an error containing %q", tt.cfg, got, err, tt.want)
			}
		})
	}
}

// TestAgentPayloadDefaultTokenPath: without a path the agent reads SPIRE's
// default one.
func TestAgentPayloadDefaultTokenPath(t *testing.T) {
	if k8spsat.DefaultTokenPath != "/var/run/secrets/tokens/spire-agent" {
		t.Errorf("DefaultTokenPath = %q, want SPIRE's /var/run/secrets/tokens/spire-agent", k8spsat.DefaultTokenPath)
	}
	got, err := k8spsat.AgentPayload(k8spsat.AgentConfig{Cluster: "prod"})
	if _, statErr := os.Stat(k8spsat.DefaultTokenPath); statErr == nil {
		if err != nil {
			t.Errorf("AgentPayload() with a token at the default path = %v", err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), k8spsat.DefaultTokenPath) {
		t.Errorf("AgentPayload() without a token file = %s, %v; want an error naming %s", got, err, k8spsat.DefaultTokenPath)
	}
}
