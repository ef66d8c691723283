// Package k8spsattest runs a fake Kubernetes API server for tests of the
// k8s_psat node attestor: an HTTPS server that speaks the real JSON of the
// three calls the attestor makes (a TokenReview, getting a pod, getting a
// node), requires a bearer token like a real API server, and issues
// projected service account tokens signed with its own key. WriteKubeconfig
// points a client — arbor's attestor or a real spire-server's k8s_psat
// plugin through kube_config_file — at it.
//
// It decides TokenReviews from its own table of the tokens it issued, as the
// real API server decides from the signing key and the bound objects: a
// token it did not issue is not authenticated, nor is one that expired on
// its clock, one that was revoked, or one whose audiences do not meet the
// review's.
package k8spsattest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// DefaultIssuer is the iss claim of the tokens a Server issues unless
// Config.Issuer says otherwise: what a kubeadm cluster's API server uses.
const DefaultIssuer = "https://kubernetes.default.svc.cluster.local"

// Keys of the user info extra a real API server returns for a token bound to
// a pod (k8s.io/apiserver's serviceaccount package).
const (
	ExtraPodName      = "authentication.kubernetes.io/pod-name"
	ExtraPodUID       = "authentication.kubernetes.io/pod-uid"
	ExtraNodeName     = "authentication.kubernetes.io/node-name"
	ExtraNodeUID      = "authentication.kubernetes.io/node-uid"
	ExtraCredentialID = "authentication.kubernetes.io/credential-id"
)

// maxRequestBody bounds what the fake reads of a TokenReview request.
const maxRequestBody = 1 << 20

// Config configures a Server. The zero value is usable.
type Config struct {
	// Now is the server's clock, against which tokens are issued and
	// expire; if nil, time.Now is used.
	Now func() time.Time
	// Issuer is the iss claim of issued tokens; if empty, DefaultIssuer.
	Issuer string
	// APIAudiences are the API server's own audiences (kube-apiserver
	// --api-audiences), checked by a TokenReview without spec.audiences;
	// if empty, [Issuer].
	APIAudiences []string
	// AudienceUnaware makes TokenReview behave like an authenticator that is
	// not audience aware: it ignores spec.audiences and answers with
	// APIAudiences in status.audiences, which a careful client must refuse.
	AudienceUnaware bool
	// SigningKey signs issued tokens: RS256 for an RSA key, ES256 for a P-256
	// key. If nil, a new P-256 key is generated.
	SigningKey crypto.Signer
}

// Server is a fake Kubernetes API server. Its methods are safe for
// concurrent use, including while clients call it.
type Server struct {
	cfg         Config
	now         func() time.Time
	srv         *httptest.Server
	signer      jose.Signer
	bearerToken string

	mu     sync.Mutex
	tokens map[string]*issued
	pods   map[types.NamespacedName]*corev1.Pod
	nodes  map[string]*corev1.Node

	connections, tokenReviews, podGets, nodeGets, unauthorized atomic.Int64
}

// issued is one row of the TokenReview table.
type issued struct {
	opts    TokenOptions
	expiry  time.Time
	jti     string
	revoked bool
}

// New starts a Server on a loopback address. Close stops it.
func New(cfg Config) (*Server, error) {
	s := &Server{
		cfg:    cfg,
		now:    cfg.Now,
		tokens: map[string]*issued{},
		pods:   map[types.NamespacedName]*corev1.Pod{},
		nodes:  map[string]*corev1.Node{},
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.cfg.Issuer == "" {
		s.cfg.Issuer = DefaultIssuer
	}
	if len(s.cfg.APIAudiences) == 0 {
		s.cfg.APIAudiences = []string{s.cfg.Issuer}
	}
	key := cfg.SigningKey
	if key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("k8spsattest: generating signing key: %w", err)
		}
		key = k
	}
	signer, err := newSigner(key)
	if err != nil {
		return nil, err
	}
	s.signer = signer
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("k8spsattest: generating bearer token: %w", err)
	}
	s.bearerToken = hex.EncodeToString(b[:])

	mux := http.NewServeMux()
	mux.HandleFunc("POST /apis/authentication.k8s.io/v1/tokenreviews", s.tokenReview)
	mux.HandleFunc("GET /api/v1/namespaces/{namespace}/pods/{name}", s.getPod)
	mux.HandleFunc("GET /api/v1/nodes/{name}", s.getNode)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, "the server could not find the requested resource", nil)
	})
	s.srv = httptest.NewUnstartedServer(s.authenticate(mux))
	s.srv.EnableHTTP2 = true
	s.srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			s.connections.Add(1)
		}
	}
	s.srv.Config.ReadHeaderTimeout = 10 * time.Second
	s.srv.StartTLS()
	return s, nil
}

