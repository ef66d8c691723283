package ca_test

import (
	"context"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/internal/datastore"
	"github.com/arborid/arbor/root"
)

func keyFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRestartKeepsAuthorities(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	e := newEnv(t, func(c *ca.Config) { c.Dir = dir })
	a, _ := e.m.X509CA()
	k := e.m.Status().JWTKey
	want := e.bundles.bundle(t, td)
	writes := e.bundles.Writes()

	// Permissions: the directory 0700, keys and state 0600, keys PKCS#8.
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode = %v, %v; want 0700", fi.Mode().Perm(), err)
	}
	files := keyFiles(t, dir)
	if len(files) != 2 {
		t.Errorf("key files = %v, want one X.509 CA key and one JWT key", files)
	}
	for _, f := range append(files, filepath.Join(dir, "ca-state.json")) {
		fi, err := os.Stat(f)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, %v; want 0600", filepath.Base(f), fi.Mode().Perm(), err)
		}
	}
	raw, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := pem.Decode(raw); b == nil || b.Type != "PRIVATE KEY" {
		t.Errorf("key file is not a PKCS#8 PEM block")
	}

	// Restart several times, and call Init again on the same manager.
	for i := range 3 {
		m := e.start(t)
		if err := m.Init(context.Background()); err != nil {
			t.Fatalf("second Init: %v", err)
		}
		cur, _ := m.X509CA()
		if !cur.Equal(a) {
			t.Errorf("restart %d: active CA serial %v, want %v", i, cur.SerialNumber, a.SerialNumber)
		}
		if got := m.Status().JWTKey; got.KeyID != k.KeyID || !got.NotAfter.Equal(k.NotAfter) {
			t.Errorf("restart %d: JWT key %q until %v, want %q until %v", i, got.KeyID, got.NotAfter, k.KeyID, k.NotAfter)
		}
	}
	if got := e.bundles.bundle(t, td); !cmp.Equal(want, got, cmp.Comparer(func(a, b spiffeid.TrustDomain) bool { return a == b })) {
		t.Errorf("bundle changed across restarts: %d X.509 and %d JWT authorities, sequence %d; was %d, %d, %d",
			len(got.X509Authorities), len(got.JWTAuthorities), got.SequenceNumber,
			len(want.X509Authorities), len(want.JWTAuthorities), want.SequenceNumber)
	}
	if got := e.bundles.Writes(); got != writes {
		t.Errorf("restarts wrote the bundle %d times, want 0", got-writes)
	}
	if got := keyFiles(t, dir); len(got) != 2 {
		t.Errorf("key files after restarts = %v, want 2", got)
	}
}

func TestRestartKeepsPreparedAuthorities(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, func(c *ca.Config) { c.Dir = dir })
	// CA TTL 6h: past both halves (the CA's NotBefore is backdated 10s).
	e.rotateAt(t, epoch.Add(3*time.Hour))
	st := e.m.Status()
	if st.NextX509CA == nil || st.NextJWTKey == nil {
		t.Fatalf("nothing prepared at half-life")
	}
	if got := keyFiles(t, dir); len(got) != 4 {
		t.Errorf("key files with prepared authorities = %d, want 4", len(got))
	}

	e.m = e.start(t) // restart
	got := e.m.Status()
	if got.NextX509CA == nil || !got.NextX509CA.Equal(st.NextX509CA) || got.NextJWTKey == nil || got.NextJWTKey.KeyID != st.NextJWTKey.KeyID {
		t.Fatalf("prepared authorities not restored after restart")
	}
	e.rotateAt(t, epoch.Add(5*time.Hour))
	if cur, _ := e.m.X509CA(); !cur.Equal(st.NextX509CA) {
		t.Errorf("restored prepared CA not activated")
	}
	if got := e.m.Status().JWTKey.KeyID; got != st.NextJWTKey.KeyID {
		t.Errorf("restored prepared JWT key not activated")
	}
	if got := keyFiles(t, dir); len(got) != 2 {
		t.Errorf("key files after activation = %d, want the 2 active ones (old keys deleted)", len(got))
	}
}

func TestRestartAfterLongDowntime(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, func(c *ca.Config) { c.Dir = dir })
	a, _ := e.m.X509CA()
	k := e.m.Status().JWTKey
	e.clock.Set(a.NotAfter.Add(ca.DefaultCATTL))
	e.m = e.start(t)
	cur, _ := e.m.X509CA()
	if cur.Equal(a) || !cur.NotAfter.After(e.clock.Now()) {
		t.Errorf("expired CA still active after a long downtime")
	}
	if got := e.m.Status().JWTKey.KeyID; got == k.KeyID {
		t.Errorf("expired JWT key still active after a long downtime")
	}
}

func TestBadState(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
	}{
		{"corrupt json", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "ca-state.json"), []byte("{"), 0o600)
		}},
		{"other trust domain", func(t *testing.T, dir string) {
			e := newEnv(t, func(c *ca.Config) {
				c.Dir = dir
				c.TrustDomain = spiffeid.RequireTrustDomainFromString("other.org")
				c.Upstream = &root.SelfSigned{TrustDomain: c.TrustDomain, Now: c.Now}
			})
			_ = e
		}},
		{"missing key file", func(t *testing.T, dir string) {
			newEnv(t, func(c *ca.Config) { c.Dir = dir })
			for _, f := range keyFiles(t, dir) {
				if strings.Contains(filepath.Base(f), "jwt") {
					os.Remove(f)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(t, dir)
			m, err := ca.New(ca.Config{
				TrustDomain: td,
				Upstream:    &root.SelfSigned{TrustDomain: td},
				Bundles:     newMemBundles(t),
				Dir:         dir,
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Init(context.Background()); !errors.Is(err, ca.ErrBadState) {
				t.Errorf("Init error = %v, want ErrBadState", err)
			}
		})
	}
}

func TestInMemoryWritesNoFiles(t *testing.T) {
	cwd := t.TempDir()
	t.Chdir(cwd)
	e := newEnv(t, nil)
	a, _ := e.m.X509CA()
	e.rotateAt(t, halfLife(a))
	entries, err := os.ReadDir(cwd)
	if err != nil || len(entries) != 0 {
		t.Errorf("in-memory manager wrote files: %v, %v", entries, err)
	}
	var _ datastore.BundleStore = e.bundles
}
