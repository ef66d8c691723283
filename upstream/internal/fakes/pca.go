package fakes

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/arborid/arbor/upstream/internal/upstreamtest"
)

// PCA speaks the ACM PCA JSON 1.1 protocol (POST /, X-Amz-Target
// ACMPrivateCA.<Operation>, application/x-amz-json-1.1, errors as
// {"__type": ..., "message": ...} with status 400) for IssueCertificate,
// GetCertificate and GetCertificateAuthorityCertificate, and STS's query
// protocol for AssumeRole. Every request's SigV4 Authorization header is
// verified by signing the request again with the credentials the fake knows.
//
// The exported fields configure its behaviour; change them with Set once the
// server runs.
type PCA struct {
	t   testing.TB
	now func() time.Time
	// Srv is the running HTTP server; Srv.URL is the endpoint override.
	Srv *httptest.Server

	// CAARN names the private CA; Region is the region calls must be signed for.
	CAARN  string
	Region string

	mu sync.Mutex
	// Root and Issuer (the private CA) are replaced by ReissueCA.
	Root        *upstreamtest.CA
	Issuer      *upstreamtest.CA
	creds       map[string]aws.Credentials // access key ID -> credentials
	PCACreds    string                     // access key ID that must sign PCA calls
	WantAlg     string
	WantTmpl    string
	InProgress  int                 // GetCertificate answers RequestInProgress this often per certificate
	IssueErr    string              // non-empty: IssueCertificate fails with this __type
	Defect      upstreamtest.Defect // applied when signing
	NoRoot      bool                // the published chains stop at the private CA (no root)
	pending     map[string]*pending
	calls       []string
	LastIssue   IssueRequest
	AssumedRole string
}

type pending struct {
	cert      *x509.Certificate
	remaining int
}

// IssueRequest is the body of an IssueCertificate call.
type IssueRequest struct {
	CertificateAuthorityArn string
	Csr                     []byte
	SigningAlgorithm        string
	TemplateArn             string
	Validity                struct {
		Type  string
		Value int64
	}
	IdempotencyToken string
}

// Static credentials the fake accepts for PCA calls from the start.
const (
	AccessKeyID     = "AKIDEXAMPLE"
	SecretAccessKey = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
)

// NewPCA starts a fake ACM PCA (and STS) endpoint whose clock is now (nil
// means time.Now). The server stops when the test ends.
func NewPCA(t testing.TB, now func() time.Time) *PCA {
	t.Helper()
	if now == nil {
		now = time.Now
	}
	root := upstreamtest.NewRoot(t, "pca root", now(), 1000*time.Hour)
	f := &PCA{
		t: t, now: now, Root: root,
		Issuer:   root.NewIntermediate(t, "pca subordinate", now(), 500*time.Hour),
		CAARN:    "arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/11111111-2222-3333-4444-555555555555",
		Region:   "eu-west-1",
		creds:    map[string]aws.Credentials{AccessKeyID: {AccessKeyID: AccessKeyID, SecretAccessKey: SecretAccessKey}},
		PCACreds: AccessKeyID,
		WantAlg:  "SHA256WITHECDSA",
		WantTmpl: "arn:aws:acm-pca:::template/SubordinateCACertificate_PathLen3/V1",
		pending:  map[string]*pending{},
	}
	f.Srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Srv.Close)
	return f
}

// Set runs fn with the fake locked, to change its exported fields.
func (f *PCA) Set(fn func(f *PCA)) {
	f.mu.Lock()
	fn(f)
	f.mu.Unlock()
}

// Calls returns the X-Amz-Target of every PCA request ("STS.<Action>" for
// STS) served since the start or the last Reset.
func (f *PCA) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// Reset forgets the recorded calls.
func (f *PCA) Reset() {
	f.mu.Lock()
	f.calls = nil
	f.mu.Unlock()
}

// CurrentRoot returns the root the private CA chains to now.
func (f *PCA) CurrentRoot() *x509.Certificate {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.Root.Cert
}

// ReissueCA moves the private CA under a new root, keeping its key, as an
// operator does by importing a new CA certificate for a subordinate CA
// (ImportCertificateAuthorityCertificate): the CA's ARN and key algorithm
// stay, its certificate (valid for 500h from now) and chain change. It
// returns the new root.
func (f *PCA) ReissueCA() *x509.Certificate {
	f.mu.Lock()
	defer f.mu.Unlock()
	root := upstreamtest.NewRoot(f.t, "pca root 2", f.now(), 1000*time.Hour)
	tmpl := *f.Issuer.Cert
	tmpl.SerialNumber = new(big.Int).SetUint64(uint64(f.now().UnixNano()))
	tmpl.NotBefore, tmpl.NotAfter = f.now().Add(-time.Hour), f.now().Add(500*time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, root.Cert, f.Issuer.Key.Public(), root.Key)
	if err != nil {
		f.t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		f.t.Fatal(err)
	}
	f.Root = root
	f.Issuer = &upstreamtest.CA{Cert: c, Key: f.Issuer.Key, Chain: []*x509.Certificate{c, root.Cert}}
	return root.Cert
}

