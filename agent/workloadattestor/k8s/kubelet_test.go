package k8s

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Every way the kubelet's answer can be refused fails the attestation, with
// no selectors, after one request: the kubelet is asked again only while a
// container is missing from a list it did give.
func TestKubeletRefusals(t *testing.T) {
	big := make([]corev1.Pod, 200)
	for i := range big {
		big[i] = webPod()
	}
	bigJSON := podListJSON(big)
	var redirected atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		redirected.Add(1)
		w.Write(podListJSON([]corev1.Pod{webPod()}))
	}))
	defer target.Close()

	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc // nil: the fake's own
		mutate  func(*Config)
		token   string // the kubelet's expected token; "" keeps testToken
		wantErr error
		check   func(t *testing.T, err error)
	}{
		{name: "wrong token: 401", token: "another-token", wantErr: ErrKubelet, check: func(t *testing.T, err error) {
			var se *StatusError
			if !errors.As(err, &se) || se.Code != http.StatusUnauthorized {
				t.Errorf("error %v, want a *StatusError with code 401", err)
			}
		}},
		{name: "forbidden: 403", handler: func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, `Forbidden (user=system:serviceaccount:spire:agent, verb=get, resource=nodes, subresource=proxy)`, http.StatusForbidden)
		}, wantErr: ErrKubelet, check: func(t *testing.T, err error) {
			var se *StatusError
			if !errors.As(err, &se) || se.Code != http.StatusForbidden || !strings.Contains(se.Body, "nodes") {
				t.Errorf("error %v, want a *StatusError with code 403 and the kubelet's reason", err)
			}
		}},
		{name: "oversize response with its length", mutate: func(c *Config) { c.MaxResponseBytes = int64(len(bigJSON) - 1) },
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", strconv.Itoa(len(bigJSON)))
				w.Write(bigJSON)
			}, wantErr: ErrResponseTooLarge},
		{name: "oversize response, chunked", mutate: func(c *Config) { c.MaxResponseBytes = int64(len(bigJSON) - 1) },
			handler: func(w http.ResponseWriter, r *http.Request) {
				for i := 0; i < len(bigJSON); i += 4096 {
					w.Write(bigJSON[i:min(i+4096, len(bigJSON))])
					w.(http.Flusher).Flush()
				}
			}, wantErr: ErrResponseTooLarge},
		{name: "redirect", handler: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+"/pods", http.StatusFound)
		}, wantErr: ErrRedirect, check: func(t *testing.T, _ error) {
			if n := redirected.Load(); n != 0 {
				t.Errorf("redirect target got %d requests, want 0", n)
			}
		}},
		{name: "not JSON", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("<html>kubelet</html>"))
		}, wantErr: ErrKubelet},
		{name: "another kind", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","items":[]}`))
		}, wantErr: errNotPodList},
		{name: "kubelet certificate from another CA", mutate: func(c *Config) {
			other, _ := newCA(t, "another cluster")
			writeFile(t, c.KubeletCAPath, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.Raw})))
		}, wantErr: ErrKubelet, check: func(t *testing.T, err error) {
			var uae x509.UnknownAuthorityError
			if !errors.As(err, &uae) {
				t.Errorf("error %v, want an x509.UnknownAuthorityError", err)
			}
		}},
		{name: "no node name: certificate without this host's name", mutate: func(c *Config) {
			c.NodeName = ""
			c.Hostname = func() (string, error) { return "node-7", nil }
		}, wantErr: ErrKubelet, check: func(t *testing.T, err error) {
			var hne x509.HostnameError
			if !errors.As(err, &hne) {
				t.Errorf("error %v, want an x509.HostnameError", err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newFakeKubelet(t, webPod())
			if tc.token != "" {
				k.token = tc.token
			}
			if tc.handler != nil {
				k.setHandler(tc.handler)
			}
			cfg := k.config(t)
			if tc.mutate != nil {
				tc.mutate(&cfg)
			}
			stageCgroup(t, cfg.ProcRoot, testPID, inContainer(podUID, webID))
			got, err := newAttestor(t, cfg).Attest(testCtx(t), testPID)
			if !errors.Is(err, tc.wantErr) || got != nil {
				t.Fatalf("Attest = %v, %v; want %v", values(got), err, tc.wantErr)
			}
			if !errors.Is(err, ErrKubelet) {
				t.Errorf("error %v does not wrap ErrKubelet", err)
			}
			if n := k.requests.Load(); n > 1 {
				t.Errorf("kubelet got %d requests, want at most 1", n)
			}
			if tc.check != nil {
				tc.check(t, err)
			}
		})
	}
}

