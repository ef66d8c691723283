package ca

import (
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/arborid/arbor/upstream"
)

const (
	stateFileName = "ca-state.json"
	keyFileSuffix = ".key.pem"
	stateVersion  = 1
)

// stateFile is the JSON document in Dir that names the current and next
// authorities. Private keys live in separate PEM files it references.
type stateFile struct {
	Version     int        `json:"version"`
	TrustDomain string     `json:"trust_domain"`
	X509Current *x509State `json:"x509_current,omitempty"`
	X509Next    *x509State `json:"x509_next,omitempty"`
	JWTCurrent  *jwtState  `json:"jwt_current,omitempty"`
	JWTNext     *jwtState  `json:"jwt_next,omitempty"`
	// X509Old and JWTOld are the authorities the last activation replaced,
	// without a key file: what an operator may taint and revoke.
	X509Old *x509State `json:"x509_old,omitempty"`
	JWTOld  *jwtState  `json:"jwt_old,omitempty"`
}

type x509State struct {
	KeyFile       string   `json:"key_file"`
	Cert          []byte   `json:"cert"` // DER (base64 in JSON)
	Intermediates [][]byte `json:"intermediates,omitempty"`
	Roots         [][]byte `json:"roots"`
	// Capped: the upstream returned the CA shorter than asked for.
	Capped bool `json:"capped,omitempty"`
}

