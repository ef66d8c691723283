package e2e

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// agentSpireServer is a real spire-server with the join_token attestor and
// SQLite in a temp dir.
type agentSpireServer struct {
	peer   *spirePeer
	socket string
	port   int
	proc   *process
}

func startAgentSpireServer(t *testing.T, p *spirePeer) *agentSpireServer {
	t.Helper()
	return startSpireServerOf(t, p, td.Name(), t.TempDir(), nil, "")
}

// startSpireServerOf runs a real spire-server of trustDomain (join_token
// attestor, SQLite and memory keys in dir) with serverExtra added to its
// server block and env to its environment, and waits until it is healthy.
func startSpireServerOf(t testing.TB, p *spirePeer, trustDomain, dir string, env []string, serverExtra string) *agentSpireServer {
	t.Helper()
	return startSpireServerWith(t, p, trustDomain, dir, env, serverExtra, "")
}

// startSpireServerWith is startSpireServerOf with pluginsExtra added to the
// plugins block (more node attestors).
func startSpireServerWith(t testing.TB, p *spirePeer, trustDomain, dir string, env []string, serverExtra, pluginsExtra string) *agentSpireServer {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	s := &agentSpireServer{peer: p, socket: filepath.Join(shortTempDir(t, "ss"), "api.sock"), port: freePort(t)}
	conf := fmt.Sprintf(`server {
  bind_address = "127.0.0.1"
  bind_port    = "%d"
  socket_path  = %q
  trust_domain = %q
  data_dir     = %q
  log_level    = "DEBUG"
  ca_ttl       = "24h"
  default_x509_svid_ttl = "1h"
  %s
}

plugins {
  DataStore "sql" {
    plugin_data {
      database_type     = "sqlite3"
      connection_string = %q
    }
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
  %s
}
`, s.port, s.socket, trustDomain, filepath.Join(dir, "data"), serverExtra, filepath.Join(dir, "datastore.sqlite3"), pluginsExtra)
	confPath := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	s.proc = startProcess(t, "spire-server "+p.version, filepath.Join(dir, "spire-server.log"), env, p.server, "run", "-config", confPath)
	poll(t, waitTimeout, "spire-server healthy", func() error {
		if s.proc.exited() {
			t.Fatalf("spire-server exited: %v\n%s", s.proc.err, tail(s.proc.log, 40))
		}
		_, err := s.cli(t, "healthcheck")
		return err
	})
	return s
}

