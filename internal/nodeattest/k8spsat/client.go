package k8spsat

import (
	"fmt"
	"io"
	"net/http"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	// requestTimeout bounds each call to a cluster's API server.
	requestTimeout = 10 * time.Second
	// maxResponseSize bounds what is read of one API server response.
	// The objects read are one TokenReview, one pod and one node; etcd
	// refuses objects over 1.5 MiB, so a real answer fits with room to
	// spare.
	maxResponseSize = 4 << 20
	userAgent       = "arbor-k8s_psat"
)

// errResponseTooLarge is what reading a response past maxResponseSize
// returns; client-go reports it as the request's error.
var errResponseTooLarge = fmt.Errorf("API server response exceeds %d bytes", maxResponseSize)

// kubeClient is a clientset for one cluster and the HTTP client under it,
// whose idle connections are closed when the cluster is replaced.
type kubeClient struct {
	kubernetes.Interface
	http *http.Client
}

// newKubeClient builds the client for one cluster, from kubeConfigFile or,
// if it is empty, from the pod's in-cluster service account.
func newKubeClient(kubeConfigFile string) (*kubeClient, error) {
	var (
		rc  *rest.Config
		err error
	)
	if kubeConfigFile == "" {
		rc, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster configuration (kube_config_file is empty): %w", err)
		}
	} else {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeConfigFile)
		if err != nil {
			return nil, fmt.Errorf("kube_config_file %q: %w", kubeConfigFile, err)
		}
	}
	rc.Timeout = requestTimeout
	rc.UserAgent = userAgent
	// JSON both ways: what every API server speaks, and what the
	// response bound below is sized for.
	rc.ContentType = "application/json"
	rc.AcceptContentTypes = "application/json"
	// No client-side rate limit: one attestation makes three calls, and a
	// token bucket (client-go's default is 5/s) would queue attestations
	// behind each other. SPIRE builds a new client for every call, which
	// has the same effect; the API server's priority and fairness still
	// applies.
	rc.QPS = -1
	rc.WarningHandler = rest.NoWarnings{}
	// A proxy function of our own keeps client-go from sharing one
	// transport between clusters with the same TLS settings, so that
	// closing a removed cluster's idle connections touches no other.
	if rc.Proxy == nil {
		rc.Proxy = http.ProxyFromEnvironment
	}
	rc.Wrap(func(rt http.RoundTripper) http.RoundTripper { return limitedTransport{rt} })
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		return nil, fmt.Errorf("building HTTP client: %w", err)
	}
	// The API server never redirects these calls; a redirect would send
	// the token under review to another address.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	cs, err := kubernetes.NewForConfigAndClient(rc, hc)
	if err != nil {
		return nil, fmt.Errorf("building clientset: %w", err)
	}
	return &kubeClient{Interface: cs, http: hc}, nil
}

// limitedTransport bounds response bodies to maxResponseSize.
type limitedTransport struct{ rt http.RoundTripper }

func (t limitedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > maxResponseSize {
		resp.Body.Close()
		return nil, errResponseTooLarge
	}
	resp.Body = &limitedBody{rc: resp.Body, remaining: maxResponseSize}
	return resp, nil
}

// WrappedRoundTripper lets client-go find the transport underneath.
func (t limitedTransport) WrappedRoundTripper() http.RoundTripper { return t.rt }

type limitedBody struct {
	rc        io.ReadCloser
	remaining int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if int64(len(p)) > b.remaining+1 {
		p = p[:b.remaining+1]
	}
	n, err := b.rc.Read(p)
	b.remaining -= int64(n)
	if b.remaining < 0 {
		return 0, errResponseTooLarge
	}
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }
