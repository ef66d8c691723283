// Command attest measures node attestation on one server: attestations per
// second and server CPU per attestation, for k8s_psat against arbor and a
// real spire-server v1.13.3 side by side in one run (both reviewing tokens
// with the same local fake kube-apiserver), and for aws_iid, gcp_iit and
// azure_msi against arbor (spire-server's plugins of those trust only the
// clouds' own signing keys and endpoints, so they cannot be pointed at
// local stand-ins), next to the machine's raw limit for what each must do
// per attestation (one RSA-2048 signature verification):
//
//	go run ./test/bench/attest --out bench-attest --attestations 2000 --concurrency 8
//
// Each attestation is one AttestAgent stream, as an agent opens it: a fresh
// P-256 key and CSR, the payload SPIRE's agent plugin sends, the agent SVID
// back. k8s_psat agents re-attest (one per node of the fake cluster, round
// robin); every aws_iid attestation is a new instance (trust on first use),
// with its document signed beforehand. Writes results.md and results.json.
// See docs/performance.md.
package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/arborid/arbor/internal/idpolicy"
	"github.com/arborid/arbor/internal/nodeattest/awsiid/awsiidtest"
	"github.com/arborid/arbor/internal/nodeattest/azuremsi/azuremsitest"
	"github.com/arborid/arbor/internal/nodeattest/gcpiit/gcpiittest"
	"github.com/arborid/arbor/internal/nodeattest/k8spsat/k8spsattest"
	"github.com/arborid/arbor/test/bench/benchproc"
	"github.com/arborid/arbor/test/load/loadgen"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "attest:", err)
		}
		os.Exit(1)
	}
}

// Result is one measured run.
type Result struct {
	Server       string  `json:"server"`
	Attestor     string  `json:"attestor"`
	Attestations int     `json:"attestations"`
	Concurrency  int     `json:"concurrency"`
	Errors       int     `json:"errors"`
	PerSecond    float64 `json:"per_second"`
	// CPUms is the server's user+system CPU per attestation.
	CPUms float64 `json:"server_cpu_ms_per_attestation"`
	P50ms float64 `json:"p50_ms"`
	P99ms float64 `json:"p99_ms"`
	// APICalls is the calls the fake API answered per attestation
	// (TokenReview and pod/node GETs; DescribeInstances and
	// GetInstanceProfile).
	APICalls float64 `json:"api_calls_per_attestation"`
	// FirstError is one error text, when there were errors.
	FirstError string `json:"first_error,omitempty"`
}

