package delivery

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/arborid/arbor/internal/testkit"
)

// nginxConf serves mTLS on 127.0.0.1:port with the files arbor svid watch
// keeps, and answers each request with the result of its client
// certificate check and the client certificate itself.
const nginxConf = `daemon off;
master_process on;
worker_processes 1;
pid {{dir}}/nginx.pid;
error_log {{dir}}/error.log notice;
events { worker_connections 128; }
http {
  access_log {{dir}}/access.log;
  client_body_temp_path {{dir}}/tmp/body;
  proxy_temp_path {{dir}}/tmp/proxy;
  fastcgi_temp_path {{dir}}/tmp/fastcgi;
  uwsgi_temp_path {{dir}}/tmp/uwsgi;
  scgi_temp_path {{dir}}/tmp/scgi;
  server {
    listen 127.0.0.1:{{port}} ssl;
    ssl_certificate        {{certs}}/svid.pem;
    ssl_certificate_key    {{certs}}/svid.key;
    ssl_client_certificate {{certs}}/bundle.pem;
    ssl_verify_client      on;
    ssl_verify_depth       3;
    location / {
      default_type text/plain;
      return 200 "$ssl_client_verify\n$ssl_client_escaped_cert\n";
    }
  }
}
`

// A real nginx terminates mTLS with the certificate, key and CA file kept
// by arbor svid watch and is reloaded (SIGHUP to its pid file) after every
// rotation: a go-spiffe client sending requests continuously, each on a new
// connection, verifies nginx's SPIFFE ID on each, nginx verifies the
// client's certificate against the bundle file, and across at least three
// rotations of both SVIDs no request fails.
func TestNginxMTLSAcrossRotations(t *testing.T) {
	nginx := lookBin(t, "nginx", "apt-get install nginx")
	tr := startTree(t)
	webID, clientID := spiffeid.RequireFromPath(td, "/web"), spiffeid.RequireFromPath(td, "/client")
	tr.entry(webID, 6)
	tr.entry(clientID, 6)

	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	for _, d := range []string{certs, filepath.Join(dir, "tmp")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pidFile := filepath.Join(dir, "nginx.pid")
	w := tr.runWatch("--name", "nginx", "--spiffe-id", webID.String(),
		"--cert", filepath.Join(certs, "svid.pem"), "--key", filepath.Join(certs, "svid.key"),
		"--bundle", filepath.Join(certs, "bundle.pem"), "--signal", "HUP", "--pid-file", pidFile)
	waitFiles(t, 30*time.Second, filepath.Join(certs, "svid.pem"), filepath.Join(certs, "svid.key"), filepath.Join(certs, "bundle.pem"))

	port := freePort(t)
	conf := strings.NewReplacer("{{dir}}", dir, "{{certs}}", certs, "{{port}}", strconv.Itoa(port)).Replace(nginxConf)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	ng := exec.Command(nginx, "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "error.log"))
	var ngOut lockedBuffer
	ng.Stdout, ng.Stderr = &ngOut, &ngOut
	if err := ng.Start(); err != nil {
		t.Fatal(err)
	}
	ngDone := make(chan error, 1)
	go func() { ngDone <- ng.Wait() }()
	t.Cleanup(func() {
		ng.Process.Signal(os.Interrupt) // SIGINT: fast shutdown
		select {
		case <-ngDone:
		case <-time.After(20 * time.Second):
			ng.Process.Kill()
			t.Error("nginx did not stop within 20s")
		}
		if t.Failed() {
			errLog, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx output:\n%s\nerror.log:\n%s", ngOut.String(), errLog)
		}
	})
	testkit.Poll(t, 30*time.Second, "nginx pid file", func() error {
		_, err := os.Stat(pidFile)
		return err
	})

	src := tr.source(clientID)
	tlsConf := tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(webID))
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConf, DisableKeepAlives: true}}
	target := fmt.Sprintf("https://127.0.0.1:%d/", port)

	// One request: nginx's certificate is webID's (go-spiffe checked the ID
	// and the chain), and nginx verified the client's and saw clientID.
	get := func() (serverSerial, clientSerial string, err error) {
		resp, err := client.Get(target)
		if err != nil {
			return "", "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		if err != nil {
			return "", "", err
		}
		if resp.StatusCode != http.StatusOK {
			return "", "", fmt.Errorf("nginx answered %d: %s", resp.StatusCode, body)
		}
		verify, escaped, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
		if verify != "SUCCESS" {
			return "", "", fmt.Errorf("nginx's client verification = %q, want SUCCESS", verify)
		}
		raw, err := url.QueryUnescape(escaped)
		if err != nil {
			return "", "", fmt.Errorf("nginx's $ssl_client_escaped_cert: %v", err)
		}
		blk, _ := pem.Decode([]byte(raw))
		if blk == nil {
			return "", "", fmt.Errorf("nginx returned no client certificate: %q", raw)
		}
		cc, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return "", "", err
		}
		if len(cc.URIs) != 1 || cc.URIs[0].String() != clientID.String() {
			return "", "", fmt.Errorf("nginx saw client certificate %v, want %s", cc.URIs, clientID)
		}
		return resp.TLS.PeerCertificates[0].SerialNumber.String(), cc.SerialNumber.String(), nil
	}
	testkit.Poll(t, 30*time.Second, "nginx answers over mTLS", func() error { _, _, err := get(); return err })
	w.waitReady(t, 30*time.Second)

	// Requests continuously from two clients until nginx has served four
	// server certificates (three rotations) and seen four client ones.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var (
		mu                 sync.Mutex
		serverSeen         = map[string]bool{}
		clientSeen         = map[string]bool{}
		requests, failures atomic.Int64
		firstErr           error
		wg                 sync.WaitGroup
		enough             = make(chan struct{})
		closeOnce          sync.Once
	)
	for range 2 {
		wg.Go(func() {
			for ctx.Err() == nil {
				select {
				case <-enough:
					return
				default:
				}
				s, c, err := get()
				requests.Add(1)
				mu.Lock()
				if err != nil {
					failures.Add(1)
					if firstErr == nil {
						firstErr = err
					}
				} else {
					serverSeen[s], clientSeen[c] = true, true
					if len(serverSeen) >= 4 && len(clientSeen) >= 4 {
						closeOnce.Do(func() { close(enough) })
					}
				}
				mu.Unlock()
			}
		})
	}
	select {
	case <-enough:
	case <-ctx.Done():
	}
	cancel()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d requests, %d failed, %d nginx certificates, %d client certificates, %d reloads by arbor svid watch",
		requests.Load(), failures.Load(), len(serverSeen), len(clientSeen), w.logs.count("reloaded"))
	if failures.Load() != 0 {
		t.Errorf("%d of %d requests failed during the rotations; the first: %v", failures.Load(), requests.Load(), firstErr)
	}
	if len(serverSeen) < 4 || len(clientSeen) < 4 {
		t.Fatalf("saw %d nginx and %d client certificates within 2 minutes, want at least 4 of each (three rotations)", len(serverSeen), len(clientSeen))
	}

	// A client without a certificate is refused by nginx.
	anon := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: tlsconfig.TLSClientConfig(src, tlsconfig.AuthorizeID(webID)), DisableKeepAlives: true}}
	resp, err := anon.Get(target)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("a client without certificate got %d, want 400 (No required SSL certificate was sent)", resp.StatusCode)
		}
	}
}
