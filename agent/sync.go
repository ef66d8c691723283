package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net/url"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/proto"
)

// mintBatchSize is the most CSRs sent in one BatchNewX509SVID call.
const mintBatchSize = 500

// mintParallel is how many batches are in flight at once.
const mintParallel = 4

// entryMask asks only for the fields the agent uses.
var entryMask = &types.EntryMask{
	SpiffeId: true, Selectors: true, FederatesWith: true, DnsNames: true, Hint: true,
	X509SvidTtl: true, JwtSvidTtl: true, RevisionNumber: true, CreatedAt: true,
}

// syncOnce syncs entries and bundles and mints the SVIDs that are due. It
// returns when the cache holds everything it could get.
func (a *Agent) syncOnce(ctx context.Context) error {
	c := a.conns.load()
	start := a.now()
	cur, _ := a.cache.load()
	entries, err := a.fetchEntries(ctx, c, cur.entries)
	if err != nil {
		return err
	}
	bundle, err := a.fetchBundle(ctx, c)
	if err != nil {
		return err
	}
	federated := a.fetchFederated(ctx, c, entries, cur.federated)
	a.cache.update(entries, bundle, federated)
	a.checkTainted(bundle)
	if !sameRoots(a.node.Load().Bundle, bundle.roots) {
		a.storeBundle(bundle)
	}
	if err := a.mintDue(ctx, c); err != nil {
		return err
	}
	v, _ := a.cache.load()
	a.jwts.prune(a.now(), func(id string) bool { _, ok := v.entries[id]; return ok })
	a.metrics.entries.Set(float64(len(v.entries)))
	a.metrics.svids.Set(float64(v.svidCount()))
	a.metrics.syncDuration.Observe(a.now().Sub(start).Seconds())
	return nil
}

func sameRoots(a, b []*x509.Certificate) bool {
	return slices.EqualFunc(a, b, func(x, y *x509.Certificate) bool { return bytes.Equal(x.Raw, y.Raw) })
}

// storeBundle persists a changed bundle and trusts it for the server's
// certificate from now on.
func (a *Agent) storeBundle(b *bundleView) {
	st := *a.node.Load()
	st.Bundle = b.roots
	a.node.Store(&st)
	a.rootsView.Store(b.x509Bundle())
	if err := saveBundle(a.cfg.DataDir, b.roots); err != nil {
		a.log.Error("storing trust bundle", "err", err)
	}
}

// fetchEntries returns the authorized entries, reusing the cached
// entryInfo of every entry whose revision did not change.
func (a *Agent) fetchEntries(ctx context.Context, c *conn, cached map[string]*cachedEntry) ([]*entryInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	client := entryv1.NewEntryClient(c.cc)
	if !a.noSync.Load() {
		out, err := a.syncEntries(ctx, client, cached)
		if !errors.Is(err, errUnimplemented) {
			return out, err
		}
		a.noSync.Store(true)
		a.log.Info("server does not implement SyncAuthorizedEntries, using GetAuthorizedEntries")
	}
	resp, err := client.GetAuthorizedEntries(ctx, &entryv1.GetAuthorizedEntriesRequest{OutputMask: entryMask})
	if err != nil {
		return nil, classify(err)
	}
	return a.toInfos(resp.Entries, cached), nil
}

func (a *Agent) toInfos(ps []*types.Entry, cached map[string]*cachedEntry) []*entryInfo {
	out := make([]*entryInfo, 0, len(ps))
	for _, p := range ps {
		if ce, ok := cached[p.Id]; ok && ce.info.revision == p.RevisionNumber && ce.info.createdAt == p.CreatedAt {
			out = append(out, ce.info)
			continue
		}
		e, err := entryFromProto(p)
		if err != nil {
			a.log.Warn("ignoring malformed entry from the server", "entry_id", p.Id, "err", err)
			continue
		}
		out = append(out, e)
	}
	return out
}

