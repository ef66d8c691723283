package peragent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/arborid/arbor/internal/testkit"
	"github.com/arborid/arbor/internal/testkit/freeport"
)

// entriesEnv sets N, the entries authorized for the one agent; CI runs
// defaultEntries, past SPIRE's unpaged cliff (~17k entries, ~7.5k with 4
// selectors).
const entriesEnv = "ARBOR_PERAGENT_ENTRIES"

const defaultEntries = 20000

// spireVersion is the spire-agent release run against arbor (the newest
// one test/spirepeer/build.sh supports).
const spireVersion = "v1.15.3"

var td = spiffeid.RequireTrustDomainFromString("example.org")

// spireBin is the directory holding spire-server and spire-agent of
// spireVersion, found (or built, the first time) by TestMain; setupErr is
// why it is missing.
var (
	spireBin string
	setupErr error
)

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", filepath.Join("..", "spirepeer", "build.sh"), spireVersion)
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		setupErr = fmt.Errorf("test/spirepeer/build.sh %s: %v", spireVersion, err)
	} else {
		spireBin = strings.TrimSpace(stdout.String())
	}
	cancel()
	os.Exit(m.Run())
}

// entryCount is N: ARBOR_PERAGENT_ENTRIES, or defaultEntries.
func entryCount(t *testing.T) int {
	t.Helper()
	v := os.Getenv(entriesEnv)
	if v == "" {
		return defaultEntries
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 10 {
		t.Fatalf("%s=%q: want a number of entries, at least 10", entriesEnv, v)
	}
	return n
}

// probeCount is how many of the last entries select the test process
// itself, so a workload on either agent gets their SVIDs; the others
// select uids no process has.
const probeCount = 4

// shape makes the entries' selectors: entry i selects a uid of its own and
// every other entry also a gid, user and group (4 selectors, SPIRE's
// ~7.5k-entry cliff); the probes select this process's uid, gid, user and
// group in the same pattern.
type shape struct {
	uid, gid, user, group string
}

// selfShape is the shape whose probes select this process.
func selfShape(t *testing.T) shape {
	t.Helper()
	s := shape{uid: strconv.Itoa(os.Getuid()), gid: strconv.Itoa(os.Getgid())}
	u, err := user.LookupId(s.uid)
	if err != nil {
		t.Fatalf("the test's uid %s has no user name (both unix workload attestors select by it): %v", s.uid, err)
	}
	g, err := user.LookupGroupId(s.gid)
	if err != nil {
		t.Fatalf("the test's gid %s has no group name: %v", s.gid, err)
	}
	s.user, s.group = u.Username, g.Name
	return s
}

func (s shape) selectors(i, n int) []*types.Selector {
	uid, gid, usr, grp := strconv.Itoa(1_000_000+i), strconv.Itoa(1_000_000+i), "pa-user-"+strconv.Itoa(i), "pa-group-"+strconv.Itoa(i)
	if i >= n-probeCount {
		uid, gid, usr, grp = s.uid, s.gid, s.user, s.group
	}
	out := []*types.Selector{{Type: "unix", Value: "uid:" + uid}}
	if i%2 == 1 {
		out = append(out,
			&types.Selector{Type: "unix", Value: "gid:" + gid},
			&types.Selector{Type: "unix", Value: "user:" + usr},
			&types.Selector{Type: "unix", Value: "group:" + grp})
	}
	return out
}

// workloadID is entry i's SPIFFE ID.
func workloadID(i int) spiffeid.ID { return spiffeid.RequireFromPathf(td, "/peragent/w/%d", i) }

// probeIDs are the SPIFFE IDs a workload of this process must get.
func probeIDs(n int) []spiffeid.ID {
	var out []spiffeid.ID
	for i := n - probeCount; i < n; i++ {
		out = append(out, workloadID(i))
	}
	return out
}

func protoID(id spiffeid.ID) *types.SPIFFEID {
	return &types.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: id.Path()}
}

// seedBatch is the entries per BatchCreateEntry call while seeding.
const seedBatch = 1000

