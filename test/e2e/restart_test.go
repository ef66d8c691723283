package e2e

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
)

// TestRestartSQLite restarts an arbor server on its SQLite state directory
// under a running spire-agent.
func TestRestartSQLite(t *testing.T) {
	requireSetup(t)
	t.Parallel()
	testRestart(t, newArbor(t, `datastore "sqlite" {}`))
}

// TestRestartPostgres is TestRestartSQLite on PostgreSQL: a fresh schema of
// the database ARBOR_TEST_POSTGRES_DSN names, reached through the topology's
// env() so the DSN never lands in a file.
func TestRestartPostgres(t *testing.T) {
	requireSetup(t)
	t.Parallel()
	dsn := postgresSchema(t)
	testRestart(t, newArbor(t, `datastore "postgres" { dsn = env("ARBOR_E2E_DSN") }`, "ARBOR_E2E_DSN="+dsn))
}

const defaultPostgresDSN = "postgres://arbor:arbor@127.0.0.1:5432/arbor_test?sslmode=disable"

// postgresSchema creates a schema for this test in the database of
// ARBOR_TEST_POSTGRES_DSN (dropped at cleanup) and returns a DSN whose
// search_path selects it.
func postgresSchema(t *testing.T) string {
	t.Helper()
	base := os.Getenv("ARBOR_TEST_POSTGRES_DSN")
	if base == "" {
		base = defaultPostgresDSN
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("PostgreSQL is unreachable at %s (set ARBOR_TEST_POSTGRES_DSN; default %s): %v", redactDSN(base), redactDSN(defaultPostgresDSN), err)
	}
	defer conn.Close(context.Background())

	var buf [6]byte
	rand.Read(buf[:])
	schema := "arbor_e2e_" + hex.EncodeToString(buf[:])
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatalf("creating schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
		}
	})

	if u, err := url.Parse(base); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		q.Set("options", "-csearch_path="+schema)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return base + " search_path=" + schema // key=value form
}

func redactDSN(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		return u.Redacted()
	}
	return "(key=value DSN)"
}

// testRestart attests an agent to a, stops a with SIGTERM, starts it again on
// the same state, and checks that nothing an agent or workload sees changed:
// the agent is not re-attested, workloads keep their SVIDs, a new entry
// reaches the workload, and the X.509 authorities are the same.
func testRestart(t *testing.T, a *arborServer) {
	a.start(t)
	hostID := mustID(t, "/host")
	beforeID := mustID(t, "/before-restart")
	afterID := mustID(t, "/after-restart")
	selector := "unix:uid:" + strconv.Itoa(os.Getuid())

	token := a.generateToken(t, hostID)
	ag := startAgent(t, a, token)
	a.createEntry(t, hostID, beforeID, selector)
	ag.waitX509SVID(t, beforeID)

	var agentsBefore agentv1.ListAgentsResponse
	a.cliJSON(t, &agentsBefore, "agent", "list")
	if len(agentsBefore.Agents) != 1 {
		t.Fatalf("agent list before restart = %v, want one agent", &agentsBefore)
	}
	rootsBefore, _ := a.bundlePEM(t)

	a.proc.stop(t)

	// While the server is down the agent serves from its cache.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	svids, err := workloadapi.FetchX509SVIDs(ctx, ag.addr())
	cancel()
	if err != nil || !hasID(svids, beforeID) {
		t.Errorf("Workload API while arbor is down: %d SVIDs, err %v; want the cached %s", len(svids), err, beforeID)
	}

	a.start(t)

	rootsAfter, pemAfter := a.bundlePEM(t)
	if !equalCerts(rootsBefore, rootsAfter) {
		t.Errorf("X.509 authorities changed across the restart: %s before, %s after", subjects(rootsBefore), subjects(rootsAfter))
	}

	var agentsAfter agentv1.ListAgentsResponse
	a.cliJSON(t, &agentsAfter, "agent", "list")
	if len(agentsAfter.Agents) != 1 {
		t.Fatalf("agent list after restart = %v, want the one agent", &agentsAfter)
	}
	b, f := agentsBefore.Agents[0], agentsAfter.Agents[0]
	if b.GetId().GetPath() != f.GetId().GetPath() || b.GetX509SvidSerialNumber() != f.GetX509SvidSerialNumber() {
		t.Errorf("agent after restart = %s serial %s, want the same as before: %s serial %s",
			f.GetId().GetPath(), f.GetX509SvidSerialNumber(), b.GetId().GetPath(), b.GetX509SvidSerialNumber())
	}

	// An entry created after the restart reaches the workload: the agent
	// syncs with the restarted server over mTLS with its old SVID.
	a.createEntry(t, hostID, afterID, selector)
	svid := ag.waitX509SVID(t, afterID)
	bundle, err := x509bundle.Parse(td, pemAfter)
	if err != nil {
		t.Fatal(err)
	}
	if id, _, err := x509svid.Verify(svid.Certificates, bundle); err != nil || id != afterID {
		t.Errorf("x509svid.Verify(SVID issued after restart) = %s, %v; want %s", id, err, afterID)
	}
	old := ag.waitX509SVID(t, beforeID)
	if _, _, err := x509svid.Verify(old.Certificates, bundle); err != nil {
		t.Errorf("x509svid.Verify(%s after restart) = %v", beforeID, err)
	}

	if n := ag.countLines(t, "Node attestation was successful"); n != 1 {
		t.Errorf("spire-agent attested %d times, want once (no re-attestation across the server restart)", n)
	}
	if n := ag.countLines(t, "re-attest"); n != 0 {
		t.Errorf("spire-agent logged %d lines about re-attesting, want none", n)
	}
	if ag.proc.exited() {
		t.Errorf("spire-agent exited: %v", ag.proc.err)
	}
}

func hasID(svids []*x509svid.SVID, id spiffeid.ID) bool {
	for _, s := range svids {
		if s.ID == id {
			return true
		}
	}
	return false
}

func subjects(certs []*x509.Certificate) string {
	var s []string
	for _, c := range certs {
		s = append(s, fmt.Sprintf("%q (serial %s)", c.Subject.String(), c.SerialNumber))
	}
	return "[" + strings.Join(s, ", ") + "]"
}
