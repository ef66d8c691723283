package ha

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/arborid/arbor/internal/testkit"
	"github.com/arborid/arbor/test/bench/benchproc"
)

// Binaries, built once by TestMain (arbor) or on first use (spire-agent).
var (
	arborBin string
	setupErr error

	spireOnce sync.Once
	spireDir  string
	spireErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "arbor-ha-bin")
	if err != nil {
		setupErr = err
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		repo, rerr := benchproc.RepoRoot()
		if rerr != nil {
			setupErr = rerr
		} else {
			arborBin, setupErr = benchproc.BuildArbor(ctx, repo, dir)
		}
		cancel()
	}
	code := m.Run()
	if dir != "" {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

func requireArbor(t testing.TB) {
	t.Helper()
	if setupErr != nil {
		t.Fatalf("building arbor: %v", setupErr)
	}
}

// spireAgentBin builds (or reuses the cached) spire-agent v1.13.3.
func spireAgentBin(t testing.TB) string {
	t.Helper()
	spireOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		repo, err := benchproc.RepoRoot()
		if err != nil {
			spireErr = err
			return
		}
		spireDir, spireErr = benchproc.BuildSpire(ctx, repo)
	})
	if spireErr != nil {
		t.Fatalf("building spire-agent: %v", spireErr)
	}
	return filepath.Join(spireDir, "spire-agent")
}

const trustDomain = "ha.test"

var td = spiffeid.RequireTrustDomainFromString(trustDomain)

// tier is the replicas of one arbor server block on one PostgreSQL.
type tier struct {
	t        testing.TB
	dir      string
	topology string
	dsn      string
	replicas []*replica
}

// replica is one server process of the tier: arbor server --node root/K.
type replica struct {
	k         int
	node      string
	port      int
	adminSock string
	runs      int
	proc      *benchproc.Process
}

func (r *replica) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// newTier writes a topology whose server block "root" has n replicas on
// dsn (extra is added to the block). Replica K listens on the block's port
// plus K-1, keeps its state in <state_dir>/replica-K and its admin socket
// beside the block's with -K before the extension, as arbor server --node
// root/K derives them. It starts nothing.
func newTier(t testing.TB, n int, dsn string, extra string) *tier {
	t.Helper()
	requireArbor(t)
	dir := t.TempDir()
	sockDir := testkit.ShortDir(t)
	base := freePortRun(t, n)
	tr := &tier{t: t, dir: dir, topology: filepath.Join(dir, "topology.hcl"), dsn: dsn}
	adminSock := filepath.Join(sockDir, "admin.sock")
	hcl := fmt.Sprintf(`trust_domain = %q

server "root" {
  replicas       = %d
  listen         = "127.0.0.1:%d"
  state_dir      = %q
  admin_socket   = %q
  health_listen  = "off"
  log_level      = "debug"
  ca_ttl         = "24h"
  agent_svid_ttl = "2m"
  %s

  datastore "postgres" {
    dsn = env("ARBOR_HA_DSN")
  }

  node_attestor "join_token" {
    default_ttl = "10m"
  }
}
`, trustDomain, n, base, filepath.Join(dir, "state"), adminSock, extra)
	if err := os.WriteFile(tr.topology, []byte(hcl), 0o600); err != nil {
		t.Fatal(err)
	}
	for k := 1; k <= n; k++ {
		r := &replica{k: k, node: "root", port: base + k - 1, adminSock: adminSock}
		if k > 1 {
			r.node = fmt.Sprintf("root/%d", k)
			r.adminSock = filepath.Join(sockDir, fmt.Sprintf("admin-%d.sock", k))
		}
		tr.replicas = append(tr.replicas, r)
	}
	t.Cleanup(func() {
		for _, r := range tr.replicas {
			if r.proc != nil {
				r.proc.Stop()
			}
		}
	})
	return tr
}

// freePortRun finds n consecutive free loopback ports.
func freePortRun(t testing.TB, n int) int {
	t.Helper()
	for range 100 {
		p, err := benchproc.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if p+n >= 65536 {
			continue
		}
		free := true
		for i := 1; i < n && free; i++ {
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+i)))
			if err != nil {
				free = false
				continue
			}
			l.Close()
		}
		if free {
			return p
		}
	}
	t.Fatalf("no %d consecutive free loopback ports", n)
	return 0
}

// addrs is every replica's agent address, comma-separated.
func (tr *tier) addrs() string {
	var out []string
	for _, r := range tr.replicas {
		out = append(out, r.addr())
	}
	return strings.Join(out, ",")
}

// start runs replica k (1-based) and waits until it serves.
func (tr *tier) start(k int) {
	t := tr.t
	t.Helper()
	r := tr.replicas[k-1]
	r.runs++
	logPath := filepath.Join(tr.dir, fmt.Sprintf("replica-%d-run-%d.log", k, r.runs))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	p, err := benchproc.Start(ctx, arborBin, []string{"server", "--topology", tr.topology, "--node", r.node},
		[]string{"ARBOR_HA_DSN=" + tr.dsn}, logPath, r.adminSock, r.addr(), 60*time.Second)
	if err != nil {
		t.Fatalf("replica %d: %v\n%s", k, err, tail(logPath, 40))
	}
	r.proc = p
}

// startAll starts every replica, the first alone (it creates the schema),
// and waits until each serves a bundle with every replica's authority.
func (tr *tier) startAll() {
	tr.t.Helper()
	for k := range tr.replicas {
		tr.start(k + 1)
	}
	for k := range tr.replicas {
		tr.waitAuthorities(k+1, len(tr.replicas))
	}
}

