package agent

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"

	"github.com/arborid/arbor/internal/nodeattest/x509pop"
	"github.com/arborid/arbor/upstream"
)

// agentCSR is the agent SVID's CSR: like spire-agent's, no URI SAN (the
// server decides the agent ID).
func agentCSR(key crypto.Signer) ([]byte, error) {
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{Country: []string{"US"}, Organization: []string{"SPIRE"}},
	}, key)
}

// canReattest reports whether the configured node attestor can attest
// again (x509pop can; a join token is spent after its first use).
func (a *Agent) canReattest() bool {
	return a.cfg.X509PoP != nil || (a.cfg.NodeAttestor != nil && a.cfg.NodeAttestor.CanReattest())
}

// attestationData builds the first message's attestation data and the
// function that answers the server's challenges.
func (a *Agent) attestationData(ctx context.Context) (*types.AttestationData, func([]byte) ([]byte, error), error) {
	switch {
	case a.cfg.NodeAttestor != nil:
		na := a.cfg.NodeAttestor
		payload, err := na.Payload(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("agent: %s attestation data: %w", na.Type(), err)
		}
		noChallenge := func([]byte) ([]byte, error) {
			return nil, fmt.Errorf("agent: %s attestation does not expect a challenge", na.Type())
		}
		return &types.AttestationData{Type: na.Type(), Payload: payload}, noChallenge, nil
	case a.cfg.X509PoP != nil:
		p := a.cfg.X509PoP
		certs, key, err := x509pop.LoadIdentity(p.CertPath, p.KeyPath, p.IntermediatesPath)
		if err != nil {
			return nil, nil, fmt.Errorf("agent: %w", err)
		}
		payload, err := x509pop.AttestationPayload(certs)
		if err != nil {
			return nil, nil, fmt.Errorf("agent: %w", err)
		}
		answer := func(c []byte) ([]byte, error) { return x509pop.ChallengeResponse(key, c, nil) }
		return &types.AttestationData{Type: "x509pop", Payload: payload}, answer, nil
	case a.cfg.JoinToken != "" || a.cfg.JoinTokenFile != "":
		token, err := a.joinToken()
		if err != nil {
			return nil, nil, err
		}
		noChallenge := func([]byte) ([]byte, error) {
			return nil, errors.New("agent: join_token attestation does not expect a challenge")
		}
		return &types.AttestationData{Type: "join_token", Payload: []byte(token)}, noChallenge, nil
	}
	return nil, nil, errors.New("agent: no node attestor configured (need a join token, an x509pop identity or another node attestor)")
}

// joinToken is the configured join token, read from JoinTokenFile the
// first time it is needed (attempts after a failed one reuse it).
func (a *Agent) joinToken() (string, error) {
	if a.cfg.JoinTokenFile == "" {
		return a.cfg.JoinToken, nil
	}
	if a.tokenFromFile != "" {
		return a.tokenFromFile, nil
	}
	path := a.cfg.JoinTokenFile
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("agent: join token file: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Mode().Perm()&0o077 != 0 {
		a.log.Warn("the join token file is readable by other users; give it mode 0600", "path", path, "mode", fi.Mode().Perm().String())
	}
	data, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return "", fmt.Errorf("agent: reading join token file %s: %w", path, err)
	}
	token := strings.TrimSpace(string(data))
	if token == "" || strings.ContainsAny(token, " \t\r\n") {
		return "", fmt.Errorf("agent: join token file %s holds no token (want the token alone on one line)", path)
	}
	a.tokenFromFile = token
	return token, nil
}

// spendTokenFile removes the join token file once the token has attested
// the agent: it cannot be used again, and a secret left on disk is one
// more to guard.
func (a *Agent) spendTokenFile() {
	if a.cfg.JoinTokenFile == "" {
		return
	}
	if err := os.Remove(a.cfg.JoinTokenFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		a.log.Warn("removing the spent join token file", "path", a.cfg.JoinTokenFile, "err", err)
	}
}

