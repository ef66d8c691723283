// Package launcher runs a whole topology on this machine — what `arbor up`
// does. Every server is its own `arbor server` process with its own state
// directory and sockets; every downstream server gets a co-located `arbor
// agent` attested to its parent; the downstream entries and join tokens are
// applied through the parents' admin sockets (an agent's token reaches it
// in a file of mode 0600 in its data directory, never on its command line);
// each leaf gets a workload agent and a demo workload. It prints the tree as
// it comes up and a status line per tier while it runs, and stops
// everything on Ctrl-C. A second run resumes from the state directories; a
// second run while the first still runs is refused (a lock beside the
// control socket, see control.go).
//
// Several topology files, one trust domain each, run side by side: every
// file's root first, then the out-of-band bundle exchange that https_spiffe
// federation between them needs, then the tiers below; the demo workloads
// federate with the other trust domains run here whose bundle reaches their
// leaf, and form one ring across all files (see federation.go).
package launcher

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
	// Vars are the topology variables given to arbor up (NAME=VALUE, as
	// --var takes them); every child reads its file with them too.
	Vars []string
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
	f         *topology.File // the file (trust domain) it belongs to
	srv       *topology.Server
	label     string        // how lines name it: NAME, or TD/NAME with several files
	admin     *admin.Client // its admin socket
	server    *proc
	demoState string    // status file of its demo workload, "" when none
	demoSince time.Time // when that demo was started: older statuses are a previous run's
}

type launcher struct {
	files []*topology.File // one per trust domain
	opts  Options
	mu    sync.Mutex // guards procs and tiers' server/stopped state against the control socket
	procs []*proc
	tiers []*liveTier
	uid   int
	exits chan error // children that exited on their own
	began time.Time
	fork  *forker
	width int // of the name column in status lines
	// ready is set once every tier runs: --stop/--start are refused before.
	ready atomic.Bool
}

// label is how lines name the server name of f: name, or TD/NAME when
// several files run (their server names may repeat).
func (l *launcher) label(f *topology.File, name string) string {
	if len(l.files) > 1 {
		return f.TrustDomain.Name() + "/" + name
	}
	return name
}

// progress prints a start-up line with the time since Up began.
func (l *launcher) progress(format string, args ...any) {
	fmt.Fprintf(l.opts.Out, "  [+%5.1fs] %s\n", time.Since(l.began).Seconds(), fmt.Sprintf(format, args...))
}

