package ca

// The server's own TLS certificate: an X509-SVID for spiffe://<td>/spire/server
// signed by the active CA, cached and re-issued at half its lifetime and
// whenever the active CA changes.

import (
	"crypto/tls"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/idpolicy"
)

// serverCert is a cached server TLS certificate.
type serverCert struct {
	tls     *tls.Certificate
	ca      *x509Slot // the CA that signed it
	renewAt time.Time
}

// ServerID returns the server's SPIFFE ID, spiffe://<td>/spire/server.
func (m *Manager) ServerID() spiffeid.ID {
	return idpolicy.ServerID(m.cfg.TrustDomain)
}

// ServerCertificate returns the server's TLS certificate, an X509-SVID for
// spiffe://<td>/spire/server with a key the manager holds in memory; chain as
// SignX509SVID. It is re-issued at half its lifetime and whenever the active
// CA changes. Use it as tls.Config.GetCertificate.
func (m *Manager) ServerCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if sc := m.server.Load(); sc != nil && m.serverCertFresh(sc) {
		return sc.tls, nil
	}
	return m.issueServerCert()
}

func (m *Manager) serverCertFresh(sc *serverCert) bool {
	m.mu.RLock()
	cur := m.x509Cur
	m.mu.RUnlock()
	return sc.ca == cur && m.now().Before(sc.renewAt)
}

func (m *Manager) issueServerCert() (*tls.Certificate, error) {
	m.serverMu.Lock()
	defer m.serverMu.Unlock()
	if sc := m.server.Load(); sc != nil && m.serverCertFresh(sc) {
		return sc.tls, nil
	}
	ca, err := m.activeX509()
	if err != nil {
		return nil, err
	}
	if m.serverKey == nil {
		if m.serverKey, err = KeyTypeECP256.Generate(m.rand); err != nil {
			return nil, err
		}
	}
	now := m.now()
	chain, err := m.signX509SVID(ca, X509SVIDParams{ID: m.ServerID(), PublicKey: m.serverKey.Public(), DNSNames: m.cfg.ServerDNSNames})
	if err != nil {
		return nil, fmt.Errorf("ca: issue server certificate: %w", err)
	}
	tc := &tls.Certificate{PrivateKey: m.serverKey, Leaf: chain[0]}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	m.server.Store(&serverCert{tls: tc, ca: ca, renewAt: halfLife(now, chain[0].NotAfter)})
	m.log.Info("ca: issued server certificate", "spiffe_id", m.ServerID().String(), "serial", chain[0].SerialNumber.String(), "not_after", chain[0].NotAfter)
	return tc, nil
}