// syncEntries runs SyncAuthorizedEntries: the server sends either every
// entry at once, or pages of revisions after which the agent asks, a page
// at a time, for the entries it lacks or holds at an older revision.
func (a *Agent) syncEntries(ctx context.Context, client entryv1.EntryClient, cached map[string]*cachedEntry) ([]*entryInfo, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.SyncAuthorizedEntries(ctx)
	if err != nil {
		return nil, classify(err)
	}
	if err := stream.Send(&entryv1.SyncAuthorizedEntriesRequest{OutputMask: entryMask}); err != nil {
		return nil, recvErr(stream, err)
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, classify(err)
	}
	if len(resp.EntryRevisions) == 0 {
		// Everything in one message (there were few entries).
		_ = stream.CloseSend()
		return a.toInfos(resp.Entries, cached), nil
	}
	pageSize := len(resp.EntryRevisions)
	var out []*entryInfo
	var need []string
	for {
		for _, r := range resp.EntryRevisions {
			if r.Id == "" || r.RevisionNumber < 0 {
				continue
			}
			if ce, ok := cached[r.Id]; ok && ce.info.revision == r.RevisionNumber && (r.CreatedAt == 0 || ce.info.createdAt == r.CreatedAt) {
				out = append(out, ce.info)
			} else {
				need = append(need, r.Id)
			}
		}
		if !resp.More {
			break
		}
		if resp, err = stream.Recv(); err != nil {
			return nil, classify(err)
		}
		if len(resp.Entries) > 0 {
			return nil, errors.New("agent: server sent entries while paging entry revisions")
		}
	}
	slices.Sort(need)
	for len(need) > 0 {
		n := min(len(need), pageSize)
		if err := stream.Send(&entryv1.SyncAuthorizedEntriesRequest{Ids: need[:n]}); err != nil {
			return nil, recvErr(stream, err)
		}
		need = need[n:]
		for {
			resp, err := stream.Recv()
			if err != nil {
				return nil, classify(err)
			}
			if len(resp.EntryRevisions) > 0 {
				return nil, errors.New("agent: server sent revisions while sending requested entries")
			}
			out = append(out, a.toInfos(resp.Entries, nil)...)
			if !resp.More {
				break
			}
		}
	}
	_ = stream.CloseSend()
	return out, nil
}

// recvErr returns the stream's real status after a Send failed with EOF.
func recvErr(stream interface{ RecvMsg(any) error }, sendErr error) error {
	if errors.Is(sendErr, io.EOF) {
		if err := stream.RecvMsg(new(entryv1.SyncAuthorizedEntriesResponse)); err != nil {
			return classify(err)
		}
	}
	return classify(sendErr)
}

func (a *Agent) fetchBundle(ctx context.Context, c *conn) (*bundleView, error) {
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	b, err := bundlev1.NewBundleClient(c.cc).GetBundle(ctx, &bundlev1.GetBundleRequest{})
	if err != nil {
		return nil, classify(err)
	}
	cur, _ := a.cache.load()
	if cur.bundle != nil && proto.Equal(cur.bundle.src, b) {
		return cur.bundle, nil
	}
	return newBundleView(a.cfg.TrustDomain, b)
}

// fetchFederated gets the bundle of every trust domain an entry federates
// with; a bundle the server does not have is left out, one it fails to
// return keeps its cached copy.
func (a *Agent) fetchFederated(ctx context.Context, c *conn, entries []*entryInfo, cached map[spiffeid.TrustDomain]*bundleView) map[spiffeid.TrustDomain]*bundleView {
	want := map[spiffeid.TrustDomain]bool{}
	for _, e := range entries {
		for _, td := range e.federatesWith {
			want[td] = true
		}
	}
	out := make(map[spiffeid.TrustDomain]*bundleView, len(want))
	client := bundlev1.NewBundleClient(c.cc)
	for td := range want {
		cctx, cancel := context.WithTimeout(ctx, rpcTimeout)
		b, err := client.GetFederatedBundle(cctx, &bundlev1.GetFederatedBundleRequest{TrustDomain: td.Name()})
		cancel()
		if err != nil {
			if err = classify(err); !errors.Is(err, errNotFound) {
				a.log.Warn("fetching federated bundle", "trust_domain", td.Name(), "err", err)
				if v, ok := cached[td]; ok {
					out[td] = v
				}
			}
			continue
		}
		if v, ok := cached[td]; ok && proto.Equal(v.src, b) {
			out[td] = v
			continue
		}
		v, err := newBundleView(td, b)
		if err != nil {
			a.log.Warn("ignoring federated bundle", "trust_domain", td.Name(), "err", err)
			continue
		}
		out[td] = v
	}
	return out
}

