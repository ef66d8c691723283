package tfprovider

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"

	"github.com/arborid/arbor/internal/cli/admin"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/testkit"
)

// TestMain points terraform-plugin-testing at the OpenTofu binary
// test/tofupeer builds (cached, so instant after the first build) and
// serves the provider in-process under registry.opentofu.org/arborid/arbor:
// no test downloads anything.
func TestMain(m *testing.M) {
	root, err := repoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tfprovider tests:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "test/tofupeer/build.sh"))
	cmd.Dir, cmd.Stdout, cmd.Stderr = root, &out, &errOut
	err = cmd.Run()
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "tfprovider tests: building OpenTofu: %v\n%s", err, errOut.String())
		os.Exit(1)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	tofu := filepath.Join(strings.TrimSpace(lines[len(lines)-1]), "tofu")
	if _, err := os.Stat(tofu); err != nil {
		fmt.Fprintf(os.Stderr, "tfprovider tests: no tofu binary: %v\n", err)
		os.Exit(1)
	}
	for k, v := range map[string]string{
		"TF_ACC":                    "1",
		"TF_ACC_TERRAFORM_PATH":     tofu,
		"TF_ACC_PROVIDER_NAMESPACE": "arborid",
		"TF_ACC_PROVIDER_HOST":      "registry.opentofu.org",
		"CHECKPOINT_DISABLE":        "1",
		"TF_IN_AUTOMATION":          "1",
	} {
		os.Setenv(k, v)
	}
	os.Exit(m.Run())
}

// repoRoot is the directory of the module's go.mod, above this package.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above %s", dir)
		}
		dir = parent
	}
}

// factories serve the provider under test in-process.
var factories = map[string]func() (tfprotov6.ProviderServer, error){
	"arbor": providerserver.NewProtocol6WithError(New("test")()),
}

var td = spiffeid.RequireTrustDomainFromString("example.org")

// testServer is an in-process arbor server with its admin socket.
type testServer struct {
	*testkit.Server
	socket string
	admin  *admin.Client
}

// startServer runs a server (SQLite, CA keys in memory, join tokens on)
// until the test ends; its health port serves /metrics.
func startServer(t *testing.T) *testServer {
	t.Helper()
	dir := testkit.ShortDir(t)
	sock := filepath.Join(dir, "a.sock")
	s := testkit.StartServer(t, server.Config{
		Name:           "root",
		TrustDomain:    td,
		ListenAddr:     "127.0.0.1:0",
		HealthAddr:     "127.0.0.1:0",
		StateDir:       filepath.Join(dir, "state"),
		AdminSocket:    sock,
		JoinToken:      true,
		CAKeysInMemory: true,
	})
	c, err := admin.Dial(sock)
	if err != nil {
		t.Fatalf("Dial(%q): %v", sock, err)
	}
	c.Timeout = 20 * time.Second
	t.Cleanup(func() { c.Close() })
	return &testServer{Server: s, socket: sock, admin: c}
}

// provider is the provider block for s, then the rest of a configuration.
func (s *testServer) config(rest string) string {
	return providerBlock(fmt.Sprintf("admin_socket = %q", s.socket)) + rest
}

// providerBlock is the required_providers block naming arborid/arbor
// and a provider block with body.
func providerBlock(body string) string {
	return fmt.Sprintf(`terraform {
  required_providers {
    arbor = { source = "arborid/arbor" }
  }
}

provider "arbor" {
  %s
  timeout = "20s"
}

`, body)
}

// metric returns the value of the /metrics line starting with prefix ("" when absent).
func (s *testServer) metric(t *testing.T, prefix string) string {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + s.HealthAddr().String() + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading /metrics: %v", err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, prefix+" ") {
			return strings.TrimPrefix(line, prefix+" ")
		}
	}
	return ""
}

func ctxT(t *testing.T) context.Context { return testkit.Context(t, 30*time.Second) }

func tfjsonpathOf(name string) tfjsonpath.Path { return tfjsonpath.New(name) }

func knownString(s string) knownvalue.Check { return knownvalue.StringExact(s) }

func uid() int { return os.Getuid() }

func regexpOf(s string) *regexp.Regexp { return regexp.MustCompile(s) }

// equals checks an attribute against *want, read when the check runs.
func equals(want *string) resource.CheckResourceAttrWithFunc {
	return func(got string) error {
		if got != *want {
			return fmt.Errorf("got %q, want %q", got, *want)
		}
		return nil
	}
}

// deleteEntries deletes entries through the admin API, behind tofu's back.
func (s *testServer) deleteEntries(t *testing.T, ids ...string) (int, error) {
	t.Helper()
	resp, err := entryv1.NewEntryClient(s.admin.Conn()).BatchDeleteEntry(ctxT(t), &entryv1.BatchDeleteEntryRequest{Ids: ids})
	if err != nil {
		return 0, err
	}
	for _, r := range resp.Results {
		if r.Status.GetCode() != 0 {
			return 0, fmt.Errorf("deleting %s: %s", r.Id, r.Status.GetMessage())
		}
	}
	return len(resp.Results), nil
}
