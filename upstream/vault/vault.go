// Package vault is the upstream adapter for HashiCorp Vault's PKI secrets
// engine: the root tier's CA certificate is signed by Vault with
// pki/root/sign-intermediate on a configurable mount and namespace, and the
// CA chain Vault returns becomes the trust domain's upstream roots. The
// adapter logs in with a token, AppRole, a TLS client certificate or a
// Kubernetes service account token, renews its token while it can and logs
// in again when it cannot.
package vault

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/upstream"
)

var _ upstream.Authority = (*Authority)(nil)

// Defaults for the zero values of Config.
const (
	DefaultPKIMount             = "pki"
	DefaultAppRoleMount         = "approle"
	DefaultCertMount            = "cert"
	DefaultKubernetesMount      = "kubernetes"
	DefaultKubernetesTokenFile  = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	DefaultTimeout              = 30 * time.Second
	defaultRenewFractionPercent = 50
)

// ErrAuth is wrapped by errors about logging in to Vault or renewing the
// token.
var ErrAuth = errors.New("vault: authentication failed")

// Config configures an Authority. It must not be modified after New.
// Exactly one of Token, AppRole, Cert and Kubernetes must be set.
type Config struct {
	// TrustDomain of the tier. Required.
	TrustDomain spiffeid.TrustDomain
	// Address of Vault, e.g. "https://vault.example.org:8200". Required.
	Address string
	// Namespace (Vault Enterprise / HCP), sent as X-Vault-Namespace on
	// every request; "" means the root namespace.
	Namespace string
	// PKIMount is the path of the PKI secrets engine; "" means "pki".
	PKIMount string
	// CACertFile verifies Vault's TLS certificate (PEM); "" means the
	// system roots.
	CACertFile string
	// TLSServerName overrides the name checked in Vault's TLS certificate.
	TLSServerName string
	// InsecureSkipVerify disables the verification of Vault's TLS
	// certificate. For tests only.
	InsecureSkipVerify bool

	// Token is a Vault token used as is: it is not renewed, so give a
	// periodic token or renew it elsewhere.
	Token string
	// AppRole logs in with a role ID and secret ID.
	AppRole *AppRole
	// Cert logs in with a TLS client certificate.
	Cert *CertAuth
	// Kubernetes logs in with a Kubernetes service account token.
	Kubernetes *Kubernetes

	// Subject of the tier's CA certificates (in the CSR, used with
	// use_csr_values); the zero value means O=arbor, CN=<td> intermediate.
	Subject pkix.Name
	// Timeout bounds each request to Vault; zero means 30s. Requests are
	// not retried here: the CA manager asks again at its next tick.
	Timeout time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Logger receives state changes; nil discards them.
	Logger *slog.Logger
}

// AppRole is the AppRole auth method.
type AppRole struct {
	// Mount of the auth method; "" means "approle".
	Mount string
	// RoleID is required.
	RoleID string
	// SecretID; "" for a role without bind_secret_id.
	SecretID string
}

// CertAuth is the TLS certificate auth method.
type CertAuth struct {
	// Mount of the auth method; "" means "cert".
	Mount string
	// Name of the certificate role to authenticate against; "" lets Vault
	// try every role.
	Name string
	// CertFile and KeyFile hold the client certificate and its key (PEM).
	// Required. They are read once, at New.
	CertFile string
	KeyFile  string
}

// Kubernetes is the Kubernetes auth method.
type Kubernetes struct {
	// Mount of the auth method; "" means "kubernetes".
	Mount string
	// Role to log in as. Required.
	Role string
	// TokenFile holds the service account JWT; it is read at every login
	// (projected tokens rotate). "" means the pod's default token path.
	TokenFile string
}

// Authority has Vault sign the tier's CA certificates.
type Authority struct {
	cfg    Config
	now    func() time.Time
	log    *slog.Logger
	client *api.Client
	login  func(ctx context.Context) (*api.Secret, error) // nil for a static token

	mu        sync.Mutex // serializes token handling and minting
	token     string
	renewable bool
	ttl       time.Duration // zero: no known expiry
	obtained  time.Time
}

