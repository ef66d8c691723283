package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/internal/api"
	"github.com/arborid/arbor/internal/nodeattest/x509pop"
	"github.com/arborid/arbor/internal/nodeattest/x509pop/x509poptest"
	"github.com/arborid/arbor/internal/server"
)

const (
	metricUnauthInFlight  = "arbor_api_unauthenticated_streams_in_flight"
	metricUnauthRefused   = "arbor_api_unauthenticated_streams_refused_total"
	metricUnauthFirstMsg  = `arbor_api_unauthenticated_streams_timed_out_total{bound="first_message"}`
	metricUnauthExchange  = `arbor_api_unauthenticated_streams_timed_out_total{bound="exchange"}`
	idleAttackAddrEnv     = "ARBOR_TEST_IDLE_ATTACK_ADDR"
	idleAttackStreams     = 2000
	idleAttackConnections = 8
)

// An AttestAgent stream that sends nothing, and one that never answers its
// challenge, are ended by the server at their bound with DeadlineExceeded,
// and give their slot back.
func TestUnauthenticatedStreamBounds(t *testing.T) {
	pki := must(x509poptest.Generate(shortDir(t), x509poptest.GenerateOptions{}))(t)
	h := startServer(t, func(c *server.Config) {
		c.HealthAddr = "127.0.0.1:0"
		c.UnauthenticatedFirstMessageTimeout = 500 * time.Millisecond
		c.UnauthenticatedStreamTimeout = 2 * time.Second
		c.X509PoP = &server.X509PoPConfig{CABundlePaths: []string{pki.CABundlePath}}
	})
	agents := agentv1.NewAgentClient(h.dial(nil))

	t.Run("no first message", func(t *testing.T) {
		stream := must(agents.AttestAgent(ctxT(t)))(t)
		_, err := stream.Recv()
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("idle AttestAgent Recv = %v, want DeadlineExceeded", err)
		}
		unauthWaitMetric(t, h, metricUnauthFirstMsg, 1)
	})
	t.Run("challenge never answered", func(t *testing.T) {
		stream := must(agents.AttestAgent(ctxT(t)))(t)
		if err := stream.Send(x509popParams(t, pki.Node)); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil || resp.GetChallenge() == nil {
			t.Fatalf("AttestAgent first response = %v, %v; want a challenge", resp, err)
		}
		_, err = stream.Recv()
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("unanswered challenge: Recv = %v, want DeadlineExceeded", err)
		}
		unauthWaitMetric(t, h, metricUnauthExchange, 1)
	})
	unauthWaitMetric(t, h, metricUnauthInFlight, 0)
	for series, want := range map[string]float64{metricUnauthFirstMsg: 1, metricUnauthExchange: 1, metricUnauthRefused: 0} {
		if got := unauthMetric(t, h, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
}

// 2,000 AttestAgent streams that never send a message, over a few
// connections from another process, hold at most the server-wide maximum
// of goroutines (the rest are refused before a goroutine starts), and
// everything they held is given back after the first-message bound.
func TestUnauthenticatedIdleStreamsBounded(t *testing.T) {
	if addr := os.Getenv(idleAttackAddrEnv); addr != "" {
		runIdleStreamAttacker(t, addr)
		return
	}
	h := startServer(t, func(c *server.Config) {
		c.UnauthenticatedFirstMessageTimeout = 5 * time.Second
	})
	ctx := testCtx(t, 2*time.Minute)

	before := settleProcess()
	sampler := startProcSampler()
	defer sampler.stop()

	// The attacker is this test binary run again, so that the goroutines
	// and memory measured here are the server's alone.
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestUnauthenticatedIdleStreamsBounded$", "-test.count=1", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), idleAttackAddrEnv+"="+h.cfg.ListenAddr)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout := must(cmd.StdoutPipe())(t)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var during procSample
	var result string
	var output strings.Builder
	scanner := bufio.NewScanner(stdout)
	for scanner.Scan() {
		line := scanner.Text()
		fmt.Fprintln(&output, line)
		switch {
		case strings.HasPrefix(line, "attacker: opened "):
			during = sampleProcess()
		case strings.HasPrefix(line, "attacker: result "):
			result = strings.TrimPrefix(line, "attacker: result ")
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("attacker process: %v\nstdout:\n%s\nstderr:\n%s", err, output.String(), stderr.String())
	}
	peak := sampler.stop()

	var deadline, exhausted, other int
	var firstOther string
	if _, err := fmt.Sscanf(result, "deadline_exceeded=%d resource_exhausted=%d other=%d first_other=%q", &deadline, &exhausted, &other, &firstOther); err != nil {
		t.Fatalf("attacker result %q: %v\nstdout:\n%s", result, err, output.String())
	}

	// Back to the baseline once the streams and connections are gone.
	var after procSample
	unauthPoll(t, 30*time.Second, "goroutines back to the baseline", func() error {
		after = settleProcess()
		if after.goroutines > before.goroutines+10 {
			return fmt.Errorf("%d goroutines, baseline %d", after.goroutines, before.goroutines)
		}
		return nil
	})

	t.Logf("%d idle AttestAgent streams over %d connections: %d ended with DeadlineExceeded at the first-message bound, %d refused with ResourceExhausted (maximum %d in flight)",
		idleAttackStreams, idleAttackConnections, deadline, exhausted, api.DefaultMaxUnauthenticatedStreams)
	t.Logf("goroutines: before %d, all streams opened %d, peak %d, after %d", before.goroutines, during.goroutines, peak.goroutines, after.goroutines)
	t.Logf("heap in use: before %s, all streams opened %s, peak %s, after %s", mib(before.heapInuse), mib(during.heapInuse), mib(peak.heapInuse), mib(after.heapInuse))
	t.Logf("RSS: before %s, all streams opened %s, peak %s, after %s", mib(before.rss), mib(during.rss), mib(peak.rss), mib(after.rss))

	if other != 0 || deadline+exhausted != idleAttackStreams {
		t.Errorf("stream outcomes: %d DeadlineExceeded, %d ResourceExhausted, %d other (first: %s); want all %d DeadlineExceeded or ResourceExhausted",
			deadline, exhausted, other, firstOther, idleAttackStreams)
	}
	if exhausted == 0 {
		t.Errorf("no stream was refused: %d streams opened within the 5s bound should exceed the maximum of %d", idleAttackStreams, api.DefaultMaxUnauthenticatedStreams)
	}
	// While held: one goroutine per admitted stream and a few per
	// connection. When the bound fires, each stream's timer and release run
	// briefly in goroutines of their own, hence the peak's wider margin.
	maxStreams := api.DefaultMaxUnauthenticatedStreams
	if limit := before.goroutines + maxStreams + 100; during.goroutines > limit {
		t.Errorf("goroutines while the streams are held = %d, want at most %d (baseline %d + maximum streams %d + 100)", during.goroutines, limit, before.goroutines, maxStreams)
	}
	if limit := before.goroutines + 2*maxStreams + 100; peak.goroutines > limit {
		t.Errorf("peak goroutines = %d, want at most %d (baseline %d + 2 × maximum streams %d + 100)", peak.goroutines, limit, before.goroutines, maxStreams)
	}
	if after.heapInuse > before.heapInuse+16<<20 {
		t.Errorf("heap in use after the streams ended = %s, want within 16 MiB of the %s before", mib(after.heapInuse), mib(before.heapInuse))
	}
}

// runIdleStreamAttacker is the other process of
// TestUnauthenticatedIdleStreamsBounded: it opens the idle streams, says
// so, waits for the server to end each one and reports how.
func runIdleStreamAttacker(t *testing.T, addr string) {
	ctx := testCtx(t, 2*time.Minute)
	tc := &tls.Config{InsecureSkipVerify: true} // an attacker does not care who answers
	clients := make([]agentv1.AgentClient, idleAttackConnections)
	for i := range clients {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		clients[i] = agentv1.NewAgentClient(conn)
	}
	perConn := idleAttackStreams / idleAttackConnections
	streams := make([][]agentv1.Agent_AttestAgentClient, len(clients))
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			for range perConn {
				s, err := c.AttestAgent(ctx)
				if err != nil {
					errs[i] = err
					return
				}
				streams[i] = append(streams[i], s)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("opening streams: %v", err)
	}
	fmt.Printf("attacker: opened %d\n", idleAttackStreams)

	var mu sync.Mutex
	counts := map[codes.Code]int{}
	firstOther := ""
	for _, conn := range streams {
		wg.Go(func() {
			for _, s := range conn {
				_, err := s.Recv()
				code := status.Code(err)
				mu.Lock()
				counts[code]++
				if code != codes.DeadlineExceeded && code != codes.ResourceExhausted && firstOther == "" {
					firstOther = fmt.Sprint(err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	other := idleAttackStreams - counts[codes.DeadlineExceeded] - counts[codes.ResourceExhausted]
	fmt.Printf("attacker: result deadline_exceeded=%d resource_exhausted=%d other=%d first_other=%q\n",
		counts[codes.DeadlineExceeded], counts[codes.ResourceExhausted], other, firstOther)
}

// Past the maximum, AttestAgent gets ResourceExhausted (and a refused
// attestation consumes nothing) while authenticated streams and unary calls
// go on; once the idle streams end, the same join token attests. Reaching
// the maximum and leaving it are logged once each, not per stream.
func TestUnauthenticatedStreamCap(t *testing.T) {
	const limit = 4
	logs := &unauthLog{}
	h := startServer(t, func(c *server.Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
		c.HealthAddr = "127.0.0.1:0"
		c.MaxUnauthenticatedStreams = limit
		c.UnauthenticatedFirstMessageTimeout = 2 * time.Second
	})
	agent := h.newAgent()
	token := h.token(600)
	unauthWaitMetric(t, h, metricUnauthInFlight, 0)

	agents := agentv1.NewAgentClient(h.dial(nil))
	idle := make([]agentv1.Agent_AttestAgentClient, limit)
	for i := range idle {
		idle[i] = must(agents.AttestAgent(ctxT(t)))(t)
	}
	unauthWaitMetric(t, h, metricUnauthInFlight, limit)

	extra := must(agents.AttestAgent(ctxT(t)))(t)
	if _, err := extra.Recv(); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("AttestAgent past the maximum: Recv = %v, want ResourceExhausted", err)
	}
	if _, err := attestJoinToken(t, h.dial(nil), token); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("join token attestation past the maximum = %v, want ResourceExhausted", err)
	}

	// Authenticated streams and unary calls do not count.
	entries := must(entryv1.NewEntryClient(h.dial(agent)).SyncAuthorizedEntries(ctxT(t)))(t)
	if err := entries.Send(&entryv1.SyncAuthorizedEntriesRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := entries.Recv(); err != nil {
		t.Errorf("agent's SyncAuthorizedEntries while unauthenticated streams are at their maximum: %v", err)
	}
	entries.CloseSend()
	if _, err := bundlev1.NewBundleClient(h.dial(nil)).GetBundle(ctxT(t), &bundlev1.GetBundleRequest{}); err != nil {
		t.Errorf("anonymous GetBundle while unauthenticated streams are at their maximum: %v", err)
	}

	for i, s := range idle {
		if _, err := s.Recv(); status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("idle stream %d: Recv = %v, want DeadlineExceeded", i, err)
		}
	}
	unauthWaitMetric(t, h, metricUnauthInFlight, 0)
	svid, err := attestJoinToken(t, h.dial(nil), token)
	if err != nil {
		t.Fatalf("join token attestation after the idle streams ended: %v", err)
	}
	if got, want := svid.ID.Path(), agentPath(token); got != want {
		t.Errorf("attested agent ID path = %s, want %s", got, want)
	}
	for series, want := range map[string]float64{metricUnauthRefused: 2, metricUnauthFirstMsg: limit, metricUnauthExchange: 0} {
		if got := unauthMetric(t, h, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	// The line for leaving the maximum follows the slot's release.
	unauthPoll(t, 10*time.Second, "the log line for leaving the maximum", func() error {
		if logs.count("unauthenticated streams below their maximum again") == 0 {
			return errors.New("not logged")
		}
		return nil
	})
	for msg, want := range map[string]int{"unauthenticated streams at their maximum": 1, "unauthenticated streams below their maximum again": 1} {
		if got := logs.count(msg); got != want {
			t.Errorf("log has %q %d times, want %d:\n%s", msg, got, want, logs.String())
		}
	}
}

// unauthLog collects a server's log lines.
type unauthLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *unauthLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *unauthLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *unauthLog) count(msg string) int { return strings.Count(l.String(), "msg=\""+msg) }

// A join token attestation and an x509pop one, with its challenge round,
// complete under the bounds.
func TestUnauthenticatedAttestationsWithinBounds(t *testing.T) {
	pki := must(x509poptest.Generate(shortDir(t), x509poptest.GenerateOptions{}))(t)
	h := startServer(t, func(c *server.Config) {
		c.HealthAddr = "127.0.0.1:0"
		c.UnauthenticatedFirstMessageTimeout = time.Second
		c.UnauthenticatedStreamTimeout = 5 * time.Second
		c.MaxUnauthenticatedStreams = 2
		c.X509PoP = &server.X509PoPConfig{CABundlePaths: []string{pki.CABundlePath}}
	})
	token := h.token(600)
	svid, err := attestJoinToken(t, h.dial(nil), token)
	if err != nil {
		t.Fatalf("join token attestation: %v", err)
	}
	if got, want := svid.ID.Path(), agentPath(token); got != want {
		t.Errorf("join token agent ID path = %s, want %s", got, want)
	}

	stream := must(agentv1.NewAgentClient(h.dial(nil)).AttestAgent(ctxT(t)))(t)
	if err := stream.Send(x509popParams(t, pki.Node)); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil || resp.GetChallenge() == nil {
		t.Fatalf("x509pop AttestAgent first response = %v, %v; want a challenge", resp, err)
	}
	answer := must(x509pop.ChallengeResponse(pki.Node.Key, resp.GetChallenge(), nil))(t)
	if err := stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_ChallengeResponse{ChallengeResponse: answer}}); err != nil {
		t.Fatal(err)
	}
	resp, err = stream.Recv()
	if err != nil || resp.GetResult() == nil {
		t.Fatalf("x509pop AttestAgent after the challenge = %v, %v; want a result", resp, err)
	}
	stream.CloseSend()
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("x509pop AttestAgent trailing Recv = %v, want EOF", err)
	}
	id := svidFrom(t, resp.GetResult().Svid, newKey(t)).ID
	if !strings.HasPrefix(id.Path(), "/spire/agent/x509pop/") {
		t.Errorf("x509pop agent ID = %s, want one under /spire/agent/x509pop/", id)
	}

	unauthWaitMetric(t, h, metricUnauthInFlight, 0)
	for series, want := range map[string]float64{metricUnauthRefused: 0, metricUnauthFirstMsg: 0, metricUnauthExchange: 0} {
		if got := unauthMetric(t, h, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
}

// attestJoinToken runs join token attestation on conn and returns the
// agent SVID or the stream's status.
func attestJoinToken(t *testing.T, conn *grpc.ClientConn, token string) (*x509svid.SVID, error) {
	t.Helper()
	key := newKey(t)
	stream, err := agentv1.NewAgentClient(conn).AttestAgent(ctxT(t))
	if err != nil {
		return nil, err
	}
	err = stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
		Data:   &types.AttestationData{Type: "join_token", Payload: []byte(token)},
		Params: &agentv1.AgentX509SVIDParams{Csr: csrFor(t, key)},
	}}})
	if err != nil && err != io.EOF { // io.EOF: the status is the stream's, read below
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	stream.CloseSend()
	if resp.GetResult() == nil {
		return nil, fmt.Errorf("attestation response has no result: %v", resp)
	}
	return svidFrom(t, resp.GetResult().Svid, key), nil
}

func x509popParams(t *testing.T, node *x509poptest.Node) *agentv1.AttestAgentRequest {
	t.Helper()
	return &agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
		Data:   &types.AttestationData{Type: "x509pop", Payload: must(x509pop.AttestationPayload(node.Chain))(t)},
		Params: &agentv1.AgentX509SVIDParams{Csr: csrFor(t, newKey(t))},
	}}}
}

