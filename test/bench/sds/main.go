// Command sds measures Envoy SDS on one agent: many StreamSecrets streams
// (go-control-plane's generated client, as Envoy opens them: the default TLS
// certificate, ACKing every response), each SVID rotation pushed to all of
// them, for arbor's agent and a real spire-agent v1.13.3 side by side in one
// run, both attested to the same arbor server:
//
//	go run ./test/bench/sds --out bench-sds --streams 1000 --rounds 5
//
// Each round re-shapes the workload's entry (its X509-SVID TTL) through the
// server's admin API, so that the agent mints a new SVID and pushes it to
// every stream. Per round it measures the fan-out: from the first stream
// that received the new certificate to each other one (p50, p99; pushes per
// second = streams / the time until the last one), and the responses each
// stream received (an agent may send more than the one needed). Memory per
// stream is the agent's RSS with the streams open minus before, divided by
// their number. Writes results.md and results.json. See docs/performance.md.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/arborid/arbor/test/bench/benchproc"
)

const secretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "sds:", err)
		}
		os.Exit(1)
	}
}

// Result is one agent's run.
type Result struct {
	Agent   string `json:"agent"`
	Streams int    `json:"streams"`
	Conns   int    `json:"connections"`
	Rounds  int    `json:"rounds"`
	// OpenSeconds is the time until every stream had its first response.
	OpenSeconds float64 `json:"open_seconds"`
	// PushesPerSecond is streams / (last stream's receipt - first's),
	// the median over rounds.
	PushesPerSecond float64 `json:"pushes_per_second"`
	// P50ms and P99ms are the fan-out latencies over all rounds: a
	// stream's receipt of the new certificate after the first stream's.
	P50ms float64 `json:"push_p50_ms"`
	P99ms float64 `json:"push_p99_ms"`
	// FirstPushSeconds is the median time from the entry update to the
	// first push (the agent's sync interval dominates it).
	FirstPushSeconds float64 `json:"first_push_seconds"`
	// ResponsesPerRotation is the responses a stream received per round.
	ResponsesPerRotation float64 `json:"responses_per_stream_per_rotation"`
	// BytesPerStream is the agent's RSS growth per open stream.
	BytesPerStream float64 `json:"rss_bytes_per_stream"`
	AgentRSSBefore int64   `json:"agent_rss_before_bytes"`
	AgentRSSOpen   int64   `json:"agent_rss_streams_open_bytes"`
}

type options struct {
	out                string
	streams, conns     int
	rounds             int
	arborBin, spireBin string
	agents             []string
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("sds", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var agents string
	fs.StringVar(&o.out, "out", "bench-sds", "folder for results.md, results.json and the logs")
	fs.IntVar(&o.streams, "streams", 1000, "SDS streams on the agent")
	fs.IntVar(&o.conns, "conns", 10, "connections the streams share (Envoys)")
	fs.IntVar(&o.rounds, "rounds", 5, "SVID rotations measured")
	fs.StringVar(&o.arborBin, "arbor-bin", "", "arbor binary (default: built from this repository)")
	fs.StringVar(&o.spireBin, "spire-bin", "", "folder holding spire-agent (default: test/spirepeer/build.sh)")
	fs.StringVar(&agents, "agents", "arbor,spire", "agents to measure")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.streams < 1 || o.conns < 1 || o.rounds < 1 || o.conns > o.streams {
		return errors.New("--streams, --conns and --rounds must be positive, --conns at most --streams")
	}
	o.agents = strings.Split(agents, ",")
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	repo, err := benchproc.RepoRoot()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "sds")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if o.arborBin == "" {
		fmt.Fprintln(stderr, "sds: building arbor")
		if o.arborBin, err = benchproc.BuildArbor(ctx, repo, work); err != nil {
			return err
		}
	}
	if o.spireBin == "" && slices.Contains(o.agents, "spire") {
		if o.spireBin, err = benchproc.BuildSpire(ctx, repo); err != nil {
			return err
		}
	}
	srv, err := startServer(ctx, o, work)
	if err != nil {
		return err
	}
	defer srv.Stop()
	admin, err := grpc.NewClient("unix://"+srv.AdminSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer admin.Close()
	b, err := srv.Bundle(ctx)
	if err != nil {
		return err
	}
	var bundle bytes.Buffer
	for _, a := range b.X509Authorities {
		pem.Encode(&bundle, &pem.Block{Type: "CERTIFICATE", Bytes: a.Asn1})
	}
	bundlePath := filepath.Join(work, "bundle.pem")
	if err := os.WriteFile(bundlePath, bundle.Bytes(), 0o600); err != nil {
		return err
	}

	var results []Result
	for _, kind := range o.agents {
		fmt.Fprintf(stderr, "sds: %s: %d streams on %d connections, %d rotations\n", kind, o.streams, o.conns, o.rounds)
		r, err := measure(ctx, o, kind, work, srv.Addr, bundlePath, admin, stderr)
		if err != nil {
			return fmt.Errorf("%s: %w", kind, err)
		}
		fmt.Fprintf(stderr, "sds: %s: %.0f pushes/s, p50 %.1f ms, p99 %.1f ms, %.1f KiB per stream\n", kind, r.PushesPerSecond, r.P50ms, r.P99ms, r.BytesPerStream/1024)
		results = append(results, r)
	}
	data, err := json.MarshalIndent(map[string]any{"results": results, "cpus": runtime.NumCPU()}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(o.out, "results.json"), data, 0o644); err != nil {
		return err
	}
	md := report(results, o)
	fmt.Fprint(stderr, md)
	return os.WriteFile(filepath.Join(o.out, "results.md"), []byte(md), 0o644)
}

func startServer(ctx context.Context, o options, work string) (*benchproc.Process, error) {
	port, err := benchproc.FreePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	dir := filepath.Join(work, "server")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	sock, err := os.MkdirTemp("", "sdsadm")
	if err != nil {
		return nil, err
	}
	adminSock := filepath.Join(sock, "admin.sock")
	conf := fmt.Sprintf(`trust_domain = "example.org"

server "bench" {
  listen        = %q
  state_dir     = %q
  admin_socket  = %q
  health_listen = "off"
  log_level     = "warn"
  ca_ttl        = "24h"
  datastore "sqlite" {}
  node_attestor "join_token" {
    default_ttl = "1h"
  }
}
`, addr, filepath.Join(dir, "state"), adminSock)
	path := filepath.Join(dir, "topology.hcl")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	return benchproc.Start(ctx, o.arborBin, []string{"server", "--topology", path, "--node", "bench"}, nil,
		filepath.Join(o.out, "server.log"), adminSock, addr, 90*time.Second, func() { os.RemoveAll(sock) })
}

// agentProc is a running agent process.
type agentProc struct {
	cmd    *exec.Cmd
	done   chan struct{}
	socket string
}

func (a *agentProc) stop() {
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(20 * time.Second):
		a.cmd.Process.Kill()
		<-a.done
	}
}