type jwtState struct {
	KeyFile   string    `json:"key_file"`
	KeyID     string    `json:"kid"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	// PublicKey (PKIX DER) is stored for an old key only, which has no
	// key file.
	PublicKey []byte `json:"public_key,omitempty"`
}

type loadedState struct {
	x509Cur, x509Next, x509Old *x509Slot
	jwtCur, jwtNext, jwtOld    *jwtSlot
}

// loadState reads the state from Dir; nil, nil if there is none yet.
func (m *Manager) loadState() (*loadedState, error) {
	raw, err := os.ReadFile(filepath.Join(m.cfg.Dir, stateFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ca: read state: %w", err)
	}
	var sf stateFile
	if err := json.Unmarshal(raw, &sf); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadState, stateFileName, err)
	}
	if sf.Version != stateVersion {
		return nil, fmt.Errorf("%w: %s: version %d, want %d", ErrBadState, stateFileName, sf.Version, stateVersion)
	}
	if sf.TrustDomain != m.cfg.TrustDomain.Name() {
		return nil, fmt.Errorf("%w: %s belongs to trust domain %q, not %q", ErrBadState, stateFileName, sf.TrustDomain, m.cfg.TrustDomain.Name())
	}
	var st loadedState
	if st.x509Cur, err = m.loadX509(sf.X509Current); err != nil {
		return nil, err
	}
	if st.x509Next, err = m.loadX509(sf.X509Next); err != nil {
		return nil, err
	}
	if st.jwtCur, err = m.loadJWT(sf.JWTCurrent); err != nil {
		return nil, err
	}
	if st.jwtNext, err = m.loadJWT(sf.JWTNext); err != nil {
		return nil, err
	}
	if st.x509Old, err = m.loadOldX509(sf.X509Old); err != nil {
		return nil, err
	}
	if st.jwtOld, err = m.loadOldJWT(sf.JWTOld); err != nil {
		return nil, err
	}
	return &st, nil
}

func (m *Manager) loadX509(xs *x509State) (*x509Slot, error) {
	if xs == nil {
		return nil, nil
	}
	key, err := m.readKey(xs.KeyFile)
	if err != nil {
		return nil, err
	}
	var minted upstream.MintedCA
	certs, err := upstream.ParseCertificatesDER(xs.Cert)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadState, err)
	}
	minted.Cert = certs[0]
	if minted.Intermediates, err = upstream.ParseCertificatesDER(xs.Intermediates...); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadState, err)
	}
	if minted.Roots, err = upstream.ParseCertificatesDER(xs.Roots...); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadState, err)
	}
	// The rules a fresh CA passed, checked as of its issuance (when every
	// certificate of its chain had begun): a stored CA that has expired
	// since is dropped by the rotation, not refused here.
	issued := minted.Cert.NotBefore
	for _, c := range minted.Intermediates {
		if c.NotBefore.After(issued) {
			issued = c.NotBefore
		}
	}
	if _, err := upstream.Validate(&minted, key.Public(), m.cfg.TrustDomain, 0, issued); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadState, err)
	}
	s := newX509Slot(key, &minted)
	s.keyFile = xs.KeyFile
	s.capped = xs.Capped
	return s, nil
}

// loadOldX509 reads an old authority: its certificates only.
func (m *Manager) loadOldX509(xs *x509State) (*x509Slot, error) {
	if xs == nil {
		return nil, nil
	}
	if xs.KeyFile != "" {
		return nil, fmt.Errorf("%w: the old X.509 CA names a key file", ErrBadState)
	}
	var minted upstream.MintedCA
	certs, err := upstream.ParseCertificatesDER(xs.Cert)
	if err != nil {
		return nil, fmt.Errorf("%w: old X.509 CA: %v", ErrBadState, err)
	}
	minted.Cert = certs[0]
	if minted.Intermediates, err = upstream.ParseCertificatesDER(xs.Intermediates...); err != nil {
		return nil, fmt.Errorf("%w: old X.509 CA: %v", ErrBadState, err)
	}
	if minted.Roots, err = upstream.ParseCertificatesDER(xs.Roots...); err != nil {
		return nil, fmt.Errorf("%w: old X.509 CA: %v", ErrBadState, err)
	}
	return newX509Slot(nil, &minted), nil
}

// loadOldJWT reads an old JWT key: its key ID, lifetime and public key.
func (m *Manager) loadOldJWT(js *jwtState) (*jwtSlot, error) {
	if js == nil {
		return nil, nil
	}
	if js.KeyID == "" || js.KeyFile != "" {
		return nil, fmt.Errorf("%w: old JWT key %q has no key ID or names a key file", ErrBadState, js.KeyID)
	}
	return &jwtSlot{kid: js.KeyID, notBefore: js.NotBefore, notAfter: js.NotAfter, pkix: js.PublicKey}, nil
}

func (m *Manager) loadJWT(js *jwtState) (*jwtSlot, error) {
	if js == nil {
		return nil, nil
	}
	if js.KeyID == "" || !js.NotBefore.Before(js.NotAfter) {
		return nil, fmt.Errorf("%w: JWT key %q has no key ID or an empty lifetime", ErrBadState, js.KeyFile)
	}
	key, err := m.readKey(js.KeyFile)
	if err != nil {
		return nil, err
	}
	s, err := newJWTSlot(key, js.KeyID, js.NotBefore, js.NotAfter)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadState, err)
	}
	s.keyFile = js.KeyFile
	return s, nil
}

// saveState writes the state file atomically and then deletes key files it
// no longer references. The caller holds rotateMu.
func (m *Manager) saveState() error {
	sf := stateFile{Version: stateVersion, TrustDomain: m.cfg.TrustDomain.Name()}
	x := func(s *x509Slot) *x509State {
		if s == nil {
			return nil
		}
		xs := &x509State{KeyFile: s.keyFile, Cert: s.cert().Raw, Capped: s.capped}
		for _, c := range s.minted.Intermediates {
			xs.Intermediates = append(xs.Intermediates, c.Raw)
		}
		for _, c := range s.minted.Roots {
			xs.Roots = append(xs.Roots, c.Raw)
		}
		return xs
	}
	j := func(s *jwtSlot) *jwtState {
		if s == nil {
			return nil
		}
		js := &jwtState{KeyFile: s.keyFile, KeyID: s.kid, NotBefore: s.notBefore.UTC(), NotAfter: s.notAfter.UTC()}
		if s.key == nil {
			js.PublicKey = s.pkix
		}
		return js
	}
	sf.X509Current, sf.X509Next, sf.X509Old = x(m.x509Cur), x(m.x509Next), x(m.x509Old)
	sf.JWTCurrent, sf.JWTNext, sf.JWTOld = j(m.jwtCur), j(m.jwtNext), j(m.jwtOld)
	raw, err := json.MarshalIndent(&sf, "", "  ")
	if err != nil {
		return fmt.Errorf("ca: encode state: %w", err)
	}
	if err := writeFileAtomic(m.cfg.Dir, stateFileName, raw); err != nil {
		return fmt.Errorf("ca: write state: %w", err)
	}

	keep := map[string]bool{}
	for _, s := range []*x509Slot{m.x509Cur, m.x509Next} {
		if s != nil {
			keep[s.keyFile] = true
		}
	}
	for _, s := range []*jwtSlot{m.jwtCur, m.jwtNext} {
		if s != nil {
			keep[s.keyFile] = true
		}
	}
	entries, err := os.ReadDir(m.cfg.Dir)
	if err != nil {
		return fmt.Errorf("ca: list key files: %w", err)
	}
	for _, e := range entries {
		if name := e.Name(); strings.HasSuffix(name, keyFileSuffix) && !keep[name] {
			if err := os.Remove(filepath.Join(m.cfg.Dir, name)); err != nil {
				m.log.Warn("ca: remove old key file failed", "file", name, "err", err)
			} else {
				m.log.Info("ca: removed old key file", "file", name)
			}
		}
	}
	return nil
}

// writeKey stores key as a PKCS#8 PEM file (mode 0600) named
// <prefix>-<random>.key.pem in Dir and returns its base name.
func (m *Manager) writeKey(prefix string, key crypto.Signer) (string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", fmt.Errorf("ca: marshal private key: %w", err)
	}
	var id [8]byte
	if _, err := io.ReadFull(m.rand, id[:]); err != nil {
		return "", fmt.Errorf("ca: name key file: %w", err)
	}
	name := prefix + "-" + hex.EncodeToString(id[:]) + keyFileSuffix
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := writeFileAtomic(m.cfg.Dir, name, data); err != nil {
		return "", fmt.Errorf("ca: write key file: %w", err)
	}
	return name, nil
}

func (m *Manager) readKey(name string) (crypto.Signer, error) {
	if name == "" || name != filepath.Base(name) || !strings.HasSuffix(name, keyFileSuffix) {
		return nil, fmt.Errorf("%w: bad key file name %q", ErrBadState, name)
	}
	data, err := os.ReadFile(filepath.Join(m.cfg.Dir, name))
	if err != nil {
		return nil, fmt.Errorf("%w: read key file: %v", ErrBadState, err)
	}
	signer, err := upstream.ParsePrivateKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadState, name, err)
	}
	return signer, nil
}

// ensureDir creates Dir with mode 0700 if it does not exist.
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("ca: create state directory: %w", err)
	}
	return nil
}

// writeFileAtomic writes data to dir/name (mode 0600) through a temporary
// file and a rename, so a crash leaves either the old or the new content.
func writeFileAtomic(dir, name string, data []byte) (err error) {
	if err := ensureDir(dir); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+name+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync() // make the rename durable; best effort where unsupported
		d.Close()
	}
	return nil
}

const keyIDAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// newKeyID returns a random 32-character alphanumeric key ID.
func newKeyID(r io.Reader) (string, error) {
	const n = 32
	out := make([]byte, 0, n)
	buf := make([]byte, n)
	for len(out) < n {
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", fmt.Errorf("ca: generate key ID: %w", err)
		}
		for _, b := range buf {
			// 248 is the largest multiple of 62 below 256: reject above it
			// so that every character is equally likely.
			if b < 248 && len(out) < n {
				out = append(out, keyIDAlphabet[int(b)%len(keyIDAlphabet)])
			}
		}
	}
	return string(out), nil
}
