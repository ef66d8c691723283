package gcpiittest

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Paths the Google fake serves.
const (
	keysV3Path  = "/oauth2/v3/certs"
	keysV1Path  = "/oauth2/v1/certs"
	computePath = "/compute/v1/"
)

// Google is a fake of the Google APIs gcp_iit attestation reads, over TLS:
//
//	GET /oauth2/v3/certs   the signing keys as a JSON Web Key Set
//	GET /oauth2/v1/certs   the same keys as {"<kid>": "<PEM certificate>"}
//	GET /compute/v1/projects/<p>/zones/<z>/instances/<name>
//	                       instances.get: the instance's JSON, or Google's
//	                       404 error JSON
//
// The key answers carry Cache-Control: public, max-age=<MaxAge> and an
// Expires header, as Google's do. It is also an http.Handler, to be served
// under other names.
type Google struct {
	srv *httptest.Server

	mu           sync.Mutex
	signers      []*Signer
	maxAge       time.Duration
	now          func() time.Time
	instances    map[string]Instance // by "project/zone/name"
	keyFetches   int
	computeCalls int
	withAuth     int // Compute requests carrying an Authorization header
}

// NewGoogle starts the fake with the signers' keys published, max-age one
// hour. Close it when done.
func NewGoogle(signers ...*Signer) *Google {
	g := NewGoogleHandler(signers...)
	g.srv = httptest.NewTLSServer(g)
	return g
}

// NewGoogleHandler returns the fake without starting a server, for a
// caller that serves it itself; URL and the other server methods are then
// not usable.
func NewGoogleHandler(signers ...*Signer) *Google {
	return &Google{signers: signers, maxAge: time.Hour, now: time.Now, instances: map[string]Instance{}}
}

// URL is the server's base URL.
func (g *Google) URL() string { return g.srv.URL }

// KeysURL is the JSON Web Key Set's URL (gcpiit.Config.KeysURL).
func (g *Google) KeysURL() string { return g.srv.URL + keysV3Path }

// CertsV1URL is the URL of the keys as PEM certificates, the format
// SPIRE's server reads.
func (g *Google) CertsV1URL() string { return g.srv.URL + keysV1Path }

// ComputeEndpoint is the Compute API's base URL
// (gcpiit.Config.ComputeEndpoint).
func (g *Google) ComputeEndpoint() string { return g.srv.URL + computePath }

// Client returns an HTTP client that trusts the server's certificate.
func (g *Google) Client() *http.Client { return g.srv.Client() }

// Certificate is the server's TLS certificate.
func (g *Google) Certificate() *x509.Certificate { return g.srv.Certificate() }

// Close stops the server.
func (g *Google) Close() { g.srv.Close() }

// SetSigners replaces the published keys (a key rotation).
func (g *Google) SetSigners(signers ...*Signer) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.signers = slices.Clone(signers)
}

// SetMaxAge sets the max-age of the key answers; a negative one sends
// neither Cache-Control nor Expires.
func (g *Google) SetMaxAge(d time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.maxAge = d
}

// SetNow sets the clock of the Expires header; nil means time.Now.
func (g *Google) SetNow(now func() time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if now == nil {
		now = time.Now
	}
	g.now = now
}

// PutInstance adds or replaces an instance, by project, zone and name.
func (g *Google) PutInstance(i Instance) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.instances[i.ProjectID+"/"+i.Zone+"/"+i.Name] = i
}

// DeleteInstance removes an instance.
func (g *Google) DeleteInstance(project, zone, name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.instances, project+"/"+zone+"/"+name)
}

// KeyFetches is how many times the keys were fetched, in either format.
func (g *Google) KeyFetches() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.keyFetches
}

// ComputeCalls returns how many instances.get requests arrived and how
// many of them carried an Authorization header.
func (g *Google) ComputeCalls() (calls, withAuthorization int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.computeCalls, g.withAuth
}

