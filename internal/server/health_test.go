package server_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/arborid/arbor/internal/server"
)

func TestHealthAndMetrics(t *testing.T) {
	h := startServer(t, func(c *server.Config) { c.HealthAddr = "127.0.0.1:0" })
	agent := h.newAgent()
	id := h.createEntry(&types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID("/m"), Selectors: []*types.Selector{sel("unix", "uid:1")}})
	must(h.workloadSVID(agent, id))(t)

	base := "http://" + h.srv.HealthAddr().String()
	client := &http.Client{Timeout: 10 * time.Second}
	get := func(path string) (int, string) {
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, p := range []string{"/live", "/ready"} {
		if code, body := get(p); code != http.StatusOK {
			t.Errorf("GET %s = %d %q, want 200", p, code, body)
		}
	}
	code, body := get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics = %d", code)
	}
	for _, want := range []string{
		`arbor_api_svids_issued_total{kind="x509"} 1`,
		`arbor_api_svids_issued_total{kind="agent"} 1`,
		`arbor_api_entries 1`,
		`arbor_api_agents 1`,
		`arbor_api_calls_total{code="OK",method="/spire.api.server.svid.v1.SVID/BatchNewX509SVID"} 1`,
		`go_goroutines`,
		`arbor_ca_x509_remaining_seconds 8`,
		`arbor_ca_next_x509_prepared 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// The gRPC health service answers on the admin socket (spire-server healthcheck uses it).
	resp, err := healthpb.NewHealthClient(h.admin).Check(ctxT(t), &healthpb.HealthCheckRequest{})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health Check = %v, %v; want SERVING", resp, err)
	}
}
