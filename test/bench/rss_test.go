package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// rssBytes reads a process's resident set size from /proc.
func rssBytes(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// BenchmarkServerRSS runs `arbor server` as its own process and reports its
// resident memory empty and holding 100k registration entries (SQLite).
func BenchmarkServerRSS(b *testing.B) {
	dir, err := os.MkdirTemp("", "arbr")
	check(b, err)
	b.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "arbor")
	out, err := exec.Command("go", "build", "-o", bin, "../../cmd/arbor").CombinedOutput()
	if err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	topo := filepath.Join(dir, "t.hcl")
	sock := filepath.Join(dir, "a.sock")
	check(b, os.WriteFile(topo, []byte(fmt.Sprintf(`
trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:0"
  admin_socket  = %q
  health_listen = "off"
  state_dir     = %q
}
`, sock, filepath.Join(dir, "state"))), 0o600))
	cmd := exec.Command(bin, "server", "--topology", topo, "--node", "root", "--log-level", "warn")
	cmd.Stderr = os.Stderr
	check(b, cmd.Start())
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("arbor server did not create its admin socket within 60s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	check(b, err)
	defer conn.Close()
	client := entryv1.NewEntryClient(conn)
	ctx := context.Background()
	if _, err := client.CountEntries(ctx, &entryv1.CountEntriesRequest{}); err != nil {
		b.Fatal(err)
	}
	time.Sleep(time.Second)
	empty, err := rssBytes(cmd.Process.Pid)
	check(b, err)
	const total = 100_000
	for start := 0; start < total; start += 500 {
		var batch []*types.Entry
		for i := start; i < start+500; i++ {
			batch = append(batch, &types.Entry{
				ParentId:  &types.SPIFFEID{TrustDomain: "example.org", Path: fmt.Sprintf("/spire/agent/join_token/n-%d", i%1000)},
				SpiffeId:  &types.SPIFFEID{TrustDomain: "example.org", Path: fmt.Sprintf("/workload/%d", i)},
				Selectors: []*types.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", i)}, {Type: "k8s", Value: "ns:default"}},
			})
		}
		resp, err := client.BatchCreateEntry(ctx, &entryv1.BatchCreateEntryRequest{Entries: batch, OutputMask: &types.EntryMask{}})
		check(b, err)
		for _, r := range resp.Results {
			if r.Status.Code != 0 {
				b.Fatal(r.Status)
			}
		}
	}
	time.Sleep(2 * time.Second)
	full, err := rssBytes(cmd.Process.Pid)
	check(b, err)
	b.ReportMetric(float64(empty)/(1<<20), "rss_MiB@0")
	b.ReportMetric(float64(full)/(1<<20), "rss_MiB@100k")
	b.ReportMetric(float64(full-empty)/total, "rss_B/entry")
}
