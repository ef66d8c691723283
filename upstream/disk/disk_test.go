package disk_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/upstream"
	"github.com/arborid/arbor/upstream/disk"
	"github.com/arborid/arbor/upstream/internal/upstreamtest"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

type files struct {
	cert, key, bundle string
}

func writeFiles(t *testing.T, dir string, certPEM, keyPEM, bundlePEM []byte) files {
	t.Helper()
	f := files{cert: filepath.Join(dir, "ca.pem"), key: filepath.Join(dir, "ca.key")}
	upstreamtest.WriteFile(t, f.cert, certPEM)
	upstreamtest.WriteFile(t, f.key, keyPEM)
	if bundlePEM != nil {
		f.bundle = filepath.Join(dir, "bundle.pem")
		upstreamtest.WriteFile(t, f.bundle, bundlePEM)
	}
	return f
}

func names(certs []*x509.Certificate) []string {
	var out []string
	for _, c := range certs {
		out = append(out, c.Subject.CommonName)
	}
	return out
}

func TestMintX509CA(t *testing.T) {
	now := upstreamtest.Epoch
	root := upstreamtest.NewRoot(t, "root", now, 100*time.Hour)
	inter := root.NewIntermediate(t, "inter", now, 50*time.Hour)
	shortInter := root.NewIntermediate(t, "short", now, 45*time.Minute)
	tests := []struct {
		name              string
		cert, bundle      []byte
		key               []byte
		wantIntermediates []string
		wantRoots         []string
		wantNotAfter      time.Time
	}{
		{
			name: "self-signed upstream", cert: upstreamtest.CertsPEM(root.Cert), key: upstreamtest.KeyPEM(t, root.Key),
			wantRoots: []string{"root"}, wantNotAfter: now.Add(time.Hour),
		},
		{
			name: "intermediate with chain in cert_file", cert: upstreamtest.CertsPEM(inter.Chain...), key: upstreamtest.KeyPEM(t, inter.Key),
			wantIntermediates: []string{"inter"}, wantRoots: []string{"root"}, wantNotAfter: now.Add(time.Hour),
		},
		{
			name: "intermediate with root in bundle_file", cert: upstreamtest.CertsPEM(inter.Cert), key: upstreamtest.KeyPEM(t, inter.Key),
			bundle:            upstreamtest.CertsPEM(root.Cert),
			wantIntermediates: []string{"inter"}, wantRoots: []string{"root"}, wantNotAfter: now.Add(time.Hour),
		},
		{
			name: "lifetime capped by the upstream CA", cert: upstreamtest.CertsPEM(shortInter.Chain...), key: upstreamtest.KeyPEM(t, shortInter.Key),
			wantIntermediates: []string{"short"}, wantRoots: []string{"root"}, wantNotAfter: shortInter.Cert.NotAfter,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := writeFiles(t, t.TempDir(), tt.cert, tt.key, tt.bundle)
			a, err := disk.New(disk.Config{TrustDomain: td, CertFile: f.cert, KeyFile: f.key, BundleFile: f.bundle, Now: func() time.Time { return now }})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			key := upstreamtest.NewKey(t)
			minted, err := a.MintX509CA(context.Background(), key, time.Hour)
			if err != nil {
				t.Fatalf("MintX509CA: %v", err)
			}
			c := minted.Cert
			if got := names(minted.Intermediates); !cmp.Equal(got, tt.wantIntermediates) {
				t.Errorf("intermediates = %v, want %v", got, tt.wantIntermediates)
			}
			if got := names(minted.Roots); !cmp.Equal(got, tt.wantRoots) {
				t.Errorf("roots = %v, want %v", got, tt.wantRoots)
			}
			if !c.NotAfter.Equal(tt.wantNotAfter) {
				t.Errorf("NotAfter = %v, want %v", c.NotAfter, tt.wantNotAfter)
			}
			if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://example.org" {
				t.Errorf("URIs = %v, want [spiffe://example.org]", c.URIs)
			}
			if !c.IsCA || c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
				t.Errorf("IsCA=%v KeyUsage=%#x, want CA with keyCertSign|cRLSign", c.IsCA, c.KeyUsage)
			}
			if !key.Public().(*ecdsa.PublicKey).Equal(c.PublicKey) {
				t.Errorf("certificate is not for the requested key")
			}
			opts := x509.VerifyOptions{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool(), CurrentTime: now}
			opts.Roots.AddCert(root.Cert)
			for _, ic := range minted.Intermediates {
				opts.Intermediates.AddCert(ic)
			}
			if _, err := c.Verify(opts); err != nil {
				t.Errorf("minted CA does not verify to the external root: %v", err)
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	now := upstreamtest.Epoch
	root := upstreamtest.NewRoot(t, "root", now, 100*time.Hour)
	other := upstreamtest.NewRoot(t, "other root", now, 100*time.Hour)
	inter := root.NewIntermediate(t, "inter", now, 50*time.Hour)
	short := root.NewIntermediate(t, "short", now, 20*time.Minute)
	notCAKey := upstreamtest.NewKey(t)
	notCA := root.SignCA(t, notCAKey.Public(), inter.Cert.Subject, nil, now, 10*time.Hour, upstreamtest.NotCA)
	wrongTDKey := upstreamtest.NewKey(t)
	wrongTD := root.SignCA(t, wrongTDKey.Public(), inter.Cert.Subject, nil, now, 10*time.Hour, upstreamtest.WrongTD)
	tests := []struct {
		name              string
		cert, key, bundle []byte
		wantNewErr        error // from New
		wantMintErr       error // from MintX509CA
	}{
		{"not a CA", upstreamtest.CertsPEM(notCA, root.Cert), upstreamtest.KeyPEM(t, notCAKey), nil, upstream.ErrNotCA, nil},
		{"wrong trust domain", upstreamtest.CertsPEM(wrongTD, root.Cert), upstreamtest.KeyPEM(t, wrongTDKey), nil, upstream.ErrWrongTrustDomain, nil},
		{"key does not match", upstreamtest.CertsPEM(inter.Chain...), upstreamtest.KeyPEM(t, root.Key), nil, disk.ErrBadFiles, nil},
		{"no root", upstreamtest.CertsPEM(inter.Cert), upstreamtest.KeyPEM(t, inter.Key), nil, disk.ErrBadFiles, nil},
		{"not a key", upstreamtest.CertsPEM(root.Cert), upstreamtest.CertsPEM(root.Cert), nil, disk.ErrBadFiles, nil},
		{"chain does not verify", upstreamtest.CertsPEM(inter.Cert), upstreamtest.KeyPEM(t, inter.Key), upstreamtest.CertsPEM(other.Cert), nil, upstream.ErrChainInvalid},
		{"lifetime too short", upstreamtest.CertsPEM(short.Chain...), upstreamtest.KeyPEM(t, short.Key), nil, nil, upstream.ErrLifetimeTooShort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := writeFiles(t, t.TempDir(), tt.cert, tt.key, tt.bundle)
			a, err := disk.New(disk.Config{TrustDomain: td, CertFile: f.cert, KeyFile: f.key, BundleFile: f.bundle, Now: func() time.Time { return now }})
			if tt.wantNewErr != nil {
				if !errors.Is(err, tt.wantNewErr) {
					t.Fatalf("New error = %v, want %v", err, tt.wantNewErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			_, err = a.MintX509CA(context.Background(), upstreamtest.NewKey(t), time.Hour)
			if !errors.Is(err, tt.wantMintErr) || !errors.Is(err, ca.ErrBadUpstream) {
				t.Fatalf("MintX509CA error = %v, want %v and ca.ErrBadUpstream", err, tt.wantMintErr)
			}
		})
	}
}

func TestReloadOnChange(t *testing.T) {
	now := upstreamtest.Epoch
	first := upstreamtest.NewRoot(t, "first", now, 100*time.Hour)
	second := upstreamtest.NewRoot(t, "second", now, 100*time.Hour)
	f := writeFiles(t, t.TempDir(), upstreamtest.CertsPEM(first.Cert), upstreamtest.KeyPEM(t, first.Key), nil)
	a, err := disk.New(disk.Config{TrustDomain: td, CertFile: f.cert, KeyFile: f.key, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	mint := func() string {
		t.Helper()
		m, err := a.MintX509CA(context.Background(), upstreamtest.NewKey(t), time.Hour)
		if err != nil {
			t.Fatalf("MintX509CA: %v", err)
		}
		if m.Cert.Issuer.CommonName != m.Roots[0].Subject.CommonName {
			t.Errorf("issuer %q, root %q", m.Cert.Issuer.CommonName, m.Roots[0].Subject.CommonName)
		}
		return m.Cert.Issuer.CommonName
	}
	if got := mint(); got != "first" {
		t.Fatalf("issuer = %q, want first", got)
	}
	// Replace both files; give them a later mtime so the change is visible
	// even on a file system with coarse timestamps.
	upstreamtest.WriteFile(t, f.cert, upstreamtest.CertsPEM(second.Cert))
	upstreamtest.WriteFile(t, f.key, upstreamtest.KeyPEM(t, second.Key))
	later := time.Now().Add(time.Minute)
	for _, p := range []string{f.cert, f.key} {
		if err := os.Chtimes(p, later, later); err != nil {
			t.Fatal(err)
		}
	}
	if got := mint(); got != "second" {
		t.Errorf("issuer after the files changed = %q, want second", got)
	}

	// A half-written replacement fails the mint rather than silently
	// keeping the old CA.
	upstreamtest.WriteFile(t, f.key, []byte("garbage"))
	if err := os.Chtimes(f.key, later.Add(time.Minute), later.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.MintX509CA(context.Background(), upstreamtest.NewKey(t), time.Hour); !errors.Is(err, disk.ErrBadFiles) {
		t.Errorf("MintX509CA with a broken key file: error = %v, want ErrBadFiles", err)
	}
}

func TestKeyFormats(t *testing.T) {
	now := upstreamtest.Epoch
	ecKey, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		key  crypto.Signer
		pem  []byte
	}{
		{"SEC 1 EC PRIVATE KEY", ecKey, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})},
		{"PKCS#1 RSA PRIVATE KEY", rsaKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})},
		{"PKCS#8 PRIVATE KEY", ecKey, upstreamtest.KeyPEM(t, ecKey)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := upstreamtest.NewRootWithKey(t, "root", now, 10*time.Hour, tt.key)
			f := writeFiles(t, t.TempDir(), upstreamtest.CertsPEM(root.Cert), tt.pem, nil)
			a, err := disk.New(disk.Config{TrustDomain: td, CertFile: f.cert, KeyFile: f.key, Now: func() time.Time { return now }})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			m, err := a.MintX509CA(context.Background(), upstreamtest.NewKey(t), time.Hour)
			if err != nil {
				t.Fatalf("MintX509CA: %v", err)
			}
			if err := m.Cert.CheckSignatureFrom(root.Cert); err != nil {
				t.Errorf("minted CA not signed by the upstream key: %v", err)
			}
		})
	}
}

