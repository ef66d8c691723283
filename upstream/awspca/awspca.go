// Package awspca is the upstream adapter for AWS Private CA (ACM PCA): the
// root tier's CA certificate is issued by a private CA with IssueCertificate
// and a subordinate-CA template, fetched with GetCertificate once it is
// ready, and chained to the roots that GetCertificateAuthorityCertificate
// reports (plus an optional supplemental bundle).
//
// A mint costs three round trips the first time (the private CA's
// certificate, IssueCertificate, GetCertificate) and two afterwards: the
// private CA's certificate is cached, because the key it decides the signing
// algorithm from never changes for a CA ARN, and the chain GetCertificate
// returns carries the CA's current chain anyway. IssueCertificate is
// asynchronous (it answers with an ARN only), so two is the floor.
package awspca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/acmpca"
	"github.com/aws/aws-sdk-go-v2/service/acmpca/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/upstream"
)

var _ upstream.Authority = (*Authority)(nil)

// Defaults for the zero values of Config.
const (
	// DefaultTemplateARN issues a subordinate CA that may itself have up
	// to three CAs below it (arbor's regional and leaf tiers and one more).
	// AWS's PathLen0 template would let the root tier sign SVIDs but not
	// the intermediates of its downstream tiers.
	DefaultTemplateARN     = "arn:aws:acm-pca:::template/SubordinateCACertificate_PathLen3/V1"
	DefaultPollInterval    = time.Second
	DefaultMaxPollInterval = 30 * time.Second
	DefaultWaitTimeout     = 5 * time.Minute
	DefaultCallTimeout     = 30 * time.Second
)

// ErrNotIssued is wrapped when the certificate is still not ready after
// WaitTimeout.
var ErrNotIssued = errors.New("awspca: certificate not issued in time")

// Config configures an Authority. It must not be modified after New.
type Config struct {
	// TrustDomain of the tier. Required.
	TrustDomain spiffeid.TrustDomain
	// Region of the private CA, e.g. "eu-west-1". Required.
	Region string
	// CertificateAuthorityARN of the private CA that signs. Required.
	CertificateAuthorityARN string
	// TemplateARN of the certificate template; "" means DefaultTemplateARN
	// (SubordinateCACertificate_PathLen3/V1).
	TemplateARN string
	// SigningAlgorithm the private CA signs with, e.g. "SHA256WITHECDSA";
	// "" chooses it from the private CA's key: SHA256WITHECDSA for P-256,
	// SHA384WITHECDSA for P-384, SHA512WITHECDSA for P-521, SHA256WITHRSA
	// for RSA.
	SigningAlgorithm string
	// Endpoint overrides the ACM PCA endpoint URL (VPC endpoints, tests).
	Endpoint string
	// AssumeRoleARN, if set, is assumed with STS and its temporary
	// credentials sign the ACM PCA calls.
	AssumeRoleARN string
	// STSEndpoint overrides the STS endpoint URL used for AssumeRoleARN.
	STSEndpoint string
	// AccessKeyID, SecretAccessKey and SessionToken are static credentials;
	// empty means the SDK's default chain (environment, shared files, web
	// identity, ECS/EC2 roles).
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	// SupplementalBundleFile holds extra roots to trust (PEM), for a private
	// CA whose published chain stops below the root the trust domain should
	// anchor on, or to add roots during a migration.
	SupplementalBundleFile string
	// Subject of the tier's CA certificates (in the CSR); the zero value
	// means O=arbor, CN=<td> intermediate. The template decides which
	// subject fields are honoured.
	Subject pkix.Name
	// PollInterval is the first wait between GetCertificate calls while the
	// request is in progress; it doubles up to MaxPollInterval, with
	// jitter. Zero means 1s and 30s.
	PollInterval    time.Duration
	MaxPollInterval time.Duration
	// WaitTimeout bounds the wait for an issued certificate; zero means 5m.
	WaitTimeout time.Duration
	// CallTimeout bounds each API call; zero means 30s.
	CallTimeout time.Duration
	// RetryMaxAttempts is the SDK's attempts per call on throttling and
	// transient errors; zero means the SDK default (3).
	RetryMaxAttempts int
	// HTTPClient overrides the SDK's HTTP client.
	HTTPClient *http.Client
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Logger receives state changes; nil discards them.
	Logger *slog.Logger
}