func (s *agentSpireServer) cli(t testing.TB, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args = append(args[:len(args):len(args)], "-socketPath", s.socket)
	out, err := exec.CommandContext(ctx, s.peer.server, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("spire-server %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (s *agentSpireServer) mustCLI(t testing.TB, args ...string) string {
	t.Helper()
	out, err := s.cli(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// arborAgentProc is an `arbor agent run` process.
type arborAgentProc struct {
	socket, dataDir, health string
	proc                    *process
}

// startArborAgent runs the arbor agent binary against addr, bootstrapping
// from bundlePEM with a join token, and waits for its Workload API socket.
func startArborAgent(t *testing.T, addr string, bundlePEM []byte, token string) *arborAgentProc {
	t.Helper()
	dir := t.TempDir()
	bundlePath := filepath.Join(dir, "bootstrap.pem")
	if err := os.WriteFile(bundlePath, bundlePEM, 0o600); err != nil {
		t.Fatal(err)
	}
	ag := &arborAgentProc{
		socket: filepath.Join(shortTempDir(t, "aa"), "api.sock"), dataDir: filepath.Join(dir, "data"),
		health: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))),
	}
	ag.proc = startProcess(t, "arbor agent", filepath.Join(dir, "arbor-agent.log"), nil, arborBin,
		"agent", "run", "--server-address", addr, "--trust-domain", td.Name(), "--trust-bundle", bundlePath,
		"--join-token", token, "--data-dir", ag.dataDir, "--socket-path", ag.socket, "--sync-interval", "1s",
		"--health-listen", ag.health, "--log-level", "debug")
	poll(t, waitTimeout, "arbor agent ready", func() error {
		if ag.proc.exited() {
			t.Fatalf("arbor agent exited: %v\n%s", ag.proc.err, tail(ag.proc.log, 40))
		}
		out, err := exec.Command(arborBin, "agent", "healthcheck", "--health-addr", ag.health).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	return ag
}

// An arbor agent attests to a real spire-server with a join token and serves
// the Workload API with X509- and JWT-SVIDs that spire-server signed. Against
// every SPIRE release in spirePeers.
func TestArborAgentWithSpireServer(t *testing.T) {
	forEachSpire(t, testArborAgentWithSpireServer)
}

func testArborAgentWithSpireServer(t *testing.T, p *spirePeer) {
	ss := startAgentSpireServer(t, p)
	out := ss.mustCLI(t, "token", "generate")
	first, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	token := strings.TrimSpace(strings.TrimPrefix(first, "Token:"))
	if token == "" || strings.Contains(token, " ") {
		t.Fatalf("token generate printed %q", out)
	}
	agentID := spiffeid.RequireFromPath(td, "/spire/agent/join_token/"+token)
	workloadID := spiffeid.RequireFromPath(td, "/spire-served")
	ss.mustCLI(t, "entry", "create", "-parentID", agentID.String(), "-spiffeID", workloadID.String(),
		"-selector", "unix:uid:"+strconv.Itoa(os.Getuid()))
	bundlePEM := []byte(ss.mustCLI(t, "bundle", "show"))
	roots, err := x509svidRoots(bundlePEM)
	if err != nil {
		t.Fatal(err)
	}

	ag := startArborAgent(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(ss.port)), bundlePEM, token)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	addr := workloadapi.WithAddr("unix://" + ag.socket)
	var x *workloadapi.X509Context
	poll(t, waitTimeout, "X509-SVID from the arbor agent", func() error {
		c, err := workloadapi.New(ctx, addr)
		if err != nil {
			return err
		}
		defer c.Close()
		fctx, fcancel := context.WithTimeout(ctx, 5*time.Second)
		defer fcancel()
		x, err = c.FetchX509Context(fctx)
		return err
	})
	svid := x.DefaultSVID()
	if svid.ID != workloadID {
		t.Fatalf("X509-SVID ID = %v, want %v", svid.ID, workloadID)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, x509bundle.FromX509Authorities(td, roots)); err != nil {
		t.Errorf("X509-SVID does not verify against spire-server's bundle: %v", err)
	}
	tok, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "interop"}, addr)
	if err != nil {
		t.Fatalf("FetchJWTSVID: %v", err)
	}
	got, err := workloadapi.ValidateJWTSVID(ctx, tok.Marshal(), "interop", addr)
	if err != nil {
		t.Fatalf("ValidateJWTSVID: %v", err)
	}
	if got.ID != workloadID {
		t.Errorf("JWT-SVID subject = %v, want %v", got.ID, workloadID)
	}
	// spire-server lists the arbor agent as attested.
	if out := ss.mustCLI(t, "agent", "list"); !strings.Contains(out, agentID.String()) {
		t.Errorf("spire-server agent list lacks %s:\n%s", agentID, out)
	}
}

// The arbor agent binary attached to an arbor server, with the healthcheck
// command both ways.
func TestArborAgentBinaryWithArborServer(t *testing.T) {
	requireSetup(t)
	a := newArbor(t, `datastore "sqlite" {}`)
	a.start(t)
	token := a.generateToken(t, spiffeid.RequireFromPath(td, "/arbor-agent-node"))
	agentID := spiffeid.RequireFromPath(td, "/spire/agent/join_token/"+token)
	workloadID := spiffeid.RequireFromPath(td, "/arbor-served")
	a.createEntry(t, agentID, workloadID, "unix:uid:"+strconv.Itoa(os.Getuid()))
	_, bundlePEM := a.bundlePEM(t)
	ag := startArborAgent(t, a.addr(), bundlePEM, token)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var svid *x509svid.SVID
	poll(t, waitTimeout, "X509-SVID from the arbor agent", func() error {
		fctx, fcancel := context.WithTimeout(ctx, 5*time.Second)
		defer fcancel()
		var err error
		svid, err = workloadapi.FetchX509SVID(fctx, workloadapi.WithAddr("unix://"+ag.socket))
		return err
	})
	if svid.ID != workloadID {
		t.Errorf("X509-SVID ID = %v, want %v", svid.ID, workloadID)
	}
	if out, err := exec.Command(arborBin, "agent", "healthcheck", "--socket-path", ag.socket).CombinedOutput(); err != nil {
		t.Errorf("agent healthcheck --socket-path: %v\n%s", err, out)
	}
}

func x509svidRoots(pemData []byte) ([]*x509.Certificate, error) {
	b, err := x509bundle.Parse(td, pemData)
	if err != nil {
		return nil, err
	}
	return b.X509Authorities(), nil
}
