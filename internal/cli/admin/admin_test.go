package admin_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/arborid/arbor/internal/cli/admin"
	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/internal/testkit"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// startServer runs a real server (SQLite in a temp dir) until the test ends
// and returns it with its admin socket path.
func startServer(t *testing.T) (*server.Server, string) {
	t.Helper()
	dir := testkit.ShortDir(t)
	s := testkit.StartServer(t, server.Config{
		Name:           "root",
		TrustDomain:    td,
		ListenAddr:     "127.0.0.1:0",
		StateDir:       filepath.Join(dir, "state"),
		AdminSocket:    filepath.Join(dir, "a.sock"),
		JoinToken:      true,
		CAKeysInMemory: true,
	})
	return s.Server, s.AdminSocket()
}

func dial(t *testing.T, socket string) *admin.Client {
	t.Helper()
	c, err := admin.Dial(socket)
	if err != nil {
		t.Fatalf("Dial(%q): %v", socket, err)
	}
	c.Timeout = 20 * time.Second
	t.Cleanup(func() { c.Close() })
	return c
}

// outputs is a Printer writing to two buffers.
type outputs struct{ out, err bytes.Buffer }

func (o *outputs) printer(f admin.Format) admin.Printer {
	o.out.Reset()
	o.err.Reset()
	return admin.Printer{Out: &o.out, Err: &o.err, Format: f}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// checkOneLine fails unless err is a single readable line without gRPC's
// "rpc error: code =" prefix.
func checkOneLine(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("error = nil, want an error")
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") || strings.Contains(msg, "rpc error") || strings.Contains(msg, "desc =") {
		t.Errorf("error %q is not one readable line", msg)
	}
}

func TestSocketPath(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == admin.SocketEnv {
				return v
			}
			return ""
		}
	}
	tests := []struct {
		name, flag, env, want string
		wantErr               error
	}{
		{name: "flag wins", flag: "/a.sock", env: "/b.sock", want: "/a.sock"},
		{name: "env", env: "rel/b.sock", want: "rel/b.sock"},
		{name: "neither", wantErr: admin.ErrNoSocket},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := admin.SocketPath(tt.flag, env(tt.env))
			if !errors.Is(err, tt.wantErr) || got != tt.want {
				t.Errorf("SocketPath(%q) = %q, %v; want %q, %v", tt.flag, got, err, tt.want, tt.wantErr)
			}
		})
	}
	if !strings.Contains(admin.ErrNoSocket.Error(), admin.SocketEnv) || !strings.Contains(admin.ErrNoSocket.Error(), "--socket-path") {
		t.Errorf("ErrNoSocket = %q, want it to name --socket-path and %s", admin.ErrNoSocket, admin.SocketEnv)
	}
}