// Up runs the topologies, one trust domain each, until ctx ends.
func Up(ctx context.Context, files []*topology.File, opts Options) (err error) {
	if len(files) == 0 {
		return errors.New("launcher: no topology file")
	}
	if err := checkFiles(files); err != nil {
		return err
	}
	if err := checkReplicas(files); err != nil {
		return err
	}
	unlock, err := lockFiles(files)
	if err != nil {
		return err
	}
	defer unlock() // runs last: after every child has stopped
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
	l := &launcher{files: files, opts: opts, uid: os.Getuid(), exits: make(chan error, 64), began: time.Now(), fork: fork, width: 20}
	defer func() {
		// Interrupted (Ctrl-C) while starting the tree is a stop like any
		// other, not a failure.
		interrupted := ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled))
		if interrupted {
			err = nil
			fmt.Fprintln(opts.Out, "stopping ...")
		}
		began := time.Now()
		n, killed := l.stopAll()
		for _, t := range l.tiers {
			t.admin.Close()
		}
		line := fmt.Sprintf("stopped: %d processes in %.1fs", n, time.Since(began).Seconds())
		if len(killed) > 0 {
			line += fmt.Sprintf("; killed, not stopped within %v of SIGTERM: %s", stopGrace, strings.Join(killed, ", "))
		}
		fmt.Fprintln(opts.Out, line)
	}()
	// The control socket answers from the start: arbor status shows a tree
	// being started, --stop and --start wait for ready.
	stopControl, err := l.serveControl(ctx)
	if err != nil {
		return err
	}
	defer stopControl() // before stopAll: defers run last first
	rotateCtx, stopRotating := context.WithCancel(context.Background())
	var rotating sync.WaitGroup
	rotating.Go(func() { l.rotateLogs(rotateCtx) })
	defer rotating.Wait()
	defer stopRotating()
	for _, f := range files {
		servers := f.Walk()
		if len(servers) == 0 {
			return fmt.Errorf("launcher: the topology %s declares no servers", f.Path)
		}
		for _, s := range servers {
			l.width = max(l.width, len(l.label(f, topology.NodeName(s.Name, s.Replicas))))
		}
		fmt.Fprintf(opts.Out, "arbor up: trust domain %s, %d server(s) from %s\n", f.TrustDomain, len(servers), f.Path)
	}
	// Every file's roots first: trust domains federating with each other
	// get each other's bundle while their refreshers still retry within
	// seconds, and before the tiers below first sync federated bundles.
	// With one file (one root) this is Walk's order, as before.
	for _, f := range files {
		for _, s := range f.Walk() {
			if s.Parent == "" {
				if err := l.startTier(ctx, f, s); err != nil {
					return err
				}
			}
		}
	}
	feds := localFederations(files)
	pending, err := l.bootstrapFederations(ctx, feds)
	if err != nil {
		return err
	}
	for _, f := range files {
		for _, s := range f.Walk() {
			if s.Parent != "" {
				if err := l.startTier(ctx, f, s); err != nil {
					return err
				}
			}
		}
	}
	// Federations fetched by a tier below a root (fetched_by).
	if _, err := l.bootstrapFederations(ctx, pending); err != nil {
		return err
	}
	// Every tier has now published its JWT key to its root: fetch the
	// complete bundles at once rather than at the next refresh hint.
	l.refreshFederations(ctx, feds)
	if !opts.NoDemo {
		if err := l.startDemos(ctx); err != nil {
			return err
		}
		// Wait before the tree and the first status block, so that no
		// status line printed after the "all ... ok" line was read before it.
		l.waitDemos(ctx)
	}
	l.printTree()
	l.ready.Store(true)
	paths := make([]string, len(files))
	for i, f := range files {
		paths[i] = f.Path
	}
	all := strings.Join(paths, " ")
	fmt.Fprintf(opts.Out, "\nready; press Ctrl-C to stop\n"+
		"from another terminal: arbor status %s / arbor logs --follow %s [NAME...]\n"+
		"take a tier down and back up with: arbor up --stop NAME %s / arbor up --start NAME %s\n", all, paths[0], all, all)
	if len(files) > 1 {
		fmt.Fprintln(opts.Out, "(NAME is TD/NAME, or a server name only one of the files declares)")
	}
	l.printStatus(ctx)
	t := time.NewTicker(opts.StatusEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			l.printStatus(ctx)
		case err := <-l.exits:
			return err
		}
	}
}

func (l *launcher) logPath(s *topology.Server, name string) string {
	dir := logDir(s)
	os.MkdirAll(dir, 0o700)
	return filepath.Join(dir, name+".log")
}

// start runs the arbor binary with args, logging to logPath (rotated first
// when a previous run left it full).
func (l *launcher) start(name, logPath string, args ...string) (*proc, error) {
	rotateLog(logPath, LogMaxBytes)
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

// stopGrace is how long a child has to stop after SIGTERM before it is
// killed. Every arbor process stops within milliseconds of SIGTERM (the
// whole tree of examples/quickstart.hcl in about 0.1s), so a child still
// running after it is stuck, and the stop line names it.
const stopGrace = 3 * time.Second

// stop sends SIGTERM to p and waits for it; killed reports that it had to
// be killed (SIGKILL after stopGrace).
func (p *proc) stop() (killed bool) {
	p.stopping.Store(true)
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return false
	case <-time.After(stopGrace):
		p.cmd.Process.Kill()
		<-p.done
		return true
	}
}

// stopAll stops children, newest first (workloads before their agents,
// servers before the agents they depend on, children before parents). It
// returns how many were running and the names of those it had to kill.
func (l *launcher) stopAll() (running int, killed []string) {
	l.mu.Lock()
	procs := l.procs
	l.procs = nil
	l.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		select {
		case <-procs[i].done:
			continue // stopped with --stop, or exited
		default:
		}
		running++
		if procs[i].stop() {
			killed = append(killed, procs[i].name)
		}
	}
	return running, killed
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