// New checks cfg and builds the Vault client. It does not call Vault.
func New(cfg Config) (*Authority, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("vault: trust domain is required")
	}
	if cfg.Address == "" {
		return nil, errors.New("vault: address is required")
	}
	if _, err := url.Parse(cfg.Address); err != nil {
		return nil, fmt.Errorf("vault: address: %w", err)
	}
	n := 0
	for _, set := range []bool{cfg.Token != "", cfg.AppRole != nil, cfg.Cert != nil, cfg.Kubernetes != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("vault: exactly one auth method (token, approle, cert, kubernetes) is required, got %d", n)
	}
	if cfg.PKIMount == "" {
		cfg.PKIMount = DefaultPKIMount
	}
	cfg.PKIMount = strings.Trim(cfg.PKIMount, "/")
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	a := &Authority{cfg: cfg, now: cfg.Now, log: cfg.Logger}
	if a.now == nil {
		a.now = time.Now
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}

	vc := api.DefaultConfig() // also reads VAULT_* variables; what cfg sets wins
	vc.Address = cfg.Address
	vc.Timeout = cfg.Timeout
	vc.MaxRetries = 0
	tc := &api.TLSConfig{CACert: cfg.CACertFile, TLSServerName: cfg.TLSServerName, Insecure: cfg.InsecureSkipVerify}
	if c := cfg.Cert; c != nil {
		if c.CertFile == "" || c.KeyFile == "" {
			return nil, errors.New("vault: cert auth: client_cert_path and client_key_path are required")
		}
		tc.ClientCert, tc.ClientKey = c.CertFile, c.KeyFile
	}
	if err := vc.ConfigureTLS(tc); err != nil {
		return nil, fmt.Errorf("vault: TLS: %w", err)
	}
	client, err := api.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	client.ClearToken()
	if cfg.Namespace != "" {
		client.SetNamespace(cfg.Namespace)
	} else {
		client.ClearNamespace()
	}
	a.client = client

	switch {
	case cfg.Token != "":
		a.token = cfg.Token
		client.SetToken(cfg.Token)
	case cfg.AppRole != nil:
		r := *cfg.AppRole
		if r.RoleID == "" {
			return nil, errors.New("vault: approle auth: role_id is required")
		}
		mount := mountOr(r.Mount, DefaultAppRoleMount)
		a.login = func(ctx context.Context) (*api.Secret, error) {
			body := map[string]any{"role_id": r.RoleID}
			if r.SecretID != "" {
				body["secret_id"] = r.SecretID
			}
			return client.Logical().WriteWithContext(ctx, "auth/"+mount+"/login", body)
		}
	case cfg.Cert != nil:
		c := *cfg.Cert
		mount := mountOr(c.Mount, DefaultCertMount)
		a.login = func(ctx context.Context) (*api.Secret, error) {
			body := map[string]any{}
			if c.Name != "" {
				body["name"] = c.Name
			}
			return client.Logical().WriteWithContext(ctx, "auth/"+mount+"/login", body)
		}
	case cfg.Kubernetes != nil:
		k := *cfg.Kubernetes
		if k.Role == "" {
			return nil, errors.New("vault: kubernetes auth: role is required")
		}
		if k.TokenFile == "" {
			k.TokenFile = DefaultKubernetesTokenFile
		}
		mount := mountOr(k.Mount, DefaultKubernetesMount)
		a.login = func(ctx context.Context) (*api.Secret, error) {
			jwt, err := os.ReadFile(k.TokenFile)
			if err != nil {
				return nil, fmt.Errorf("reading the service account token: %w", err)
			}
			return client.Logical().WriteWithContext(ctx, "auth/"+mount+"/login", map[string]any{
				"role": k.Role, "jwt": strings.TrimSpace(string(jwt)),
			})
		}
	}
	return a, nil
}

func mountOr(m, def string) string {
	if m = strings.Trim(m, "/"); m == "" {
		return def
	}
	return m
}

// Healthy reports whether Vault answers sys/health as initialized and
// unsealed. It is meant for health checks; MintX509CA does not call it.
func (a *Authority) Healthy(ctx context.Context) error {
	h, err := a.client.Sys().HealthWithContext(ctx)
	if err != nil {
		return fmt.Errorf("vault: health: %w", err)
	}
	switch {
	case !h.Initialized:
		return errors.New("vault: health: not initialized")
	case h.Sealed:
		return errors.New("vault: health: sealed")
	}
	return nil
}

// MintX509CA has Vault sign an intermediate CA certificate for key with
// pki/root/sign-intermediate, and returns it with Vault's CA chain: the
// self-signed certificates of the chain (or, if there is none, its topmost
// certificate) are the roots.
func (a *Authority) MintX509CA(ctx context.Context, key crypto.Signer, ttl time.Duration) (*upstream.MintedCA, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("vault: ttl must be positive, got %v", ttl)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	subject := a.cfg.Subject
	if len(subject.ToRDNSequence()) == 0 {
		subject = pkix.Name{Organization: []string{"arbor"}, CommonName: a.cfg.TrustDomain.Name() + " intermediate"}
	}
	tdURI := upstream.TrustDomainURI(a.cfg.TrustDomain)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject, URIs: []*url.URL{tdURI}}, key)
	if err != nil {
		return nil, fmt.Errorf("vault: create CSR: %w", err)
	}
	body := map[string]any{
		"csr":                  string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})),
		"common_name":          subject.CommonName,
		"uri_sans":             tdURI.String(),
		"ttl":                  fmt.Sprintf("%ds", int64(ttl/time.Second)),
		"format":               "pem",
		"use_csr_values":       true,
		"exclude_cn_from_sans": true,
	}
	if err := a.ensureToken(ctx); err != nil {
		return nil, err
	}
	path := a.cfg.PKIMount + "/root/sign-intermediate"
	secret, err := a.client.Logical().WriteWithContext(ctx, path, body)
	if isPermissionDenied(err) && a.login != nil {
		// The token may have been revoked or expired early: log in once more.
		a.log.Info("vault: permission denied; logging in again", "err", err)
		if lerr := a.doLogin(ctx); lerr != nil {
			return nil, lerr
		}
		secret, err = a.client.Logical().WriteWithContext(ctx, path, body)
	}
	if err != nil {
		return nil, fmt.Errorf("vault: %s: %w", path, err)
	}
	minted, err := a.parseSigned(secret)
	if err != nil {
		return nil, fmt.Errorf("vault: %s: %w", path, err)
	}
	granted, err := upstream.Validate(minted, key.Public(), a.cfg.TrustDomain, ttl, a.now())
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	upstream.LogMinted(a.log, "vault", minted, ttl, granted)
	return minted, nil
}

