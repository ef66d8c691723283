package loadgen

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/internal/serverconn"
)

// csrPoolSize is how many distinct CSRs the agents reuse: the server's work
// per SVID does not depend on the key, and generating one per request would
// spend the shared CPU on the client.
const csrPoolSize = 64

// Generator seeds a server and drives simulated agents against it.
type Generator struct {
	cfg    Config
	addrs  []string // cfg.ServerAddr split
	admin  *grpc.ClientConn
	bundle *x509bundle.Bundle
	dialer *dialer
	csrs   [][]byte
	agents []*agent
	setup  bool
	seeded int
}

// New checks the configuration and connects to the admin socket (lazily:
// nothing is sent until Setup).
func New(cfg Config) (*Generator, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	addrs, err := serverconn.Split(c.ServerAddr)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	admin, err := grpc.NewClient("unix://"+c.AdminSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("loadgen: admin socket: %w", err)
	}
	g := &Generator{cfg: c, addrs: addrs, admin: admin}
	for range csrPoolSize {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("loadgen: generating a key: %w", err)
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		if err != nil {
			return nil, fmt.Errorf("loadgen: creating a CSR: %w", err)
		}
		g.csrs = append(g.csrs, der)
	}
	return g, nil
}

func (g *Generator) csr(i int) []byte { return g.csrs[i%len(g.csrs)] }

// Close closes every connection.
func (g *Generator) Close() error {
	for _, a := range g.agents {
		a.conn.Close()
	}
	return g.admin.Close()
}

// Agents returns the SPIFFE IDs of the attested agents.
func (g *Generator) Agents() []spiffeid.ID {
	out := make([]spiffeid.ID, len(g.agents))
	for i, a := range g.agents {
		out[i] = a.svid.ID
	}
	return out
}

func (g *Generator) rpcCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, g.cfg.RPCTimeout)
}

// Setup fetches the bundle, creates the join tokens, seeds the entries,
// attests the agents and waits until each agent sees its entries.
func (g *Generator) Setup(ctx context.Context) (*SetupReport, error) {
	if g.setup {
		return nil, errors.New("loadgen: Setup called twice")
	}
	g.setup = true
	cfg := &g.cfg
	watch := watchProc(cfg.ServerPID, 500*time.Millisecond)
	rep := &SetupReport{Agents: cfg.Agents, PerAgent: cfg.perGroup()}

	if err := g.fetchBundle(ctx); err != nil {
		return nil, err
	}
	tokens, err := g.createTokens(ctx)
	if err != nil {
		return nil, err
	}
	owners := make([]spiffeid.ID, cfg.groups())
	for i := range owners {
		if cfg.Parenting == ParentAlias {
			owners[i] = aliasID(cfg.TrustDomain, i)
		} else {
			owners[i] = agentID(cfg.TrustDomain, tokens[i])
		}
	}
	seedStart := time.Now()
	n, err := g.seed(ctx, owners)
	if err != nil {
		return nil, err
	}
	rep.Entries = n
	g.seeded = n
	rep.SeedSeconds = time.Since(seedStart).Seconds()
	if rep.SeedSeconds > 0 {
		rep.SeedPerSecond = float64(n) / rep.SeedSeconds
	}

	rec := newRecorder()
	attestStart := time.Now()
	if err := g.attestAll(ctx, tokens, rec); err != nil {
		return nil, err
	}
	rep.AttestSeconds = time.Since(attestStart).Seconds()
	rep.RPCs = rec.summary(time.Since(attestStart))

	warmStart := time.Now()
	if err := g.warmup(ctx); err != nil {
		return nil, err
	}
	rep.WarmupSeconds = time.Since(warmStart).Seconds()
	if p := watch.finish(); p != nil {
		rep.RSSAfterBytes, rep.CPUSecondsUsed = p.RSSEndBytes, p.CPUSeconds
	}
	for _, s := range rep.RPCs {
		for _, c := range s.Errors {
			rep.Errors += c
		}
	}
	return rep, nil
}

func (g *Generator) fetchBundle(ctx context.Context) error {
	ctx, cancel := g.rpcCtx(ctx)
	defer cancel()
	resp, err := bundlev1.NewBundleClient(g.admin).GetBundle(ctx, &bundlev1.GetBundleRequest{})
	if err != nil {
		return fmt.Errorf("loadgen: GetBundle on the admin socket: %w", err)
	}
	g.bundle = x509bundle.New(g.cfg.TrustDomain)
	for _, a := range resp.X509Authorities {
		c, err := x509.ParseCertificate(a.Asn1)
		if err != nil {
			return fmt.Errorf("loadgen: bundle holds a bad X.509 authority: %w", err)
		}
		g.bundle.AddX509Authority(c)
	}
	if len(g.bundle.X509Authorities()) == 0 {
		return errors.New("loadgen: the server's bundle has no X.509 authorities")
	}
	return nil
}