func awsError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-RequestId", "00000000-0000-4000-8000-000000000000")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"__type": typ, "message": msg})
}

func awsJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-RequestId", "00000000-0000-4000-8000-000000000000")
	json.NewEncoder(w).Encode(v)
}

// verifySigV4 checks r's Authorization header by signing a copy of the
// request (the signed headers only) with the caller's known credentials.
// It returns the access key ID that signed.
func (f *PCA) verifySigV4(r *http.Request, body []byte, service string) (string, error) {
	auth := r.Header.Get("Authorization")
	const prefix = "AWS4-HMAC-SHA256 "
	if !strings.HasPrefix(auth, prefix) {
		return "", fmt.Errorf("authorization %q is not SigV4", auth)
	}
	fields := map[string]string{}
	for _, kv := range strings.Split(strings.TrimPrefix(auth, prefix), ", ") {
		k, v, _ := strings.Cut(kv, "=")
		fields[k] = v
	}
	scope := strings.Split(fields["Credential"], "/") // AKID/date/region/service/aws4_request
	if len(scope) != 5 || scope[2] != f.Region || scope[3] != service || scope[4] != "aws4_request" {
		return "", fmt.Errorf("credential scope %q, want region %s service %s", fields["Credential"], f.Region, service)
	}
	creds, ok := f.creds[scope[0]]
	if !ok {
		return "", fmt.Errorf("unknown access key %q", scope[0])
	}
	if creds.SessionToken != "" && r.Header.Get("X-Amz-Security-Token") != creds.SessionToken {
		return "", fmt.Errorf("missing or wrong session token")
	}
	signingTime, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return "", fmt.Errorf("X-Amz-Date: %v", err)
	}
	u := &url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path, RawQuery: r.URL.RawQuery}
	req, err := http.NewRequest(r.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Host = r.Host
	for _, h := range strings.Split(fields["SignedHeaders"], ";") {
		if h == "host" || h == "content-length" {
			continue
		}
		req.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
	}
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), service, f.Region, signingTime); err != nil {
		return "", err
	}
	if got := req.Header.Get("Authorization"); got != auth {
		return "", fmt.Errorf("signature mismatch:\n got %s\nwant %s", auth, got)
	}
	return scope[0], nil
}

