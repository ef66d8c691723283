package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/arborid/arbor/downstream"
	"github.com/arborid/arbor/internal/server"
)

// readPEMCerts parses every CERTIFICATE block of a PEM file.
func readPEMCerts(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, c)
	}
}

// spireServer is a real spire-server process. It reuses arborServer's CLI
// helpers, which only need the admin socket and the port.
type spireServer struct {
	*arborServer
}

// startSpireServer runs a real spire-server of release p (SQLite,
// join_token). With upstreamPort > 0 it is nested: UpstreamAuthority "spire"
// against the server on that port, authenticated through the Workload API at
// upstreamSocket.
func startSpireServer(t *testing.T, p *spirePeer, upstreamPort int, upstreamSocket string) *spireServer {
	t.Helper()
	dir := t.TempDir()
	s := &spireServer{&arborServer{
		adminSock: filepath.Join(shortTempDir(t, "ss"), "api.sock"),
		port:      freePort(t),
		logDir:    dir,
		spire:     p,
	}}
	upstream := ""
	if upstreamPort > 0 {
		upstream = fmt.Sprintf(`
  UpstreamAuthority "spire" {
    plugin_data {
      server_address      = "127.0.0.1"
      server_port         = "%d"
      workload_api_socket = %q
    }
  }`, upstreamPort, upstreamSocket)
	}
	conf := fmt.Sprintf(`server {
  bind_address          = "127.0.0.1"
  bind_port             = "%d"
  socket_path           = %q
  trust_domain          = %q
  data_dir              = %q
  log_level             = "DEBUG"
  ca_ttl                = "6h"
  default_x509_svid_ttl = "1h"
}

plugins {
  DataStore "sql" {
    plugin_data {
      database_type     = "sqlite3"
      connection_string = %q
    }
  }
  KeyManager "memory" {
    plugin_data {}
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }%s
}
`, s.port, s.adminSock, td.Name(), filepath.Join(dir, "data"), filepath.Join(dir, "datastore.sqlite3"), upstream)
	confPath := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	s.proc = startProcess(t, "spire-server "+p.version, filepath.Join(dir, "spire-server.log"), nil, p.server, "run", "-config", confPath)
	poll(t, waitTimeout, "spire-server healthy", func() error {
		if s.proc.exited() {
			t.Fatalf("spire-server exited during start: %v\n%s", s.proc.err, tail(s.proc.log, 60))
		}
		r := s.cliRun(t, "healthcheck")
		if r.err != nil {
			return fmt.Errorf("%v: %s", r.err, r.stderr)
		}
		return nil
	})
	return s
}

// jwtKeyCount counts the JWT authorities in `bundle show -format spiffe`.
func jwtKeyCount(t *testing.T, a *arborServer) int {
	t.Helper()
	return strings.Count(a.cli(t, "bundle", "show", "-format", "spiffe"), `"use": "jwt-svid"`)
}

// TestSpireServerNestedUnderArbor: a real spire-server with UpstreamAuthority
// "spire" gets its intermediate CA from an arbor root through a co-located
// spire-agent, and publishes its JWT key into arbor's bundle. Against every
// SPIRE release in spirePeers.
func TestSpireServerNestedUnderArbor(t *testing.T) { forEachSpire(t, testSpireServerNestedUnderArbor) }

