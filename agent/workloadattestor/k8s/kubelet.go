package k8s

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// kubeletClient lists the pods of one kubelet with one set of credentials.
type kubeletClient struct {
	secure    bool
	url       string
	token     string
	transport *http.Transport
	http      *http.Client
}

// newKubeletClient reads the CA, token or client certificate that cfg names
// and returns a client for the kubelet's secure port, or for its read-only
// port (no TLS, no credentials: 127.0.0.1 only, as SPIRE).
func newKubeletClient(cfg *Config) (*kubeletClient, error) {
	transport := &http.Transport{
		Proxy:                  nil, // the node's own kubelet, never through a proxy
		DialContext:            (&net.Dialer{Timeout: requestTimeout}).DialContext,
		TLSHandshakeTimeout:    requestTimeout,
		ResponseHeaderTimeout:  requestTimeout,
		MaxResponseHeaderBytes: 1 << 20,
		MaxIdleConns:           2,
		IdleConnTimeout:        cfg.PollRetryInterval * 4,
		ForceAttemptHTTP2:      true,
	}
	c := &kubeletClient{transport: transport}
	c.http = &http.Client{
		Transport: transport,
		CheckRedirect: func(req *http.Request, _ []*http.Request) error {
			return fmt.Errorf("%w to %s", ErrRedirect, req.URL.Redacted())
		},
	}
	if cfg.KubeletReadOnlyPort != 0 {
		c.url = "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.KubeletReadOnlyPort)) + "/pods"
		return c, nil
	}
	c.secure = true
	host := cfg.NodeName
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if host == "" {
		// The kubelet at 127.0.0.1 (host networking): its certificate
		// names the node, so check it against this machine's host name.
		host = "127.0.0.1"
		if !cfg.SkipKubeletVerification {
			name, err := cfg.Hostname()
			if err != nil || name == "" {
				return nil, fmt.Errorf("k8s: no node name (node_name, $%s) and no host name to check the kubelet's certificate against: %v", nodeNameEnv(cfg), err)
			}
			tc.ServerName = name
		}
	}
	c.url = "https://" + net.JoinHostPort(host, strconv.Itoa(cfg.KubeletSecurePort)) + "/pods"

	if cfg.SkipKubeletVerification {
		tc.InsecureSkipVerify = true //nolint:gosec // configured: skip_kubelet_verification
	} else {
		roots, err := loadCA(cfg.KubeletCAPath)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = roots
	}
	switch {
	case cfg.UseAnonymousAuthentication:
	case cfg.CertificatePath != "":
		kp, err := tls.LoadX509KeyPair(cfg.CertificatePath, cfg.PrivateKeyPath)
		if err != nil {
			return nil, fmt.Errorf("k8s: client certificate %s and key %s: %w", cfg.CertificatePath, cfg.PrivateKeyPath, err)
		}
		tc.Certificates = []tls.Certificate{kp}
	default:
		b, err := os.ReadFile(cfg.TokenPath)
		if err != nil {
			return nil, fmt.Errorf("k8s: kubelet token: %w", err)
		}
		c.token = strings.TrimSpace(string(b))
		if c.token == "" {
			return nil, fmt.Errorf("k8s: kubelet token file %s is empty", cfg.TokenPath)
		}
	}
	transport.TLSClientConfig = tc
	return c, nil
}

func nodeNameEnv(cfg *Config) string {
	if cfg.NodeNameEnv != "" {
		return cfg.NodeNameEnv
	}
	return DefaultNodeNameEnv
}

func loadCA(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("k8s: kubelet CA: %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("k8s: kubelet CA %s: %w", path, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("k8s: kubelet CA %s holds no PEM certificate", path)
	}
	return pool, nil
}

func (c *kubeletClient) close() { c.transport.CloseIdleConnections() }

// pods fetches GET /pods and decodes the pod list, refusing more than max
// bytes.
func (c *kubeletClient) pods(ctx context.Context, max int64) ([]corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKubelet, err)
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// A refused redirect comes back here, wrapping ErrRedirect.
		return nil, fmt.Errorf("%w: GET %s: %w", ErrKubelet, c.url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		return nil, &StatusError{Code: resp.StatusCode, Body: string(b)}
	}
	if resp.ContentLength > max {
		return nil, fmt.Errorf("%w: %w: %d bytes, more than %d", ErrKubelet, ErrResponseTooLarge, resp.ContentLength, max)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading pods from %s: %w", ErrKubelet, c.url, err)
	}
	if int64(len(body)) > max {
		return nil, fmt.Errorf("%w: %w: more than %d bytes", ErrKubelet, ErrResponseTooLarge, max)
	}
	pods, err := parsePodList(body)
	if err != nil {
		return nil, fmt.Errorf("%w: pods from %s: %w", ErrKubelet, c.url, err)
	}
	return pods, nil
}

// errNotPodList means a kubelet's answer is not the JSON of a v1 PodList.
var errNotPodList = errors.New("not a pod list")

// parsePodList decodes the kubelet's /pods answer, a v1 PodList. Pods
// without a UID are left out: no cgroup can name them.
func parsePodList(body []byte) ([]corev1.Pod, error) {
	var list corev1.PodList
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("%w: %v", errNotPodList, err)
	}
	if list.Kind != "" && list.Kind != "PodList" {
		return nil, fmt.Errorf("%w: kind %q", errNotPodList, list.Kind)
	}
	pods := make([]corev1.Pod, 0, len(list.Items))
	for _, p := range list.Items {
		if p.UID != "" {
			pods = append(pods, p)
		}
	}
	return pods, nil
}
