package server_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/internal/nodeattest/x509pop"
	"github.com/arborid/arbor/internal/nodeattest/x509pop/x509poptest"
	"github.com/arborid/arbor/internal/server"
)

// A ban or an eviction must never be undone by a node write that was in
// flight when it happened: PostStatus (agent version), RenewAgent and the
// promotion of the renewed serial on its first use, and x509pop
// re-attestation. Each trial attests a fresh agent, starts eight writers
// hammering one write path, bans or evicts the agent from the admin API in
// the middle, lets the writers go on a while (on a replica that has not yet
// polled the ban, their writes reach the datastore), then checks that the
// ban or eviction holds on every server and that none of the SVIDs the agent
// ever held is accepted. After all trials the servers restart and every ban
// still holds.

const (
	raceTrials  = 100 // per write path and admin action
	raceWriters = 8
	raceBatch   = 4 // trials run at once
)

type writePath string

const (
	pathPostStatus writePath = "PostStatus"
	pathRenew      writePath = "RenewAgent"
	pathReattest   writePath = "x509pop-reattest"
)

func TestBanAndEvictSurviveConcurrentNodeWrites(t *testing.T) {
	pki := must(x509poptest.Generate(shortDir(t), x509poptest.GenerateOptions{}))(t)
	withPoP := func(c *server.Config) {
		c.X509PoP = &server.X509PoPConfig{CABundlePaths: []string{pki.CABundlePath}}
	}
	backends := []struct {
		name  string
		start func(t *testing.T) (admin, writer *harness)
	}{
		{"sqlite", func(t *testing.T) (*harness, *harness) {
			h := startServer(t, withPoP)
			return h, h
		}},
		{"postgres", func(t *testing.T) (*harness, *harness) {
			dsn := postgresDSN(t)
			h := startServer(t, withPoP, func(c *server.Config) { c.Datastore, c.PostgresDSN = "postgres", dsn })
			return h, h
		}},
		{"postgres-two-replicas", func(t *testing.T) (*harness, *harness) {
			dsn := postgresDSN(t)
			pg := func(c *server.Config) {
				c.Datastore, c.PostgresDSN, c.PollInterval = "postgres", dsn, 50*time.Millisecond
			}
			a := startServer(t, withPoP, pg)
			b := startServer(t, withPoP, pg)
			waitFor(t, "both roots in both servers' bundles", func() bool {
				return len(a.snapshot().Bundle.X509Authorities) == 2 && len(b.snapshot().Bundle.X509Authorities) == 2
			})
			a.bundle, b.bundle = b.snapshotBundle(), b.snapshotBundle()
			return a, b // ban on one, writes on the other
		}},
	}
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			admin, writer := be.start(t)
			var banned, evicted []spiffeid.ID
			var mu sync.Mutex
			for _, path := range []writePath{pathPostStatus, pathRenew, pathReattest} {
				for _, action := range []string{"ban", "evict"} {
					t.Run(string(path)+"/"+action, func(t *testing.T) {
						var wg sync.WaitGroup
						sem := make(chan struct{}, raceBatch)
						var lost atomic.Int32
						for trial := range raceTrials {
							sem <- struct{}{}
							wg.Go(func() {
								defer func() { <-sem }()
								id, ok := raceTrial(t, admin, writer, pki, path, action, trial)
								if !ok {
									lost.Add(1)
								}
								mu.Lock()
								if action == "ban" {
									banned = append(banned, id)
								} else if path != pathReattest {
									evicted = append(evicted, id)
								}
								mu.Unlock()
							})
						}
						wg.Wait()
						if n := lost.Load(); n > 0 {
							t.Errorf("%s lost in %d of %d trials with concurrent %s", action, n, raceTrials, path)
						}
					})
				}
			}
			if t.Failed() {
				return
			}
			// Restarted, the datastore still holds every ban and eviction.
			admin.restart()
			if writer != admin {
				writer.restart()
			}
			for _, h := range uniqueHarnesses(admin, writer) {
				agents := agentv1.NewAgentClient(h.admin)
				for _, id := range banned {
					a, err := agents.GetAgent(ctxT(t), &agentv1.GetAgentRequest{Id: protoID(id.Path())})
					if err != nil || !a.Banned {
						t.Errorf("after restart, GetAgent(%s) = banned %v, %v; want banned", id, a.GetBanned(), err)
					}
				}
				for _, id := range evicted {
					if _, err := agents.GetAgent(ctxT(t), &agentv1.GetAgentRequest{Id: protoID(id.Path())}); status.Code(err) != codes.NotFound {
						t.Errorf("after restart, GetAgent(%s) error = %v, want NotFound (evicted)", id, err)
					}
				}
			}
		})
	}
}