func testSpireServerNestedUnderArbor(t *testing.T, p *spirePeer) {
	root := newArbor(t, `datastore "sqlite" {}`)
	root.spire = p
	root.start(t)
	hostID := mustID(t, "/host/regional")
	agent := startAgent(t, root, root.generateToken(t, hostID))
	root.cli(t, "entry", "create", "-parentID", hostID.String(), "-spiffeID", mustID(t, "/tier/regional").String(),
		"-selector", fmt.Sprintf("unix:uid:%d", os.Getuid()), "-downstream")
	jwtBefore := jwtKeyCount(t, root)

	nested := startSpireServer(t, p, root.port, agent.socket)

	rootCerts, _ := root.bundlePEM(t)
	nestedCerts, _ := nested.bundlePEM(t)
	if len(nestedCerts) != 1 || !nestedCerts[0].Equal(rootCerts[0]) {
		t.Fatalf("nested spire-server trusts %d certificate(s), want exactly arbor's root", len(nestedCerts))
	}
	out := t.TempDir()
	nested.cli(t, "x509", "mint", "-spiffeID", mustID(t, "/nested/app").String(), "-write", out)
	chain := readPEMCerts(t, filepath.Join(out, "svid.pem"))
	id, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(td, rootCerts))
	if err != nil {
		t.Fatalf("SVID minted by the nested spire-server does not verify against arbor's root: %v", err)
	}
	if id != mustID(t, "/nested/app") || len(chain) < 2 {
		t.Fatalf("minted SVID %v with %d certificates, want /nested/app with the nested CA in its chain", id, len(chain))
	}
	poll(t, waitTimeout, "the nested server's JWT key in arbor's bundle", func() error {
		if n := jwtKeyCount(t, root); n <= jwtBefore {
			return fmt.Errorf("arbor bundle has %d JWT keys, had %d", n, jwtBefore)
		}
		return nil
	})
}

// TestArborNestedUnderSpireServer: an arbor tier gets its intermediate from
// a real spire-server root through a co-located spire-agent's Workload API.
// Against every SPIRE release in spirePeers.
func TestArborNestedUnderSpireServer(t *testing.T) { forEachSpire(t, testArborNestedUnderSpireServer) }

func testArborNestedUnderSpireServer(t *testing.T, p *spirePeer) {
	root := startSpireServer(t, p, 0, "")
	hostID := mustID(t, "/host/arbor")
	agent := startAgent(t, root.arborServer, root.generateToken(t, hostID))
	root.cli(t, "entry", "create", "-parentID", hostID.String(), "-spiffeID", mustID(t, "/tier/arbor").String(),
		"-selector", fmt.Sprintf("unix:uid:%d", os.Getuid()), "-downstream")
	jwtBefore := jwtKeyCount(t, root.arborServer)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	up, err := downstream.New(ctx, downstream.Config{TrustDomain: td, ParentAddress: root.addr(), WorkloadAPIAddr: "unix://" + agent.socket})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	dir := shortTempDir(t, "arbn")
	child, err := server.New(ctx, server.Config{
		Name: "arbor-child", TrustDomain: td, ListenAddr: "127.0.0.1:0", StateDir: filepath.Join(dir, "state"),
		AdminSocket: filepath.Join(dir, "a.sock"), JoinToken: true, Parent: up, CATTL: time.Hour,
	})
	if err != nil {
		t.Fatalf("arbor child under spire-server: %v", err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- child.Run(runCtx) }()
	defer func() { stop(); <-done }()
	<-child.Ready()

	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, "a.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{mustID(t, "/arbor/app").URL()}}, key)
	resp, err := svidv1.NewSVIDClient(conn).MintX509SVID(ctx, &svidv1.MintX509SVIDRequest{Csr: csr})
	if err != nil {
		t.Fatal(err)
	}
	var chain []*x509.Certificate
	for _, der := range resp.Svid.CertChain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	rootCerts, _ := root.bundlePEM(t)
	if _, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(td, rootCerts)); err != nil {
		t.Fatalf("SVID from the arbor tier does not verify against spire-server's bundle: %v", err)
	}
	poll(t, waitTimeout, "arbor's JWT key in spire-server's bundle", func() error {
		if n := jwtKeyCount(t, root.arborServer); n <= jwtBefore {
			return fmt.Errorf("spire-server bundle has %d JWT keys, had %d", n, jwtBefore)
		}
		return nil
	})
}

// TestMixedLeavesMTLS: under one arbor root, a real spire-server leaf and an
// arbor leaf each serve a workload (through spire-agent and arbor's agent);
// the two workloads complete mTLS, each verifying the other up to the root.
// Against every SPIRE release in spirePeers.
func TestMixedLeavesMTLS(t *testing.T) { forEachSpire(t, testMixedLeavesMTLS) }