// With no node name, the kubelet is reached at 127.0.0.1 and its
// certificate must name this host; skip_kubelet_verification accepts any
// certificate.
func TestKubeletVerification(t *testing.T) {
	k := newFakeKubelet(t, webPod())
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
	}{
		{"host name in the certificate", func(c *Config) {
			c.NodeName = ""
			c.Hostname = func() (string, error) { return "example.com", nil } // in httptest's certificate
		}},
		{"node name from node_name_env", func(c *Config) {
			c.NodeName, c.NodeNameEnv = "", "KUBELET_HOST"
			c.Getenv = func(k string) string {
				if k == "KUBELET_HOST" {
					return "127.0.0.1"
				}
				return ""
			}
		}},
		{"skip verification, CA file absent", func(c *Config) {
			c.SkipKubeletVerification = true
			c.KubeletCAPath = filepath.Join(t.TempDir(), "absent.crt")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := k.config(t)
			tc.mutate(&cfg)
			stageCgroup(t, cfg.ProcRoot, testPID, inContainer(podUID, webID))
			if got, err := newAttestor(t, cfg).Attest(testCtx(t), testPID); err != nil || len(got) == 0 {
				t.Errorf("Attest = %v, %v; want selectors", values(got), err)
			}
		})
	}
}

// The read-only port is plain HTTP at 127.0.0.1 and sends no credentials;
// anonymous authentication sends none to the secure port either.
func TestKubeletWithoutCredentials(t *testing.T) {
	ro := newPlainKubelet(t, webPod())
	cfg := ro.config(t)
	cfg.KubeletSecurePort, cfg.KubeletReadOnlyPort = 0, ro.port(t)
	stageCgroup(t, cfg.ProcRoot, testPID, inContainer(podUID, webID))
	if got, err := newAttestor(t, cfg).Attest(testCtx(t), testPID); err != nil || len(got) == 0 {
		t.Errorf("Attest(read-only port) = %v, %v; want selectors", values(got), err)
	}
	if h := ro.auth(); len(h) != 1 || h[0] != "" {
		t.Errorf("read-only port Authorization headers = %q, want one empty", h)
	}

	anon := newFakeKubelet(t, webPod())
	anon.token = "" // a kubelet with anonymous access to /pods
	cfg = anon.config(t)
	cfg.UseAnonymousAuthentication = true
	cfg.TokenPath = filepath.Join(t.TempDir(), "absent")
	stageCgroup(t, cfg.ProcRoot, testPID, inContainer(podUID, webID))
	if got, err := newAttestor(t, cfg).Attest(testCtx(t), testPID); err != nil || len(got) == 0 {
		t.Errorf("Attest(anonymous) = %v, %v; want selectors", values(got), err)
	}
	if h := anon.auth(); len(h) != 1 || h[0] != "" {
		t.Errorf("anonymous Authorization headers = %q, want one empty", h)
	}
}