// kill sends SIGKILL to replica k and waits for it to exit.
func (tr *tier) kill(k int) {
	r := tr.replicas[k-1]
	if r.proc == nil {
		tr.t.Fatalf("replica %d is not running", k)
	}
	syscall.Kill(r.proc.PID(), syscall.SIGKILL)
	r.proc.Stop() // reaps the killed process
	r.proc = nil
}

// waitAuthorities waits until replica k's bundle holds at least n X.509
// authorities.
func (tr *tier) waitAuthorities(k, n int) {
	t := tr.t
	t.Helper()
	testkit.Poll(t, 60*time.Second, fmt.Sprintf("replica %d's bundle holding %d X.509 authorities", k, n), func() error {
		b, err := tr.replicas[k-1].proc.Bundle(context.Background())
		if err != nil {
			return err
		}
		if len(b.X509Authorities) < n {
			return fmt.Errorf("%d authorities", len(b.X509Authorities))
		}
		return nil
	})
}

// bundlePEM is replica k's X.509 authorities as PEM.
func (tr *tier) bundlePEM(k int) []byte {
	tr.t.Helper()
	b, err := tr.replicas[k-1].proc.Bundle(context.Background())
	if err != nil {
		tr.t.Fatal(err)
	}
	var out []byte
	for _, a := range b.X509Authorities {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Asn1})...)
	}
	return out
}

// bundleRoots is replica k's X.509 authorities.
func (tr *tier) bundleRoots(k int) []*x509.Certificate {
	tr.t.Helper()
	b, err := tr.replicas[k-1].proc.Bundle(context.Background())
	if err != nil {
		tr.t.Fatal(err)
	}
	var out []*x509.Certificate
	for _, a := range b.X509Authorities {
		c, err := x509.ParseCertificate(a.Asn1)
		if err != nil {
			tr.t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// admin dials replica k's admin socket.
func (tr *tier) admin(k int) *grpc.ClientConn {
	tr.t.Helper()
	conn, err := grpc.NewClient("unix://"+tr.replicas[k-1].adminSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tr.t.Fatal(err)
	}
	tr.t.Cleanup(func() { conn.Close() })
	return conn
}

// joinToken creates a join token on replica k.
func (tr *tier) joinToken(k int) string {
	tr.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := agentv1.NewAgentClient(tr.admin(k)).CreateJoinToken(ctx, &agentv1.CreateJoinTokenRequest{Ttl: 600})
	if err != nil {
		tr.t.Fatalf("CreateJoinToken on replica %d: %v", k, err)
	}
	return tok.Value
}

// agentID is the SPIFFE ID of an agent attested with a join token.
func agentID(token string) spiffeid.ID {
	return spiffeid.RequireFromPath(td, "/spire/agent/join_token/"+token)
}

// createEntries creates workload entries on replica k, one per ID, parented
// to parent, selected by this process's uid, with the given X509-SVID TTL.
func (tr *tier) createEntries(k int, parent spiffeid.ID, ttl time.Duration, ids ...spiffeid.ID) {
	tr.t.Helper()
	var entries []*types.Entry
	for _, id := range ids {
		entries = append(entries, &types.Entry{
			ParentId:    &types.SPIFFEID{TrustDomain: td.Name(), Path: parent.Path()},
			SpiffeId:    &types.SPIFFEID{TrustDomain: td.Name(), Path: id.Path()},
			Selectors:   []*types.Selector{{Type: "unix", Value: "uid:" + strconv.Itoa(os.Getuid())}},
			X509SvidTtl: int32(ttl / time.Second),
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := entryv1.NewEntryClient(tr.admin(k)).BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: entries})
	if err != nil {
		tr.t.Fatalf("BatchCreateEntry on replica %d: %v", k, err)
	}
	for _, r := range resp.Results {
		if codes.Code(r.GetStatus().GetCode()) != codes.OK {
			tr.t.Fatalf("BatchCreateEntry on replica %d: %v", k, r.GetStatus())
		}
	}
}

// counts is replica k's entry and agent counts.
func (tr *tier) counts(k int) (entries, agents int32) {
	tr.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := tr.admin(k)
	e, err := entryv1.NewEntryClient(conn).CountEntries(ctx, &entryv1.CountEntriesRequest{})
	if err != nil {
		tr.t.Fatalf("CountEntries on replica %d: %v", k, err)
	}
	a, err := agentv1.NewAgentClient(conn).CountAgents(ctx, &agentv1.CountAgentsRequest{})
	if err != nil {
		tr.t.Fatalf("CountAgents on replica %d: %v", k, err)
	}
	return e.Count, a.Count
}

// process is a child process (an agent) whose output goes to a log file.
type process struct {
	name, log string
	cmd       *exec.Cmd
	done      chan struct{}
	err       error
}

func startProcess(t testing.TB, name, logPath string, bin string, args ...string) *process {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &process{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- last lines of %s (%s) ---\n%s", name, logPath, tail(logPath, 60))
		}
	})
	return p
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// countLines is how many lines of the process's log contain s.
func (p *process) countLines(t testing.TB, s string) int {
	t.Helper()
	f, err := os.Open(p.log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			n++
		}
	}
	return n
}

// tail is the last n lines of a file.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// readyServer asks an arbor agent's /ready which server it uses ("" when
// it is not ready).
func readyServer(client *http.Client, healthAddr string) string {
	resp, err := client.Get("http://" + healthAddr + "/ready")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if s, ok := strings.CutPrefix(sc.Text(), "server "); ok {
			return s
		}
	}
	return ""
}

// freeAddr is a free loopback host:port.
func freeAddr(t testing.TB) string {
	t.Helper()
	p, err := benchproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
}