func agentID(td spiffeid.TrustDomain, token string) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "spire", "agent", "join_token", token)
}

func aliasID(td spiffeid.TrustDomain, group int) spiffeid.ID {
	return spiffeid.RequireFromPathf(td, "/loadgen/node/%d", group)
}

func protoID(id spiffeid.ID) *types.SPIFFEID {
	return &types.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: id.Path()}
}

func (g *Generator) createTokens(ctx context.Context) ([]string, error) {
	client := agentv1.NewAgentClient(g.admin)
	tokens := make([]string, g.cfg.Agents)
	err := g.parallel(ctx, "tokens", len(tokens), func(i int) error {
		req := &agentv1.CreateJoinTokenRequest{Ttl: 3600}
		if g.cfg.Parenting == ParentAlias {
			req.AgentId = protoID(aliasID(g.cfg.TrustDomain, i/g.cfg.AgentsPerAlias))
		}
		cctx, cancel := g.rpcCtx(ctx)
		defer cancel()
		jt, err := client.CreateJoinToken(cctx, req)
		if err != nil {
			return fmt.Errorf("loadgen: CreateJoinToken: %w", err)
		}
		tokens[i] = jt.Value
		return nil
	})
	if err != nil {
		return nil, err
	}
	return tokens, nil
}

// parallel runs f for 0..n-1 on SetupConcurrency goroutines, printing
// progress as "phase done/n", and stops handing out work after the first
// error, which it returns with the count of the others.
func (g *Generator) parallel(ctx context.Context, phase string, n int, f func(i int) error) error {
	var done, failed atomic.Int64
	var first atomic.Value
	prog := g.progress(phase, func() string { return fmt.Sprintf("%d/%d", done.Load(), n) })
	defer prog()
	idx := make(chan int)
	var wg sync.WaitGroup
	for range min(g.cfg.SetupConcurrency, max(n, 1)) {
		wg.Go(func() {
			for i := range idx {
				if err := f(i); err != nil {
					if failed.Add(1) == 1 {
						first.Store(err)
					}
				}
				done.Add(1)
			}
		})
	}
	for i := 0; i < n && failed.Load() == 0 && ctx.Err() == nil; i++ {
		idx <- i
	}
	close(idx)
	wg.Wait()
	if err, ok := first.Load().(error); ok {
		if k := failed.Load(); k > 1 {
			return fmt.Errorf("%w (and %d more failures)", err, k-1)
		}
		return err
	}
	return ctx.Err()
}

// selectors returns entry i's selectors in the configured shape.
func (g *Generator) selectors(i int) []*types.Selector {
	shape := g.cfg.Shape
	if shape == ShapeMixed {
		shape = []Shape{ShapeUnix, ShapeK8s}[i%2]
	}
	if shape == ShapeK8s {
		return []*types.Selector{
			{Type: "k8s", Value: fmt.Sprintf("ns:ns-%d", i%50)},
			{Type: "k8s", Value: fmt.Sprintf("sa:sa-%d", i)},
			{Type: "k8s", Value: fmt.Sprintf("pod-label:app:app-%d", i%200)},
		}
	}
	return []*types.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", i)}}
}