// Authority has AWS Private CA sign the tier's CA certificates.
type Authority struct {
	cfg    Config
	now    func() time.Time
	log    *slog.Logger
	client *acmpca.Client
	extra  []*x509.Certificate // from SupplementalBundleFile

	mu     sync.Mutex
	cached *caCertificate // nil: ask GetCertificateAuthorityCertificate
}

// caCertificate is what GetCertificateAuthorityCertificate returned for the
// private CA: its certificate first, then its chain, and the signing
// algorithm its key calls for.
type caCertificate struct {
	chain []*x509.Certificate
	alg   types.SigningAlgorithm
}

// New checks cfg, reads the supplemental bundle and builds the SDK client.
// It does not call AWS.
func New(ctx context.Context, cfg Config) (*Authority, error) {
	switch {
	case cfg.TrustDomain.IsZero():
		return nil, errors.New("awspca: trust domain is required")
	case cfg.Region == "":
		return nil, errors.New("awspca: region is required")
	case cfg.CertificateAuthorityARN == "":
		return nil, errors.New("awspca: certificate_authority_arn is required")
	case (cfg.AccessKeyID == "") != (cfg.SecretAccessKey == ""):
		return nil, errors.New("awspca: access_key_id and secret_access_key go together")
	}
	if cfg.TemplateARN == "" {
		cfg.TemplateARN = DefaultTemplateARN
	}
	if cfg.SigningAlgorithm != "" && !validAlgorithm(cfg.SigningAlgorithm) {
		return nil, fmt.Errorf("awspca: unknown signing_algorithm %q", cfg.SigningAlgorithm)
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&cfg.PollInterval, DefaultPollInterval}, {&cfg.MaxPollInterval, DefaultMaxPollInterval}, {&cfg.WaitTimeout, DefaultWaitTimeout}, {&cfg.CallTimeout, DefaultCallTimeout}} {
		if *d.v < 0 {
			return nil, fmt.Errorf("awspca: negative duration %v", *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	for _, e := range []string{cfg.Endpoint, cfg.STSEndpoint} {
		if e == "" {
			continue
		}
		if u, err := url.Parse(e); err != nil || u.Scheme == "" || u.Host == "" {
			return nil, fmt.Errorf("awspca: endpoint %q is not an absolute URL", e)
		}
	}
	a := &Authority{cfg: cfg, now: cfg.Now, log: cfg.Logger}
	if a.now == nil {
		a.now = time.Now
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if cfg.SupplementalBundleFile != "" {
		extra, err := upstream.ReadCertificatesFile(cfg.SupplementalBundleFile)
		if err != nil {
			return nil, fmt.Errorf("awspca: supplemental_bundle_path: %w", err)
		}
		a.extra = extra
	}

	opts := []func(*config.LoadOptions) error{config.WithRegion(cfg.Region)}
	if cfg.AccessKeyID != "" {
		opts = append(opts, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, cfg.SessionToken)))
	}
	if cfg.RetryMaxAttempts > 0 {
		opts = append(opts, config.WithRetryMaxAttempts(cfg.RetryMaxAttempts))
	}
	if cfg.HTTPClient != nil {
		opts = append(opts, config.WithHTTPClient(cfg.HTTPClient))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("awspca: AWS configuration: %w", err)
	}
	if cfg.AssumeRoleARN != "" {
		stsClient := sts.NewFromConfig(awsCfg, func(o *sts.Options) {
			if cfg.STSEndpoint != "" {
				o.BaseEndpoint = aws.String(cfg.STSEndpoint)
			}
		})
		awsCfg.Credentials = aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(stsClient, cfg.AssumeRoleARN, func(o *stscreds.AssumeRoleOptions) {
			o.RoleSessionName = "arbor-" + cfg.TrustDomain.Name()
		}))
	}
	a.client = acmpca.NewFromConfig(awsCfg, func(o *acmpca.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	})
	return a, nil
}

