package vault_test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/vault/api"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/ca"
	"github.com/arborid/arbor/upstream"
	"github.com/arborid/arbor/upstream/internal/fakes"
	"github.com/arborid/arbor/upstream/internal/upstreamtest"
	"github.com/arborid/arbor/upstream/vault"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// env is a fake Vault plus the files a client needs to reach it.
type env struct {
	fake              *fakes.Vault
	clock             *upstreamtest.Clock
	caFile            string
	clientCert        string
	clientKey         string
	k8sTokenFile      string
	clientCertSubject string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	clock := upstreamtest.NewClock(upstreamtest.Epoch)
	// The TLS stack checks the client certificate at the real time, not
	// the test clock's.
	clientCA := upstreamtest.NewRoot(t, "client ca", time.Now(), time.Hour)
	clientKey := upstreamtest.NewKey(t)
	clientCert := clientCA.SignCA(t, clientKey.Public(), pkix.Name{CommonName: "arbor-root"}, nil, time.Now(), time.Hour, upstreamtest.NotCA)
	pool := x509.NewCertPool()
	pool.AddCert(clientCA.Cert)
	f := fakes.NewVault(t, clock.Now, pool)
	dir := t.TempDir()
	e := &env{
		fake: f, clock: clock,
		caFile:       filepath.Join(dir, "vault-ca.pem"),
		clientCert:   filepath.Join(dir, "client.pem"),
		clientKey:    filepath.Join(dir, "client.key"),
		k8sTokenFile: filepath.Join(dir, "sa-token"),
	}
	upstreamtest.WriteFile(t, e.caFile, f.ServerCAPEM())
	upstreamtest.WriteFile(t, e.clientCert, upstreamtest.CertsPEM(clientCert))
	upstreamtest.WriteFile(t, e.clientKey, upstreamtest.KeyPEM(t, clientKey))
	upstreamtest.WriteFile(t, e.k8sTokenFile, []byte(f.K8sJWT+"\n"))
	return e
}

func (e *env) config() vault.Config {
	return vault.Config{
		TrustDomain: td, Address: e.fake.Srv.URL, CACertFile: e.caFile,
		AppRole: &vault.AppRole{RoleID: "role-1", SecretID: "secret-1"},
		Now:     e.clock.Now, Timeout: 10 * time.Second,
	}
}

func (e *env) mint(t *testing.T, a *vault.Authority, ttl time.Duration) (*upstream.MintedCA, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return a.MintX509CA(ctx, upstreamtest.NewKey(t), ttl)
}

func TestMintX509CA(t *testing.T) {
	tests := []struct {
		name      string
		config    func(e *env, c *vault.Config)
		fake      func(f *fakes.Vault)
		wantCalls []string
	}{
		{
			name:      "approle",
			config:    func(e *env, c *vault.Config) {},
			wantCalls: []string{"PUT auth/approle/login", "PUT pki/root/sign-intermediate"},
		},
		{
			name: "static token",
			config: func(e *env, c *vault.Config) {
				c.AppRole, c.Token = nil, "static-token"
			},
			wantCalls: []string{"PUT pki/root/sign-intermediate"},
		},
		{
			name: "tls certificate",
			config: func(e *env, c *vault.Config) {
				c.AppRole = nil
				c.Cert = &vault.CertAuth{Name: "arbor", CertFile: e.clientCert, KeyFile: e.clientKey}
			},
			wantCalls: []string{"PUT auth/cert/login", "PUT pki/root/sign-intermediate"},
		},
		{
			name: "kubernetes",
			config: func(e *env, c *vault.Config) {
				c.AppRole = nil
				c.Kubernetes = &vault.Kubernetes{Role: "arbor", TokenFile: e.k8sTokenFile}
			},
			wantCalls: []string{"PUT auth/kubernetes/login", "PUT pki/root/sign-intermediate"},
		},
		{
			name: "namespace and custom mounts",
			config: func(e *env, c *vault.Config) {
				c.Namespace, c.PKIMount = "team-a/identity", "/pki-arbor/"
				c.AppRole.Mount = "approle-arbor"
			},
			fake: func(f *fakes.Vault) {
				f.Namespace, f.Mount, f.AppRole = "team-a/identity", "pki-arbor", "approle-arbor"
			},
			wantCalls: []string{"PUT auth/approle-arbor/login", "PUT pki-arbor/root/sign-intermediate"},
		},
		{
			name: "insecure skip verify",
			config: func(e *env, c *vault.Config) {
				c.CACertFile, c.InsecureSkipVerify = "", true
			},
			wantCalls: []string{"PUT auth/approle/login", "PUT pki/root/sign-intermediate"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			if tt.fake != nil {
				e.fake.Set(tt.fake)
			}
			cfg := e.config()
			tt.config(e, &cfg)
			a, err := vault.New(cfg)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			minted, err := e.mint(t, a, 2*time.Hour)
			if err != nil {
				t.Fatalf("MintX509CA: %v", err)
			}
			if diff := cmp.Diff(tt.wantCalls, e.fake.Calls()); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
			checkMinted(t, e, minted, 2*time.Hour)
		})
	}
}