// seed creates the entries: perGroup for each owner, then the rest under
// never-connecting parents. It returns how many it created.
func (g *Generator) seed(ctx context.Context, owners []spiffeid.ID) (int, error) {
	cfg := &g.cfg
	per := cfg.perGroup()
	own := per * len(owners)
	total := max(cfg.Entries, own)
	parent := func(i int) spiffeid.ID {
		if i < own {
			return owners[i/per]
		}
		return spiffeid.RequireFromSegments(cfg.TrustDomain, "spire", "agent", "join_token", fmt.Sprintf("loadgen-other-%d", i%cfg.OtherParents))
	}
	client := entryv1.NewEntryClient(g.admin)
	batches := make(chan [2]int)
	var created atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	prog := g.progress("seed", func() string { return fmt.Sprintf("entries=%d/%d", created.Load(), total) })
	defer prog()
	for range cfg.SeedConcurrency {
		wg.Go(func() {
			for b := range batches {
				var entries []*types.Entry
				for i := b[0]; i < b[1]; i++ {
					entries = append(entries, &types.Entry{
						ParentId:  protoID(parent(i)),
						SpiffeId:  protoID(spiffeid.RequireFromPathf(cfg.TrustDomain, "/loadgen/w/%d", i)),
						Selectors: g.selectors(i),
					})
				}
				cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
				resp, err := client.BatchCreateEntry(cctx, &entryv1.BatchCreateEntryRequest{Entries: entries, OutputMask: &types.EntryMask{}})
				cancel()
				if err == nil {
					for _, r := range resp.Results {
						if c := codes.Code(r.GetStatus().GetCode()); c != codes.OK {
							err = status.Error(c, r.GetStatus().GetMessage())
							break
						}
					}
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("loadgen: seeding entries %d..%d: %w", b[0], b[1], err)
					}
					mu.Unlock()
					continue
				}
				created.Add(int64(len(entries)))
			}
		})
	}
	for start := 0; start < total; start += cfg.SeedBatch {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed || ctx.Err() != nil {
			break
		}
		batches <- [2]int{start, min(start+cfg.SeedBatch, total)}
	}
	close(batches)
	wg.Wait()
	if firstErr != nil {
		return int(created.Load()), firstErr
	}
	return int(created.Load()), ctx.Err()
}

func (g *Generator) attestAll(ctx context.Context, tokens []string, rec *recorder) error {
	g.agents = make([]*agent, len(tokens))
	g.dialer = newDialer(g.addrs, g.cfg.TrustDomain, g.bundle)
	conn, err := g.dialer.dial(nil)
	if err != nil {
		return err
	}
	defer conn.Close()
	client := agentv1.NewAgentClient(conn)
	err = g.parallel(ctx, "attest", len(tokens), func(i int) error {
		start := time.Now()
		svid, err := g.attest(ctx, client, tokens[i])
		var failed []codes.Code
		if err != nil {
			failed = append(failed, status.Code(err))
		}
		rec.observe(RPCAttest, time.Since(start), 1, failed...)
		if err != nil {
			return fmt.Errorf("loadgen: attesting agent %d: %w", i, err)
		}
		c, err := g.dialer.dial(svid)
		if err != nil {
			return err
		}
		g.agents[i] = &agent{svid: svid, conn: c, entries: entryv1.NewEntryClient(c), svids: svidv1.NewSVIDClient(c)}
		return nil
	})
	if err != nil {
		for _, a := range g.agents {
			if a != nil {
				a.conn.Close()
			}
		}
		g.agents = nil
		return err
	}
	return nil
}

// attest runs AttestAgent with a join token and returns the agent SVID.
func (g *Generator) attest(ctx context.Context, client agentv1.AgentClient, token string) (*x509svid.SVID, error) {
	ctx, cancel := g.rpcCtx(ctx)
	defer cancel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, err
	}
	stream, err := client.AttestAgent(ctx)
	if err != nil {
		return nil, err
	}
	err = stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
		Data:   &types.AttestationData{Type: "join_token", Payload: []byte(token)},
		Params: &agentv1.AgentX509SVIDParams{Csr: der},
	}}})
	if err != nil {
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	stream.CloseSend()
	var chain []*x509.Certificate
	for _, c := range resp.GetResult().GetSvid().GetCertChain() {
		cert, err := x509.ParseCertificate(c)
		if err != nil {
			return nil, status.Errorf(codes.DataLoss, "agent SVID: %v", err)
		}
		chain = append(chain, cert)
	}
	if len(chain) == 0 {
		return nil, status.Error(codes.DataLoss, "AttestAgent returned no SVID")
	}
	id, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		return nil, status.Errorf(codes.DataLoss, "agent SVID: %v", err)
	}
	if want := agentID(g.cfg.TrustDomain, token); id != want {
		return nil, status.Errorf(codes.DataLoss, "agent SVID is %s, want %s", id, want)
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, nil
}