func TestParseSeconds(t *testing.T) {
	tests := []struct {
		in      string
		want    int32
		wantErr bool
	}{
		{in: "3600", want: 3600},
		{in: "0", want: 0},
		{in: "1h30m", want: 5400},
		{in: "90s", want: 90},
		{in: "-5", wantErr: true},
		{in: "1.5s", wantErr: true},
		{in: "soon", wantErr: true},
		{in: "99999999999", wantErr: true},
	}
	for _, tt := range tests {
		got, err := admin.ParseSeconds(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseSeconds(%q) = %d, %v; want %d, error %t", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseUnixTime(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "1700000000", want: 1700000000},
		{in: "2023-11-14T22:13:20Z", want: 1700000000},
		{in: "-1", wantErr: true},
		{in: "tomorrow", wantErr: true},
	}
	for _, tt := range tests {
		got, err := admin.ParseUnixTime(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseUnixTime(%q) = %d, %v; want %d, error %t", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseFormats(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    admin.Format
		wantErr bool
	}{{"", admin.FormatPretty, false}, {"pretty", admin.FormatPretty, false}, {"JSON", admin.FormatJSON, false}, {"yaml", 0, true}} {
		got, err := admin.ParseFormat(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseFormat(%q) = %v, %v; want %v, error %t", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
	for _, tt := range []struct {
		in      string
		want    admin.BundleFormat
		wantErr bool
	}{{"", admin.BundlePEM, false}, {"pem", admin.BundlePEM, false}, {"spiffe", admin.BundleSPIFFE, false}, {"der", 0, true}} {
		got, err := admin.ParseBundleFormat(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseBundleFormat(%q) = %v, %v; want %v, error %t", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
	for _, tt := range []struct {
		in      string
		want    string
		wantErr bool
	}{{"", "RESTRICT", false}, {"delete", "DELETE", false}, {"Dissociate", "DISSOCIATE", false}, {"purge", "RESTRICT", true}} {
		got, err := admin.ParseDeleteMode(tt.in)
		if (err != nil) != tt.wantErr || got.String() != tt.want {
			t.Errorf("ParseDeleteMode(%q) = %v, %v; want %v, error %t", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestDialMissingSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "arb")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	_, err = admin.Dial(filepath.Join(dir, "none.sock"))
	checkOneLine(t, err)
	if !errors.Is(err, admin.ErrUnreachable) {
		t.Errorf("Dial(missing) = %v, want ErrUnreachable", err)
	}
	_, err = admin.Dial(dir)
	if !errors.Is(err, admin.ErrUnreachable) || !strings.Contains(err.Error(), "not a Unix socket") {
		t.Errorf("Dial(directory) = %v, want ErrUnreachable saying it is not a socket", err)
	}
}

func TestHealthcheck(t *testing.T) {
	_, socket := startServer(t)
	c := dial(t, socket)
	ctx := testContext(t)
	var o outputs
	for _, shallow := range []bool{false, true} {
		if err := c.Healthcheck(ctx, o.printer(admin.FormatPretty), shallow, false); err != nil {
			t.Fatalf("Healthcheck(shallow=%t): %v", shallow, err)
		}
		if got := o.out.String(); got != "Server is healthy.\n" {
			t.Errorf("Healthcheck(shallow=%t) printed %q, want %q", shallow, got, "Server is healthy.\n")
		}
	}
	if err := c.Healthcheck(ctx, o.printer(admin.FormatPretty), false, true); err != nil {
		t.Fatalf("Healthcheck(verbose): %v", err)
	}
	if got := o.out.String(); !strings.Contains(got, "Checking the datastore") || !strings.HasSuffix(got, "Server is healthy.\n") {
		t.Errorf("Healthcheck(verbose) printed %q, want each step and the verdict", got)
	}
}

func TestHealthcheckNobodyListening(t *testing.T) {
	// A socket file whose server is gone: Dial succeeds, the call fails.
	dir, err := os.MkdirTemp("", "arb")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	c := dial(t, path)
	c.Timeout = 5 * time.Second
	var o outputs
	err = c.Healthcheck(testContext(t), o.printer(admin.FormatPretty), false, false)
	checkOneLine(t, err)
	if !errors.Is(err, admin.ErrUnreachable) || !strings.HasPrefix(err.Error(), "healthcheck: ") {
		t.Errorf("Healthcheck(stale socket) = %q, want a healthcheck: ErrUnreachable error", err)
	}
	if o.out.Len() != 0 {
		t.Errorf("Healthcheck(stale socket) printed %q, want nothing", o.out.String())
	}
}

// newCA makes a self-signed CA certificate for a federated trust domain.
func newCA(t *testing.T, name string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	uri := spiffeid.RequireTrustDomainFromString(name).ID().URL()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{uri},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func pemOf(certs ...*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// parsePEMCerts parses every CERTIFICATE block of data.
func parsePEMCerts(t *testing.T, data []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return out
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			t.Fatalf("PEM output holds an invalid certificate: %v", err)
		}
		out = append(out, block.Bytes)
	}
}

// attest runs join-token attestation over the admin socket (AttestAgent is
// open to anyone), proving the token is in the datastore.
func attest(t *testing.T, socket, token string) *types.SPIFFEID {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	stream, err := agentv1.NewAgentClient(conn).AttestAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = stream.Send(&agentv1.AttestAgentRequest{Step: &agentv1.AttestAgentRequest_Params_{Params: &agentv1.AttestAgentRequest_Params{
		Data:   &types.AttestationData{Type: "join_token", Payload: []byte(token)},
		Params: &agentv1.AgentX509SVIDParams{Csr: csr},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("AttestAgent with token %q: %v", token, err)
	}
	return resp.GetResult().GetSvid().GetId()
}