func (f *PCA) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	body, _ := io.ReadAll(r.Body)
	if r.Method != http.MethodPost || r.URL.Path != "/" {
		awsError(w, http.StatusNotFound, "UnknownOperationException", "")
		return
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		f.serveSTS(w, r, body)
		return
	}
	target := r.Header.Get("X-Amz-Target")
	f.calls = append(f.calls, target)
	if r.Header.Get("Content-Type") != "application/x-amz-json-1.1" {
		awsError(w, http.StatusBadRequest, "SerializationException", "wrong content type")
		return
	}
	akid, err := f.verifySigV4(r, body, "acm-pca")
	if err != nil {
		awsError(w, http.StatusForbidden, "InvalidSignatureException", err.Error())
		return
	}
	if akid != f.PCACreds {
		awsError(w, http.StatusBadRequest, "AccessDeniedException", "User "+akid+" is not authorized to perform this action")
		return
	}
	var in map[string]json.RawMessage
	if err := json.Unmarshal(body, &in); err != nil {
		awsError(w, http.StatusBadRequest, "SerializationException", err.Error())
		return
	}
	var caARN string
	json.Unmarshal(in["CertificateAuthorityArn"], &caARN)
	if caARN != f.CAARN {
		awsError(w, http.StatusBadRequest, "ResourceNotFoundException", "Could not find certificate authority "+caARN)
		return
	}
	pemOf := func(cs ...*x509.Certificate) string { return string(upstreamtest.CertsPEM(cs...)) }
	switch target {
	case "ACMPrivateCA.GetCertificateAuthorityCertificate":
		out := map[string]string{"Certificate": pemOf(f.Issuer.Cert)}
		if !f.NoRoot {
			out["CertificateChain"] = pemOf(f.Root.Cert)
		}
		awsJSON(w, out)
	case "ACMPrivateCA.IssueCertificate":
		var req IssueRequest
		if err := json.Unmarshal(body, &req); err != nil {
			awsError(w, http.StatusBadRequest, "SerializationException", err.Error())
			return
		}
		f.LastIssue = req
		if f.IssueErr != "" {
			awsError(w, http.StatusBadRequest, f.IssueErr, "issuance refused by the fake")
			return
		}
		if req.SigningAlgorithm != f.WantAlg || req.TemplateArn != f.WantTmpl || req.Validity.Type != "ABSOLUTE" || req.IdempotencyToken == "" {
			awsError(w, http.StatusBadRequest, "InvalidArgsException", fmt.Sprintf("unexpected request %+v", req))
			return
		}
		b, _ := pem.Decode(req.Csr)
		if b == nil {
			awsError(w, http.StatusBadRequest, "MalformedCSRException", "CSR is not PEM")
			return
		}
		csr, err := x509.ParseCertificateRequest(b.Bytes)
		if err == nil {
			err = csr.CheckSignature()
		}
		if err != nil {
			awsError(w, http.StatusBadRequest, "MalformedCSRException", err.Error())
			return
		}
		now := f.now()
		ttl := time.Unix(req.Validity.Value, 0).Sub(now)
		cert := f.Issuer.SignCA(f.t, csr.PublicKey, csr.Subject, csr.URIs, now, ttl, f.Defect)
		arn := fmt.Sprintf("%s/certificate/%x", f.CAARN, cert.SerialNumber)
		f.pending[arn] = &pending{cert: cert, remaining: f.InProgress}
		awsJSON(w, map[string]string{"CertificateArn": arn})
	case "ACMPrivateCA.GetCertificate":
		var arn string
		json.Unmarshal(in["CertificateArn"], &arn)
		p, ok := f.pending[arn]
		if !ok {
			awsError(w, http.StatusBadRequest, "ResourceNotFoundException", "Could not find certificate "+arn)
			return
		}
		if p.remaining > 0 {
			p.remaining--
			awsError(w, http.StatusBadRequest, "RequestInProgressException", "The request to issue certificate "+arn+" is in progress")
			return
		}
		chain := pemOf(f.Issuer.Cert, f.Root.Cert)
		if f.NoRoot {
			chain = pemOf(f.Issuer.Cert)
		}
		awsJSON(w, map[string]string{"Certificate": pemOf(p.cert), "CertificateChain": chain})
	default:
		awsError(w, http.StatusBadRequest, "UnknownOperationException", target)
	}
}

type assumeRoleResponse struct {
	XMLName xml.Name `xml:"https://sts.amazonaws.com/doc/2011-06-15/ AssumeRoleResponse"`
	Result  struct {
		Credentials struct {
			AccessKeyID     string `xml:"AccessKeyId"`
			SecretAccessKey string `xml:"SecretAccessKey"`
			SessionToken    string `xml:"SessionToken"`
			Expiration      string `xml:"Expiration"`
		} `xml:"Credentials"`
		AssumedRoleUser struct {
			Arn           string `xml:"Arn"`
			AssumedRoleID string `xml:"AssumedRoleId"`
		} `xml:"AssumedRoleUser"`
	} `xml:"AssumeRoleResult"`
	RequestID string `xml:"ResponseMetadata>RequestId"`
}

func (f *PCA) serveSTS(w http.ResponseWriter, r *http.Request, body []byte) {
	form, _ := url.ParseQuery(string(body))
	f.calls = append(f.calls, "STS."+form.Get("Action"))
	if _, err := f.verifySigV4(r, body, "sts"); err != nil {
		http.Error(w, `<ErrorResponse><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code><Message>`+err.Error()+`</Message></Error></ErrorResponse>`, http.StatusForbidden)
		return
	}
	if form.Get("Action") != "AssumeRole" || form.Get("RoleArn") == "" || form.Get("RoleSessionName") == "" {
		http.Error(w, `<ErrorResponse><Error><Type>Sender</Type><Code>ValidationError</Code><Message>bad request</Message></Error></ErrorResponse>`, http.StatusBadRequest)
		return
	}
	f.AssumedRole = form.Get("RoleArn") + " as " + form.Get("RoleSessionName")
	var out assumeRoleResponse
	c := &out.Result.Credentials
	c.AccessKeyID, c.SecretAccessKey, c.SessionToken = "ASIAASSUMED", "assumed-secret", "assumed-session-token"
	// The SDK's credential cache checks expiry against the real clock.
	c.Expiration = time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	out.Result.AssumedRoleUser.Arn = form.Get("RoleArn")
	out.Result.AssumedRoleUser.AssumedRoleID = "AROA:" + form.Get("RoleSessionName")
	out.RequestID = "11111111-0000-4000-8000-000000000000"
	f.creds[c.AccessKeyID] = aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken}
	w.Header().Set("Content-Type", "text/xml")
	xml.NewEncoder(w).Encode(out)
}

// Now returns the fake's time.
func (f *PCA) Now() time.Time { return f.now() }