// warmup polls each agent's sync until it sees its entries: servers that
// reload an entry cache periodically (spire-server every 5s) serve new
// entries late. The first sync also opens the agent's TLS connection.
func (g *Generator) warmup(ctx context.Context) error {
	want := g.cfg.perGroup()
	deadline := time.Now().Add(g.cfg.WarmupTimeout)
	return g.parallel(ctx, "warm-up", len(g.agents), func(i int) error {
		a := g.agents[i]
		for {
			cctx, cancel := g.rpcCtx(ctx)
			n, err := a.sync(cctx)
			cancel()
			if err == nil && n >= want {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("loadgen: agent %d sees %d entries after %v, want %d (last error: %v)", i, n, g.cfg.WarmupTimeout, want, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(250 * time.Millisecond):
			}
		}
	})
}

// progress prints a line every ProgressEvery until the returned func is called.
func (g *Generator) progress(phase string, line func() string) func() {
	if g.cfg.Progress == nil {
		return func() {}
	}
	start := time.Now()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(g.cfg.ProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				extra := ""
				if g.cfg.ServerPID > 0 {
					if s, err := ReadProc(g.cfg.ServerPID); err == nil {
						extra = fmt.Sprintf(" server_rss=%.0fMiB server_cpu=%.1fs", mib(s.RSSBytes), s.CPUSeconds)
					}
				}
				fmt.Fprintf(g.cfg.Progress, "loadgen: %s %5.0fs %s%s\n", phase, time.Since(start).Seconds(), line(), extra)
			}
		}
	}()
	return func() { close(stop); <-done }
}