type options struct {
	out          string
	attestations int
	concurrency  int
	nodes        int
	arborBin     string
	spireBin     string
	servers      []string
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("attest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var servers string
	fs.StringVar(&o.out, "out", "bench-attest", "folder for results.md, results.json and the server logs")
	fs.IntVar(&o.attestations, "attestations", 2000, "attestations per server and attestor")
	fs.IntVar(&o.concurrency, "concurrency", 8, "attestations in flight at once")
	fs.IntVar(&o.nodes, "nodes", 50, "nodes (and agent pods) of the fake Kubernetes cluster")
	fs.StringVar(&o.arborBin, "arbor-bin", "", "arbor binary (default: built from this repository)")
	fs.StringVar(&o.spireBin, "spire-bin", "", "folder holding spire-server (default: test/spirepeer/build.sh)")
	fs.StringVar(&servers, "servers", "arbor,spire", "servers to measure")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.attestations < 1 || o.concurrency < 1 || o.nodes < 1 {
		return errors.New("--attestations, --concurrency and --nodes must be positive")
	}
	o.servers = strings.Split(servers, ",")
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	repo, err := benchproc.RepoRoot()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "att")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if o.arborBin == "" {
		fmt.Fprintln(stderr, "attest: building arbor")
		if o.arborBin, err = benchproc.BuildArbor(ctx, repo, work); err != nil {
			return err
		}
	}
	if o.spireBin == "" && contains(o.servers, "spire") {
		if o.spireBin, err = benchproc.BuildSpire(ctx, repo); err != nil {
			return err
		}
	}
	fx, err := newFixtures(work, o)
	if err != nil {
		return err
	}
	defer fx.close()

	var results []Result
	for _, name := range o.servers {
		for _, att := range []string{"k8s_psat", "aws_iid", "gcp_iit", "azure_msi"} {
			if name == "spire" && att != "k8s_psat" {
				continue
			}
			fmt.Fprintf(stderr, "attest: %s %s: %d attestations, %d at once\n", name, att, o.attestations, o.concurrency)
			r, err := measure(ctx, o, fx, name, att, work)
			if err != nil {
				return fmt.Errorf("%s %s: %w", name, att, err)
			}
			fmt.Fprintf(stderr, "attest: %s %s: %.0f/s, %.2f ms CPU each, %d errors\n", name, att, r.PerSecond, r.CPUms, r.Errors)
			results = append(results, r)
		}
	}
	raw := rawRSAVerify(2 * time.Second)
	data, err := json.MarshalIndent(map[string]any{"results": results, "raw_rsa2048_verify_per_second_one_core": raw,
		"cpus": runtime.NumCPU()}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(o.out, "results.json"), data, 0o644); err != nil {
		return err
	}
	md := report(results, raw, o)
	fmt.Fprint(stderr, md)
	return os.WriteFile(filepath.Join(o.out, "results.md"), []byte(md), 0o644)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// fixtures are the local stand-ins both servers are pointed at, and the
// payloads the agents send.
type fixtures struct {
	kube       *k8spsattest.Server
	kubeconfig string
	tokens     [][]byte // k8s_psat payloads, one per node
	aws        *awsiidtest.AWS
	signerPEM  string   // path of the identity certificate
	awsCA      string   // path of the EC2 fake's TLS certificate
	docs       [][]byte // aws_iid payloads, one per attestation
	google     *gcpiittest.Google
	gcpTokens  [][]byte // gcp_iit payloads, one per attestation
	entra      *azuremsitest.Entra
	arm        *azuremsitest.ARM
	azTokens   [][]byte // azure_msi payloads, one per attestation
	// caFile holds the TLS certificates of every fake, for the server's
	// SSL_CERT_FILE: the clouds' SDKs trust them as they would a private
	// CA.
	caFile string
}

const (
	gcpProject    = "arbor-bench"
	azTenant      = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	azSub         = "11111111-1111-1111-1111-111111111111"
	azApp, azPass = "22222222-2222-2222-2222-222222222222", "not-a-secret"
)

func (f *fixtures) close() {
	f.kube.Close()
	f.aws.Close()
	f.google.Close()
	f.entra.Close()
	f.arm.Close()
}

func newFixtures(dir string, o options) (*fixtures, error) {
	kube, err := k8spsattest.New(k8spsattest.Config{})
	if err != nil {
		return nil, err
	}
	f := &fixtures{kube: kube, kubeconfig: filepath.Join(dir, "kubeconfig")}
	if err := kube.WriteKubeconfig(f.kubeconfig); err != nil {
		return nil, err
	}
	for i := range o.nodes {
		node := fmt.Sprintf("node-%d", i)
		pod := fmt.Sprintf("spire-agent-%d", i)
		kube.SetNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, UID: k8stypes.UID(fmt.Sprintf("uid-%s", node))}})
		kube.SetPod(&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "spire", Name: pod, UID: k8stypes.UID("uid-" + pod)},
			Spec:       corev1.PodSpec{NodeName: node, ServiceAccountName: "spire-agent"},
			Status:     corev1.PodStatus{HostIP: "10.0.0.1"},
		})
		tok, err := kube.IssueToken(k8spsattest.TokenOptions{Namespace: "spire", ServiceAccount: "spire-agent", PodName: pod, TTL: 24 * time.Hour})
		if err != nil {
			return nil, err
		}
		payload, err := json.Marshal(map[string]string{"cluster": "bench", "token": tok})
		if err != nil {
			return nil, err
		}
		f.tokens = append(f.tokens, payload)
	}

	f.aws = awsiidtest.NewAWS("AKIDEXAMPLE", "not-a-secret")
	signer, err := awsiidtest.NewSigner()
	if err != nil {
		return nil, err
	}
	f.signerPEM = filepath.Join(dir, "iid.pem")
	if err := os.WriteFile(f.signerPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: signer.Cert.Raw}), 0o600); err != nil {
		return nil, err
	}
	f.awsCA = filepath.Join(dir, "aws-ca.pem")
	if err := os.WriteFile(f.awsCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.aws.Certificate().Raw}), 0o600); err != nil {
		return nil, err
	}
	// One instance per attestation of every arbor run (an instance attests
	// once).
	for i := range o.attestations * len(o.servers) {
		id := fmt.Sprintf("i-%017x", i)
		f.aws.PutInstance(awsiidtest.Instance{ID: id, ImageID: "ami-0123456789abcdef0",
			Tags: []awsiidtest.Tag{{Key: "role", Value: "bench"}}, SecurityGroups: []awsiidtest.SecurityGroup{{ID: "sg-0a1b2c", Name: "web"}}})
		doc := awsiidtest.Document{AccountID: "123456789012", Region: "eu-west-1", AvailabilityZone: "eu-west-1a",
			InstanceID: id, ImageID: "ami-0123456789abcdef0", InstanceType: "t3.small", PendingTime: time.Now().Add(-time.Hour).UTC().Truncate(time.Second),
			PrivateIP: "10.1.0.1"}.JSON()
		sig, err := signer.Sign(doc)
		if err != nil {
			return nil, err
		}
		payload, err := json.Marshal(map[string]string{"document": string(doc), "rsa2048": sig})
		if err != nil {
			return nil, err
		}
		f.docs = append(f.docs, payload)
	}

	// gcp_iit: a full-format identity token per instance, Google's keys
	// served locally.
	gsigner, err := gcpiittest.NewSigner("bench-key")
	if err != nil {
		return nil, err
	}
	f.google = gcpiittest.NewGoogle(gsigner)
	// azure_msi: a managed identity token per VM, the tenant's keys and an
	// app's client credentials from a local Entra ID, the VMs in a local
	// Resource Manager.
	akey, err := azuremsitest.NewKey("bench-kid")
	if err != nil {
		return nil, err
	}
	f.entra = azuremsitest.NewEntra(akey)
	f.arm = azuremsitest.NewARM(f.entra.AddApp(azTenant, azApp, azPass))
	now := time.Now()
	for i := range o.attestations * len(o.servers) {
		inst := gcpiittest.Instance{ProjectID: gcpProject, ProjectNumber: 4829137750, Zone: "europe-west1-b",
			ID: uint64(7300000000000000000 + i), Name: fmt.Sprintf("vm-%d", i), Created: now.Add(-time.Hour),
			ServiceAccounts: []gcpiittest.ServiceAccount{{Email: "agent@arbor-bench.iam.gserviceaccount.com", UniqueID: "104532987654321098765"}}}
		tok, err := gsigner.Sign(inst.Claims(nil, "spire-gcp-node-attestor", true, false, now))
		if err != nil {
			return nil, err
		}
		f.gcpTokens = append(f.gcpTokens, []byte(tok))

		vm := azuremsitest.VM{SubscriptionID: azSub, ResourceGroup: "bench", Name: fmt.Sprintf("vm-%d", i), Location: "westeurope",
			PrincipalID: fmt.Sprintf("8d3c5a1e-0000-4000-8000-%012d", i), TenantID: azTenant}
		f.arm.PutVM(vm)
		atok, err := akey.Sign(azuremsitest.Claims{Tenant: azTenant, Principal: vm.PrincipalID, Audience: "https://management.azure.com/",
			MIResourceID: vm.ID(), IssuedAt: now, Expiry: now.Add(24 * time.Hour)})
		if err != nil {
			return nil, err
		}
		payload, err := json.Marshal(map[string]string{"token": atok})
		if err != nil {
			return nil, err
		}
		f.azTokens = append(f.azTokens, payload)
	}
	var certs []byte
	for _, c := range []*x509.Certificate{f.aws.Certificate(), f.google.Certificate(), f.entra.Certificate(), f.arm.Certificate()} {
		certs = append(certs, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	f.caFile = filepath.Join(dir, "fakes-ca.pem")
	if err := os.WriteFile(f.caFile, certs, 0o600); err != nil {
		return nil, err
	}
	return f, nil
}

// start runs one server with both attestors configured as equivalently as
// the two allow.
func start(ctx context.Context, o options, fx *fixtures, name, dir string) (*benchproc.Process, error) {
	port, err := benchproc.FreePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	sock := filepath.Join(dir, "api.sock")
	logPath := filepath.Join(o.out, name+".log")
	switch name {
	case "arbor":
		conf := fmt.Sprintf(`trust_domain = "example.org"
server "bench" {
  listen        = %q
  state_dir     = %q
  admin_socket  = %q
  health_listen = "off"
  log_level     = "warn"
  ca_ttl        = "24h"
  key_type      = "ec-p256"
  datastore "sqlite" {}
  node_attestor "k8s_psat" {
    cluster "bench" {
      service_account_allow_list = ["spire:spire-agent"]
      kube_config_file           = %q
    }
  }
  node_attestor "aws_iid" {
    access_key_id              = "AKIDEXAMPLE"
    secret_access_key          = "not-a-secret"
    skip_block_device          = true
    identity_certificate_paths = [%q]
    ec2_endpoint               = %q
    iam_endpoint               = %q
  }
  node_attestor "gcp_iit" {
    projectid_allow_list = [%q]
    keys_url             = %q
  }
  node_attestor "azure_msi" {
    login_endpoint = %q
    arm_endpoint   = %q
    tenant %q {
      subscription_id = %q
      app_id          = %q
      app_secret      = %q
    }
  }
}
`, addr, filepath.Join(dir, "state"), sock, fx.kubeconfig, fx.signerPEM, fx.aws.URL(), fx.aws.URL(),
			gcpProject, fx.google.KeysURL(), fx.entra.URL(), fx.arm.URL(), azTenant, azSub, azApp, azPass)
		path := filepath.Join(dir, "topology.hcl")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			return nil, err
		}
		return benchproc.Start(ctx, o.arborBin, []string{"server", "--topology", path, "--node", "bench"},
			[]string{"AWS_CA_BUNDLE=" + fx.awsCA, "SSL_CERT_FILE=" + fx.caFile}, logPath, sock, addr, 90*time.Second)
	case "spire":
		conf := fmt.Sprintf(`server {
  bind_address = "127.0.0.1"
  bind_port    = "%d"
  socket_path  = %q
  trust_domain = "example.org"
  data_dir     = %q
  log_level    = "WARN"
  ca_ttl       = "24h"
  ca_key_type  = "ec-p256"

  ratelimit {
    attestation = false
    signing     = false
  }
}

plugins {
  DataStore "sql" {
    plugin_data {
      database_type     = "sqlite3"
      connection_string = %q
    }
  }
  KeyManager "memory" {
    plugin_data {}
  }
  NodeAttestor "k8s_psat" {
    plugin_data {
      clusters = {
        "bench" = {
          service_account_allow_list = ["spire:spire-agent"]
          kube_config_file           = %q
        }
      }
    }
  }
}
`, port, sock, filepath.Join(dir, "data"), filepath.Join(dir, "datastore.sqlite3"), fx.kubeconfig)
		path := filepath.Join(dir, "server.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			return nil, err
		}
		return benchproc.Start(ctx, filepath.Join(o.spireBin, "spire-server"), []string{"run", "-config", path}, nil, logPath, sock, addr, 90*time.Second)
	}
	return nil, fmt.Errorf("unknown server %q", name)
}