func checkMinted(t *testing.T, e *env, m *upstream.MintedCA, ttl time.Duration) {
	t.Helper()
	if len(m.Roots) != 1 || !m.Roots[0].Equal(e.fake.Root.Cert) {
		t.Errorf("roots = %v, want Vault's root", m.Roots)
	}
	if len(m.Intermediates) != 1 || !m.Intermediates[0].Equal(e.fake.Issuer.Cert) {
		t.Errorf("intermediates = %v, want Vault's issuing CA", m.Intermediates)
	}
	if got, want := m.Cert.NotAfter, e.clock.Now().Add(ttl); !got.Equal(want) {
		t.Errorf("NotAfter = %v, want %v", got, want)
	}
	if len(m.Cert.URIs) != 1 || m.Cert.URIs[0].String() != "spiffe://example.org" {
		t.Errorf("URIs = %v, want [spiffe://example.org]", m.Cert.URIs)
	}
	if m.Cert.Subject.CommonName != "example.org intermediate" {
		t.Errorf("subject CN = %q", m.Cert.Subject.CommonName)
	}
}

func TestNamespace(t *testing.T) {
	e := newEnv(t)
	e.fake.Set(func(f *fakes.Vault) { f.Namespace, f.Mount = "team-a/identity", "pki-arbor" })
	cfg := e.config()
	cfg.Namespace, cfg.PKIMount = "team-a/identity", "/pki-arbor/"
	a, err := vault.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.mint(t, a, time.Hour)
	if err != nil {
		t.Fatalf("MintX509CA: %v", err)
	}
	checkMinted(t, e, m, time.Hour)
	if diff := cmp.Diff([]string{"PUT auth/approle/login", "PUT pki-arbor/root/sign-intermediate"}, e.fake.Calls()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}

	// Without the namespace, Vault does not find the mount.
	cfg.Namespace = ""
	a, err = vault.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.mint(t, a, time.Hour)
	var re *api.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusNotFound {
		t.Errorf("MintX509CA outside the namespace: error = %v, want a 404 ResponseError", err)
	}
}