// Run drives one load with the first load.Agents attested agents and
// reports what it measured. Errors from the server are counted in the
// report, not returned; Run fails only for a bad load or a cancelled ctx.
func (g *Generator) Run(ctx context.Context, load Load) (*Report, error) {
	if len(g.agents) == 0 {
		return nil, errors.New("loadgen: Run before a successful Setup")
	}
	if load.Duration <= 0 && load.Iterations <= 0 {
		return nil, fmt.Errorf("%w: a load needs a duration or an iteration count", ErrConfig)
	}
	if !load.Sync && !load.X509 && load.JWT == 0 {
		return nil, fmt.Errorf("%w: a load must sync, issue X509-SVIDs or JWT-SVIDs", ErrConfig)
	}
	n := len(g.agents)
	if load.Agents > 0 {
		n = min(load.Agents, n)
	}
	agents := g.agents[:n]
	rec := newRecorder()
	var peakGoroutines atomic.Int64
	server := watchProc(g.cfg.ServerPID, 250*time.Millisecond)
	client := watchProc(os.Getpid(), time.Second)
	prog := g.progress(load.Name, func() string {
		calls, items, errs := rec.counts()
		var total int64
		for _, e := range errs {
			total += e
		}
		gr := int64(runtime.NumGoroutine())
		if gr > peakGoroutines.Load() {
			peakGoroutines.Store(gr)
		}
		return fmt.Sprintf("agents=%d syncs=%d x509=%d jwt=%d errors=%d goroutines=%d", n, calls[RPCSync], items[RPCX509], calls[RPCJWT], total, gr)
	})
	for _, a := range agents {
		a.syncs, a.seen = 0, 0
	}
	machineBefore, machineErr := MachineBusySeconds()
	start := time.Now()
	var deadline time.Time
	if load.Duration > 0 {
		deadline = start.Add(load.Duration)
	}
	lag := &lagStats{}
	var wg sync.WaitGroup
	if load.Interval > 0 && !load.PerAgentGoroutines {
		g.schedule(ctx, &wg, agents, &load, rec, lag, start, deadline)
	} else {
		for i, a := range agents {
			wg.Go(func() {
				// Agents start spread over one interval, as a fleet does.
				first := start
				if load.Interval > 0 {
					first = start.Add(load.Interval * time.Duration(i) / time.Duration(n))
				}
				for iter := 0; load.Iterations == 0 || iter < load.Iterations; iter++ {
					at := first.Add(load.Interval * time.Duration(iter))
					if !deadline.IsZero() && (!at.Before(deadline) || !time.Now().Before(deadline)) {
						return
					}
					if wait := time.Until(at); wait > 0 {
						select {
						case <-ctx.Done():
							return
						case <-time.After(wait):
						}
					}
					if ctx.Err() != nil {
						return
					}
					if load.Interval > 0 {
						lag.observe(time.Since(at))
					}
					a.iteration(ctx, g, &load, rec, iter)
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	prog()
	if err := ctx.Err(); err != nil {
		server.finish()
		client.finish()
		return nil, err
	}
	rep := &Report{
		Name: load.Name, Agents: n, Entries: g.seeded, Seconds: elapsed.Seconds(), Interval: load.Interval.Seconds(),
		RPCs: rec.summary(elapsed), Server: server.finish(), Client: client.finish(),
		Goroutines: peakGoroutines.Load(), MinSyncsPerAgent: -1,
	}
	rep.StartLagP99MS, rep.StartLagMaxMS, rep.Skipped = lag.summary()
	if after, err := MachineBusySeconds(); err == nil && machineErr == nil {
		rep.MachineCPUSeconds = after - machineBefore
		rep.OtherCPUSeconds = rep.MachineCPUSeconds
		if rep.Client != nil {
			rep.OtherCPUSeconds -= rep.Client.CPUSeconds
		}
		if rep.Server != nil && rep.Server.PID != os.Getpid() {
			rep.OtherCPUSeconds -= rep.Server.CPUSeconds
		}
		rep.OtherCPUSeconds = max(rep.OtherCPUSeconds, 0)
	}
	if load.Sync {
		want := g.cfg.perGroup()
		for _, a := range agents {
			if a.seen >= want && a.syncs > 0 {
				rep.AgentsSynced++
			}
			if rep.MinSyncsPerAgent < 0 || a.syncs < rep.MinSyncsPerAgent {
				rep.MinSyncsPerAgent = a.syncs
			}
		}
	}
	for _, s := range rep.RPCs {
		for _, c := range s.Errors {
			rep.Errors += c
		}
	}
	if x := rep.RPCs[RPCX509]; x != nil {
		rep.X509PerSecond = x.ItemsPerS
	}
	if s := rep.RPCs[RPCSync]; s != nil && s.Calls > 0 && rep.Server != nil && !load.X509 && load.JWT == 0 {
		rep.ServerCPUPerSyncMS = rep.Server.CPUSeconds * 1000 / float64(s.Calls)
	}
	return rep, nil
}

// schedule runs the agents' iterations from one dispatcher and a bounded
// pool of workers instead of a goroutine (and a timer) per agent: agent i
// is due at start + Interval·i/n + Interval·k, the dispatcher walks that
// fixed order, sleeps until the next due time and hands the agent to a
// free worker. An agent whose previous iteration still runs is skipped
// for that slot (counted), never run twice at once. When every worker is
// busy the dispatcher waits, and the lateness shows in the start lag.
func (g *Generator) schedule(ctx context.Context, wg *sync.WaitGroup, agents []*agent, load *Load, rec *recorder, lag *lagStats, start, deadline time.Time) {
	type job struct {
		a    *agent
		iter int
		at   time.Time
	}
	workers := load.Workers
	if workers <= 0 {
		workers = defaultWorkers
	}
	jobs := make(chan job)
	for range min(workers, len(agents)) {
		wg.Go(func() {
			for j := range jobs {
				lag.observe(time.Since(j.at))
				j.a.iteration(ctx, g, load, rec, j.iter)
				j.a.busy.Store(false)
			}
		})
	}
	wg.Go(func() {
		defer close(jobs)
		n := time.Duration(len(agents))
		timer := time.NewTimer(0)
		defer timer.Stop()
		<-timer.C
		for iter := 0; load.Iterations == 0 || iter < load.Iterations; iter++ {
			for i, a := range agents {
				at := start.Add(load.Interval*time.Duration(iter) + load.Interval*time.Duration(i)/n)
				if !deadline.IsZero() && !at.Before(deadline) {
					return
				}
				// Sleeping for less than a timer's resolution costs more
				// than it shifts; those agents go now.
				if wait := time.Until(at); wait > 200*time.Microsecond {
					timer.Reset(wait)
					select {
					case <-ctx.Done():
						return
					case <-timer.C:
					}
				}
				if ctx.Err() != nil {
					return
				}
				if !a.busy.CompareAndSwap(false, true) {
					lag.skip()
					continue
				}
				select {
				case jobs <- job{a: a, iter: iter, at: at}:
				case <-ctx.Done():
					a.busy.Store(false)
					return
				}
			}
		}
	})
}

// defaultWorkers bounds the iterations in flight under the scheduler: far
// more than a server answering in milliseconds needs for 10k agents every
// few seconds, and a few MiB of goroutine stacks.
const defaultWorkers = 256

// lagStats records how late each iteration started against its schedule
// (the generator's own delay, excluded from RPC latencies) and how many
// were skipped because the agent was still busy.
type lagStats struct {
	mu      sync.Mutex
	lags    []time.Duration
	skipped int
}

func (l *lagStats) observe(d time.Duration) {
	l.mu.Lock()
	l.lags = append(l.lags, max(d, 0))
	l.mu.Unlock()
}

func (l *lagStats) skip() {
	l.mu.Lock()
	l.skipped++
	l.mu.Unlock()
}

func (l *lagStats) summary() (p99, maxMS float64, skipped int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lags := slices.Clone(l.lags)
	slices.Sort(lags)
	if len(lags) > 0 {
		p99, maxMS = ms(Percentile(lags, 0.99)), ms(lags[len(lags)-1])
	}
	return p99, maxMS, l.skipped
}