// onceOffset is, per trust-on-first-use attestor, how many of its payloads
// earlier runs used.
var onceOffset = map[string]*atomic.Int64{"aws_iid": {}, "gcp_iit": {}, "azure_msi": {}}

// measure starts a fresh server and runs the attestations of one attestor
// against it.
func measure(ctx context.Context, o options, fx *fixtures, name, att, work string) (Result, error) {
	dir, err := os.MkdirTemp(work, name)
	if err != nil {
		return Result{}, err
	}
	srv, err := start(ctx, o, fx, name, dir)
	if err != nil {
		return Result{}, err
	}
	defer srv.Stop()
	b, err := srv.Bundle(ctx)
	if err != nil {
		return Result{}, err
	}
	var roots []*x509.Certificate
	for _, a := range b.X509Authorities {
		c, err := x509.ParseCertificate(a.Asn1)
		if err != nil {
			return Result{}, err
		}
		roots = append(roots, c)
	}
	bundle := x509bundle.FromX509Authorities(td, roots)
	tc := tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(idpolicy.ServerID(td)))
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return Result{}, err
	}
	defer conn.Close()
	client := agentv1.NewAgentClient(conn)

	payload := func(i int) []byte { return fx.tokens[i%len(fx.tokens)] }
	if once := map[string][][]byte{"aws_iid": fx.docs, "gcp_iit": fx.gcpTokens, "azure_msi": fx.azTokens}[att]; once != nil {
		// One machine per attestation: each attests once.
		base := int(onceOffset[att].Add(int64(o.attestations))) - o.attestations
		payload = func(i int) []byte { return once[base+i] }
	}
	// One warm-up attestation, not counted: connections, caches.
	if _, err := attest(ctx, client, att, payload(0)); err != nil {
		return Result{}, fmt.Errorf("first attestation: %w (log: %s)", err, srv.Log)
	}
	apiBefore := apiCalls(fx, att)
	before, err := loadgen.ReadProc(srv.PID())
	if err != nil {
		return Result{}, err
	}
	lat := make([]time.Duration, o.attestations)
	var errCount atomic.Int64
	var firstErr atomic.Value
	next := atomic.Int64{}
	next.Store(1)
	startAt := time.Now()
	var wg sync.WaitGroup
	for range o.concurrency {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= o.attestations {
					return
				}
				t0 := time.Now()
				_, err := attest(ctx, client, att, payload(i))
				lat[i] = time.Since(t0)
				if err != nil {
					errCount.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(startAt)
	after, err := loadgen.ReadProc(srv.PID())
	if err != nil {
		return Result{}, err
	}
	n := o.attestations - 1
	counted := lat[1:]
	sort.Slice(counted, func(a, b int) bool { return counted[a] < counted[b] })
	r := Result{Server: name, Attestor: att, Attestations: n, Concurrency: o.concurrency, Errors: int(errCount.Load()),
		PerSecond: float64(n) / elapsed.Seconds(),
		CPUms:     (after.CPUSeconds - before.CPUSeconds) * 1000 / float64(n),
		P50ms:     ms(counted[len(counted)/2]), P99ms: ms(counted[len(counted)*99/100]),
		APICalls: float64(apiCalls(fx, att)-apiBefore) / float64(n)}
	if v, ok := firstErr.Load().(string); ok {
		r.FirstError = v
	}
	return r, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func apiCalls(fx *fixtures, att string) int {
	switch att {
	case "aws_iid":
		return len(fx.aws.Calls())
	case "gcp_iit":
		calls, _ := fx.google.ComputeCalls()
		return fx.google.KeyFetches() + calls
	case "azure_msi":
		discovery, keys := fx.entra.Fetches()
		return discovery + keys + fx.entra.Grants() + len(fx.arm.Calls())
	}
	st := fx.kube.Stats()
	return int(st.TokenReviews + st.PodGets + st.NodeGets)
}

// attest runs one AttestAgent stream with the given attestation data.
func attest(ctx context.Context, client agentv1.AgentClient, typ string, payload []byte) (spiffeid.ID, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return spiffeid.ID{}, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return spiffeid.ID{}, err
	}
	stream, err := client.AttestAgent(ctx)
	if err != nil {
		return spiffeid.ID{}, err
	}
	if err := stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
		Data: &types.AttestationData{Type: typ, Payload: payload}, Params: &agentv1.AgentX509SVIDParams{Csr: csr},
	}}}); err != nil {
		return spiffeid.ID{}, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return spiffeid.ID{}, err
	}
	stream.CloseSend()
	chain := resp.GetResult().GetSvid().GetCertChain()
	if len(chain) == 0 {
		return spiffeid.ID{}, errors.New("no agent SVID in the answer")
	}
	cert, err := x509.ParseCertificate(chain[0])
	if err != nil || len(cert.URIs) != 1 {
		return spiffeid.ID{}, fmt.Errorf("agent SVID: %v", err)
	}
	return spiffeid.FromURI(cert.URIs[0])
}

