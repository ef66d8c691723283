// Package demo is the demo workload `arbor up` runs on each leaf tier: it
// serves mTLS with its X509-SVID, keeps an mTLS connection open to a workload
// on another leaf, and validates a JWT-SVID obtained from another — proving
// that workloads on different tiers verify each other, in one trust domain
// or across federated ones (the peers' bundles are what the Workload API
// gives: the own trust domain's and those the entry federates with).
package demo

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// Audience is the JWT-SVID audience demo workloads exchange.
const Audience = "arbor-demo"

// Config configures a demo workload.
type Config struct {
	// WorkloadAPIAddr is the agent's Workload API, "unix:///path".
	WorkloadAPIAddr string
	// Listen is this workload's mTLS address.
	Listen string
	// Peer and PeerID: the workload to keep an mTLS connection to.
	Peer   string
	PeerID spiffeid.ID
	// JWTFrom and JWTFromID: the workload to ask for a JWT-SVID.
	JWTFrom   string
	JWTFromID spiffeid.ID
	// Every is the check interval; zero means 5s.
	Every time.Duration
	// StatusFile, when set, receives the latest Status as JSON.
	StatusFile string
	Logger     *slog.Logger
}

// Status is the outcome of the latest checks.
type Status struct {
	ID   string `json:"spiffe_id"`
	MTLS string `json:"mtls"` // "ok" or the error
	JWT  string `json:"jwt"`  // "ok" or the error
	// Peer and JWTFrom are the SPIFFE IDs the checks expect: the mTLS
	// peer and the workload whose JWT-SVID is validated.
	Peer    string    `json:"peer_id,omitempty"`
	JWTFrom string    `json:"jwt_from_id,omitempty"`
	Checked time.Time `json:"checked"`
}

// ReadStatus reads a status file written by a running demo workload.
func ReadStatus(path string) (Status, error) {
	var st Status
	b, err := os.ReadFile(path)
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(b, &st)
}

// Run serves and checks until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Every == 0 {
		cfg.Every = 5 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	client := workloadapi.WithClientOptions(workloadapi.WithAddr(cfg.WorkloadAPIAddr))
	x509src, err := workloadapi.NewX509Source(ctx, client)
	if err != nil {
		return fmt.Errorf("demo: X509-SVID from %s: %w", cfg.WorkloadAPIAddr, err)
	}
	defer x509src.Close()
	jwtsrc, err := workloadapi.NewJWTSource(ctx, client)
	if err != nil {
		return fmt.Errorf("demo: JWT source: %w", err)
	}
	defer jwtsrc.Close()
	me, err := x509src.GetX509SVID()
	if err != nil {
		return err
	}
	log.Info("demo workload up", "spiffe_id", me.ID.String(), "listen", cfg.Listen)

	// The workloads that connect here are the demo's neighbours, which may
	// be of another trust domain than this one: members of the own, the
	// peer's and the JWT source's trust domain are accepted (and verified
	// with the bundles the Workload API gives).
	accept := memberOfAny(me.ID.TrustDomain(), cfg.PeerID.TrustDomain(), cfg.JWTFromID.TrustDomain())
	lis, err := spiffetls.ListenWithMode(ctx, "tcp", cfg.Listen, spiffetls.MTLSServerWithSource(accept, x509src))
	if err != nil {
		return fmt.Errorf("demo: listening on %s: %w", cfg.Listen, err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer lis.Close()
	wg.Go(func() {
		<-ctx.Done()
		lis.Close()
	})
	wg.Go(func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { serve(ctx, conn, jwtsrc) })
		}
	})

	var peer net.Conn
	defer func() {
		if peer != nil {
			peer.Close()
		}
	}()
	t := time.NewTicker(cfg.Every)
	defer t.Stop()
	for {
		st := Status{ID: me.ID.String(), Peer: cfg.PeerID.String(), JWTFrom: cfg.JWTFromID.String(), Checked: time.Now().UTC()}
		// Keep one mTLS connection open to the peer; reconnect when it breaks.
		if peer == nil {
			peer, err = dial(ctx, cfg.Peer, cfg.PeerID, x509src)
		}
		if err == nil {
			err = ping(ctx, peer)
		}
		if err != nil {
			if peer != nil {
				peer.Close()
				peer = nil
			}
			st.MTLS = err.Error()
		} else {
			st.MTLS = "ok"
		}
		// A JWT-SVID from the third workload, validated through our agent.
		if err := checkJWT(ctx, cfg, x509src); err != nil {
			st.JWT = err.Error()
		} else {
			st.JWT = "ok"
		}
		if cfg.StatusFile != "" {
			b, _ := json.Marshal(st)
			os.WriteFile(cfg.StatusFile+".tmp", b, 0o600)
			os.Rename(cfg.StatusFile+".tmp", cfg.StatusFile)
		}
		log.Info("demo checks", "mtls", st.MTLS, "jwt", st.JWT)
		// Until both checks pass (peers may still be starting), retry fast.
		wait := t.C
		if st.MTLS != "ok" || st.JWT != "ok" {
			wait = time.After(250 * time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wait:
		}
	}
}