// ServeHTTP serves the fake's API.
func (g *Google) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		googleError(w, http.StatusMethodNotAllowed, "Method not allowed", "methodNotAllowed")
		return
	}
	switch {
	case r.URL.Path == keysV3Path || r.URL.Path == keysV1Path:
		g.serveKeys(w, r.URL.Path == keysV1Path)
	case strings.HasPrefix(r.URL.Path, computePath):
		g.serveCompute(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (g *Google) serveKeys(w http.ResponseWriter, v1 bool) {
	g.mu.Lock()
	g.keyFetches++
	signers, maxAge, now := slices.Clone(g.signers), g.maxAge, g.now()
	g.mu.Unlock()

	var body any
	if v1 {
		certs := map[string]string{}
		for _, s := range signers {
			c, err := s.CertificatePEM()
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			certs[s.KeyID] = c
		}
		body = certs
	} else {
		keys := []map[string]string{}
		for _, s := range signers {
			keys = append(keys, s.JWK())
		}
		body = map[string]any{"keys": keys}
	}
	if maxAge >= 0 {
		w.Header().Set("Cache-Control", fmt.Sprintf("public, max-age=%d, must-revalidate, no-transform", int64(maxAge/time.Second)))
		w.Header().Set("Expires", now.Add(maxAge).UTC().Format(http.TimeFormat))
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	json.NewEncoder(w).Encode(body)
}

// serveCompute answers instances.get.
func (g *Google) serveCompute(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	g.computeCalls++
	if r.Header.Get("Authorization") != "" {
		g.withAuth++
	}
	g.mu.Unlock()

	// projects/<p>/zones/<z>/instances/<name>
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, computePath), "/")
	if len(parts) != 6 || parts[0] != "projects" || parts[2] != "zones" || parts[4] != "instances" {
		googleError(w, http.StatusNotFound, "The requested URL was not found on this server.", "notFound")
		return
	}
	project, zone, name := parts[1], parts[3], parts[5]
	g.mu.Lock()
	inst, ok := g.instances[project+"/"+zone+"/"+name]
	g.mu.Unlock()
	if !ok {
		googleError(w, http.StatusNotFound, fmt.Sprintf("The resource 'projects/%s/zones/%s/instances/%s' was not found", project, zone, name), "notFound")
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	json.NewEncoder(w).Encode(instanceJSON(inst))
}

// instanceJSON is the instance as the Compute API's Instance resource, the
// members gcp_iit reads and a few around them.
func instanceJSON(i Instance) map[string]any {
	self := fmt.Sprintf("https://www.googleapis.com/compute/v1/projects/%s/zones/%s", i.ProjectID, i.Zone)
	status := i.Status
	if status == "" {
		status = "RUNNING"
	}
	out := map[string]any{
		"kind":              "compute#instance",
		"id":                strconv.FormatUint(i.ID, 10),
		"creationTimestamp": i.Created.Format("2006-01-02T15:04:05.000-07:00"),
		"name":              i.Name,
		"zone":              self,
		"machineType":       self + "/machineTypes/e2-medium",
		"status":            status,
		"selfLink":          self + "/instances/" + i.Name,
		"tags":              map[string]any{"items": i.Tags, "fingerprint": "42WmSpB8rSM="},
		"metadata":          map[string]any{"kind": "compute#metadata", "fingerprint": "fyz8ZCKzg2E=", "items": metadataJSON(i.Metadata)},
		"labelFingerprint":  "42WmSpB8rSM=",
	}
	if i.Labels != nil {
		out["labels"] = i.Labels
	}
	var sas []map[string]any
	for _, sa := range i.ServiceAccounts {
		scopes := sa.Scopes
		if scopes == nil {
			scopes = []string{"https://www.googleapis.com/auth/cloud-platform"}
		}
		sas = append(sas, map[string]any{"email": sa.Email, "scopes": scopes})
	}
	if sas != nil {
		out["serviceAccounts"] = sas
	}
	return out
}

func metadataJSON(items []MetadataItem) []map[string]any {
	out := []map[string]any{}
	for _, it := range items {
		m := map[string]any{"key": it.Key}
		if it.Value != nil {
			m["value"] = *it.Value
		}
		out = append(out, m)
	}
	return out
}

// googleError writes a Google API error in its JSON shape.
func googleError(w http.ResponseWriter, code int, msg, reason string) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"code":    code,
		"message": msg,
		"errors":  []map[string]any{{"message": msg, "domain": "global", "reason": reason}},
	}})
}