func newSigner(key crypto.Signer) (jose.Signer, error) {
	var alg jose.SignatureAlgorithm
	switch pub := key.Public().(type) {
	case *rsa.PublicKey:
		alg = jose.RS256
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() {
			return nil, errors.New("k8spsattest: ECDSA signing key must be P-256")
		}
		alg = jose.ES256
	default:
		return nil, fmt.Errorf("k8spsattest: unsupported signing key type %T", pub)
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("k8spsattest: encoding public key: %w", err)
	}
	// The API server's key ID: the unpadded base64url SHA-256 of the
	// public key's DER.
	sum := sha256.Sum256(der)
	kid := base64.RawURLEncoding.EncodeToString(sum[:])
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", kid))
	if err != nil {
		return nil, fmt.Errorf("k8spsattest: %w", err)
	}
	return signer, nil
}

// URL returns the server's base URL (https://127.0.0.1:port).
func (s *Server) URL() string { return s.srv.URL }

// Close stops the server and closes its connections.
func (s *Server) Close() { s.srv.Close() }

// CACertPEM returns the PEM certificate a client must trust for the
// server's TLS certificate.
func (s *Server) CACertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
}

// BearerToken returns the token a client must present (Authorization:
// Bearer): the credential of the attestor's own service account.
func (s *Server) BearerToken() string { return s.bearerToken }

// WriteKubeconfig writes a kubeconfig file at path for a client of this
// server: its URL, its CA certificate inline and the bearer token.
func (s *Server) WriteKubeconfig(path string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["fake"] = &clientcmdapi.Cluster{
		Server:                   s.srv.URL,
		CertificateAuthorityData: s.CACertPEM(),
	}
	cfg.AuthInfos["attestor"] = &clientcmdapi.AuthInfo{Token: s.bearerToken}
	cfg.Contexts["fake"] = &clientcmdapi.Context{Cluster: "fake", AuthInfo: "attestor"}
	cfg.CurrentContext = "fake"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("k8spsattest: writing kubeconfig: %w", err)
	}
	return nil
}

// SetPod stores pod (a deep copy) under its namespace and name, replacing
// any pod there.
func (s *Server) SetPod(pod *corev1.Pod) {
	p := pod.DeepCopy()
	p.TypeMeta = metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pods[types.NamespacedName{Namespace: p.Namespace, Name: p.Name}] = p
}

// DeletePod removes a pod; GET then answers 404 NotFound. The tokens bound
// to it stay valid in the table (revoke them to model the API server's
// check of the bound object).
func (s *Server) DeletePod(namespace, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pods, types.NamespacedName{Namespace: namespace, Name: name})
}

// SetNode stores node (a deep copy) under its name, replacing any node
// there.
func (s *Server) SetNode(node *corev1.Node) {
	n := node.DeepCopy()
	n.TypeMeta = metav1.TypeMeta{Kind: "Node", APIVersion: "v1"}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nodes[n.Name] = n
}

// DeleteNode removes a node; GET then answers 404 NotFound.
func (s *Server) DeleteNode(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.nodes, name)
}

// TokenOptions describe a projected service account token, as the kubelet
// requests one for a pod's serviceAccountToken volume.
type TokenOptions struct {
	// Namespace and ServiceAccount name the token's service account;
	// both are required.
	Namespace      string
	ServiceAccount string
	// PodName and PodUID name the pod the token is bound to. If PodUID is
	// empty and a pod of that name is stored, its UID is used; if it is
	// also empty the token is bound to no pod (like a legacy or
	// TokenRequest token without a bound object).
	PodName string
	PodUID  string
	// NodeName and NodeUID name the pod's node (the node claims of
	// Kubernetes 1.30+); if empty, taken from the stored pod and node.
	NodeName string
	NodeUID  string
	// Audiences is the aud claim; if empty, ["spire-server"].
	Audiences []string
	// TTL is the token's lifetime from Now; if zero, one hour. A negative TTL
	// issues a token that has already expired.
	TTL time.Duration
}

