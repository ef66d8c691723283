package agent

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/arborid/arbor/upstream"
)

// File names inside Config.DataDir.
const (
	svidFile   = "agent-svid.pem"
	keyFile    = "agent-key.pem"
	bundleFile = "bundle.pem"
	stateFile  = "agent-state.json"
)

// errNoState is returned by loadState when the agent has never attested.
var errNoState = errors.New("agent: no stored agent SVID")

// nodeState is what survives a restart: the agent SVID, its key, the trust
// bundle and whether the server allows re-attestation.
type nodeState struct {
	SVID         *x509svid.SVID
	Bundle       []*x509.Certificate
	Reattestable bool
}

type stateJSON struct {
	Reattestable bool `json:"reattestable"`
}

func writeFile0600(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func encodeCerts(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// saveState writes the state with mode 0600, the SVID and key last-but-one so
// that a crash never leaves a key that does not match its certificate
// readable as a pair (state.json is written last).
func saveState(dir string, st *nodeState) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("agent: creating data directory: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(st.SVID.PrivateKey)
	if err != nil {
		return fmt.Errorf("agent: encoding agent key: %w", err)
	}
	meta, _ := json.Marshal(stateJSON{Reattestable: st.Reattestable})
	for _, f := range []struct {
		name string
		data []byte
	}{
		{bundleFile, encodeCerts(st.Bundle)},
		{keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})},
		{svidFile, encodeCerts(st.SVID.Certificates)},
		{stateFile, meta},
	} {
		if err := writeFile0600(filepath.Join(dir, f.name), f.data); err != nil {
			return fmt.Errorf("agent: storing %s: %w", f.name, err)
		}
	}
	return nil
}

// saveBundle replaces only the stored trust bundle.
func saveBundle(dir string, roots []*x509.Certificate) error {
	if err := writeFile0600(filepath.Join(dir, bundleFile), encodeCerts(roots)); err != nil {
		return fmt.Errorf("agent: storing bundle: %w", err)
	}
	return nil
}

// loadState reads the stored state; errNoState when there is none.
func loadState(dir string, td spiffeid.TrustDomain) (*nodeState, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, svidFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errNoState
	}
	if err != nil {
		return nil, fmt.Errorf("agent: reading stored SVID: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, keyFile))
	if err != nil {
		return nil, fmt.Errorf("agent: reading stored key: %w", err)
	}
	svid, err := x509svid.Parse(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("agent: stored agent SVID: %w", err)
	}
	if svid.ID.TrustDomain() != td {
		return nil, fmt.Errorf("agent: stored agent SVID %s is not in trust domain %q", svid.ID, td)
	}
	bundlePEM, err := os.ReadFile(filepath.Join(dir, bundleFile))
	if err != nil {
		return nil, fmt.Errorf("agent: reading stored bundle: %w", err)
	}
	roots, err := upstream.ParseCertificatesPEM(bundlePEM)
	if err != nil {
		return nil, fmt.Errorf("agent: stored bundle: %w", err)
	}
	st := &nodeState{SVID: svid, Bundle: roots}
	if data, err := os.ReadFile(filepath.Join(dir, stateFile)); err == nil {
		var m stateJSON
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("agent: stored state: %w", err)
		}
		st.Reattestable = m.Reattestable
	}
	return st, nil
}

// removeState forgets the agent SVID (after an eviction the agent cannot
// use), keeping the bundle for the next attestation.
func removeState(dir string) error {
	for _, name := range []string{svidFile, keyFile, stateFile} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("agent: removing %s: %w", name, err)
		}
	}
	return nil
}

// ParseBundlePEM parses the CERTIFICATE blocks of a PEM bundle file.
func ParseBundlePEM(data []byte) ([]*x509.Certificate, error) {
	certs, err := upstream.ParseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return certs, nil
}

// Attested reports whether dataDir holds a stored agent SVID, so a restarted
// agent will resume without attesting (and needs no new join token).
func Attested(dataDir string) bool {
	_, err := os.Stat(filepath.Join(dataDir, svidFile))
	return err == nil
}
