package loadgen

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/internal/idpolicy"
	"github.com/arborid/arbor/internal/serverconn"
)

// agent is one simulated SPIRE agent: its SVID, its connection and the
// entries it has synced.
type agent struct {
	svid    *x509svid.SVID
	conn    *grpc.ClientConn
	entries entryv1.EntryClient
	svids   svidv1.SVIDClient
	// useGet is set when the server does not implement SyncAuthorizedEntries.
	useGet bool
	// revisions is the agent's entry cache: entry ID to revision number.
	revisions map[string]int64
	ids       []string // sorted keys of revisions
	// busy is set while an iteration runs (the scheduler skips a due
	// iteration of a busy agent rather than overlap two).
	busy atomic.Bool
	// syncs counts the successful syncs of the current load; seen is how
	// many entries the last one returned.
	syncs, seen int
}

// dialer holds what every agent connection shares: the server addresses,
// one TLS client configuration verifying the server against the bundle
// (cloned per agent, which only adds its own certificate) and the gRPC
// options. A fleet of 10k connections pays for the verification setup once
// and keeps small per-connection buffers.
type dialer struct {
	addrs []string
	base  *tls.Config
	opts  []grpc.DialOption
}

// connBuffer is each agent connection's read buffer: agent calls carry
// small messages, and gRPC's 32 KiB default would make a 10k fleet hold
// hundreds of MiB of buffers; the write buffer is shared (taken from a pool
// for a write, released after the flush).
const connBuffer = 4 << 10

func newDialer(addrs []string, td spiffeid.TrustDomain, bundle *x509bundle.Bundle) *dialer {
	return &dialer{
		addrs: addrs,
		base:  tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(idpolicy.ServerID(td))),
		opts: []grpc.DialOption{
			grpc.WithReadBufferSize(connBuffer),
			grpc.WithSharedWriteBuffer(true),
		},
	}
}

// dial opens one agent's connection: TLS with its SVID (none for
// AttestAgent), the server verified as spiffe://<td>/spire/server. The
// addresses are the servers of the tier (serverconn: stay on one, move on
// failure), as an arbor agent dials them.
func (d *dialer) dial(svid *x509svid.SVID) (*grpc.ClientConn, error) {
	tc := d.base
	if svid != nil {
		tc = d.base.Clone()
		chain := make([][]byte, len(svid.Certificates))
		for i, c := range svid.Certificates {
			chain[i] = c.Raw
		}
		tc.Certificates = []tls.Certificate{{Certificate: chain, PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}}
	}
	opts := append(slices.Clip(d.opts), grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	conn, err := serverconn.Dial(d.addrs, nil, opts...)
	if err != nil {
		return nil, fmt.Errorf("loadgen: dialing %s: %w", strings.Join(d.addrs, ","), err)
	}
	return conn, nil
}

// sync refreshes the agent's entry cache with SyncAuthorizedEntries as
// spire-agent does: full entries when the server sends them, else revisions
// first and then the new or changed entries by ID. It falls back to
// GetAuthorizedEntries for servers without the streaming RPC. It returns
// how many entries the agent is authorized for.
func (a *agent) sync(ctx context.Context) (int, error) {
	if !a.useGet {
		n, err := a.syncStream(ctx)
		if status.Code(err) != codes.Unimplemented {
			return n, err
		}
		a.useGet = true
	}
	resp, err := a.entries.GetAuthorizedEntries(ctx, &entryv1.GetAuthorizedEntriesRequest{})
	if err != nil {
		return 0, err
	}
	revs := make(map[string]int64, len(resp.Entries))
	for _, e := range resp.Entries {
		revs[e.Id] = e.RevisionNumber
	}
	a.setCache(revs)
	return len(revs), nil
}

func (a *agent) syncStream(ctx context.Context) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := a.entries.SyncAuthorizedEntries(ctx)
	if err != nil {
		return 0, err
	}
	if err := stream.Send(&entryv1.SyncAuthorizedEntriesRequest{}); err != nil {
		return 0, recvErr(stream, err)
	}
	resp, err := stream.Recv()
	if err != nil {
		return 0, err
	}
	revs := map[string]int64{}
	if len(resp.EntryRevisions) == 0 {
		// Fewer entries than a page: they come in full.
		for {
			for _, e := range resp.Entries {
				revs[e.Id] = e.RevisionNumber
			}
			if !resp.More {
				break
			}
			if resp, err = stream.Recv(); err != nil {
				return 0, err
			}
		}
	} else {
		for {
			for _, r := range resp.EntryRevisions {
				revs[r.Id] = r.RevisionNumber
			}
			if !resp.More {
				break
			}
			if resp, err = stream.Recv(); err != nil {
				return 0, err
			}
		}
		var need []string
		for id, rev := range revs {
			if old, ok := a.revisions[id]; !ok || old != rev {
				need = append(need, id)
			}
		}
		if len(need) > 0 {
			slices.Sort(need)
			if err := stream.Send(&entryv1.SyncAuthorizedEntriesRequest{Ids: need}); err != nil {
				return 0, recvErr(stream, err)
			}
			got := 0
			for {
				resp, err := stream.Recv()
				if err != nil {
					return 0, err
				}
				got += len(resp.Entries)
				if !resp.More {
					break
				}
			}
			if got != len(need) {
				return 0, status.Errorf(codes.DataLoss, "asked for %d entries, got %d", len(need), got)
			}
		}
	}
	if err := stream.CloseSend(); err != nil {
		return 0, err
	}
	for {
		if _, err := stream.Recv(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return 0, err
		}
	}
	a.setCache(revs)
	return len(revs), nil
}