// IssueToken signs a projected service account token for o and records it
// in the TokenReview table.
func (s *Server) IssueToken(o TokenOptions) (string, error) {
	if o.Namespace == "" || o.ServiceAccount == "" {
		return "", errors.New("k8spsattest: token needs a namespace and a service account")
	}
	if len(o.Audiences) == 0 {
		o.Audiences = []string{"spire-server"}
	}
	if o.TTL == 0 {
		o.TTL = time.Hour
	}
	s.mu.Lock()
	if pod := s.pods[types.NamespacedName{Namespace: o.Namespace, Name: o.PodName}]; pod != nil && o.PodName != "" {
		if o.PodUID == "" {
			o.PodUID = string(pod.UID)
		}
		if o.NodeName == "" {
			o.NodeName = pod.Spec.NodeName
		}
	}
	if node := s.nodes[o.NodeName]; node != nil && o.NodeName != "" && o.NodeUID == "" {
		o.NodeUID = string(node.UID)
	}
	s.mu.Unlock()

	now := s.now()
	jti, err := newUID()
	if err != nil {
		return "", err
	}
	c := claims{
		Audience:  o.Audiences,
		Expiry:    now.Add(o.TTL).Unix(),
		IssuedAt:  now.Unix(),
		Issuer:    s.cfg.Issuer,
		ID:        jti,
		NotBefore: now.Unix(),
		Subject:   "system:serviceaccount:" + o.Namespace + ":" + o.ServiceAccount,
	}
	c.Kubernetes.Namespace = o.Namespace
	c.Kubernetes.ServiceAccount = objectRef{Name: o.ServiceAccount, UID: serviceAccountUID(o.Namespace, o.ServiceAccount)}
	if o.PodName != "" && o.PodUID != "" {
		c.Kubernetes.Pod = &objectRef{Name: o.PodName, UID: o.PodUID}
		if o.NodeName != "" && o.NodeUID != "" {
			c.Kubernetes.Node = &objectRef{Name: o.NodeName, UID: o.NodeUID}
		}
	}
	payload, err := json.Marshal(&c)
	if err != nil {
		return "", fmt.Errorf("k8spsattest: encoding claims: %w", err)
	}
	jws, err := s.signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("k8spsattest: signing token: %w", err)
	}
	token, err := jws.CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("k8spsattest: serializing token: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[token] = &issued{opts: o, expiry: time.Unix(c.Expiry, 0), jti: jti}
	return token, nil
}

// Revoke makes the API server refuse token from now on, as it does once the
// pod a token is bound to is deleted.
func (s *Server) Revoke(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.tokens[token]; t != nil {
		t.revoked = true
	}
}

// Stats counts what the server has served.
type Stats struct {
	// Connections is the number of TCP connections accepted.
	Connections int64
	// TokenReviews, PodGets and NodeGets count authorized requests of
	// each kind.
	TokenReviews, PodGets, NodeGets int64
	// Unauthorized counts requests refused for a missing or wrong bearer
	// token.
	Unauthorized int64
}

// Stats returns the counts so far.
func (s *Server) Stats() Stats {
	return Stats{
		Connections:  s.connections.Load(),
		TokenReviews: s.tokenReviews.Load(),
		PodGets:      s.podGets.Load(),
		NodeGets:     s.nodeGets.Load(),
		Unauthorized: s.unauthorized.Load(),
	}
}

// claims are those of a projected service account token, in the order the
// API server writes them.
type claims struct {
	Audience   []string `json:"aud"`
	Expiry     int64    `json:"exp"`
	IssuedAt   int64    `json:"iat"`
	Issuer     string   `json:"iss"`
	ID         string   `json:"jti"`
	Kubernetes struct {
		Namespace      string     `json:"namespace"`
		Node           *objectRef `json:"node,omitempty"`
		Pod            *objectRef `json:"pod,omitempty"`
		ServiceAccount objectRef  `json:"serviceaccount"`
	} `json:"kubernetes.io"`
	NotBefore int64  `json:"nbf"`
	Subject   string `json:"sub"`
}

type objectRef struct {
	Name string `json:"name"`
	UID  string `json:"uid"`
}

// serviceAccountUID gives every service account a stable UUID-shaped UID.
func serviceAccountUID(namespace, name string) string {
	sum := sha256.Sum256([]byte(namespace + "/" + name))
	return formatUUID(sum[:16])
}

func newUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("k8spsattest: %w", err)
	}
	return formatUUID(b[:]), nil
}

