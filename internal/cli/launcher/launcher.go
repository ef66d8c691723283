// Package launcher runs a whole topology on this machine — what `arbor up`
// does. Every server is its own `arbor server` process with its own state
// directory and sockets; every downstream server gets a co-located `arbor
// agent` attested to its parent; the downstream entries and join tokens are
// applied through the parents' admin sockets; each leaf gets a workload agent
// and a demo workload. It prints the tree as it comes up and a status line
// per tier while it runs, and stops everything on Ctrl-C. A second run
// resumes from the state directories.
package launcher

import (
	"bufio"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/agent"
	"github.com/arborid/arbor/internal/cli/admin"
	"github.com/arborid/arbor/internal/cli/demo"
	"github.com/arborid/arbor/internal/cli/reconcile"
	"github.com/arborid/arbor/internal/tier"
	"github.com/arborid/arbor/topology"
)

// Options configures Up.
type Options struct {
	// Exe is the arbor binary to start children with; "" means this one.
	Exe string
	// Out receives the tree, progress and status lines.
	Out io.Writer
	// StatusEvery is the status line interval; zero means 30s.
	StatusEvery time.Duration
	// NoDemo skips the workload agents and demo workloads.
	NoDemo bool
	// StartTimeout bounds each process's start; zero means 90s.
	StartTimeout time.Duration
}

// proc is a child process and its log.
type proc struct {
	name     string
	args     []string
	cmd      *exec.Cmd
	log      string
	done     chan error
	stopping atomic.Bool // stopped on purpose: its exit is not a failure
}

// liveTier is a running server with what runs beside it.
type liveTier struct {
	srv       *topology.Server
	admin     *admin.Client // its admin socket
	server    *proc
	demoState string    // status file of its demo workload, "" when none
	demoSince time.Time // when that demo was started: older statuses are a previous run's
}

type launcher struct {
	f     *topology.File
	opts  Options
	mu    sync.Mutex // guards procs and tiers' server/stopped state against the control socket
	procs []*proc
	tiers []*liveTier
	uid   int
	exits chan error // children that exited on their own
	began time.Time
	fork  *forker
}

// progress prints a start-up line with the time since Up began.
func (l *launcher) progress(format string, args ...any) {
	fmt.Fprintf(l.opts.Out, "  [+%5.1fs] %s\n", time.Since(l.began).Seconds(), fmt.Sprintf(format, args...))
}

// Up runs the topology until ctx ends.
func Up(ctx context.Context, f *topology.File, opts Options) (err error) {
	if opts.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("launcher: finding the arbor binary: %w", err)
		}
		opts.Exe = exe
	}
	if opts.StatusEvery == 0 {
		opts.StatusEvery = 30 * time.Second
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 90 * time.Second
	}
	fork, stopFork := newForker()
	defer stopFork() // after stopAll below: defers run last first
	l := &launcher{f: f, opts: opts, uid: os.Getuid(), exits: make(chan error, 64), began: time.Now(), fork: fork}
	defer func() {
		l.stopAll()
		for _, t := range l.tiers {
			t.admin.Close()
		}
	}()
	servers := f.Walk()
	if len(servers) == 0 {
		return errors.New("launcher: the topology declares no servers")
	}
	fmt.Fprintf(opts.Out, "arbor up: trust domain %s, %d server(s) from %s\n", f.TrustDomain, len(servers), f.Path)
	for _, s := range servers {
		if err := l.startTier(ctx, s); err != nil {
			return err
		}
	}
	if !opts.NoDemo {
		if err := l.startDemos(ctx); err != nil {
			return err
		}
		// Wait before the tree and the first status block, so that no
		// status line printed after the "all ... ok" line was read before it.
		l.waitDemos(ctx)
	}
	l.printTree()
	stopControl, err := l.serveControl(ctx)
	if err != nil {
		return err
	}
	defer stopControl()
	fmt.Fprintf(opts.Out, "\nready; logs under each server's state_dir/logs; press Ctrl-C to stop\n"+
		"take a tier down and back up with: arbor up --stop NAME %s / arbor up --start NAME %s\n", f.Path, f.Path)
	l.printStatus(ctx)
	t := time.NewTicker(opts.StatusEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(opts.Out, "stopping ...")
			return nil
		case <-t.C:
			l.printStatus(ctx)
		case err := <-l.exits:
			return err
		}
	}
}