// recvErr returns the stream's status when a Send failed because the server
// ended the stream (Send then only says io.EOF).
func recvErr(stream grpc.ClientStream, sendErr error) error {
	if !errors.Is(sendErr, io.EOF) {
		return sendErr
	}
	var m entryv1.SyncAuthorizedEntriesResponse
	if err := stream.RecvMsg(&m); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return sendErr
}

func (a *agent) setCache(revs map[string]int64) {
	a.revisions = revs
	a.ids = a.ids[:0]
	for id := range revs {
		a.ids = append(a.ids, id)
	}
	slices.Sort(a.ids)
}

// iteration is one pass of an agent's loop.
func (a *agent) iteration(ctx context.Context, g *Generator, load *Load, rec *recorder, iter int) {
	call := func(rpc string, f func(context.Context) (int, []codes.Code, error)) bool {
		cctx, cancel := context.WithTimeout(ctx, g.cfg.RPCTimeout)
		defer cancel()
		start := time.Now()
		items, failed, err := f(cctx)
		d := time.Since(start)
		if err != nil {
			if ctx.Err() != nil {
				return false // the whole run was cancelled: not the server's fault
			}
			failed = append(failed, status.Code(err))
		}
		rec.observe(rpc, d, items, failed...)
		return err == nil
	}
	if load.Sync || len(a.ids) == 0 {
		call(RPCSync, func(ctx context.Context) (int, []codes.Code, error) {
			n, err := a.sync(ctx)
			if err == nil {
				a.syncs++
				a.seen = n
			}
			return n, nil, err
		})
	}
	if load.X509 {
		batch := load.X509Batch
		if batch <= 0 {
			batch = 50
		}
		for start := 0; start < len(a.ids); start += batch {
			ids := a.ids[start:min(start+batch, len(a.ids))]
			call(RPCX509, func(ctx context.Context) (int, []codes.Code, error) {
				params := make([]*svidv1.NewX509SVIDParams, len(ids))
				for i, id := range ids {
					params[i] = &svidv1.NewX509SVIDParams{EntryId: id, Csr: g.csr(iter + start + i)}
				}
				resp, err := a.svids.BatchNewX509SVID(ctx, &svidv1.BatchNewX509SVIDRequest{Params: params})
				if err != nil {
					return 0, nil, err
				}
				ok := 0
				var failed []codes.Code
				for _, r := range resp.Results {
					if c := codes.Code(r.GetStatus().GetCode()); c != codes.OK {
						failed = append(failed, c)
					} else if r.GetSvid() != nil {
						ok++
					}
				}
				if len(resp.Results) != len(params) {
					failed = append(failed, codes.DataLoss)
				}
				return ok, failed, nil
			})
		}
	}
	for j := range load.JWT {
		if len(a.ids) == 0 {
			break
		}
		id := a.ids[(iter*load.JWT+j)%len(a.ids)]
		call(RPCJWT, func(ctx context.Context) (int, []codes.Code, error) {
			resp, err := a.svids.NewJWTSVID(ctx, &svidv1.NewJWTSVIDRequest{EntryId: id, Audience: []string{"loadgen"}})
			if err != nil {
				return 0, nil, err
			}
			if resp.GetSvid().GetToken() == "" {
				return 0, []codes.Code{codes.DataLoss}, nil
			}
			return 1, nil, nil
		})
	}
}
