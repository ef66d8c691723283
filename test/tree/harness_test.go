package tree

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/proto"

	"github.com/arborid/arbor/internal/cli/admin"
	"github.com/arborid/arbor/internal/testkit/freeport"
	"github.com/arborid/arbor/test/bench/benchproc"
)

// arborBin is the arbor binary TestMain builds; setupErr says why it is
// missing, and every test fails with it.
var (
	arborBin string
	setupErr error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "arbor-tree-bin")
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		var repo string
		if repo, err = filepath.Abs("../.."); err == nil {
			arborBin, err = benchproc.BuildArbor(ctx, repo, dir)
		}
		cancel()
	}
	setupErr = err
	code := m.Run()
	if dir != "" {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// size is the tree's shape: regions regional servers under the root and
// leaves leaf servers under each.
type size struct{ regions, leaves int }

func (s size) servers() int { return 1 + s.regions + s.regions*s.leaves }

// treeSize reads ARBOR_TREE ("RxL", e.g. 10x10 for root + 10 + 100); the
// default is the CI form, root + 3 regional + 6 leaves.
func treeSize(t *testing.T) size {
	t.Helper()
	v := os.Getenv("ARBOR_TREE")
	if v == "" {
		return size{3, 2}
	}
	r, l, ok := strings.Cut(v, "x")
	regions, err1 := strconv.Atoi(r)
	leaves, err2 := strconv.Atoi(l)
	if !ok || err1 != nil || err2 != nil || regions < 1 || leaves < 1 {
		t.Fatalf("ARBOR_TREE=%q: want RxL, e.g. 10x10", v)
	}
	return size{regions, leaves}
}

// node is one server of the generated tree.
type node struct {
	name   string
	parent string
	depth  int // 0 root, 1 regional, 2 leaf
	addr   string
	state  string
	admin  *admin.Client
	la     localauthorityv1.LocalAuthorityClient
}

func (n *node) socket() string { return filepath.Join(n.state, "admin.sock") }

// tree is a generated topology run by `arbor up`.
type tree struct {
	dir   string
	topo  string
	nodes []*node // root first, then the regional servers, then the leaves
	up    *exec.Cmd
	out   *syncBuffer
	ended chan struct{}
	began time.Time
}

// Lifetimes of the generated tiers: a child's ca_ttl is half its parent's
// (the most validation allows), and nothing expires or rotates on its own
// while the test runs, so every JWT key a bundle holds comes from a start
// or a rotation the test made.
const (
	rootCATTL     = 48 * time.Hour
	regionalCATTL = 24 * time.Hour
	leafCATTL     = 12 * time.Hour
)

func (s size) regionName(r int) string  { return fmt.Sprintf("region-%d", r) }
func (s size) leafName(r, l int) string { return fmt.Sprintf("leaf-%d-%d", r, l) }

// writeTopology generates the tree's HCL file: a port and a state
// directory per server, join-token co-located agents, no health listener
// (the admin sockets say whether a server serves).
func writeTopology(t *testing.T, dir string, sz size) *tree {
	t.Helper()
	tr := &tree{dir: dir, topo: filepath.Join(dir, "tree.hcl")}
	add := func(name, parent string, depth int) {
		tr.nodes = append(tr.nodes, &node{name: name, parent: parent, depth: depth, state: filepath.Join(dir, name)})
	}
	add("root", "", 0)
	for r := range sz.regions {
		add(sz.regionName(r), "root", 1)
	}
	for r := range sz.regions {
		for l := range sz.leaves {
			add(sz.leafName(r, l), sz.regionName(r), 2)
		}
	}
	// Below the ephemeral range, so a server restarted on its port finds
	// it free; never two servers on one (see freeport).
	for _, n := range tr.nodes {
		n.addr = freeport.Addr(t)
	}
	var b strings.Builder
	b.WriteString("trust_domain = \"tree.test\"\n\n")
	ttls := []time.Duration{rootCATTL, regionalCATTL, leafCATTL}
	for _, n := range tr.nodes {
		fmt.Fprintf(&b, "server %q {\n  listen        = %q\n  health_listen = \"off\"\n  state_dir     = %q\n  ca_ttl        = %q\n",
			n.name, n.addr, n.state, ttls[n.depth].String())
		if n.parent != "" {
			fmt.Fprintf(&b, "  parent        = %q\n  agent {\n    node_attestor \"join_token\" {}\n  }\n", n.parent)
		}
		b.WriteString("}\n\n")
	}
	if err := os.WriteFile(tr.topo, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, n := range tr.nodes {
		c, err := admin.Open(n.socket())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		n.admin = c
		n.la = localauthorityv1.NewLocalAuthorityClient(c.Conn())
	}
	return tr
}

func (tr *tree) leaves() []*node {
	return slices.DeleteFunc(slices.Clone(tr.nodes), func(n *node) bool { return n.depth != 2 })
}

func (tr *tree) byName(name string) *node {
	for _, n := range tr.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// syncBuffer is a bytes.Buffer safe for a process writing and a test reading.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs `arbor up --no-demo` on the tree; the cleanup stops it with
// SIGTERM (arbor up stops its children) and waits.
func (tr *tree) start(t *testing.T) {
	t.Helper()
	tr.out = &syncBuffer{}
	tr.ended = make(chan struct{})
	tr.up = exec.Command(arborBin, "up", "--no-demo", "--status-every", "1h", tr.topo)
	tr.up.Stdout, tr.up.Stderr = tr.out, tr.out
	tr.began = time.Now()
	if err := tr.up.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { tr.up.Wait(); close(tr.ended) }()
	t.Cleanup(func() {
		tr.up.Process.Signal(os.Interrupt)
		select {
		case <-tr.ended:
		case <-time.After(60 * time.Second):
			tr.up.Process.Kill()
			<-tr.ended
		}
		if t.Failed() {
			t.Logf("arbor up output (last 60 lines):\n%s", lastLines(tr.out.String(), 60))
		}
	})
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// exited is arbor up's output when it has exited, else "".
func (tr *tree) exited() (string, bool) {
	select {
	case <-tr.ended:
		return tr.out.String(), true
	default:
		return "", false
	}
}

// serves is nil when n answers on its admin socket and holds an active
// X.509 CA (for a downstream server: its intermediate from its parent).
func (n *node) serves(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := n.admin.Serving(ctx); err != nil {
		return err
	}
	st, err := n.la.GetX509AuthorityState(ctx, &localauthorityv1.GetX509AuthorityStateRequest{})
	if err != nil {
		return err
	}
	if st.Active == nil {
		return errors.New("no active X.509 CA")
	}
	if n.depth > 0 && st.Active.UpstreamAuthoritySubjectKeyId == "" {
		return errors.New("active X.509 CA not signed by a parent")
	}
	return nil
}

// upCtl runs `arbor up --stop|--start NAME` against the running tree.
func (tr *tree) upCtl(ctx context.Context, action, name string) error {
	out, err := exec.CommandContext(ctx, arborBin, "up", "--"+action, name, tr.topo).CombinedOutput()
	if err != nil {
		return fmt.Errorf("arbor up --%s %s: %v\n%s", action, name, err, out)
	}
	return nil
}

// bundles reads every server's bundle, concurrently, in tr.nodes' order.
func (tr *tree) bundles(ctx context.Context) ([]*types.Bundle, error) {
	out := make([]*types.Bundle, len(tr.nodes))
	errs := make([]error, len(tr.nodes))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, n := range tr.nodes {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			b, err := n.admin.Bundle(bctx)
			if err != nil {
				errs[i] = fmt.Errorf("%s: %w", n.name, err)
			}
			out[i] = b
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

func jwtKIDs(b *types.Bundle) []string {
	out := make([]string, 0, len(b.JwtAuthorities))
	for _, k := range b.JwtAuthorities {
		out = append(out, k.KeyId)
	}
	slices.Sort(out)
	return out
}

// jwtStates reads every server's JWT authority state (active, prepared,
// old), in tr.nodes' order.
func (tr *tree) jwtStates(ctx context.Context) ([]*localauthorityv1.GetJWTAuthorityStateResponse, error) {
	out := make([]*localauthorityv1.GetJWTAuthorityStateResponse, len(tr.nodes))
	for i, n := range tr.nodes {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		st, err := n.la.GetJWTAuthorityState(sctx, &localauthorityv1.GetJWTAuthorityStateRequest{})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%s: jwt authority state: %w", n.name, err)
		}
		out[i] = st
	}
	return out, nil
}

// waitBundles polls every tier's bundle until ok holds for all of them and
// returns how long that took from start; it fails the test after giveUp.
// seen, when not nil, gets every complete read.
func (tr *tree) waitBundles(t *testing.T, ctx context.Context, start time.Time, giveUp time.Duration, what string, ok func(n *node, b *types.Bundle) error, seen func([]*types.Bundle)) time.Duration {
	t.Helper()
	var last error
	for time.Since(start) < giveUp && ctx.Err() == nil {
		bs, err := tr.bundles(ctx)
		if err == nil && seen != nil {
			seen(bs)
		}
		if err == nil {
			var errs []error
			for i, b := range bs {
				if e := ok(tr.nodes[i], b); e != nil {
					errs = append(errs, fmt.Errorf("%s: %w", tr.nodes[i].name, e))
				}
			}
			err = errors.Join(errs...)
		}
		if err == nil {
			return time.Since(start)
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: not on every tier after %v: %v", what, giveUp, firstLines(last, 5))
	return 0
}

// firstLines shortens a joined error of many tiers.
func firstLines(err error, n int) string {
	if err == nil {
		return "<nil>"
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) > n {
		return strings.Join(lines[:n], "\n") + fmt.Sprintf("\n(and %d more)", len(lines)-n)
	}
	return err.Error()
}

// procInfo is an arbor process of the tree seen in /proc.
type procInfo struct {
	kind string // "server" or "agent"
	node string
	mem
}

// processes lists arbor up's children with their memory.
func (tr *tree) processes(t *testing.T) []procInfo {
	t.Helper()
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []procInfo
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || ppidOf(pid) != tr.up.Process.Pid {
			continue
		}
		raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		var p procInfo
		switch {
		case len(args) > 1 && args[1] == "server":
			p.kind = "server"
		case len(args) > 2 && args[1] == "agent" && args[2] == "run":
			p.kind = "agent"
		default:
			continue
		}
		if i := slices.Index(args, "--node"); i >= 0 && i+1 < len(args) {
			p.node = args[i+1]
		}
		p.mem = memOf(pid)
		out = append(out, p)
	}
	return out
}

func ppidOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return -1
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// mem is a process's memory from /proc, in bytes: its resident set, the
// anonymous part of it (heap and stacks: what the process itself costs),
// and its proportional set size (shared pages of the arbor binary split
// among the processes mapping them).
type mem struct{ rss, anon, pss int64 }

func memOf(pid int) mem {
	var m mem
	read := func(path string, fields map[string]*int64) {
		f, err := os.Open(path)
		if err != nil {
			return
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if p, want := fields[k]; ok && want {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				*p = kb * 1024
			}
		}
	}
	read(fmt.Sprintf("/proc/%d/status", pid), map[string]*int64{"VmRSS": &m.rss, "RssAnon": &m.anon})
	read(fmt.Sprintf("/proc/%d/smaps_rollup", pid), map[string]*int64{"Pss": &m.pss})
	return m
}

// bundleBytes is the size of b as the bundle API sends it.
func bundleBytes(b *types.Bundle) int { return proto.Size(b) }