func (l *launcher) logPath(s *topology.Server, name string) string {
	dir := filepath.Join(s.StateDir, "logs")
	os.MkdirAll(dir, 0o700)
	return filepath.Join(dir, name+".log")
}

// start runs the arbor binary with args, logging to logPath.
func (l *launcher) start(name, logPath string, args ...string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("launcher: %s log: %w", name, err)
	}
	cmd := exec.Command(l.opts.Exe, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childAttr()
	if err := l.fork.start(cmd); err != nil {
		logf.Close()
		return nil, fmt.Errorf("launcher: starting %s: %w", name, err)
	}
	p := &proc{name: name, args: args, cmd: cmd, log: logPath, done: make(chan error, 1)}
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.done <- err
		close(p.done)
		if !p.stopping.Load() {
			select {
			case l.exits <- fmt.Errorf("launcher: %s exited (%v); last log lines:\n%s", p.name, err, tail(p.log, 15)):
			default:
			}
		}
	}()
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	return p, nil
}

// stop sends SIGTERM to p and waits for it (SIGKILL after 15s).
func (p *proc) stop() {
	p.stopping.Store(true)
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// stopAll stops children, newest first.
func (l *launcher) stopAll() {
	l.mu.Lock()
	procs := l.procs
	l.procs = nil
	l.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop()
	}
}

// waitFor polls cond until it succeeds, the process exits, or the start
// timeout passes.
func (l *launcher) waitFor(ctx context.Context, p *proc, what string, cond func() error) error {
	deadline := time.Now().Add(l.opts.StartTimeout)
	var last error
	for {
		if last = cond(); last == nil {
			return nil
		}
		select {
		case err := <-p.done:
			return fmt.Errorf("launcher: %s exited while %s (%v); last log lines:\n%s", p.name, what, err, tail(p.log, 20))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("launcher: %s: timed out %s: %v; last log lines:\n%s", p.name, what, last, tail(p.log, 20))
		}
	}
}

func (l *launcher) tierOf(name string) *liveTier {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, t := range l.tiers {
		if t.srv.Name == name {
			return t
		}
	}
	return nil
}

// startTier starts one server, and first its co-located agent when it has a
// parent (with the downstream entry and join token applied at the parent).
func (l *launcher) startTier(ctx context.Context, s *topology.Server) error {
	if s.Replicas > 1 {
		fmt.Fprintf(l.opts.Out, "  note: %s declares %d replicas; arbor up runs one\n", s.Name, s.Replicas)
	}
	if s.Parent != "" {
		parent := l.tierOf(s.Parent)
		if parent == nil {
			return fmt.Errorf("launcher: parent %q of %q is not running", s.Parent, s.Name)
		}
		l.progress("%s: registering with %s and starting its co-located agent", s.Name, s.Parent)
		if err := l.applyAt(ctx, parent); err != nil {
			return err
		}
		a, err := l.colocatedAgent(s)
		if err != nil {
			return err
		}
		if err := l.startAgent(ctx, parent, a); err != nil {
			return err
		}
	}
	l.progress("%s: starting server", s.Name)
	// The socket does not exist yet; the client connects lazily.
	ac, err := admin.Open(s.AdminSocket)
	if err != nil {
		return err
	}
	t := &liveTier{srv: s, admin: ac}
	l.mu.Lock()
	l.tiers = append(l.tiers, t)
	l.mu.Unlock()
	if err := l.startServer(ctx, t); err != nil {
		return err
	}
	// The server's own entry blocks.
	if len(s.Entries) > 0 {
		if err := l.applyAt(ctx, t); err != nil {
			return err
		}
	}
	l.progress("%s: serving on %s", s.Name, s.Address)
	return nil
}

// startServer starts t's server process and waits until it serves.
func (l *launcher) startServer(ctx context.Context, t *liveTier) error {
	s := t.srv
	p, err := l.start("server "+s.Name, l.logPath(s, "server"), "server", "--topology", l.f.Path, "--node", s.Name)
	if err != nil {
		return err
	}
	l.mu.Lock()
	t.server = p
	l.mu.Unlock()
	return l.waitFor(ctx, p, "waiting for the server to serve", func() error {
		if _, err := os.Stat(s.AdminSocket); err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return t.admin.Serving(cctx)
	})
}

