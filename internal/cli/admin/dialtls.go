package admin

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// TLSOptions name what DialTLS needs to reach a server's admin API over TCP:
// an admin X509-SVID (the SPIFFE ID of an entry with admin = true, issued by
// the server's trust domain) and the trust bundle that verifies the server.
type TLSOptions struct {
	// Address is the server's gRPC endpoint, host:port.
	Address string
	// CertFile holds the admin X509-SVID (leaf first, then intermediates);
	// KeyFile its PKCS#8 private key, both PEM.
	CertFile, KeyFile string
	// BundleFile holds the trust domain's X.509 roots, PEM.
	BundleFile string
	// ServerID is the SPIFFE ID the server must present; empty means
	// spiffe://<the SVID's trust domain>/spire/server.
	ServerID string
}

// DialTLS connects to a server's admin API on its TCP endpoint with an admin
// X509-SVID, for a server on another machine. The files are read once, here;
// the connection is made lazily by the first call, so a server that is not up
// fails that call with ErrUnreachable.
func DialTLS(o TLSOptions) (*Client, error) {
	if o.Address == "" {
		return nil, fmt.Errorf("%w: no server address given", ErrUnreachable)
	}
	if _, _, err := net.SplitHostPort(o.Address); err != nil {
		return nil, fmt.Errorf("server address %q is not host:port: %v", o.Address, err)
	}
	svid, err := x509svid.Load(o.CertFile, o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("admin X509-SVID (%s, %s): %v", o.CertFile, o.KeyFile, err)
	}
	td := svid.ID.TrustDomain()
	roots, err := x509bundle.Load(td, o.BundleFile)
	if err != nil {
		return nil, fmt.Errorf("trust bundle %s: %v", o.BundleFile, err)
	}
	serverID, err := spiffeid.FromPath(td, "/spire/server")
	if err != nil {
		return nil, err
	}
	if o.ServerID != "" {
		if serverID, err = spiffeid.FromString(o.ServerID); err != nil {
			return nil, fmt.Errorf("server SPIFFE ID %q: %v", o.ServerID, err)
		}
	}
	cfg := tlsconfig.MTLSClientConfig(svid, roots, tlsconfig.AuthorizeID(serverID))
	cfg.MinVersion = tls.VersionTLS12
	conn, err := grpc.NewClient("passthrough:///"+o.Address,
		grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: 10 * time.Second}
			return d.DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnreachable, o.Address, err)
	}
	c := newClient(o.Address, conn)
	c.tcp = true
	return c, nil
}

// Conn is the client's gRPC connection, for callers that speak the server
// API directly (the Terraform provider batches its own calls).
func (c *Client) Conn() grpc.ClientConnInterface { return c.conn }

// Endpoint is the admin socket path or TCP address the client talks to.
func (c *Client) Endpoint() string { return c.socket }

// Error turns a failed call of op into the one readable line the admin
// commands print (see RPCError).
func (c *Client) Error(op string, err error) error { return c.rpcError(op, err) }