func uniqueHarnesses(a, b *harness) []*harness {
	if a == b {
		return []*harness{a}
	}
	return []*harness{a, b}
}

// heldSVID is an SVID the agent obtained, and when the response arrived.
type heldSVID struct {
	svid *x509svid.SVID
	at   time.Time
}

// raceTrial runs one trial and reports the agent and whether the ban or
// eviction held. Failures are reported through t as they are found.
func raceTrial(t *testing.T, admin, writer *harness, pki *x509poptest.PKI, path writePath, action string, trial int) (spiffeid.ID, bool) {
	ctx := testCtx(t, 60*time.Second)
	var node *x509poptest.Node
	var first *x509svid.SVID
	var err error
	if path == pathReattest {
		node = must(pki.Root.NewNode(x509poptest.NodeOptions{CommonName: fmt.Sprintf("race-%s-%d", action, trial)}))(t)
		first, err = attestX509PoP(ctx, writer, node)
	} else {
		first, err = writer.attest(admin.token(600))
	}
	if err != nil {
		t.Errorf("trial %d: attest: %v", trial, err)
		return spiffeid.ID{}, false
	}
	id := first.ID

	var mu sync.Mutex
	held := []heldSVID{{svid: first, at: time.Now()}}
	hold := func(s *x509svid.SVID) {
		mu.Lock()
		held = append(held, heldSVID{svid: s, at: time.Now()})
		mu.Unlock()
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := range raceWriters {
		wg.Go(func() {
			current := first
			conn := dialAgent(writer, current)
			defer func() { conn.Close() }()
			for i := 0; !stop.Load() && i < 200; i++ {
				var err error
				switch path {
				case pathPostStatus:
					_, err = agentv1.NewAgentClient(conn).PostStatus(ctx, &agentv1.PostStatusRequest{AgentVersion: fmt.Sprintf("v%d.%d", w, i)})
				case pathRenew:
					var resp *agentv1.RenewAgentResponse
					key := newKey(t)
					resp, err = agentv1.NewAgentClient(conn).RenewAgent(ctx, &agentv1.RenewAgentRequest{Params: &agentv1.AgentX509SVIDParams{Csr: csrFor(t, key)}})
					if err == nil {
						// The next call presents the renewed SVID, which
						// promotes it to the current serial.
						current = svidFrom(t, resp.Svid, key)
						hold(current)
						conn.Close()
						conn = dialAgent(writer, current)
						_, err = agentv1.NewAgentClient(conn).PostStatus(ctx, &agentv1.PostStatusRequest{AgentVersion: fmt.Sprintf("r%d.%d", w, i)})
					}
				case pathReattest:
					var s *x509svid.SVID
					if s, err = attestX509PoP(ctx, writer, node); err == nil {
						hold(s)
					}
				}
				if c := status.Code(err); err != nil && c != codes.PermissionDenied {
					t.Errorf("trial %d writer %d: %s error = %v, want OK or PermissionDenied", trial, w, path, err)
					return
				}
			}
		})
	}

	time.Sleep(time.Duration(rand.IntN(4000)) * time.Microsecond)
	actedAt := time.Now()
	agents := agentv1.NewAgentClient(admin.admin)
	if action == "ban" {
		_, err = agents.BanAgent(ctx, &agentv1.BanAgentRequest{Id: protoID(id.Path())})
	} else {
		_, err = agents.DeleteAgent(ctx, &agentv1.DeleteAgentRequest{Id: protoID(id.Path())})
	}
	if err != nil {
		t.Errorf("trial %d: %s agent: %v", trial, action, err)
		stop.Store(true)
		wg.Wait()
		return id, false
	}
	// Writers keep going past the admin call: on a replica they act on a
	// node index that has not seen it yet.
	after := 5 * time.Millisecond
	if admin != writer {
		after = 30 * time.Millisecond
	}
	time.Sleep(after)
	stop.Store(true)
	wg.Wait()

	ok := true
	for _, h := range uniqueHarnesses(admin, writer) {
		// A replica learns of the change through the event log.
		deadline := time.Now().Add(10 * time.Second)
		for {
			a, err := agentv1.NewAgentClient(h.admin).GetAgent(ctx, &agentv1.GetAgentRequest{Id: protoID(id.Path())})
			var holds bool
			switch {
			case action == "ban":
				holds = err == nil && a.Banned
			case path == pathReattest:
				// Re-attesting after an eviction is allowed: the node may
				// exist again, with a serial issued after the eviction.
				holds = err == nil || status.Code(err) == codes.NotFound
			default:
				holds = status.Code(err) == codes.NotFound
			}
			if holds {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("trial %d: %s of %s lost on %s: GetAgent = %v, %v", trial, action, id, h.cfg.Name, a, err)
				ok = false
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// No SVID the agent held before the ban or eviction works on any
	// server (re-attestations that completed after an eviction may). The
	// first SVID and the last ones obtained before the admin call are the
	// ones a lost write would bring back.
	mu.Lock()
	defer mu.Unlock()
	var check []heldSVID
	for _, hs := range held {
		if action == "evict" && path == pathReattest && hs.at.After(actedAt) {
			continue
		}
		check = append(check, hs)
	}
	if len(check) > 4 {
		check = append(check[:1], check[len(check)-3:]...)
	}
	for _, hs := range check {
		for _, h := range uniqueHarnesses(admin, writer) {
			if err := authorizedEntriesWith(ctx, h, hs.svid); status.Code(err) != codes.PermissionDenied {
				t.Errorf("trial %d: after %s, %s's SVID serial %s on %s: GetAuthorizedEntries error = %v, want PermissionDenied",
					trial, action, id, hs.svid.Certificates[0].SerialNumber, h.cfg.Name, err)
				ok = false
			}
		}
	}
	return id, ok
}

// dialAgent opens a connection presenting svid, closed by the caller.
func dialAgent(h *harness, svid *x509svid.SVID) *grpc.ClientConn {
	tc := h.clientTLS()
	tc.GetClientCertificate = tlsconfig.GetClientCertificate(svidSource{svid})
	conn, err := grpc.NewClient(h.cfg.ListenAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		h.t.Fatal(err)
	}
	return conn
}

func authorizedEntriesWith(ctx context.Context, h *harness, svid *x509svid.SVID) error {
	conn := dialAgent(h, svid)
	defer conn.Close()
	_, err := entryv1.NewEntryClient(conn).GetAuthorizedEntries(ctx, &entryv1.GetAuthorizedEntriesRequest{})
	return err
}

// attestX509PoP runs x509pop attestation (payload, challenge, response) for
// node over an anonymous connection.
func attestX509PoP(ctx context.Context, h *harness, node *x509poptest.Node) (*x509svid.SVID, error) {
	conn, err := grpc.NewClient(h.cfg.ListenAddr, grpc.WithTransportCredentials(credentials.NewTLS(h.clientTLS())))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stream, err := agentv1.NewAgentClient(conn).AttestAgent(ctx)
	if err != nil {
		return nil, err
	}
	payload, err := x509pop.AttestationPayload(node.Chain)
	if err != nil {
		return nil, err
	}
	key := newKey(h.t)
	if err := stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
		Data:   &types.AttestationData{Type: "x509pop", Payload: payload},
		Params: &agentv1.AgentX509SVIDParams{Csr: csrFor(h.t, key)},
	}}}); err != nil {
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	challenge := resp.GetChallenge()
	if challenge == nil {
		return nil, errors.New("x509pop attestation got no challenge")
	}
	answer, err := x509pop.ChallengeResponse(node.Key, challenge, nil)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_ChallengeResponse{ChallengeResponse: answer}}); err != nil {
		return nil, err
	}
	if resp, err = stream.Recv(); err != nil {
		return nil, err
	}
	stream.CloseSend()
	r := resp.GetResult()
	if r == nil {
		return nil, fmt.Errorf("attestation response has no result: %v", resp)
	}
	return svidFrom(h.t, r.Svid, key), nil
}