// MintX509CA reads the private CA's certificate and chain (or reuses them
// from the previous successful mint), has it issue a CA certificate for key
// valid until now+ttl, waits for the certificate and returns it with the
// CA's chain.
//
// The cached CA certificate is dropped when a mint fails, when it has
// expired, and when an issued certificate names another CA certificate as
// its issuer (the CA was re-imported under a new chain); in the last case
// only the chain GetCertificate returned is used, so a root the CA no longer
// chains to does not stay in the bundle.
func (a *Authority) MintX509CA(ctx context.Context, key crypto.Signer, ttl time.Duration) (_ *upstream.MintedCA, err error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("awspca: ttl must be positive, got %v", ttl)
	}
	arn := aws.String(a.cfg.CertificateAuthorityARN)
	defer func() {
		if err != nil {
			a.setCached(nil)
		}
	}()

	// The CA's own certificate first: its key decides the signing
	// algorithm, and its chain the roots.
	caCert, fromCache := a.cachedCA(), true
	if caCert == nil {
		fromCache = false
		if caCert, err = a.fetchCA(ctx); err != nil {
			return nil, err
		}
	}
	alg := caCert.alg

	subject := a.cfg.Subject
	if len(subject.ToRDNSequence()) == 0 {
		subject = pkix.Name{Organization: []string{"arbor"}, CommonName: a.cfg.TrustDomain.Name() + " intermediate"}
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: subject, URIs: []*url.URL{upstream.TrustDomainURI(a.cfg.TrustDomain)},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("awspca: create CSR: %w", err)
	}
	var idem [16]byte
	if _, err := rand.Read(idem[:]); err != nil {
		return nil, fmt.Errorf("awspca: %w", err)
	}
	now := a.now()
	cctx, cancel := context.WithTimeout(ctx, a.cfg.CallTimeout)
	issued, err := a.client.IssueCertificate(cctx, &acmpca.IssueCertificateInput{
		CertificateAuthorityArn: arn,
		Csr:                     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}),
		SigningAlgorithm:        alg,
		TemplateArn:             aws.String(a.cfg.TemplateARN),
		Validity:                &types.Validity{Type: types.ValidityPeriodTypeAbsolute, Value: aws.Int64(now.Add(ttl).Unix())},
		IdempotencyToken:        aws.String(hex.EncodeToString(idem[:])),
	})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("awspca: IssueCertificate: %w", err)
	}
	certARN := aws.ToString(issued.CertificateArn)

	out, err := a.waitCertificate(ctx, arn, issued.CertificateArn)
	if err != nil {
		return nil, err
	}
	certs, err := parsePEMs(aws.ToString(out.Certificate), aws.ToString(out.CertificateChain))
	if err != nil {
		return nil, fmt.Errorf("awspca: GetCertificate %s: %w", certARN, err)
	}
	// GetCertificate's chain and the CA's own chain both lead to the root;
	// together they also cover a CA certificate renewed in between. A cached
	// chain only counts while the CA still issues under that certificate.
	chain := upstream.AppendUnique(nil, certs[1:]...)
	// Without a chain from GetCertificate the cached one is all there is;
	// Validate then refuses the certificate if the CA has moved on.
	sameIssuer := len(certs) == 1 || certs[1].Equal(caCert.chain[0])
	if !fromCache || sameIssuer {
		chain = upstream.AppendUnique(chain, caCert.chain...)
	}
	intermediates, roots := upstream.SplitChain(chain, true)
	roots = upstream.AppendUnique(roots, a.extra...)
	minted := &upstream.MintedCA{Cert: certs[0], Intermediates: intermediates, Roots: roots}
	granted, err := upstream.Validate(minted, key.Public(), a.cfg.TrustDomain, ttl, a.now())
	if err != nil {
		return nil, fmt.Errorf("awspca: certificate %s: %w", certARN, err)
	}
	upstream.LogMinted(a.log, "aws_pca", minted, ttl, granted)
	switch {
	case !fromCache:
		a.setCached(caCert)
	case !sameIssuer:
		a.log.Info("awspca: private CA certificate changed; reading it again at the next mint", "issuer_serial", certs[1].SerialNumber.String())
		a.setCached(nil)
	}
	return minted, nil
}