// applyAt reconciles the entries the topology wants on t's server.
func (l *launcher) applyAt(ctx context.Context, t *liveTier) error {
	want, err := reconcile.DesiredEntries(l.f, t.srv, l.uid)
	if err != nil {
		return err
	}
	actions, err := reconcile.Plan(ctx, t.admin, t.srv.Name, want)
	if err != nil {
		return err
	}
	return reconcile.Apply(ctx, t.admin, actions)
}

// agentStart is one agent process to start: its arguments after "agent
// run", with the settings tier gave it for the socket and data directory
// it will use.
type agentStart struct {
	name    string
	args    []string
	cfg     agent.Config
	aliasID spiffeid.ID      // the join token's alias when it needs one
	logTo   *topology.Server // whose logs directory gets its log
}

// colocatedAgent is the agent beside server s, attested to its parent, as
// s's agent block says: the process gets --topology/--node and reads the
// block itself.
func (l *launcher) colocatedAgent(s *topology.Server) (agentStart, error) {
	cfg, err := tier.AgentConfig(l.f, s.Name)
	if err != nil {
		return agentStart{}, err
	}
	return agentStart{name: s.Name + "-agent", args: []string{"--topology", l.f.Path, "--node", s.Name},
		cfg: cfg, aliasID: s.Agent.SPIFFEID, logTo: s}, nil
}

// workloadAgent is the agent for t's demo workload, attached to t. Its
// socket and data directory are arbor up's (the topology has none for it).
func (l *launcher) workloadAgent(t *liveTier, dataDir, socket string, aliasID spiffeid.ID) (agentStart, error) {
	cfg, err := tier.WorkloadAgentConfig(l.f, t.srv.Name)
	if err != nil {
		return agentStart{}, err
	}
	cfg.DataDir, cfg.SocketPath = dataDir, socket
	return agentStart{name: "workload-agent", args: []string{"--topology", l.f.Path, "--attach", t.srv.Name,
		"--data-dir", dataDir, "--socket-path", socket}, cfg: cfg, aliasID: aliasID, logTo: t.srv}, nil
}