// mintDue mints SVIDs for the entries that have none, hold a stale one, or
// are past half their lifetime.
func (a *Agent) mintDue(ctx context.Context, c *conn) error {
	v, _ := a.cache.load()
	now := a.now()
	var due []*cachedEntry
	for _, ce := range v.entries {
		s := ce.svid.Load()
		if s == nil || ce.stale.Load() || !now.Before(s.renewAt()) || a.taints.tainted(s, v.bundle) {
			due = append(due, ce)
		}
	}
	if len(due) == 0 {
		return nil
	}
	// Keys and CSRs are made in parallel; batches go out as they fill.
	type job struct {
		ce  *cachedEntry
		key []byte
		csr []byte
		err error
	}
	jobs := make([]job, len(due))
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				jobs[i].ce = due[i]
				jobs[i].key, jobs[i].csr, jobs[i].err = workloadCSR(due[i].info.spiffeID)
			}
		}()
	}
	for i := range due {
		next <- i
	}
	close(next)
	wg.Wait()

	var firstErr error
	var errMu sync.Mutex
	sem := make(chan struct{}, mintParallel)
	client := svidv1.NewSVIDClient(c.cc)
	var minted int
	var mintedMu sync.Mutex
	for start := 0; start < len(jobs); start += mintBatchSize {
		batch := jobs[start:min(start+mintBatchSize, len(jobs))]
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			params := make([]*svidv1.NewX509SVIDParams, 0, len(batch))
			idx := make([]int, 0, len(batch))
			for i, j := range batch {
				if j.err != nil {
					a.log.Error("creating workload key", "entry_id", j.ce.info.id, "err", j.err)
					continue
				}
				params = append(params, &svidv1.NewX509SVIDParams{EntryId: j.ce.info.id, Csr: j.csr})
				idx = append(idx, i)
			}
			cctx, cancel := context.WithTimeout(ctx, rpcTimeout)
			defer cancel()
			resp, err := client.BatchNewX509SVID(cctx, &svidv1.BatchNewX509SVIDRequest{Params: params})
			if err != nil {
				errMu.Lock()
				if firstErr == nil {
					firstErr = classify(err)
				}
				errMu.Unlock()
				return
			}
			n := 0
			for k, r := range resp.Results {
				if k >= len(idx) {
					break
				}
				j := batch[idx[k]]
				if r.Status == nil || r.Status.Code != 0 || r.Svid == nil {
					a.log.Warn("server did not mint an X509-SVID", "entry_id", j.ce.info.id, "spiffe_id", j.ce.info.spiffeID.String(), "status", r.Status.GetMessage())
					continue
				}
				s, err := newX509SVID(r.Svid, j.key, a.now())
				if err != nil {
					a.log.Warn("server returned a bad X509-SVID", "entry_id", j.ce.info.id, "err", err)
					continue
				}
				j.ce.svid.Store(s)
				j.ce.stale.Store(false)
				n++
			}
			mintedMu.Lock()
			minted += n
			mintedMu.Unlock()
		}()
	}
	wg.Wait()
	if minted > 0 {
		a.cache.notify()
		a.metrics.minted.Add(float64(minted))
		a.log.Debug("minted X509-SVIDs", "count", minted)
	}
	return firstErr
}

// workloadCSR makes a P-256 key (as PKCS#8 DER) and a CSR carrying the
// SPIFFE ID as its URI SAN, as spire-agent does.
func workloadCSR(id spiffeid.ID) (keyDER, csr []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csr, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{Country: []string{"US"}, Organization: []string{"SPIRE"}},
		URIs:    []*url.URL{id.URL()},
	}, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err = x509.MarshalPKCS8PrivateKey(key)
	return keyDER, csr, err
}

// newX509SVID keeps the SVID; its lifetime counts from when it was received
// if the CA backdated it (SPIRE-style CAs backdate by seconds, which would
// otherwise put a short-lived SVID past half life on arrival).
func newX509SVID(p *types.X509SVID, keyDER []byte, now time.Time) (*x509SVID, error) {
	if len(p.CertChain) == 0 {
		return nil, errors.New("empty certificate chain")
	}
	leaf, err := x509.ParseCertificate(p.CertChain[0])
	if err != nil {
		return nil, fmt.Errorf("leaf certificate: %w", err)
	}
	n := 0
	for _, c := range p.CertChain {
		n += len(c)
	}
	chain := make([]byte, 0, n)
	for _, c := range p.CertChain {
		chain = append(chain, c...)
	}
	start := leaf.NotBefore
	if now.After(start) && now.Before(leaf.NotAfter) {
		start = now
	}
	return &x509SVID{chainDER: chain, keyDER: keyDER, notBefore: start.UnixNano(), notAfter: leaf.NotAfter.UnixNano()}, nil
}

// nextDue returns when the earliest cached SVID reaches half its lifetime.
func (v *view) nextDue() (time.Time, bool) {
	var t time.Time
	for _, ce := range v.entries {
		s := ce.svid.Load()
		if s == nil {
			continue
		}
		if r := s.renewAt(); t.IsZero() || r.Before(t) {
			t = r
		}
	}
	return t, !t.IsZero()
}