// tierOf is the running server of node of f (NAME, the block's replica 1,
// or NAME/K), or nil.
func (l *launcher) tierOf(f *topology.File, node string) *liveTier {
	if name, k, err := topology.SplitNode(node); err == nil {
		node = topology.NodeName(name, k) // NAME/1 is NAME
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, t := range l.tiers {
		if t.f == f && t.srv.Node() == node {
			return t
		}
	}
	return nil
}

// startTier starts every replica of server block s, replica 1 first (it
// creates the datastore's schema, and holds the tier's entries), each one
// serving before the next starts.
func (l *launcher) startTier(ctx context.Context, f *topology.File, s *topology.Server) error {
	for _, r := range s.ReplicaList() {
		if err := l.startReplica(ctx, f, r); err != nil {
			return err
		}
	}
	return nil
}

// startReplica starts one server process (a block's replica), and first
// its co-located agent when it has a parent (with the downstream entry and
// join token applied at the parent): every replica of a downstream tier
// has its own agent, attested to the parent with its own token under the
// block's agent alias, so that each gets the tier's downstream SVID and
// asks the parent for its own intermediate CA.
func (l *launcher) startReplica(ctx context.Context, f *topology.File, s *topology.Server) error {
	label := l.label(f, s.Node())
	if s.Parent != "" {
		parent := l.tierOf(f, s.Parent)
		if parent == nil {
			return fmt.Errorf("launcher: parent %q of %q is not running", s.Parent, label)
		}
		l.progress("%s: registering with %s and starting its co-located agent", label, s.Parent)
		if err := l.applyAt(ctx, parent); err != nil {
			return err
		}
		if err := l.waitEntryAtReplicas(ctx, f, s); err != nil {
			return err
		}
		a, err := l.colocatedAgent(f, s)
		if err != nil {
			return err
		}
		if err := l.startAgent(ctx, parent, a); err != nil {
			return err
		}
	}
	l.progress("%s: starting server", label)
	// The socket does not exist yet; the client connects lazily.
	ac, err := admin.Open(s.AdminSocket)
	if err != nil {
		return err
	}
	t := &liveTier{f: f, srv: s, label: label, admin: ac}
	l.mu.Lock()
	l.tiers = append(l.tiers, t)
	l.mu.Unlock()
	if err := l.startServer(ctx, t); err != nil {
		return err
	}
	// The server's own entry blocks, once per tier: its replicas share
	// the datastore.
	if len(s.Entries) > 0 && s.ReplicaNumber <= 1 {
		if err := l.applyAt(ctx, t); err != nil {
			return err
		}
	}
	if s.Replicas > 1 {
		l.progress("%s: serving on %s (replica %d of %d)", label, s.Listen, max(s.ReplicaNumber, 1), s.Replicas)
	} else {
		l.progress("%s: serving on %s", label, s.Address)
	}
	return nil
}

// startServer starts t's server process and waits until it serves.
func (l *launcher) startServer(ctx context.Context, t *liveTier) error {
	s := t.srv
	p, err := l.start("server "+t.label, l.logPath(s, "server"), append([]string{"server"}, l.topologyArgs(t.f.Path, "--node", s.Node())...)...)
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

// waitEntryAtReplicas waits until every running replica of s's parent
// knows s's downstream entry: it was written through replica 1, and the
// others pick it up from the shared datastore at their next poll (a
// second). Until then a replica would refuse s's call for its CA, and s,
// which tries the parent's addresses in turn, might reach it first.
func (l *launcher) waitEntryAtReplicas(ctx context.Context, f *topology.File, s *topology.Server) error {
	l.mu.Lock()
	var replicas []*liveTier
	for _, t := range l.tiers {
		if t.f == f && t.srv.Name == s.Parent && t.srv.ReplicaNumber > 1 && t.server != nil {
			replicas = append(replicas, t)
		}
	}
	l.mu.Unlock()
	for _, t := range replicas {
		err := l.waitFor(ctx, t.server, "waiting for it to know the downstream entry of "+s.Name, func() error {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			es, err := t.admin.ListEntries(cctx, admin.EntryFilter{SPIFFEID: s.SPIFFEID.String(), Downstream: true})
			if err == nil && len(es) == 0 {
				err = fmt.Errorf("no downstream entry %s yet", s.SPIFFEID)
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// applyAt reconciles the entries the topology wants on t's server.
func (l *launcher) applyAt(ctx context.Context, t *liveTier) error {
	want, err := reconcile.DesiredEntries(t.f, t.srv, l.uid)
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
	name    string // its log file's name
	proc    string // its name in messages
	args    []string
	cfg     agent.Config
	aliasID spiffeid.ID      // the join token's alias when it needs one
	logTo   *topology.Server // whose logs directory gets its log
}

// colocatedAgent is the agent beside server s (a block's replica), attested
// to its parent, as s's agent block says: the process gets
// --topology/--node and reads the block itself. Its log is NAME-agent.log
// among the replica's logs.
func (l *launcher) colocatedAgent(f *topology.File, s *topology.Server) (agentStart, error) {
	cfg, err := tier.AgentConfig(f, s.Node())
	if err != nil {
		return agentStart{}, err
	}
	return agentStart{name: s.Name + "-agent", proc: "agent " + l.label(f, s.Node()) + "-agent", args: l.topologyArgs(f.Path, "--node", s.Node()),
		cfg: cfg, aliasID: s.Agent.SPIFFEID, logTo: s}, nil
}

// workloadAgent is the agent for t's demo workload, attached to t. Its
// socket and data directory are arbor up's (the topology has none for it).
func (l *launcher) workloadAgent(t *liveTier, dataDir, socket string, aliasID spiffeid.ID) (agentStart, error) {
	cfg, err := tier.WorkloadAgentConfig(t.f, t.srv.Name)
	if err != nil {
		return agentStart{}, err
	}
	cfg.DataDir, cfg.SocketPath = dataDir, socket
	return agentStart{name: "workload-agent", proc: "workload agent of " + t.label, args: l.topologyArgs(t.f.Path, "--attach", t.srv.Name,
		"--data-dir", dataDir, "--socket-path", socket), cfg: cfg, aliasID: aliasID, logTo: t.srv}, nil
}

// startAgent starts a, attested to parent: with a join token aliased to
// a.aliasID unless its data directory already holds an agent SVID (a
// resumed run) or it attests otherwise (x509pop, a token in the file). The
// bootstrap bundle and the token are what is per process; everything else
// the agent reads from the topology.
func (l *launcher) startAgent(ctx context.Context, parent *liveTier, a agentStart) error {
	if err := os.MkdirAll(a.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("launcher: %s data dir: %w", a.proc, err)
	}
	if err := os.MkdirAll(filepath.Dir(a.cfg.SocketPath), 0o700); err != nil {
		return fmt.Errorf("launcher: %s socket dir: %w", a.proc, err)
	}
	bundlePath := filepath.Join(a.cfg.DataDir, "bootstrap.pem")
	if err := writeBundle(ctx, parent.admin, bundlePath); err != nil {
		return fmt.Errorf("launcher: %s: parent bundle: %w", a.proc, err)
	}
	args := append([]string{"agent", "run"}, a.args...)
	args = append(args, "--trust-bundle", bundlePath)
	if !agent.Attested(a.cfg.DataDir) && a.cfg.X509PoP == nil && a.cfg.JoinToken == "" {
		tok, err := parent.admin.CreateJoinToken(ctx, a.aliasID, 10*time.Minute)
		if err != nil {
			return fmt.Errorf("launcher: join token for %s: %w", a.proc, err)
		}
		// Never in argv, which every local user reads in ps: a file only
		// its owner can read, which the agent removes once it is spent.
		tokenPath := filepath.Join(a.cfg.DataDir, joinTokenFile)
		if err := writeSecret(tokenPath, []byte(tok+"\n")); err != nil {
			return fmt.Errorf("launcher: join token for %s: %w", a.proc, err)
		}
		args = append(args, "--join-token-file", tokenPath)
	}
	p, err := l.start(a.proc, l.logPath(a.logTo, a.name), args...)
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

// joinTokenFile is where, in an agent's data directory, arbor up leaves
// the agent's join token.
const joinTokenFile = "join-token"

// writeSecret writes data to a new file at path of mode 0600 (a file
// already there, maybe readable by others, is replaced, not reused).
func writeSecret(path string, data []byte) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
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

// leaves are the servers without children, of every file: replica 1 of
// each such block (a demo workload per tier; its workload agent is given
// every replica's address).
func (l *launcher) leaves() []*liveTier {
	var out []*liveTier
	for _, t := range l.tiers {
		if len(t.f.Children(t.srv.Name)) == 0 && t.srv.ReplicaNumber <= 1 {
			out = append(out, t)
		}
	}
	return out
}

// startDemos starts, on every leaf, a workload agent and a demo workload that
// keeps an mTLS connection to the next leaf's and validates a JWT-SVID from
// the previous one's. With several trust domains the ring alternates them
// wherever it can, so that both checks cross a federation: neighbours on
// both sides are of another trust domain.
func (l *launcher) startDemos(ctx context.Context) error {
	ring := ringOrder(l.leaves(), func(t *liveTier) string { return t.f.TrustDomain.Name() })
	if len(l.files) > 1 && len(ring) > 1 {
		names := make([]string, 0, len(ring)+1)
		for _, t := range ring {
			names = append(names, t.label)
		}
		l.progress("demo ring (mTLS to the next, a JWT-SVID from the previous): %s -> (%s)", strings.Join(names, " -> "), names[0])
	}
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
	for _, t := range ring {
		id, err := spiffeid.FromSegments(t.f.TrustDomain, "demo", t.srv.Name)
		if err != nil {
			return err
		}
		node, err := spiffeid.FromSegments(t.f.TrustDomain, "demo-node", t.srv.Name)
		if err != nil {
			return err
		}
		sel := fmt.Sprintf("unix:uid:%d", l.uid)
		if err := ensureEntry(ctx, t.admin, id, node, sel, l.runFederatedWith(t)); err != nil {
			return fmt.Errorf("launcher: demo entry on %s: %w", t.label, err)
		}
		dir := filepath.Join(t.srv.StateDir, "demo")
		socket := filepath.Join(dir, "workload.sock")
		l.progress("%s: starting workload agent and demo workload", t.label)
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
		from := specs[(i+len(specs)-1)%len(specs)]
		s.t.demoState = filepath.Join(filepath.Dir(s.socket), "status.json")
		// A resumed run finds the previous run's file, which says "ok" until
		// the new demo first writes: remove it, and ignore older statuses.
		if err := os.Remove(s.t.demoState); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("launcher: demo status of %s: %w", s.t.label, err)
		}
		s.t.demoSince = time.Now()
		if _, err := l.start("demo "+s.t.label, l.logPath(s.t.srv, "demo"), "demo-workload",
			"--socket-path", s.socket, "--listen", s.addr,
			"--peer", peer.addr, "--peer-id", peer.id.String(),
			"--jwt-from", from.addr, "--jwt-from-id", from.id.String(),
			"--status-file", s.t.demoState); err != nil {
			return err
		}
	}
	return nil
}

// ensureEntry creates or updates the demo workload's entry; federatesWith
// are the trust domain names it federates with.
func ensureEntry(ctx context.Context, c *admin.Client, id, parent spiffeid.ID, sel string, federatesWith []string) error {
	want := []reconcile.Desired{{Why: "demo workload", Entry: &types.Entry{
		SpiffeId:      &types.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: id.Path()},
		ParentId:      &types.SPIFFEID{TrustDomain: parent.TrustDomain().Name(), Path: parent.Path()},
		Selectors:     []*types.Selector{{Type: "unix", Value: strings.TrimPrefix(sel, "unix:")}},
		FederatesWith: federatesWith,
	}}}
	actions, err := reconcile.Plan(ctx, c, "demo", want)
	if err != nil {
		return err
	}
	return reconcile.Apply(ctx, c, actions)
}

// printTree prints each file's tree, and its federations.
func (l *launcher) printTree() {
	for _, f := range l.files {
		if len(l.files) == 1 {
			fmt.Fprintln(l.opts.Out, "\ntopology:")
		} else {
			fmt.Fprintf(l.opts.Out, "\ntopology of %s (%s):\n", f.TrustDomain, f.Path)
		}
		for _, t := range l.tiers {
			if t.f != f {
				continue
			}
			depth := f.Depth(t.srv.Name)
			role := "root"
			if depth > 0 {
				role = "child of " + t.srv.Parent
			}
			addr := t.srv.Address
			if t.srv.Replicas > 1 {
				role += fmt.Sprintf(", replica %d of %d", max(t.srv.ReplicaNumber, 1), t.srv.Replicas)
				addr = t.srv.Listen
			}
			fmt.Fprintf(l.opts.Out, "%s%s  (%s)  %s  admin %s\n", strings.Repeat("  ", depth+1), t.srv.Node(), role, addr, t.srv.AdminSocket)
		}
		for _, fed := range f.Federations {
			more := ""
			if s := f.Fetcher(fed); s != nil && s.Parent != "" {
				more += ", fetched by " + s.Name
			}
			if g := l.fileOf(fed.TrustDomain); g != nil {
				more += ", run here from " + g.Path
			}
			fmt.Fprintf(l.opts.Out, "  federates with %s: %s (%s%s)\n", fed.TrustDomain, fed.BundleEndpoint, fed.Profile, more)
		}
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
			across := "leaves"
			if len(l.files) > 1 {
				across = "leaves and trust domains"
			}
			l.progress("all %d demo workloads hold SVIDs, talk mTLS across %s and validate JWT-SVIDs", n, across)
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

// demoLine is a demo workload's part of its tier's status line; peers in
// another trust domain are named.
func demoLine(st demo.Status) string {
	line := fmt.Sprintf(", demo %s: mTLS %s, JWT %s", st.ID, st.MTLS, st.JWT)
	me, err := spiffeid.FromString(st.ID)
	if err != nil {
		return line
	}
	foreign := func(id string) bool {
		p, err := spiffeid.FromString(id)
		return err == nil && p.TrustDomain() != me.TrustDomain()
	}
	switch {
	case st.Peer == st.JWTFrom && foreign(st.Peer):
		line += fmt.Sprintf(" (peer %s)", st.Peer)
	case foreign(st.Peer) || foreign(st.JWTFrom):
		line += fmt.Sprintf(" (mTLS peer %s, JWT from %s)", st.Peer, st.JWTFrom)
	}
	return line
}

// printStatus prints one line per tier: agents, entries, bundle sequence and
// its demo workload's checks; and one per federation the tier fetches.
func (l *launcher) printStatus(ctx context.Context) {
	now := time.Now().Format("15:04:05")
	l.mu.Lock()
	tiers := slices.Clone(l.tiers)
	l.mu.Unlock()
	// One trust domain after the other (the roots were started first).
	slices.SortStableFunc(tiers, func(a, b *liveTier) int {
		return slices.Index(l.files, a.f) - slices.Index(l.files, b.f)
	})
	for _, t := range tiers {
		if ctx.Err() != nil {
			return // stopping: the answers would only say "canceled"
		}
		l.mu.Lock()
		down := t.server == nil
		l.mu.Unlock()
		if down {
			fmt.Fprintf(l.opts.Out, "[%s] %-*s DOWN (stopped with arbor up --stop; --start brings it back)\n", now, l.width, t.label)
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		agents, entries, cerr := t.admin.Counts(cctx)
		b, berr := t.admin.Bundle(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err := errors.Join(cerr, berr); err != nil {
			fmt.Fprintf(l.opts.Out, "[%s] %-*s unreachable: %v\n", now, l.width, t.label, err)
			continue
		}
		line := fmt.Sprintf("[%s] %-*s agents %d, entries %d, bundle seq %d (%d X.509, %d JWT)", now, l.width, t.label,
			agents, entries, b.SequenceNumber, len(b.X509Authorities), len(b.JwtAuthorities))
		m, merr := scrape(ctx, t.srv.HealthListen)
		if merr == nil {
			if m.has("arbor_ca_x509_remaining_seconds") {
				line += fmt.Sprintf(", CA expires in %s", (time.Duration(m.sum("arbor_ca_x509_remaining_seconds")) * time.Second).Round(time.Minute))
			}
			line += fmt.Sprintf(", %d SVIDs issued", int(m.sum("arbor_api_svids_issued_total")))
			if m.has("arbor_upstream_reachable") {
				line += map[bool]string{true: ", parent reachable", false: ", PARENT UNREACHABLE"}[m.sum("arbor_upstream_reachable") == 1]
			}
		}
		if t.demoState != "" {
			if st, err := t.demoStatus(); err == nil || st.ID != "" && !errors.Is(err, errDemoStarting) {
				line += demoLine(st)
			} else {
				line += ", demo starting"
			}
		}
		fmt.Fprintln(l.opts.Out, line)
		for _, fed := range t.f.FederationsFetchedBy(t.srv.Name) {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			held, herr := t.admin.FederatedBundle(cctx, fed.TrustDomain)
			cancel()
			fmt.Fprintf(l.opts.Out, "[%s] %-*s %s\n", now, l.width, t.label,
				federationStatus(fed.TrustDomain, held, herr, t.srv.HealthListen == "", m, merr))
		}
	}
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

// topologyArgs is --topology path with one --var per topology variable
// arbor up was given, then more: every child reads its file as arbor up did.
func (l *launcher) topologyArgs(path string, more ...string) []string {
	out := []string{"--topology", path}
	for _, kv := range l.opts.Vars {
		out = append(out, "--var", kv)
	}
	return append(out, more...)
}