// startAgent starts a, attested to parent: with a join token aliased to
// a.aliasID unless its data directory already holds an agent SVID (a
// resumed run) or it attests otherwise (x509pop, a token in the file). The
// bootstrap bundle and the token are what is per process; everything else
// the agent reads from the topology.
func (l *launcher) startAgent(ctx context.Context, parent *liveTier, a agentStart) error {
	if err := os.MkdirAll(a.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("launcher: %s data dir: %w", a.name, err)
	}
	if err := os.MkdirAll(filepath.Dir(a.cfg.SocketPath), 0o700); err != nil {
		return fmt.Errorf("launcher: %s socket dir: %w", a.name, err)
	}
	bundlePath := filepath.Join(a.cfg.DataDir, "bootstrap.pem")
	if err := writeBundle(ctx, parent.admin, bundlePath); err != nil {
		return fmt.Errorf("launcher: %s: parent bundle: %w", a.name, err)
	}
	args := append([]string{"agent", "run"}, a.args...)
	args = append(args, "--trust-bundle", bundlePath)
	if !agent.Attested(a.cfg.DataDir) && a.cfg.X509PoP == nil && a.cfg.JoinToken == "" {
		tok, err := parent.admin.CreateJoinToken(ctx, a.aliasID, 10*time.Minute)
		if err != nil {
			return fmt.Errorf("launcher: join token for %s: %w", a.name, err)
		}
		args = append(args, "--join-token", tok)
	}
	p, err := l.start("agent "+a.name, l.logPath(a.logTo, a.name), args...)
	if err != nil {
		return err
	}
	return l.waitFor(ctx, p, "waiting for the agent's Workload API", func() error {
		c, err := net.DialTimeout("unix", a.cfg.SocketPath, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

func writeBundle(ctx context.Context, c *admin.Client, path string) error {
	b, err := c.Bundle(ctx)
	if err != nil {
		return err
	}
	var out []byte
	for _, a := range b.X509Authorities {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Asn1})...)
	}
	return os.WriteFile(path, out, 0o600)
}

// leaves are the servers without children.
func (l *launcher) leaves() []*liveTier {
	var out []*liveTier
	for _, t := range l.tiers {
		if len(l.f.Children(t.srv.Name)) == 0 {
			out = append(out, t)
		}
	}
	return out
}

// startDemos starts, on every leaf, a workload agent and a demo workload that
// keeps an mTLS connection to the next leaf's and validates a JWT-SVID from
// the one after.
func (l *launcher) startDemos(ctx context.Context) error {
	leaves := l.leaves()
	type demoSpec struct {
		t      *liveTier
		id     spiffeid.ID
		socket string
		addr   string
	}
	var specs []demoSpec
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for _, t := range leaves {
		id, err := spiffeid.FromSegments(l.f.TrustDomain, "demo", t.srv.Name)
		if err != nil {
			return err
		}
		node, err := spiffeid.FromSegments(l.f.TrustDomain, "demo-node", t.srv.Name)
		if err != nil {
			return err
		}
		sel := fmt.Sprintf("unix:uid:%d", l.uid)
		if err := ensureEntry(ctx, t.admin, id, node, sel); err != nil {
			return fmt.Errorf("launcher: demo entry on %s: %w", t.srv.Name, err)
		}
		dir := filepath.Join(t.srv.StateDir, "demo")
		socket := filepath.Join(dir, "workload.sock")
		l.progress("%s: starting workload agent and demo workload", t.srv.Name)
		a, err := l.workloadAgent(t, filepath.Join(dir, "agent"), socket, node)
		if err != nil {
			return err
		}
		if err := l.startAgent(ctx, t, a); err != nil {
			return err
		}
		// Keep each picked port's listener open until all are picked, so
		// two demos never get the same port.
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		held = append(held, lis)
		specs = append(specs, demoSpec{t, id, socket, lis.Addr().String()})
	}
	for _, l := range held {
		l.Close()
	}
	held = nil
	for i, s := range specs {
		peer := specs[(i+1)%len(specs)]
		third := specs[(i+2)%len(specs)]
		s.t.demoState = filepath.Join(filepath.Dir(s.socket), "status.json")
		// A resumed run finds the previous run's file, which says "ok" until
		// the new demo first writes: remove it, and ignore older statuses.
		if err := os.Remove(s.t.demoState); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("launcher: demo status of %s: %w", s.t.srv.Name, err)
		}
		s.t.demoSince = time.Now()
		if _, err := l.start("demo "+s.t.srv.Name, l.logPath(s.t.srv, "demo"), "demo-workload",
			"--socket-path", s.socket, "--listen", s.addr,
			"--peer", peer.addr, "--peer-id", peer.id.String(),
			"--jwt-from", third.addr, "--jwt-from-id", third.id.String(),
			"--status-file", s.t.demoState); err != nil {
			return err
		}
	}
	return nil
}

func ensureEntry(ctx context.Context, c *admin.Client, id, parent spiffeid.ID, sel string) error {
	want := []reconcile.Desired{{Why: "demo workload", Entry: &types.Entry{
		SpiffeId:  &types.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: id.Path()},
		ParentId:  &types.SPIFFEID{TrustDomain: parent.TrustDomain().Name(), Path: parent.Path()},
		Selectors: []*types.Selector{{Type: "unix", Value: strings.TrimPrefix(sel, "unix:")}},
	}}}
	actions, err := reconcile.Plan(ctx, c, "demo", want)
	if err != nil {
		return err
	}
	return reconcile.Apply(ctx, c, actions)
}

func (l *launcher) printTree() {
	fmt.Fprintln(l.opts.Out, "\ntopology:")
	for _, t := range l.tiers {
		depth := l.f.Depth(t.srv.Name)
		role := "root"
		if depth > 0 {
			role = "child of " + t.srv.Parent
		}
		fmt.Fprintf(l.opts.Out, "%s%s  (%s)  %s  admin %s\n", strings.Repeat("  ", depth+1), t.srv.Name, role, t.srv.Address, t.srv.AdminSocket)
	}
}