func formatUUID(b []byte) string {
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// authenticate refuses requests without the server's bearer token, with the
// 401 Status a real API server sends.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || token != s.bearerToken {
			s.unauthorized.Add(1)
			writeStatus(w, http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "Unauthorized", nil)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) tokenReview(w http.ResponseWriter, r *http.Request) {
	s.tokenReviews.Add(1)
	// client-go's typed clients send protobuf unless told otherwise (as
	// SPIRE's do); arbor's attestor sends JSON. The answer is JSON, which
	// both accept.
	switch mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt {
	case "application/json", "application/vnd.kubernetes.protobuf":
	default:
		writeStatus(w, http.StatusUnsupportedMediaType, metav1.StatusReasonUnsupportedMediaType,
			fmt.Sprintf("the body of the request was in an unknown format - accepted media types include: application/json, application/vnd.kubernetes.protobuf (got %q)", r.Header.Get("Content-Type")), nil)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBody))
	if err != nil {
		writeStatus(w, http.StatusRequestEntityTooLarge, metav1.StatusReasonRequestEntityTooLarge, "reading TokenReview: "+err.Error(), nil)
		return
	}
	var review authnv1.TokenReview
	obj, gvk, err := scheme.Codecs.UniversalDeserializer().Decode(body, nil, &review)
	if err != nil || obj != &review {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, fmt.Sprintf("decoding TokenReview: %v", err), nil)
		return
	}
	if gvk.Group != "authentication.k8s.io" || gvk.Version != "v1" || gvk.Kind != "TokenReview" {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, fmt.Sprintf("expected authentication.k8s.io/v1 TokenReview, got %s", gvk), nil)
		return
	}
	if review.Spec.Token == "" {
		writeStatus(w, http.StatusUnprocessableEntity, metav1.StatusReasonInvalid, "TokenReview.authentication.k8s.io \"\" is invalid: spec.token: Required value", nil)
		return
	}
	review.Status = s.review(review.Spec.Token, review.Spec.Audiences)
	review.TypeMeta = metav1.TypeMeta{Kind: "TokenReview", APIVersion: "authentication.k8s.io/v1"}
	review.CreationTimestamp = metav1.Time{}
	writeJSON(w, http.StatusCreated, &review)
}

// review authenticates token for the requested audiences as the API
// server's service account token authenticator does.
func (s *Server) review(token string, requested []string) authnv1.TokenReviewStatus {
	s.mu.Lock()
	t := s.tokens[token]
	var entry issued
	if t != nil {
		entry = *t
	}
	s.mu.Unlock()
	if t == nil {
		// Not signed by this cluster's key: the JWT authenticator passes
		// it on and no authenticator claims it.
		return authnv1.TokenReviewStatus{}
	}
	if entry.revoked {
		return authnv1.TokenReviewStatus{Error: "[invalid bearer token, service account token has been invalidated]"}
	}
	if !s.now().Before(entry.expiry) {
		return authnv1.TokenReviewStatus{Error: "[invalid bearer token, service account token has expired]"}
	}
	var audiences []string
	if s.cfg.AudienceUnaware {
		audiences = s.cfg.APIAudiences
	} else {
		if len(requested) == 0 {
			requested = s.cfg.APIAudiences
		}
		for _, a := range requested {
			if slices.Contains(entry.opts.Audiences, a) {
				audiences = append(audiences, a)
			}
		}
		if len(audiences) == 0 {
			return authnv1.TokenReviewStatus{Error: fmt.Sprintf("[invalid bearer token, token audiences %q is invalid for the target audiences %q]", entry.opts.Audiences, requested)}
		}
	}
	o := entry.opts
	user := authnv1.UserInfo{
		Username: "system:serviceaccount:" + o.Namespace + ":" + o.ServiceAccount,
		UID:      serviceAccountUID(o.Namespace, o.ServiceAccount),
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + o.Namespace, "system:authenticated"},
		Extra:    map[string]authnv1.ExtraValue{ExtraCredentialID: {"JTI=" + entry.jti}},
	}
	if o.PodName != "" && o.PodUID != "" {
		user.Extra[ExtraPodName] = authnv1.ExtraValue{o.PodName}
		user.Extra[ExtraPodUID] = authnv1.ExtraValue{o.PodUID}
		if o.NodeName != "" && o.NodeUID != "" {
			user.Extra[ExtraNodeName] = authnv1.ExtraValue{o.NodeName}
			user.Extra[ExtraNodeUID] = authnv1.ExtraValue{o.NodeUID}
		}
	}
	return authnv1.TokenReviewStatus{Authenticated: true, User: user, Audiences: audiences}
}

func (s *Server) getPod(w http.ResponseWriter, r *http.Request) {
	s.podGets.Add(1)
	key := types.NamespacedName{Namespace: r.PathValue("namespace"), Name: r.PathValue("name")}
	s.mu.Lock()
	pod := s.pods[key]
	s.mu.Unlock()
	if pod == nil {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("pods %q not found", key.Name),
			&metav1.StatusDetails{Name: key.Name, Kind: "pods"})
		return
	}
	writeJSON(w, http.StatusOK, pod)
}

func (s *Server) getNode(w http.ResponseWriter, r *http.Request) {
	s.nodeGets.Add(1)
	name := r.PathValue("name")
	s.mu.Lock()
	node := s.nodes[name]
	s.mu.Unlock()
	if node == nil {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("nodes %q not found", name),
			&metav1.StatusDetails{Name: name, Kind: "nodes"})
		return
	}
	writeJSON(w, http.StatusOK, node)
}

func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, message string, details *metav1.StatusDetails) {
	writeJSON(w, code, &metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure,
		Message:  message,
		Reason:   reason,
		Details:  details,
		Code:     int32(code),
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(body) //nolint:errcheck // the client sees a short body
}