func TestManagerKeepsCurrentCA(t *testing.T) {
	root := upstreamtest.NewRoot(t, "root", upstreamtest.Epoch, 100*time.Hour)
	for _, tt := range []struct {
		name    string
		breakIt func(f files)
		wantErr error
	}{
		{"files removed", func(f files) { os.Remove(f.cert) }, fs.ErrNotExist},
		{"upstream CA about to expire", func(f files) {
			short := root.NewIntermediate(t, "short", upstreamtest.Epoch.Add(31*time.Minute), 10*time.Minute)
			upstreamtest.WriteFile(t, f.cert, upstreamtest.CertsPEM(short.Chain...))
			upstreamtest.WriteFile(t, f.key, upstreamtest.KeyPEM(t, short.Key))
			later := time.Now().Add(time.Minute)
			os.Chtimes(f.cert, later, later)
			os.Chtimes(f.key, later, later)
		}, upstream.ErrLifetimeTooShort},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clock := upstreamtest.NewClock(upstreamtest.Epoch)
			f := writeFiles(t, t.TempDir(), upstreamtest.CertsPEM(root.Cert), upstreamtest.KeyPEM(t, root.Key), nil)
			a, err := disk.New(disk.Config{TrustDomain: td, CertFile: f.cert, KeyFile: f.key, Now: clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			upstreamtest.Scenario{
				TrustDomain: td, Upstream: a, Clock: clock, CATTL: time.Hour, Root: root.Cert,
				Break: func() { tt.breakIt(f) }, WantErr: tt.wantErr,
			}.KeepsCurrentCA(t)
		})
	}
}

// TestErrorsNameTheTopologyAttributes: the errors of the disk upstream name
// the files as the topology's upstream "disk" block does (cert_file_path,
// key_file_path, bundle_file_path), so a user knows which line to fix.
func TestErrorsNameTheTopologyAttributes(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		cfg  disk.Config
		want string
	}{
		{disk.Config{TrustDomain: td, KeyFile: "k.pem"}, "cert_file_path is required"},
		{disk.Config{TrustDomain: td, CertFile: "c.pem"}, "key_file_path is required"},
		{disk.Config{TrustDomain: td, CertFile: dir + "/missing.pem", KeyFile: dir + "/missing-key.pem"}, "cert_file_path"},
	} {
		_, err := disk.New(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want an error naming %s", c.cfg, err, c.want)
		}
	}
}