// memberOfAny authorizes the members of the given trust domains.
func memberOfAny(tds ...spiffeid.TrustDomain) tlsconfig.Authorizer {
	return func(id spiffeid.ID, _ [][]*x509.Certificate) error {
		if slices.Contains(tds, id.TrustDomain()) {
			return nil
		}
		return fmt.Errorf("%s is not a member of any trust domain of this demo's peers", id)
	}
}

func dial(ctx context.Context, addr string, id spiffeid.ID, src *workloadapi.X509Source) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := spiffetls.DialWithMode(dctx, "tcp", addr, spiffetls.MTLSClientWithSource(tlsconfig.AuthorizeID(id), src))
	if err != nil {
		return nil, fmt.Errorf("mTLS to %s (%s): %w", id, addr, err)
	}
	return conn, nil
}

// exchangeTimeout bounds one exchange with a peer.
const exchangeTimeout = 5 * time.Second

// bound gives conn exchangeTimeout, cut short when ctx ends: a peer that
// stops answering mid-exchange does not hold up the demo's stop. The
// returned func ends the watch.
func bound(ctx context.Context, conn net.Conn) (stop func() bool) {
	conn.SetDeadline(time.Now().Add(exchangeTimeout))
	return context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
}

// ping exchanges one line on an open connection.
func ping(ctx context.Context, conn net.Conn) error {
	defer bound(ctx, conn)()
	if _, err := fmt.Fprintln(conn, "ping"); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "pong ") {
		return fmt.Errorf("unexpected answer %q", line)
	}
	return nil
}

func checkJWT(ctx context.Context, cfg Config, src *workloadapi.X509Source) error {
	conn, err := dial(ctx, cfg.JWTFrom, cfg.JWTFromID, src)
	if err != nil {
		return err
	}
	defer conn.Close()
	defer bound(ctx, conn)()
	if _, err := fmt.Fprintln(conn, "jwt"); err != nil {
		return err
	}
	token, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	token = strings.TrimSpace(token)
	if strings.HasPrefix(token, "error ") {
		return errors.New(token)
	}
	vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	svid, err := workloadapi.ValidateJWTSVID(vctx, token, Audience, workloadapi.WithAddr(cfg.WorkloadAPIAddr))
	if err != nil {
		return fmt.Errorf("JWT-SVID from %s does not validate: %w", cfg.JWTFromID, err)
	}
	if svid.ID != cfg.JWTFromID {
		return fmt.Errorf("JWT-SVID names %s, want %s", svid.ID, cfg.JWTFromID)
	}
	return nil
}

// serve answers "ping" with "pong <id>" and "jwt" with a JWT-SVID, until
// the peer closes the connection or ctx ends. (Run waits for it: a peer
// keeping its connection open must not hold up the stop.)
func serve(ctx context.Context, conn net.Conn, jwtsrc *workloadapi.JWTSource) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	r := bufio.NewReader(conn)
	for {
		conn.SetReadDeadline(time.Now().Add(time.Minute))
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		switch strings.TrimSpace(line) {
		case "ping":
			fmt.Fprintln(conn, "pong ok")
		case "jwt":
			svid, err := jwtsrc.FetchJWTSVID(ctx, jwtsvid.Params{Audience: Audience})
			if err != nil {
				fmt.Fprintf(conn, "error %v\n", err)
				continue
			}
			fmt.Fprintln(conn, svid.Marshal())
		default:
			fmt.Fprintln(conn, "error unknown request")
		}
	}
}