func startAgent(o options, kind, work, serverAddr, bundlePath, token string) (*agentProc, error) {
	dir := filepath.Join(work, "agent-"+kind)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	sockDir, err := os.MkdirTemp("", "sdsag")
	if err != nil {
		return nil, err
	}
	a := &agentProc{socket: filepath.Join(sockDir, "api.sock"), done: make(chan struct{})}
	var bin string
	var args []string
	switch kind {
	case "arbor":
		tokenPath := filepath.Join(dir, "token")
		if err := os.WriteFile(tokenPath, []byte(token), 0o600); err != nil {
			return nil, err
		}
		bin, args = o.arborBin, []string{"agent", "run", "--server-address", serverAddr, "--trust-domain", "example.org",
			"--trust-bundle", bundlePath, "--join-token-file", tokenPath, "--data-dir", filepath.Join(dir, "data"),
			"--socket-path", a.socket, "--sync-interval", "1s", "--log-level", "warn"}
	case "spire":
		host, port, _ := strings.Cut(serverAddr, ":")
		conf := fmt.Sprintf(`agent {
  data_dir          = %q
  log_level         = "WARN"
  server_address    = %q
  server_port       = %q
  socket_path       = %q
  trust_bundle_path = %q
  trust_domain      = "example.org"
  join_token        = %q
  experimental {
    sync_interval = "1s"
  }
}

plugins {
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
  WorkloadAttestor "unix" {
    plugin_data {}
  }
}
`, filepath.Join(dir, "data"), host, port, a.socket, bundlePath, token)
		path := filepath.Join(dir, "agent.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			return nil, err
		}
		bin, args = filepath.Join(o.spireBin, "spire-agent"), []string{"run", "-config", path}
	default:
		return nil, fmt.Errorf("unknown agent %q (arbor or spire)", kind)
	}
	log, err := os.Create(filepath.Join(o.out, kind+"-agent.log"))
	if err != nil {
		return nil, err
	}
	a.cmd = exec.Command(bin, args...)
	a.cmd.Stdout, a.cmd.Stderr = log, log
	if err := a.cmd.Start(); err != nil {
		log.Close()
		return nil, err
	}
	go func() { a.cmd.Wait(); log.Close(); os.RemoveAll(sockDir); close(a.done) }()
	return a, nil
}

func rss(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n * 1024
		}
	}
	return 0
}