// parseSigned reads the certificate, issuing_ca and ca_chain of a
// sign-intermediate response.
func (a *Authority) parseSigned(s *api.Secret) (*upstream.MintedCA, error) {
	if s == nil || s.Data == nil {
		return nil, errors.New("empty response")
	}
	certPEM, _ := s.Data["certificate"].(string)
	if certPEM == "" {
		return nil, errors.New("response has no certificate")
	}
	certs, err := upstream.ParseCertificatesPEM([]byte(certPEM))
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	// With format=pem, certificate is the CA certificate alone; tolerate a
	// bundle by treating the rest as chain.
	var chain []*x509.Certificate
	chain = upstream.AppendUnique(chain, certs[1:]...)
	if raw, ok := s.Data["ca_chain"].([]any); ok {
		for i, v := range raw {
			p, _ := v.(string)
			cs, err := upstream.ParseCertificatesPEM([]byte(p))
			if err != nil {
				return nil, fmt.Errorf("ca_chain[%d]: %w", i, err)
			}
			chain = upstream.AppendUnique(chain, cs...)
		}
	}
	if p, _ := s.Data["issuing_ca"].(string); p != "" {
		cs, err := upstream.ParseCertificatesPEM([]byte(p))
		if err != nil {
			return nil, fmt.Errorf("issuing_ca: %w", err)
		}
		// The issuer leads the chain when ca_chain is missing.
		chain = upstream.AppendUnique(cs, chain...)
	}
	if len(chain) == 0 {
		return nil, errors.New("response has neither ca_chain nor issuing_ca")
	}
	intermediates, roots := upstream.SplitChain(chain, true)
	return &upstream.MintedCA{Cert: certs[0], Intermediates: intermediates, Roots: roots}, nil
}

// ensureToken logs in when there is no token or it has expired, and renews
// it (or, if it is not renewable or renewal fails, logs in again) once half
// of its lifetime has passed.
func (a *Authority) ensureToken(ctx context.Context) error {
	if a.login == nil {
		return nil // static token
	}
	if a.token == "" {
		return a.doLogin(ctx)
	}
	if a.ttl <= 0 {
		return nil
	}
	now := a.now()
	if !now.Before(a.obtained.Add(a.ttl)) {
		a.log.Info("vault: token expired; logging in again")
		return a.doLogin(ctx)
	}
	if now.Before(a.obtained.Add(a.ttl * defaultRenewFractionPercent / 100)) {
		return nil
	}
	if a.renewable {
		s, err := a.client.Auth().Token().RenewSelfWithContext(ctx, int(a.ttl/time.Second))
		if err == nil && s != nil && s.Auth != nil {
			a.setToken(s.Auth, now)
			a.log.Info("vault: token renewed", "ttl", a.ttl, "renewable", a.renewable)
			return nil
		}
		a.log.Warn("vault: token renewal failed; logging in again", "err", err)
	}
	return a.doLogin(ctx)
}

func (a *Authority) doLogin(ctx context.Context) error {
	s, err := a.login(ctx)
	if err != nil {
		return fmt.Errorf("%w: login: %w", ErrAuth, err)
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return fmt.Errorf("%w: login returned no token", ErrAuth)
	}
	a.setToken(s.Auth, a.now())
	a.log.Info("vault: logged in", "ttl", a.ttl, "renewable", a.renewable)
	return nil
}

func (a *Authority) setToken(auth *api.SecretAuth, now time.Time) {
	if auth.ClientToken != "" {
		a.token = auth.ClientToken
	}
	a.renewable = auth.Renewable
	a.ttl = time.Duration(auth.LeaseDuration) * time.Second
	a.obtained = now
	a.client.SetToken(a.token)
}

func isPermissionDenied(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusForbidden
}