func TestTokenLifecycle(t *testing.T) {
	tests := []struct {
		name      string
		renewable bool
		steps     []time.Duration // clock advance before each mint
		wantCalls [][]string      // auth calls (not the sign call) per mint
	}{
		{
			name: "renewable token renewed past half-life", renewable: true,
			steps: []time.Duration{0, 10 * time.Minute, 25 * time.Minute, 10 * time.Minute},
			wantCalls: [][]string{
				{"PUT auth/approle/login"},
				nil,
				{"PUT auth/token/renew-self"},
				nil,
			},
		},
		{
			name: "non-renewable token replaced by a new login", renewable: false,
			steps: []time.Duration{0, 35 * time.Minute, 10 * time.Minute},
			wantCalls: [][]string{
				{"PUT auth/approle/login"},
				{"PUT auth/approle/login"},
				nil,
			},
		},
		{
			name: "expired token replaced by a new login", renewable: true,
			steps: []time.Duration{0, 2 * time.Hour},
			wantCalls: [][]string{
				{"PUT auth/approle/login"},
				{"PUT auth/approle/login"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.fake.Set(func(f *fakes.Vault) { f.Renewable = tt.renewable })
			a, err := vault.New(e.config())
			if err != nil {
				t.Fatal(err)
			}
			for i, d := range tt.steps {
				e.clock.Add(d)
				e.fake.Reset()
				if _, err := e.mint(t, a, time.Hour); err != nil {
					t.Fatalf("mint %d: %v", i, err)
				}
				want := append(append([]string(nil), tt.wantCalls[i]...), "PUT pki/root/sign-intermediate")
				if diff := cmp.Diff(want, e.fake.Calls()); diff != "" {
					t.Errorf("mint %d calls (-want +got):\n%s", i, diff)
				}
			}
		})
	}
}

func TestRevokedTokenLogsInAgain(t *testing.T) {
	e := newEnv(t)
	a, err := vault.New(e.config())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.mint(t, a, time.Hour); err != nil {
		t.Fatal(err)
	}
	e.fake.Set(func(f *fakes.Vault) { clear(f.Tokens) })
	e.fake.Reset()
	if _, err := e.mint(t, a, time.Hour); err != nil {
		t.Fatalf("MintX509CA after revocation: %v", err)
	}
	want := []string{"PUT pki/root/sign-intermediate", "PUT auth/approle/login", "PUT pki/root/sign-intermediate"}
	if diff := cmp.Diff(want, e.fake.Calls()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name       string
		config     func(c *vault.Config)
		fake       func(f *fakes.Vault)
		wantErr    error
		wantStatus int
		wantText   string
	}{
		{"bad secret id", func(c *vault.Config) { c.AppRole.SecretID = "wrong" }, nil, vault.ErrAuth, http.StatusBadRequest, "invalid role or secret ID"},
		{"kubernetes token refused", func(c *vault.Config) {
			c.AppRole, c.Kubernetes = nil, &vault.Kubernetes{Role: "other", TokenFile: "/dev/null"}
		}, nil, vault.ErrAuth, http.StatusForbidden, "permission denied"},
		{"sign fails", nil, func(f *fakes.Vault) { f.SignStatus = http.StatusInternalServerError }, nil, http.StatusInternalServerError, "internal error"},
		{"sealed", nil, func(f *fakes.Vault) { f.Sealed = true }, vault.ErrAuth, http.StatusServiceUnavailable, "Vault is sealed"},
		{"not a CA", nil, func(f *fakes.Vault) { f.Defect = upstreamtest.NotCA }, upstream.ErrNotCA, 0, ""},
		{"lifetime too short", nil, func(f *fakes.Vault) { f.Defect = upstreamtest.ShortLife }, upstream.ErrLifetimeTooShort, 0, ""},
		{"mount max TTL too short", nil, func(f *fakes.Vault) { f.MaxTTL = 20 * time.Minute }, upstream.ErrLifetimeTooShort, 0, ""},
		{"wrong trust domain", nil, func(f *fakes.Vault) { f.Defect = upstreamtest.WrongTD }, upstream.ErrWrongTrustDomain, 0, ""},
		{"chain does not verify", nil, func(f *fakes.Vault) { f.Defect = upstreamtest.ForeignChain }, upstream.ErrChainInvalid, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			if tt.fake != nil {
				e.fake.Set(tt.fake)
			}
			cfg := e.config()
			if tt.config != nil {
				tt.config(&cfg)
			}
			a, err := vault.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = e.mint(t, a, time.Hour)
			if err == nil {
				t.Fatal("MintX509CA succeeded, want an error")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error = %v, want %v", err, tt.wantErr)
			}
			if tt.wantStatus != 0 {
				var re *api.ResponseError
				if !errors.As(err, &re) || re.StatusCode != tt.wantStatus || !strings.Contains(strings.Join(re.Errors, " "), tt.wantText) {
					t.Errorf("error = %v, want a ResponseError %d with %q", err, tt.wantStatus, tt.wantText)
				}
			}
			if errors.Is(tt.wantErr, upstream.ErrNotCA) && !errors.Is(err, ca.ErrBadUpstream) {
				t.Errorf("refusal %v does not wrap ca.ErrBadUpstream", err)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	base := vault.Config{TrustDomain: td, Address: "https://vault:8200", Token: "t"}
	tests := []struct {
		name string
		mod  func(c *vault.Config)
		want string
	}{
		{"no trust domain", func(c *vault.Config) { c.TrustDomain = spiffeid.TrustDomain{} }, "trust domain is required"},
		{"no address", func(c *vault.Config) { c.Address = "" }, "address is required"},
		{"no auth", func(c *vault.Config) { c.Token = "" }, "exactly one auth method"},
		{"two auths", func(c *vault.Config) { c.AppRole = &vault.AppRole{RoleID: "r"} }, "exactly one auth method"},
		{"approle without role id", func(c *vault.Config) { c.Token, c.AppRole = "", &vault.AppRole{} }, "role_id is required"},
		{"kubernetes without role", func(c *vault.Config) { c.Token, c.Kubernetes = "", &vault.Kubernetes{} }, "role is required"},
		{"cert without files", func(c *vault.Config) { c.Token, c.Cert = "", &vault.CertAuth{} }, "client_cert_path and client_key_path are required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.mod(&c)
			if _, err := vault.New(c); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New error = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestHealthy(t *testing.T) {
	e := newEnv(t)
	a, err := vault.New(e.config())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Healthy(ctx); err != nil {
		t.Errorf("Healthy = %v, want nil", err)
	}
	e.fake.Set(func(f *fakes.Vault) { f.Sealed = true })
	if err := a.Healthy(ctx); err == nil || !strings.Contains(err.Error(), "sealed") {
		t.Errorf("Healthy on a sealed Vault = %v, want sealed", err)
	}
}

func TestTLSVerification(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.CACertFile = ""
	a, err := vault.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.mint(t, a, time.Hour)
	var uerr x509.UnknownAuthorityError
	if !errors.As(err, &uerr) {
		t.Errorf("MintX509CA against an unknown server certificate: error = %v, want x509.UnknownAuthorityError", err)
	}
	if len(e.fake.Calls()) != 0 {
		t.Errorf("the fake saw requests %v over an unverified connection", e.fake.Calls())
	}
}

func TestManagerKeepsCurrentCA(t *testing.T) {
	for _, tt := range []struct {
		name    string
		breakIt func(e *env)
		wantErr error
	}{
		{"vault unreachable", func(e *env) { e.fake.Srv.Close() }, nil},
		{"vault returns a CA for another trust domain", func(e *env) { e.fake.Set(func(f *fakes.Vault) { f.Defect = upstreamtest.WrongTD }) }, upstream.ErrWrongTrustDomain},
		{"vault returns a non-CA", func(e *env) { e.fake.Set(func(f *fakes.Vault) { f.Defect = upstreamtest.NotCA }) }, ca.ErrBadUpstream},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			a, err := vault.New(e.config())
			if err != nil {
				t.Fatal(err)
			}
			upstreamtest.Scenario{
				TrustDomain: td, Upstream: a, Clock: e.clock, CATTL: time.Hour, Root: e.fake.Root.Cert,
				Break: func() { tt.breakIt(e) }, WantErr: tt.wantErr,
			}.KeepsCurrentCA(t)
		})
	}
}