// bootstrapBundle returns the roots that authenticate the server before the
// first attestation.
func (a *Agent) bootstrapBundle(ctx context.Context) ([]*x509.Certificate, error) {
	if len(a.cfg.TrustBundle) > 0 {
		return a.cfg.TrustBundle, nil
	}
	if a.cfg.TrustBundleURL != "" {
		ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.cfg.TrustBundleURL, nil)
		if err != nil {
			return nil, fmt.Errorf("agent: trust bundle URL: %w", err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("agent: fetching trust bundle: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("agent: fetching trust bundle: HTTP %s", resp.Status)
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		if err != nil {
			return nil, fmt.Errorf("agent: reading trust bundle: %w", err)
		}
		roots, err := upstream.ParseCertificatesPEM(data)
		if err != nil {
			return nil, fmt.Errorf("agent: trust bundle from %s: %w", a.cfg.TrustBundleURL, err)
		}
		return roots, nil
	}
	if a.cfg.InsecureBootstrap {
		return nil, nil
	}
	return nil, errors.New("agent: no bootstrap trust bundle (set a trust bundle, a trust bundle URL or insecure bootstrap)")
}

// attest runs AttestAgent over an unauthenticated connection and returns
// the new node state (with the server's bundle when it can get it).
func (a *Agent) attest(ctx context.Context, roots []*x509.Certificate) (*nodeState, error) {
	data, answer, err := a.attestationData(ctx)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("agent: generating agent key: %w", err)
	}
	csr, err := agentCSR(key)
	if err != nil {
		return nil, fmt.Errorf("agent: creating agent CSR: %w", err)
	}
	bundle := x509bundle.FromX509Authorities(a.cfg.TrustDomain, roots)
	insecure := len(roots) == 0 && a.cfg.InsecureBootstrap
	tc := serverTLS(a.cfg.TrustDomain, func() *x509bundle.Bundle { return bundle }, func() *x509svid.SVID { return nil }, insecure, a.now)
	cc, err := dialServer(a.addrs, a.tracker, tc)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	stream, err := agentv1.NewAgentClient(cc).AttestAgent(ctx)
	if err != nil {
		return nil, classify(err)
	}
	if err := stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
		Data: data, Params: &agentv1.AgentX509SVIDParams{Csr: csr},
	}}}); err != nil {
		return nil, a.streamErr(stream.RecvMsg, err)
	}
	var result *agentv1.AttestAgentResponse_Result
	for result == nil {
		resp, err := stream.Recv()
		if err != nil {
			return nil, attestError(err)
		}
		switch {
		case resp.GetResult() != nil:
			result = resp.GetResult()
		case resp.GetChallenge() != nil:
			out, err := answer(resp.GetChallenge())
			if err != nil {
				return nil, err
			}
			if err := stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_ChallengeResponse{ChallengeResponse: out}}); err != nil {
				return nil, a.streamErr(stream.RecvMsg, err)
			}
		default:
			return nil, errors.New("agent: attestation response carries neither a result nor a challenge")
		}
	}
	_ = stream.CloseSend()
	svid, err := svidFromProto(result.Svid, key)
	if err != nil {
		return nil, fmt.Errorf("agent: attestation result: %w", err)
	}
	st := &nodeState{SVID: svid, Bundle: roots, Reattestable: result.Reattestable}
	// Fetch the bundle with the new SVID, so the stored bundle is the
	// server's and not the bootstrap one.
	if fresh, err := a.fetchBundleWith(ctx, svid, roots, insecure); err == nil {
		st.Bundle = fresh
	} else if len(roots) == 0 {
		return nil, fmt.Errorf("agent: fetching the trust bundle after an insecure bootstrap: %w", err)
	}
	return st, nil
}

// attestError classifies an AttestAgent failure; a banned agent's
// attestation is PermissionDenied without a reason detail.
func attestError(err error) error {
	c := classify(err)
	if isPermissionDenied(err) && !errors.Is(c, ErrBanned) {
		return fmt.Errorf("%w: %v", errAttestationDenied, c)
	}
	return c
}

// errAttestationDenied means the server refused the attestation data; it
// does not become acceptable by retrying.
var errAttestationDenied = errors.New("agent: attestation denied")

// streamErr returns the stream's real error after a failed Send.
func (a *Agent) streamErr(recv func(any) error, sendErr error) error {
	if errors.Is(sendErr, io.EOF) {
		var resp agentv1.AttestAgentResponse
		if err := recv(&resp); err != nil {
			return attestError(err)
		}
	}
	return classify(sendErr)
}

