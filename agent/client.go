package agent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/internal/idpolicy"
	"github.com/arborid/arbor/internal/serverconn"
)

// Errors the server's answers are classified into (see classify).
var (
	// ErrBanned means the server banned this agent; it stops.
	ErrBanned = errors.New("agent: banned by the server")
	// ErrMustReattest means the server no longer accepts the agent SVID
	// (evicted, expired, superseded, or its attestor requires re-attesting).
	ErrMustReattest = errors.New("agent: server requires re-attestation")
	// ErrCannotReattest means re-attestation was required but the node
	// attestor cannot attest again (a join token is single use).
	ErrCannotReattest = errors.New("agent: cannot re-attest with the configured node attestor")
	// errUnimplemented marks an RPC the server does not implement.
	errUnimplemented = errors.New("agent: server does not implement the call")
	// errUnavailable marks a server that cannot be reached right now.
	errUnavailable = errors.New("agent: server unavailable")
	// errNotFound marks an object the server does not have.
	errNotFound = errors.New("agent: not found on the server")
)

// classify maps a server's gRPC error to the agent's sentinels, using the
// PermissionDeniedDetails reason spire-agent acts on: BANNED stops the
// agent; EXPIRED, NOT_ACTIVE, NOT_ATTESTED and MUST_REATTEST re-attest.
func classify(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.PermissionDenied:
		for _, d := range st.Details() {
			pd, ok := d.(*types.PermissionDeniedDetails)
			if !ok {
				continue
			}
			switch pd.Reason {
			case types.PermissionDeniedDetails_AGENT_BANNED:
				return fmt.Errorf("%w: %s", ErrBanned, st.Message())
			case types.PermissionDeniedDetails_AGENT_EXPIRED, types.PermissionDeniedDetails_AGENT_NOT_ACTIVE,
				types.PermissionDeniedDetails_AGENT_NOT_ATTESTED, types.PermissionDeniedDetails_AGENT_MUST_REATTEST:
				return &reattestError{reason: pd.Reason, msg: st.Message()}
			}
		}
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted, codes.ResourceExhausted:
		return fmt.Errorf("%w: %s", errUnavailable, st.Message())
	case codes.Unimplemented:
		return fmt.Errorf("%w: %s", errUnimplemented, st.Message())
	case codes.NotFound:
		return fmt.Errorf("%w: %s", errNotFound, st.Message())
	}
	return fmt.Errorf("agent: server: %s: %s", st.Code(), st.Message())
}

// reattestError carries the server's reason for requiring re-attestation.
type reattestError struct {
	reason types.PermissionDeniedDetails_Reason
	msg    string
}

func (e *reattestError) Error() string {
	return fmt.Sprintf("agent: server requires re-attestation (%s): %s", e.reason, e.msg)
}
func (e *reattestError) Unwrap() error { return ErrMustReattest }

// evicted reports whether err says the server no longer knows the agent.
func evicted(err error) bool {
	var re *reattestError
	return errors.As(err, &re) && re.reason == types.PermissionDeniedDetails_AGENT_NOT_ATTESTED
}

// serverTLS builds the TLS client configuration for the server connection:
// the server must present spiffe://<td>/spire/server chained to roots (or
// anything when insecure); svid, when it returns non-nil, is presented as
// the client certificate.
func serverTLS(td spiffeid.TrustDomain, roots func() *x509bundle.Bundle, svid func() *x509svid.SVID, insecure bool, now func() time.Time) *tls.Config {
	serverID := idpolicy.ServerID(td)
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // verified below as an X509-SVID against the current bundle
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if insecure {
				return nil
			}
			id, _, err := x509svid.ParseAndVerify(raw, roots(), x509svid.WithTime(now()))
			if err != nil {
				return fmt.Errorf("agent: server certificate: %w", err)
			}
			if id != serverID {
				return fmt.Errorf("agent: server presented %s, want %s", id, serverID)
			}
			return nil
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			s := svid()
			if s == nil {
				return &tls.Certificate{}, nil
			}
			cert := &tls.Certificate{PrivateKey: s.PrivateKey, Leaf: s.Certificates[0]}
			for _, c := range s.Certificates {
				cert.Certificate = append(cert.Certificate, c.Raw)
			}
			return cert, nil
		},
	}
}

// conn is one gRPC connection to the server presenting one agent SVID. A
// renewed SVID gets a new connection: the server promotes the new serial on
// its first use, after which the old one is refused.
type conn struct {
	cc   *grpc.ClientConn
	svid *x509svid.SVID
}

// dialServer connects to the tier's servers (failing over between them,
// see serverconn) with tc; t learns which server each call reached.
func dialServer(addrs []string, t *serverconn.Tracker, tc *tls.Config) (*grpc.ClientConn, error) {
	cc, err := serverconn.Dial(addrs, t, append(serverconn.FixedWindow(), grpc.WithTransportCredentials(credentials.NewTLS(tc)))...)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return cc, nil
}

// connHolder swaps connections atomically; callers load one per operation.
type connHolder struct{ p atomic.Pointer[conn] }

func (h *connHolder) load() *conn { return h.p.Load() }

// swap installs c and closes the previous connection.
func (h *connHolder) swap(c *conn) {
	if old := h.p.Swap(c); old != nil && old.cc != nil {
		old.cc.Close()
	}
}

// rpcTimeout bounds every call to the server.
const rpcTimeout = 30 * time.Second

func isPermissionDenied(err error) bool { return status.Code(err) == codes.PermissionDenied }

func isUnavailable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}