// seed creates n entries parented to parent through the admin API, two
// calls in flight, and returns how long it took.
func seed(t *testing.T, admin grpc.ClientConnInterface, parent spiffeid.ID, n int, sh shape) time.Duration {
	t.Helper()
	client := entryv1.NewEntryClient(admin)
	start := time.Now()
	batches := make(chan int)
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for from := range batches {
				var entries []*types.Entry
				for i := from; i < min(from+seedBatch, n); i++ {
					entries = append(entries, &types.Entry{ParentId: protoID(parent), SpiffeId: protoID(workloadID(i)), Selectors: sh.selectors(i, n)})
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				resp, err := client.BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: entries, OutputMask: &types.EntryMask{}})
				cancel()
				if err == nil {
					for k, r := range resp.Results {
						if c := codes.Code(r.GetStatus().GetCode()); c != codes.OK {
							err = fmt.Errorf("entry %d: %v %s", from+k, c, r.GetStatus().GetMessage())
							break
						}
					}
				}
				if err != nil {
					err = fmt.Errorf("BatchCreateEntry of entries %d..: %w", from, err)
					failed.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	for from := 0; from < n && failed.Load() == nil; from += seedBatch {
		batches <- from
	}
	close(batches)
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatal(*err)
	}
	return time.Since(start)
}

// joinToken creates a join token whose agent gets alias as a node alias.
func joinToken(t *testing.T, admin grpc.ClientConnInterface, alias spiffeid.ID) string {
	t.Helper()
	jt, err := agentv1.NewAgentClient(admin).CreateJoinToken(testkit.Context(t, 30*time.Second),
		&agentv1.CreateJoinTokenRequest{Ttl: 3600, AgentId: protoID(alias)})
	if err != nil {
		t.Fatalf("CreateJoinToken: %v", err)
	}
	return jt.Value
}

// serverBundle is the server's X.509 roots, as a go-spiffe bundle and as
// PEM (a spire-agent's bootstrap bundle).
func serverBundle(t *testing.T, admin grpc.ClientConnInterface) (*x509bundle.Bundle, []byte) {
	t.Helper()
	b, err := bundlev1.NewBundleClient(admin).GetBundle(testkit.Context(t, 30*time.Second), &bundlev1.GetBundleRequest{})
	if err != nil {
		t.Fatalf("GetBundle: %v", err)
	}
	var out []byte
	for _, a := range b.X509Authorities {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Asn1})...)
	}
	xb, err := x509bundle.Parse(td, out)
	if err != nil {
		t.Fatalf("server bundle: %v", err)
	}
	return xb, out
}

// checkWorkload fetches the X509-SVIDs a workload of this process gets
// from the Workload API on socket: exactly the probes', each verifying
// against the server's bundle.
func checkWorkload(t *testing.T, what, socket string, n int, bundle *x509bundle.Bundle) {
	t.Helper()
	want := map[spiffeid.ID]bool{}
	for _, id := range probeIDs(n) {
		want[id] = true
	}
	var svids []*x509svid.SVID
	testkit.Poll(t, 60*time.Second, what+": a workload's X509-SVIDs", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var err error
		if svids, err = workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr("unix://"+socket)); err != nil {
			return err
		}
		if len(svids) != len(want) {
			return fmt.Errorf("got %d X509-SVIDs, want %d", len(svids), len(want))
		}
		return nil
	})
	for _, s := range svids {
		if !want[s.ID] {
			t.Errorf("%s: the workload got an X509-SVID for %s, which does not select it", what, s.ID)
			continue
		}
		delete(want, s.ID)
		if _, _, err := x509svid.Verify(s.Certificates, bundle); err != nil {
			t.Errorf("%s: X509-SVID %s does not verify against the server's bundle: %v", what, s.ID, err)
		}
	}
	for id := range want {
		t.Errorf("%s: the workload got no X509-SVID for %s", what, id)
	}
}

func freeAddr(t *testing.T) string { return freeport.Addr(t) }

// scrape reads a Prometheus text endpoint into sample name (with labels)
// to value.
func scrape(url string) (map[string]float64, error) {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// process is a child process logging to a file, killed at cleanup.
type process struct {
	name, log string
	cmd       *exec.Cmd
	done      chan struct{}
	err       error // set when done is closed
}

func startProcess(t *testing.T, name, logPath, bin string, args ...string) *process {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	p := &process{name: name, log: logPath, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		if !p.exited() {
			p.cmd.Process.Kill()
		}
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			t.Errorf("%s did not exit after SIGKILL", name)
		}
		if t.Failed() {
			t.Logf("--- last lines of the %s log ---\n%s", name, tail(logPath, 40))
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

// tail is the last n lines of a file.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// countIn is how many times s occurs in a file.
func countIn(path, s string) int {
	b, _ := os.ReadFile(path)
	return bytes.Count(b, []byte(s))
}