// A client certificate signed by the kubelet's client CA authenticates
// without a token; the kubelet refuses the handshake without it.
func TestKubeletClientCertificate(t *testing.T) {
	caCert, caKey := newCA(t, "kubernetes-ca")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "system:node:node-1", Organization: []string{"system:nodes"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)

	k := &fakeKubelet{pods: func(int) []corev1.Pod { return []corev1.Pod{webPod()} }}
	k.srv = httptest.NewUnstartedServer(http.HandlerFunc(k.serve))
	k.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	k.srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	k.srv.StartTLS()
	defer k.srv.Close()

	cfg := k.config(t)
	dir := t.TempDir()
	cfg.CertificatePath, cfg.PrivateKeyPath = filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	writeFile(t, cfg.CertificatePath, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, cfg.PrivateKeyPath, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})))
	stageCgroup(t, cfg.ProcRoot, testPID, inContainer(podUID, webID))
	if got, err := newAttestor(t, cfg).Attest(testCtx(t), testPID); err != nil || len(got) == 0 {
		t.Errorf("Attest(client certificate) = %v, %v; want selectors", values(got), err)
	}
	if h := k.auth(); len(h) != 1 || h[0] != "" {
		t.Errorf("Authorization headers = %q, want one empty (no token beside the certificate)", h)
	}

	cfg.CertificatePath, cfg.PrivateKeyPath = "", ""
	if got, err := newAttestor(t, cfg).Attest(testCtx(t), testPID); !errors.Is(err, ErrKubelet) {
		t.Errorf("Attest(token only) = %v, %v; want the handshake refused", values(got), err)
	}
}

// A rotated token is read again once ReloadInterval has passed; until then
// the loaded one is sent. A token file gone at reload keeps the old token.
func TestKubeletTokenReload(t *testing.T) {
	k := newFakeKubelet(t, webPod())
	cfg := k.config(t)
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	cfg.Now = func() time.Time { return now }
	stageCgroup(t, cfg.ProcRoot, testPID, inContainer(podUID, webID))
	a := newAttestor(t, cfg)
	attest := func() error {
		now = now.Add(time.Second) // past the pod list's cache
		_, err := a.Attest(testCtx(t), testPID)
		return err
	}
	if err := attest(); err != nil {
		t.Fatal(err)
	}
	writeFile(t, cfg.TokenPath, "rotated-token")
	k.token = "rotated-token"
	if err := attest(); !errors.Is(err, ErrKubelet) {
		t.Errorf("Attest before the reload interval = %v, want the old token refused", err)
	}
	now = now.Add(DefaultReloadInterval)
	if err := attest(); err != nil {
		t.Errorf("Attest after the reload interval = %v, want the rotated token accepted", err)
	}
	if h := k.auth(); h[len(h)-1] != "Bearer rotated-token" {
		t.Errorf("last Authorization = %q, want the rotated token", h[len(h)-1])
	}
}

// newCA returns a self-signed CA certificate and its key.
func newCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func TestNewRefusesConfig(t *testing.T) {
	k := newFakeKubelet(t)
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"both ports", func(c *Config) { c.KubeletReadOnlyPort = 10255 }, "exclusive"},
		{"port out of range", func(c *Config) { c.KubeletSecurePort = 70000 }, "not a port"},
		{"certificate without key", func(c *Config) { c.CertificatePath = "/x.crt" }, "certificate_path and private_key_path"},
		{"negative attempts", func(c *Config) { c.MaxPollAttempts = -1 }, "max_poll_attempts"},
		{"no token file", func(c *Config) { c.TokenPath = filepath.Join(t.TempDir(), "absent") }, "token"},
		{"empty token file", func(c *Config) { writeFile(t, c.TokenPath, "\n") }, "empty"},
		{"no CA file", func(c *Config) { c.KubeletCAPath = filepath.Join(t.TempDir(), "absent") }, "kubelet CA"},
		{"CA file without certificates", func(c *Config) { writeFile(t, c.KubeletCAPath, "junk") }, "no PEM certificate"},
		{"no node name and no host name", func(c *Config) {
			c.NodeName = ""
			c.Hostname = func() (string, error) { return "", errors.New("uname failed") }
		}, "host name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := k.config(t)
			tc.mutate(&cfg)
			if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// The kubelet client never goes through a proxy, whatever the environment
// says: the pod list must come from the node's own kubelet.
func TestKubeletNoProxy(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "http://"+net.JoinHostPort("127.0.0.1", "1"))
	k := newFakeKubelet(t, webPod())
	cfg := k.config(t)
	stageCgroup(t, cfg.ProcRoot, testPID, inContainer(podUID, webID))
	if _, err := newAttestor(t, cfg).Attest(testCtx(t), testPID); err != nil {
		t.Errorf("Attest with HTTPS_PROXY set = %v", err)
	}
}