func envoyNode() *corev3.Node {
	return &corev3.Node{Id: "bench", Cluster: "bench", UserAgentName: "envoy",
		UserAgentVersionType: &corev3.Node_UserAgentBuildVersion{UserAgentBuildVersion: &corev3.BuildVersion{
			Version: &typev3.SemanticVersion{MajorNumber: 1, MinorNumber: 30}}}}
}

// stream is one SDS stream: it ACKs every response and records when its
// certificate chain last changed.
type stream struct {
	mu        sync.Mutex
	chain     []byte
	changedAt time.Time
	responses int
}

func (s *stream) run(ctx context.Context, c secretv3.SecretDiscoveryServiceClient, first chan<- error) {
	st, err := c.StreamSecrets(ctx)
	if err == nil {
		err = st.Send(&discoveryv3.DiscoveryRequest{Node: envoyNode(), TypeUrl: secretType, ResourceNames: []string{"default"}})
	}
	if err != nil {
		first <- err
		return
	}
	for n := 0; ; n++ {
		resp, err := st.Recv()
		if err != nil {
			if n == 0 {
				first <- err
			}
			return
		}
		now := time.Now()
		chain, err := defaultChain(resp)
		if err != nil {
			if n == 0 {
				first <- err
			}
			return
		}
		s.mu.Lock()
		s.responses++
		if !bytes.Equal(chain, s.chain) {
			s.chain, s.changedAt = chain, now
		}
		s.mu.Unlock()
		if n == 0 {
			first <- nil
		}
		if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: secretType, ResourceNames: []string{"default"},
			VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}); err != nil {
			return
		}
	}
}

func defaultChain(resp *discoveryv3.DiscoveryResponse) ([]byte, error) {
	for _, a := range resp.Resources {
		var s tlsv3.Secret
		if err := a.UnmarshalTo(&s); err != nil {
			return nil, err
		}
		if s.Name == "default" && s.GetTlsCertificate() != nil {
			return s.GetTlsCertificate().CertificateChain.GetInlineBytes(), nil
		}
	}
	return nil, errors.New("response without the default TLS certificate")
}