// waitDemos reports once every demo workload has succeeded (the time from
// start to a working tree), or, after the start timeout, that some have not:
// the status lines then say why.
func (l *launcher) waitDemos(ctx context.Context) {
	deadline := time.Now().Add(l.opts.StartTimeout)
	for ctx.Err() == nil {
		ok, n := true, 0
		for _, t := range l.leaves() {
			if t.demoState == "" {
				continue
			}
			n++
			if _, err := t.demoStatus(); err != nil {
				ok = false
			}
		}
		if ok {
			l.progress("all %d demo workloads hold SVIDs, talk mTLS across leaves and validate JWT-SVIDs", n)
			return
		}
		if time.Now().After(deadline) {
			l.progress("not every demo workload passes its checks after %v; see the status lines", l.opts.StartTimeout)
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// errDemoStarting is a demo workload that has not reported since it started.
var errDemoStarting = errors.New("demo starting")

// demoStatus is the latest status t's demo workload wrote in this run; the
// error says why it does not pass (not reported yet, or a check failing).
func (t *liveTier) demoStatus() (demo.Status, error) {
	st, err := demo.ReadStatus(t.demoState)
	switch {
	case errors.Is(err, os.ErrNotExist), err == nil && st.Checked.Before(t.demoSince):
		return st, errDemoStarting
	case err != nil:
		return st, err
	case st.MTLS != "ok" || st.JWT != "ok":
		return st, fmt.Errorf("mTLS %s, JWT %s", st.MTLS, st.JWT)
	}
	return st, nil
}

// printStatus prints one line per tier: agents, entries, bundle sequence and
// its demo workload's checks.
func (l *launcher) printStatus(ctx context.Context) {
	now := time.Now().Format("15:04:05")
	l.mu.Lock()
	tiers := slices.Clone(l.tiers)
	l.mu.Unlock()
	for _, t := range tiers {
		l.mu.Lock()
		down := t.server == nil
		l.mu.Unlock()
		if down {
			fmt.Fprintf(l.opts.Out, "[%s] %-20s DOWN (stopped with arbor up --stop; --start brings it back)\n", now, t.srv.Name)
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		agents, entries, cerr := t.admin.Counts(cctx)
		b, berr := t.admin.Bundle(cctx)
		cancel()
		if err := errors.Join(cerr, berr); err != nil {
			fmt.Fprintf(l.opts.Out, "[%s] %-20s unreachable: %v\n", now, t.srv.Name, err)
			continue
		}
		line := fmt.Sprintf("[%s] %-20s agents %d, entries %d, bundle seq %d (%d X.509, %d JWT)", now, t.srv.Name,
			agents, entries, b.SequenceNumber, len(b.X509Authorities), len(b.JwtAuthorities))
		if m, err := scrape(ctx, t.srv.HealthListen); err == nil {
			if v, ok := m["arbor_ca_x509_remaining_seconds"]; ok {
				line += fmt.Sprintf(", CA expires in %s", (time.Duration(v) * time.Second).Round(time.Minute))
			}
			line += fmt.Sprintf(", %d SVIDs issued", int(m["arbor_api_svids_issued_total"]))
			if v, ok := m["arbor_upstream_reachable"]; ok {
				line += map[bool]string{true: ", parent reachable", false: ", PARENT UNREACHABLE"}[v == 1]
			}
		}
		if t.demoState != "" {
			if st, err := t.demoStatus(); err == nil || st.ID != "" && !errors.Is(err, errDemoStarting) {
				line += fmt.Sprintf(", demo %s: mTLS %s, JWT %s", st.ID, st.MTLS, st.JWT)
			} else {
				line += ", demo starting"
			}
		}
		fmt.Fprintln(l.opts.Out, line)
	}
}

// scrape reads a server's /metrics and sums each metric over its labels.
func scrape(ctx context.Context, addr string) (map[string]float64, error) {
	if addr == "" {
		return nil, errors.New("no health listener")
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || !strings.HasPrefix(line, "arbor_") {
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
		name := line[:i]
		if j := strings.IndexByte(name, '{'); j >= 0 {
			name = name[:j]
		}
		out[name] += v
	}
	return out, sc.Err()
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}