func testMixedLeavesMTLS(t *testing.T, p *spirePeer) {
	root := newArbor(t, `datastore "sqlite" {}`)
	root.spire = p
	root.start(t)
	hostID := mustID(t, "/host/leaves")
	colocated := startAgent(t, root, root.generateToken(t, hostID))
	root.cli(t, "entry", "create", "-parentID", hostID.String(), "-spiffeID", mustID(t, "/tier/leaves").String(),
		"-selector", fmt.Sprintf("unix:uid:%d", os.Getuid()), "-downstream")

	// The SPIRE leaf and a spire-agent under it serving workload /wl/spire.
	spireLeaf := startSpireServer(t, p, root.port, colocated.socket)
	spireNode := mustID(t, "/node/spire")
	spireWL := startAgent(t, spireLeaf.arborServer, spireLeaf.generateToken(t, spireNode))
	spireLeaf.createEntry(t, spireNode, mustID(t, "/wl/spire"), fmt.Sprintf("unix:uid:%d", os.Getuid()))

	// The arbor leaf, in process, through the same co-located agent.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	up, err := downstream.New(ctx, downstream.Config{TrustDomain: td, ParentAddress: root.addr(), WorkloadAPIAddr: "unix://" + colocated.socket})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	dir := shortTempDir(t, "arbl")
	leaf := &arborServer{adminSock: filepath.Join(dir, "a.sock"), spire: p}
	srv, err := server.New(ctx, server.Config{Name: "arbor-leaf", TrustDomain: td, ListenAddr: "127.0.0.1:0",
		StateDir: filepath.Join(dir, "state"), AdminSocket: leaf.adminSock, JoinToken: true, Parent: up, CATTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(runCtx) }()
	defer func() { stop(); <-done }()
	<-srv.Ready()
	arborNode := mustID(t, "/node/arbor")
	_, leafBundle := leaf.bundlePEM(t)
	arborWL := startArborAgent(t, srv.AgentAddr().String(), leafBundle, leaf.generateToken(t, arborNode))
	leaf.createEntry(t, arborNode, mustID(t, "/wl/arbor"), fmt.Sprintf("unix:uid:%d", os.Getuid()))

	spireWL.waitX509SVID(t, mustID(t, "/wl/spire"))
	poll(t, waitTimeout, "arbor leaf workload SVID", func() error {
		fctx, fcancel := context.WithTimeout(ctx, 5*time.Second)
		defer fcancel()
		_, err := workloadapi.FetchX509SVID(fctx, workloadapi.WithAddr("unix://"+arborWL.socket))
		return err
	})
	srcSpire, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+spireWL.socket)))
	if err != nil {
		t.Fatal(err)
	}
	defer srcSpire.Close()
	srcArbor, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+arborWL.socket)))
	if err != nil {
		t.Fatal(err)
	}
	defer srcArbor.Close()

	lis, err := spiffetls.ListenWithMode(ctx, "tcp", "127.0.0.1:0",
		spiffetls.MTLSServerWithSource(tlsconfig.AuthorizeID(mustID(t, "/wl/arbor")), srcSpire))
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		c, err := lis.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err == nil {
			c.Write([]byte("pong!"))
		}
	}()
	conn, err := spiffetls.DialWithMode(ctx, "tcp", lis.Addr().String(),
		spiffetls.MTLSClientWithSource(tlsconfig.AuthorizeID(mustID(t, "/wl/spire")), srcArbor))
	if err != nil {
		t.Fatalf("mTLS from the arbor leaf's workload to the SPIRE leaf's: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("ping!")); err != nil {
		t.Fatal(err)
	}
	reply := make([]byte, 5)
	if _, err := io.ReadFull(conn, reply); err != nil || string(reply) != "pong!" {
		t.Fatalf("reply %q, %v", reply, err)
	}
}