// unauthMetric reads one series from the server's /metrics.
func unauthMetric(t *testing.T, h *harness, series string) float64 {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + h.srv.HealthAddr().String() + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body := must(io.ReadAll(resp.Body))(t)
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return must(strconv.ParseFloat(v, 64))(t)
		}
	}
	t.Fatalf("/metrics has no %s", series)
	return 0
}

func unauthWaitMetric(t *testing.T, h *harness, series string, want float64) {
	t.Helper()
	unauthPoll(t, 20*time.Second, fmt.Sprintf("%s = %v", series, want), func() error {
		if got := unauthMetric(t, h, series); got != want {
			return fmt.Errorf("%s = %v", series, got)
		}
		return nil
	})
}

// unauthPoll calls cond until it returns nil, failing the test after d.
func unauthPoll(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting %v for %s: %v", d, what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// procSample is what this process holds at one moment.
type procSample struct {
	goroutines     int
	heapInuse, rss uint64
}

func sampleProcess() procSample {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return procSample{goroutines: runtime.NumGoroutine(), heapInuse: ms.HeapInuse, rss: residentBytes()}
}

// settleProcess samples after a garbage collection, so the heap counts what
// is still referenced.
func settleProcess() procSample {
	runtime.GC()
	return sampleProcess()
}

// residentBytes is the process's resident set size from /proc (Linux), or
// zero where there is none.
func residentBytes() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * uint64(os.Getpagesize())
}

func mib(n uint64) string {
	if n == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// procSampler records the peak of each procSample field until stopped.
type procSampler struct {
	cancel context.CancelFunc
	done   chan procSample
	once   sync.Once
	peak   procSample
}

func startProcSampler() *procSampler {
	ctx, cancel := context.WithCancel(context.Background())
	p := &procSampler{cancel: cancel, done: make(chan procSample, 1)}
	go func() {
		var peak procSample
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-ctx.Done():
				p.done <- peak
				return
			case <-tick.C:
			}
			peak.goroutines = max(peak.goroutines, runtime.NumGoroutine())
			if n%10 == 0 { // ReadMemStats stops the world: every 20ms is enough
				s := sampleProcess()
				peak.heapInuse = max(peak.heapInuse, s.heapInuse)
				peak.rss = max(peak.rss, s.rss)
			}
		}
	}()
	return p
}

// stop ends the sampling, waits for it and returns the peaks.
func (p *procSampler) stop() procSample {
	p.once.Do(func() {
		p.cancel()
		p.peak = <-p.done
	})
	return p.peak
}