func measure(ctx context.Context, o options, kind, work, serverAddr, bundlePath string, admin *grpc.ClientConn, stderr io.Writer) (Result, error) {
	r := Result{Agent: kind, Streams: o.streams, Conns: o.conns, Rounds: o.rounds}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	jt, err := agentv1.NewAgentClient(admin).CreateJoinToken(cctx, &agentv1.CreateJoinTokenRequest{Ttl: 600})
	cancel()
	if err != nil {
		return r, fmt.Errorf("CreateJoinToken: %w", err)
	}
	entries := entryv1.NewEntryClient(admin)
	entry := &types.Entry{
		ParentId:    &types.SPIFFEID{TrustDomain: "example.org", Path: "/spire/agent/join_token/" + jt.Value},
		SpiffeId:    &types.SPIFFEID{TrustDomain: "example.org", Path: "/bench/" + kind},
		Selectors:   []*types.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", os.Getuid())}},
		X509SvidTtl: 3600,
	}
	cctx, cancel = context.WithTimeout(ctx, 30*time.Second)
	created, err := entries.BatchCreateEntry(cctx, &entryv1.BatchCreateEntryRequest{Entries: []*types.Entry{entry}})
	cancel()
	if err != nil || created.Results[0].Status.Code != 0 {
		return r, fmt.Errorf("BatchCreateEntry: %v %v", err, created.GetResults())
	}
	entry.Id = created.Results[0].Entry.Id

	ag, err := startAgent(o, kind, work, serverAddr, bundlePath, jt.Value)
	if err != nil {
		return r, err
	}
	defer ag.stop()

	conns := make([]secretv3.SecretDiscoveryServiceClient, o.conns)
	for i := range conns {
		cc, err := grpc.NewClient("unix://"+ag.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return r, err
		}
		defer cc.Close()
		conns[i] = secretv3.NewSecretDiscoveryServiceClient(cc)
	}
	// Wait until the agent serves the workload its SVID.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		select {
		case <-ag.done:
			return r, fmt.Errorf("the agent exited (log: %s)", filepath.Join(o.out, kind+"-agent.log"))
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := conns[0].FetchSecrets(cctx, &discoveryv3.DiscoveryRequest{Node: envoyNode(), TypeUrl: secretType, ResourceNames: []string{"default"}})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("the agent serves no SVID after 2 minutes: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	r.AgentRSSBefore = rss(ag.cmd.Process.Pid)

	sctx, stopStreams := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopStreams(); wg.Wait() }()
	streams := make([]*stream, o.streams)
	first := make(chan error, o.streams)
	start := time.Now()
	for i := range streams {
		streams[i] = &stream{}
		wg.Add(1)
		go func() { defer wg.Done(); streams[i].run(sctx, conns[i%len(conns)], first) }()
	}
	for range streams {
		select {
		case err := <-first:
			if err != nil {
				return r, fmt.Errorf("opening a stream: %w", err)
			}
		case <-time.After(2 * time.Minute):
			return r, errors.New("streams not all answered after 2 minutes")
		}
	}
	r.OpenSeconds = time.Since(start).Seconds()
	time.Sleep(2 * time.Second)
	r.AgentRSSOpen = rss(ag.cmd.Process.Pid)
	r.BytesPerStream = float64(r.AgentRSSOpen-r.AgentRSSBefore) / float64(o.streams)

	var lat []time.Duration
	var rates, firsts []float64
	var responses int
	for round := range o.rounds {
		before := make([][]byte, len(streams))
		respBefore := 0
		for i, s := range streams {
			s.mu.Lock()
			before[i] = s.chain
			respBefore += s.responses
			s.mu.Unlock()
		}
		entry.X509SvidTtl = int32(3600 + 60*(round+1))
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		updated := time.Now()
		resp, err := entries.BatchUpdateEntry(cctx, &entryv1.BatchUpdateEntryRequest{Entries: []*types.Entry{entry},
			InputMask: &types.EntryMask{X509SvidTtl: true}})
		cancel()
		if err != nil || resp.Results[0].Status.Code != 0 {
			return r, fmt.Errorf("BatchUpdateEntry: %v %v", err, resp.GetResults())
		}
		var times []time.Time
		deadline := time.Now().Add(2 * time.Minute)
		for {
			times = times[:0]
			for i, s := range streams {
				s.mu.Lock()
				if !bytes.Equal(s.chain, before[i]) {
					times = append(times, s.changedAt)
				}
				s.mu.Unlock()
			}
			if len(times) == len(streams) {
				break
			}
			if time.Now().After(deadline) {
				return r, fmt.Errorf("round %d: %d of %d streams got the new certificate after 2 minutes", round+1, len(times), len(streams))
			}
			time.Sleep(20 * time.Millisecond)
		}
		// Let duplicate responses arrive before counting them.
		time.Sleep(2 * time.Second)
		slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
		for _, t := range times {
			lat = append(lat, t.Sub(times[0]))
		}
		spread := times[len(times)-1].Sub(times[0])
		rates = append(rates, float64(len(times))/max(spread.Seconds(), 1e-6))
		firsts = append(firsts, times[0].Sub(updated).Seconds())
		after := 0
		for _, s := range streams {
			s.mu.Lock()
			after += s.responses
			s.mu.Unlock()
		}
		responses += after - respBefore
		fmt.Fprintf(stderr, "sds: %s: round %d: all %d streams in %v (first %.2fs after the update)\n", kind, round+1, len(times), spread.Round(time.Millisecond), firsts[len(firsts)-1])
	}
	slices.Sort(lat)
	slices.Sort(rates)
	slices.Sort(firsts)
	r.P50ms = ms(lat[len(lat)/2])
	r.P99ms = ms(lat[(len(lat)-1)*99/100])
	r.PushesPerSecond = rates[len(rates)/2]
	r.FirstPushSeconds = firsts[len(firsts)/2]
	r.ResponsesPerRotation = float64(responses) / float64(o.rounds*o.streams)
	return r, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func report(results []Result, o options) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# SDS: %d streams on one agent, %d connections, %d rotations (%d CPUs)\n\n", o.streams, o.conns, o.rounds, runtime.NumCPU())
	b.WriteString("| agent | pushes/s | push p50 | push p99 | update to first push | responses per stream per rotation | RSS per stream | streams open in |\n|---|---|---|---|---|---|---|---|\n")
	byKind := map[string]Result{}
	for _, r := range results {
		byKind[r.Agent] = r
		fmt.Fprintf(&b, "| %s | %.0f | %.1f ms | %.1f ms | %.2f s | %.2f | %.1f KiB | %.2f s |\n", r.Agent, r.PushesPerSecond, r.P50ms, r.P99ms,
			r.FirstPushSeconds, r.ResponsesPerRotation, r.BytesPerStream/1024, r.OpenSeconds)
	}
	a, okA := byKind["arbor"]
	s, okS := byKind["spire"]
	if okA && okS {
		ratio := func(x, y float64) string {
			if y == 0 {
				return "n/a"
			}
			return fmt.Sprintf("%.2f", x/y)
		}
		fmt.Fprintf(&b, "\narbor / spire-agent: pushes/s %s, push p50 %s, push p99 %s, RSS per stream %s, streams open in %s\n",
			ratio(a.PushesPerSecond, s.PushesPerSecond), ratio(a.P50ms, s.P50ms), ratio(a.P99ms, s.P99ms),
			ratio(a.BytesPerStream, s.BytesPerStream), ratio(a.OpenSeconds, s.OpenSeconds))
	}
	return b.String()
}
