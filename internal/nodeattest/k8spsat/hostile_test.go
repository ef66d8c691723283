package k8spsat_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/k8spsat"
	"github.com/arborid/arbor/internal/nodeattest/k8spsat/k8spsattest"
)

// rewriteKubeconfigServer writes a copy of the kubeconfig at path that
// points at api's address and CA but keeps path's credential.
func rewriteKubeconfigServer(t *testing.T, path string, api *k8spsattest.Server) string {
	t.Helper()
	return rewriteKubeconfig(t, path, api.URL(), api.CACertPEM())
}

func rewriteKubeconfig(t *testing.T, path, server string, caPEM []byte) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg.Clusters {
		c.Server = server
		c.CertificateAuthorityData = caPEM
	}
	out := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// hostileAPIServer serves handler over TLS and returns a kubeconfig for
// it (with some cluster's credential, which it does not check).
func hostileAPIServer(t *testing.T, handler http.Handler) string {
	t.Helper()
	srv := httptest.NewTLSServer(handler)
	t.Cleanup(srv.Close)
	c := newCluster(t, k8spsattest.Config{})
	caPEM := pemCert(srv.Certificate().Raw)
	return rewriteKubeconfig(t, c.kubeconfig, srv.URL, caPEM)
}

// TestNoRedirects: an API server that redirects the TokenReview does not
// get the token sent elsewhere.
func TestNoRedirects(t *testing.T) {
	var elsewhere atomic.Int64
	target := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		w.WriteHeader(http.StatusTeapot)
	}))
	t.Cleanup(target.Close)
	for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		kubeconfig := hostileAPIServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+r.URL.Path, code)
		}))
		cfg := k8spsat.ClusterConfig{ServiceAccountAllowList: []string{"spire:spire-agent"}, KubeConfigFile: kubeconfig}
		a := must(k8spsat.New(k8spsat.Config{Clusters: map[string]k8spsat.ClusterConfig{"prod": cfg}}, td))
		_, err := a.Attest(testContext(t), []byte(`{"cluster":"prod","token":"secret-token"}`), noChallenge(t))
		if err == nil || errors.Is(err, nodeattest.ErrDenied) || errors.Is(err, nodeattest.ErrInvalid) {
			t.Errorf("Attest() against an API server redirecting with %d = %v, want an internal error", code, err)
		}
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the redirect target got %d requests, want none", n)
	}
}

// TestResponseSizeBounded: an API server's answer larger than any real
// object is not read to its end.
func TestResponseSizeBounded(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		var written atomic.Int64
		kubeconfig := hostileAPIServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			if !chunked {
				w.Header().Set("Content-Length", "67108864")
			}
			w.WriteHeader(http.StatusCreated)
			w.Write([]byte(`{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","status":{"authenticated":true,"user":{"username":"`)) //nolint:errcheck
			chunk := []byte(strings.Repeat("a", 64<<10))
			for range 1024 { // 64 MiB at most
				if _, err := w.Write(chunk); err != nil {
					return
				}
				written.Add(int64(len(chunk)))
			}
		}))
		cfg := k8spsat.ClusterConfig{ServiceAccountAllowList: []string{"spire:spire-agent"}, KubeConfigFile: kubeconfig}
		a := must(k8spsat.New(k8spsat.Config{Clusters: map[string]k8spsat.ClusterConfig{"prod": cfg}}, td))
		_, err := a.Attest(testContext(t), []byte(`{"cluster":"prod","token":"t"}`), noChallenge(t))
		if err == nil || errors.Is(err, nodeattest.ErrDenied) || errors.Is(err, nodeattest.ErrInvalid) {
			t.Errorf("Attest() against a 64 MiB answer (chunked %v) = %v, want an internal error", chunked, err)
		}
		if !chunked && !strings.Contains(err.Error(), "exceeds") {
			t.Errorf("Attest() against a 64 MiB Content-Length = %v, want the size refused", err)
		}
		if n := written.Load(); n >= 32<<20 {
			t.Errorf("the API server wrote %d bytes before the attestor stopped reading, want far fewer than 64 MiB", n)
		}
	}
}
