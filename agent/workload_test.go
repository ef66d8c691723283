package agent_test

import (
	"bufio"
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// TestMain lets the test binary act as a second workload process (so the
// agent sees a different pid): AGENT_TEST_CHILD=<socket>.
func TestMain(m *testing.M) {
	if sock := os.Getenv("AGENT_TEST_CHILD"); sock != "" {
		if err := childWorkload(sock); err != nil {
			fmt.Println("ERROR", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// childWorkload is workload "b": it serves mTLS for spiffe://example.org/a,
// prints its address and a JWT-SVID for audience "a", then validates the
// JWT that "a" sends over the connection and answers with its subject.
func childWorkload(sock string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	addr := workloadapi.WithAddr(sock)
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(addr))
	if err != nil {
		return err
	}
	defer src.Close()
	jwtSrc, err := workloadapi.NewJWTSource(ctx, workloadapi.WithClientOptions(addr))
	if err != nil {
		return err
	}
	defer jwtSrc.Close()
	tok, err := jwtSrc.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "a"})
	if err != nil {
		return err
	}
	lis, err := spiffetls.ListenWithMode(ctx, "tcp", "127.0.0.1:0",
		spiffetls.MTLSServerWithSource(tlsconfig.AuthorizeID(spiffeid.RequireFromPath(td, "/a")), src))
	if err != nil {
		return err
	}
	defer lis.Close()
	fmt.Printf("READY %s %s\n", lis.Addr(), tok.Marshal())
	conn, err := lis.Accept()
	if err != nil {
		return err
	}
	defer conn.Close()
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	svid, err := jwtsvid.ParseAndValidate(strings.TrimSpace(line), jwtSrc, []string{"b"})
	if err != nil {
		fmt.Fprintf(conn, "invalid %v\n", err)
		return nil
	}
	fmt.Fprintf(conn, "valid %s\n", svid.ID)
	return nil
}

// Two workloads with different selectors get different SPIFFE IDs from one
// arbor agent, complete an mTLS handshake and validate each other's JWT-SVIDs.
func TestTwoWorkloadsMTLSAndJWT(t *testing.T) {
	srv := startServer(t, nil)
	token := srv.token()
	aid := agentPath(token)
	srv.workloadEntry(aid, "a", 0)
	srv.workloadEntry(aid, "b", 0)
	att := newPIDAttestor()
	att.set(os.Getpid(), "a")
	cfg := srv.agentConfig(t, token, att)
	ag := runAgent(t, cfg)
	if got := ag.SPIFFEID(); got != aid {
		t.Fatalf("agent SPIFFE ID = %v, want %v", got, aid)
	}

	ctx := ctxT(t)
	child := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), "AGENT_TEST_CHILD="+socketAddr(cfg))
	child.Stderr = os.Stderr
	out, err := child.StdoutPipe()
	mustOK(t, err, "child stdout")
	mustOK(t, child.Start(), "starting child workload")
	att.set(child.Process.Pid, "b")
	defer child.Wait()
	defer child.Process.Kill()

	addr := workloadapi.WithClientOptions(workloadapi.WithAddr(socketAddr(cfg)))
	src, err := workloadapi.NewX509Source(ctx, addr)
	mustOK(t, err, "X509Source")
	defer src.Close()
	svid, err := src.GetX509SVID()
	mustOK(t, err, "GetX509SVID")
	if want := spiffeid.RequireFromPath(td, "/a"); svid.ID != want {
		t.Fatalf("workload a got %v, want %v", svid.ID, want)
	}
	jwtSrc, err := workloadapi.NewJWTSource(ctx, addr)
	mustOK(t, err, "JWTSource")
	defer jwtSrc.Close()

	r := bufio.NewReader(out)
	line, err := r.ReadString('\n')
	mustOK(t, err, "reading child output")
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "READY" {
		t.Fatalf("child said %q", line)
	}
	childAddr, childJWT := f[1], f[2]

	// a validates b's JWT-SVID through the agent's ValidateJWTSVID.
	got, err := workloadapi.ValidateJWTSVID(ctx, childJWT, "a", workloadapi.WithAddr(socketAddr(cfg)))
	mustOK(t, err, "ValidateJWTSVID of b's token")
	if want := spiffeid.RequireFromPath(td, "/b"); got.ID != want {
		t.Errorf("b's JWT-SVID subject = %v, want %v", got.ID, want)
	}

	conn, err := spiffetls.DialWithMode(ctx, "tcp", childAddr,
		spiffetls.MTLSClientWithSource(tlsconfig.AuthorizeID(spiffeid.RequireFromPath(td, "/b")), src))
	mustOK(t, err, "mTLS dial to workload b")
	defer conn.Close()
	mine, err := jwtSrc.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "b"})
	mustOK(t, err, "FetchJWTSVID")
	fmt.Fprintf(conn, "%s\n", mine.Marshal())
	reply, err := bufio.NewReader(conn).ReadString('\n')
	mustOK(t, err, "reading b's reply")
	if diff := cmp.Diff("valid spiffe://example.org/a", strings.TrimSpace(reply)); diff != "" {
		t.Errorf("b validating a's JWT-SVID (-want +got):\n%s", diff)
	}
	io.Copy(io.Discard, out)
	if err := child.Wait(); err != nil {
		t.Errorf("child workload: %v", err)
	}
}

// fetchX509 fetches the X509 context once with a fresh client.
func fetchX509(ctx context.Context, sock string) (*workloadapi.X509Context, error) {
	c, err := workloadapi.New(ctx, workloadapi.WithAddr(sock))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.FetchX509Context(ctx)
}

func leafOf(x *workloadapi.X509Context) *x509.Certificate { return x.DefaultSVID().Certificates[0] }