// rawRSAVerify is how many RSA-2048 PKCS#1 v1.5 SHA-256 verifications one
// goroutine makes per second: the signature check every aws_iid
// attestation needs.
func rawRSAVerify(d time.Duration) float64 {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return 0
	}
	digest := sha256.Sum256([]byte("instance identity document"))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
	if err != nil {
		return 0
	}
	n := 0
	start := time.Now()
	for time.Since(start) < d {
		if rsa.VerifyPKCS1v15(&key.PublicKey, crypto.SHA256, digest[:], sig) != nil {
			return 0
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds()
}

// report is the markdown table: each server's numbers, the arbor/spire
// ratio for k8s_psat, and aws_iid next to the raw limit.
func report(results []Result, raw float64, o options) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Node attestation, one server, %d attestations, %d at once, %d CPUs\n\n", o.attestations-1, o.concurrency, runtime.NumCPU())
	b.WriteString("| server | attestor | attestations/s | server CPU ms/attestation | p50 ms | p99 ms | fake API calls/attestation | errors |\n|---|---|---|---|---|---|---|---|\n")
	get := func(server, att string) *Result {
		for i := range results {
			if results[i].Server == server && results[i].Attestor == att {
				return &results[i]
			}
		}
		return nil
	}
	for _, r := range results {
		fmt.Fprintf(&b, "| %s | %s | %.0f | %.2f | %.1f | %.1f | %.1f | %d |\n", r.Server, r.Attestor, r.PerSecond, r.CPUms, r.P50ms, r.P99ms, r.APICalls, r.Errors)
	}
	b.WriteString("\n")
	if a, s := get("arbor", "k8s_psat"), get("spire", "k8s_psat"); a != nil && s != nil && s.PerSecond > 0 && a.CPUms > 0 {
		fmt.Fprintf(&b, "k8s_psat, arbor / spire-server: %.2fx the attestations per second, %.2fx less server CPU per attestation.\n",
			a.PerSecond/s.PerSecond, s.CPUms/a.CPUms)
	}
	for _, att := range []string{"aws_iid", "gcp_iit", "azure_msi"} {
		if a := get("arbor", att); a != nil && raw > 0 && a.CPUms > 0 {
			fmt.Fprintf(&b, "%s on arbor: %.2f ms of server CPU per attestation; one RSA-2048 verification alone costs %.3f ms (%.0f/s on one core): the signature check is %.0f%% of it.\n",
				att, a.CPUms, 1000/raw, raw, 100*(1000/raw)/a.CPUms)
		}
	}
	for _, r := range results {
		if r.FirstError != "" {
			fmt.Fprintf(&b, "\n%s %s: %d errors, first: %s\n", r.Server, r.Attestor, r.Errors, r.FirstError)
		}
	}
	return b.String()
}