func (a *Agent) fetchBundleWith(ctx context.Context, svid *x509svid.SVID, roots []*x509.Certificate, insecure bool) ([]*x509.Certificate, error) {
	bundle := x509bundle.FromX509Authorities(a.cfg.TrustDomain, roots)
	tc := serverTLS(a.cfg.TrustDomain, func() *x509bundle.Bundle { return bundle }, func() *x509svid.SVID { return svid }, insecure, a.now)
	cc, err := dialServer(a.addrs, a.tracker, tc)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	b, err := bundlev1.NewBundleClient(cc).GetBundle(ctx, &bundlev1.GetBundleRequest{})
	if err != nil {
		return nil, classify(err)
	}
	v, err := newBundleView(a.cfg.TrustDomain, b)
	if err != nil {
		return nil, err
	}
	return v.roots, nil
}

func svidFromProto(p *types.X509SVID, key crypto.Signer) (*x509svid.SVID, error) {
	if p == nil || len(p.CertChain) == 0 {
		return nil, errors.New("no certificate chain")
	}
	chain := make([]*x509.Certificate, len(p.CertChain))
	for i, der := range p.CertChain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i, err)
		}
		chain[i] = c
	}
	id, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, nil
}

// renewAgent renews the agent SVID with RenewAgent, or re-attests when the
// node attestor allows it (as spire-agent does: a re-attestable agent is
// refused renewal with AGENT_MUST_REATTEST).
func (a *Agent) renewAgent(ctx context.Context) error {
	st := a.node.Load()
	if st.Reattestable && a.canReattest() {
		return a.reattest(ctx)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("agent: generating agent key: %w", err)
	}
	csr, err := agentCSR(key)
	if err != nil {
		return fmt.Errorf("agent: creating agent CSR: %w", err)
	}
	c := a.conns.load()
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := agentv1.NewAgentClient(c.cc).RenewAgent(ctx, &agentv1.RenewAgentRequest{Params: &agentv1.AgentX509SVIDParams{Csr: csr}})
	if err != nil {
		err = classify(err)
		if errors.Is(err, ErrMustReattest) && a.canReattest() {
			return a.reattest(ctx)
		}
		return err
	}
	svid, err := svidFromProto(resp.Svid, key)
	if err != nil {
		return fmt.Errorf("agent: renewed agent SVID: %w", err)
	}
	next := &nodeState{SVID: svid, Bundle: st.Bundle, Reattestable: st.Reattestable}
	if err := a.install(next); err != nil {
		return err
	}
	a.log.Info("agent SVID renewed", "spiffe_id", svid.ID.String(), "expires_at", svid.Certificates[0].NotAfter.Format(time.RFC3339))
	return nil
}

// reattest runs node attestation again with the current bundle.
func (a *Agent) reattest(ctx context.Context) error {
	if !a.canReattest() {
		return ErrCannotReattest
	}
	st, err := a.attest(ctx, a.node.Load().Bundle)
	if err != nil {
		return err
	}
	if err := a.install(st); err != nil {
		return err
	}
	a.log.Info("agent re-attested", "spiffe_id", st.SVID.ID.String())
	return nil
}

// install stores a new node state and switches the server connection to it.
func (a *Agent) install(st *nodeState) error {
	if err := saveState(a.cfg.DataDir, st); err != nil {
		return err
	}
	a.node.Store(st)
	a.rootsView.Store(x509bundle.FromX509Authorities(a.cfg.TrustDomain, st.Bundle))
	return a.connect(st)
}

// connect opens a connection presenting st's SVID and retires the old one.
func (a *Agent) connect(st *nodeState) error {
	svid := st.SVID
	tc := serverTLS(a.cfg.TrustDomain, a.rootsView.Load, func() *x509svid.SVID { return svid }, false, a.now)
	cc, err := dialServer(a.addrs, a.tracker, tc)
	if err != nil {
		return err
	}
	a.conns.swap(&conn{cc: cc, svid: svid})
	a.metrics.agentSVIDExpiry.Set(float64(svid.Certificates[0].NotAfter.Unix()))
	return nil
}