// fetchCA calls GetCertificateAuthorityCertificate and derives the signing
// algorithm (the configured one, or the one the CA's key calls for).
func (a *Authority) fetchCA(ctx context.Context) (*caCertificate, error) {
	cctx, cancel := context.WithTimeout(ctx, a.cfg.CallTimeout)
	out, err := a.client.GetCertificateAuthorityCertificate(cctx, &acmpca.GetCertificateAuthorityCertificateInput{CertificateAuthorityArn: aws.String(a.cfg.CertificateAuthorityARN)})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("awspca: GetCertificateAuthorityCertificate %s: %w", a.cfg.CertificateAuthorityARN, err)
	}
	chain, err := parsePEMs(aws.ToString(out.Certificate), aws.ToString(out.CertificateChain))
	if err != nil {
		return nil, fmt.Errorf("awspca: GetCertificateAuthorityCertificate %s: %w", a.cfg.CertificateAuthorityARN, err)
	}
	alg := types.SigningAlgorithm(a.cfg.SigningAlgorithm)
	if alg == "" {
		if alg, err = SigningAlgorithmFor(chain[0].PublicKey); err != nil {
			return nil, fmt.Errorf("awspca: private CA key: %w", err)
		}
	}
	return &caCertificate{chain: chain, alg: alg}, nil
}

// cachedCA returns the cached CA certificate while it is valid, else nil.
func (a *Authority) cachedCA() *caCertificate {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cached != nil && !a.now().Before(a.cached.chain[0].NotAfter) {
		a.cached = nil
	}
	return a.cached
}

func (a *Authority) setCached(c *caCertificate) {
	a.mu.Lock()
	a.cached = c
	a.mu.Unlock()
}

// waitCertificate calls GetCertificate until the certificate is issued,
// waiting with capped, jittered exponential backoff while AWS answers
// RequestInProgressException.
func (a *Authority) waitCertificate(ctx context.Context, caARN, certARN *string) (*acmpca.GetCertificateOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.WaitTimeout)
	defer cancel()
	delay := a.cfg.PollInterval
	for attempt := 1; ; attempt++ {
		cctx, ccancel := context.WithTimeout(ctx, a.cfg.CallTimeout)
		out, err := a.client.GetCertificate(cctx, &acmpca.GetCertificateInput{CertificateAuthorityArn: caARN, CertificateArn: certARN})
		ccancel()
		var inProgress *types.RequestInProgressException
		switch {
		case err == nil:
			return out, nil
		case ctx.Err() != nil:
			return nil, fmt.Errorf("%w: %s after %d attempts: %w", ErrNotIssued, aws.ToString(certARN), attempt, err)
		case !errors.As(err, &inProgress):
			return nil, fmt.Errorf("awspca: GetCertificate %s: %w", aws.ToString(certARN), err)
		}
		// Full jitter in [delay/2, delay).
		wait := delay/2 + mrand.N(delay/2+1)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w: %s still in progress after %d attempts: %w", ErrNotIssued, aws.ToString(certARN), attempt, ctx.Err())
		case <-t.C:
		}
		delay = min(2*delay, a.cfg.MaxPollInterval)
	}
}

// SigningAlgorithmFor returns the ACM PCA signing algorithm for a CA key.
func SigningAlgorithmFor(pub crypto.PublicKey) (types.SigningAlgorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return types.SigningAlgorithmSha256withecdsa, nil
		case elliptic.P384():
			return types.SigningAlgorithmSha384withecdsa, nil
		case elliptic.P521():
			return types.SigningAlgorithmSha512withecdsa, nil
		}
		return "", fmt.Errorf("unsupported curve %s", k.Curve.Params().Name)
	case *rsa.PublicKey:
		return types.SigningAlgorithmSha256withrsa, nil
	}
	return "", fmt.Errorf("unsupported key type %T", pub)
}

func validAlgorithm(s string) bool {
	for _, v := range types.SigningAlgorithm("").Values() {
		if string(v) == s {
			return true
		}
	}
	return false
}

// parsePEMs parses a certificate and the chain that follows it.
func parsePEMs(certPEM, chainPEM string) ([]*x509.Certificate, error) {
	certs, err := upstream.ParseCertificatesPEM([]byte(certPEM))
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	if chainPEM != "" {
		chain, err := upstream.ParseCertificatesPEM([]byte(chainPEM))
		if err != nil {
			return nil, fmt.Errorf("certificate chain: %w", err)
		}
		certs = append(certs, chain...)
	}
	return certs, nil
}
