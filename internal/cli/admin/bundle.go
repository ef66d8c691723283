package admin

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// BundleFormat is how a bundle is written or read.
type BundleFormat int

const (
	// BundlePEM is the X.509 authorities as PEM CERTIFICATE blocks.
	BundlePEM BundleFormat = iota
	// BundleSPIFFE is the SPIFFE bundle format: a JWKS whose keys carry
	// "use": "x509-svid" or "jwt-svid", with spiffe_sequence and
	// spiffe_refresh_hint.
	BundleSPIFFE
)

// ParseBundleFormat parses a --format value: "pem" (or empty) or "spiffe".
func ParseBundleFormat(s string) (BundleFormat, error) {
	switch strings.ToLower(s) {
	case "", "pem":
		return BundlePEM, nil
	case "spiffe", "jwks":
		return BundleSPIFFE, nil
	}
	return 0, fmt.Errorf("unknown bundle format %q (want pem or spiffe)", s)
}

// MarshalBundle encodes b in format f. PEM holds only the X.509 authorities.
func MarshalBundle(b *types.Bundle, f BundleFormat) ([]byte, error) {
	if f == BundlePEM {
		var buf bytes.Buffer
		for _, a := range b.X509Authorities {
			if err := pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: a.Asn1}); err != nil {
				return nil, err
			}
		}
		return buf.Bytes(), nil
	}
	td, err := spiffeid.TrustDomainFromString(b.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("bundle trust domain %q: %v", b.TrustDomain, err)
	}
	sb := spiffebundle.New(td)
	for _, a := range b.X509Authorities {
		cert, err := x509.ParseCertificate(a.Asn1)
		if err != nil {
			return nil, fmt.Errorf("bundle for %s: X.509 authority: %v", td, err)
		}
		sb.AddX509Authority(cert)
	}
	for _, k := range b.JwtAuthorities {
		pub, err := x509.ParsePKIXPublicKey(k.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("bundle for %s: JWT authority %q: %v", td, k.KeyId, err)
		}
		if err := sb.AddJWTAuthority(k.KeyId, pub); err != nil {
			return nil, fmt.Errorf("bundle for %s: JWT authority %q: %v", td, k.KeyId, err)
		}
	}
	sb.SetSequenceNumber(b.SequenceNumber)
	if b.RefreshHint > 0 {
		sb.SetRefreshHint(time.Duration(b.RefreshHint) * time.Second)
	}
	out, err := sb.Marshal()
	if err != nil {
		return nil, fmt.Errorf("bundle for %s: %v", td, err)
	}
	// Indented for people, as spire-server prints it; parsers do not care.
	var buf bytes.Buffer
	if err := json.Indent(&buf, out, "", "    "); err != nil {
		return nil, fmt.Errorf("bundle for %s: %v", td, err)
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// ParseBundle decodes the bundle of trust domain td from data in format f.
func ParseBundle(td string, data []byte, f BundleFormat) (*types.Bundle, error) {
	trustDomain, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		return nil, fmt.Errorf("trust domain %q: %v", td, err)
	}
	out := &types.Bundle{TrustDomain: trustDomain.Name()}
	if f == BundlePEM {
		rest := data
		for {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			if block.Type != "CERTIFICATE" {
				return nil, fmt.Errorf("PEM bundle: unexpected %q block (want CERTIFICATE)", block.Type)
			}
			if _, err := x509.ParseCertificate(block.Bytes); err != nil {
				return nil, fmt.Errorf("PEM bundle: %v", err)
			}
			out.X509Authorities = append(out.X509Authorities, &types.X509Certificate{Asn1: block.Bytes})
		}
		if len(out.X509Authorities) == 0 {
			return nil, errors.New("PEM bundle: no certificates found")
		}
		return out, nil
	}
	sb, err := spiffebundle.Parse(trustDomain, data)
	if err != nil {
		return nil, fmt.Errorf("SPIFFE bundle: %v", err)
	}
	for _, c := range sb.X509Authorities() {
		out.X509Authorities = append(out.X509Authorities, &types.X509Certificate{Asn1: c.Raw})
	}
	for kid, pub := range sb.JWTAuthorities() {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return nil, fmt.Errorf("SPIFFE bundle: JWT authority %q: %v", kid, err)
		}
		out.JwtAuthorities = append(out.JwtAuthorities, &types.JWTKey{KeyId: kid, PublicKey: der})
	}
	if len(out.X509Authorities) == 0 && len(out.JwtAuthorities) == 0 {
		// go-spiffe refuses {"keys": []} but not every spelling of an
		// empty key set ({"keYs": []}, found by FuzzParseBundle).
		return nil, errors.New("SPIFFE bundle: no authorities found")
	}
	if hint, ok := sb.RefreshHint(); ok {
		out.RefreshHint = int64(hint / time.Second)
	}
	if seq, ok := sb.SequenceNumber(); ok {
		out.SequenceNumber = seq
	}
	return out, nil
}

func (p Printer) printBundle(b *types.Bundle, f BundleFormat) error {
	data, err := MarshalBundle(b, f)
	if err != nil {
		return err
	}
	_, err = p.Out.Write(data)
	return err
}

// ShowBundle prints this server's own trust bundle.
func (c *Client) ShowBundle(ctx context.Context, p Printer, f BundleFormat) error {
	const op = "bundle show"
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	b, err := c.bundle.GetBundle(ctx, &bundlev1.GetBundleRequest{})
	if err != nil {
		return c.rpcError(op, err)
	}
	if p.JSON() {
		return p.printJSON(b)
	}
	if err := p.printBundle(b, f); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// ListBundles prints the federated bundles (only the one of trust domain td
// when td is not empty), each under a banner naming its trust domain.
func (c *Client) ListBundles(ctx context.Context, p Printer, td string, f BundleFormat) error {
	const op = "bundle list"
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	var bundles []*types.Bundle
	if td != "" {
		name, err := spiffeid.TrustDomainFromString(td)
		if err != nil {
			return fmt.Errorf("%s: --id %q: %v", op, td, err)
		}
		b, err := c.bundle.GetFederatedBundle(ctx, &bundlev1.GetFederatedBundleRequest{TrustDomain: name.Name()})
		if err != nil {
			return c.rpcError(op, err)
		}
		bundles = append(bundles, b)
	} else {
		token := ""
		for {
			resp, err := c.bundle.ListFederatedBundles(ctx, &bundlev1.ListFederatedBundlesRequest{PageSize: pageSize, PageToken: token})
			if err != nil {
				return c.rpcError(op, err)
			}
			bundles = append(bundles, resp.Bundles...)
			if resp.NextPageToken == "" {
				break
			}
			if resp.NextPageToken == token {
				return fmt.Errorf("%s: the server returned the same page token %q twice", op, token)
			}
			token = resp.NextPageToken
		}
	}
	if p.JSON() {
		return p.printJSON(&bundlev1.ListFederatedBundlesResponse{Bundles: bundles})
	}
	if len(bundles) == 0 {
		fmt.Fprintln(p.Out, "No federated bundles")
		return nil
	}
	for i, b := range bundles {
		if i > 0 {
			fmt.Fprintln(p.Out)
		}
		banner := strings.Repeat("*", 40)
		fmt.Fprintf(p.Out, "%s\n* %s\n%s\n", banner, b.TrustDomain, banner)
		if err := p.printBundle(b, f); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
	}
	return nil
}

// SetBundle creates or replaces the federated bundle of trust domain td,
// read from r in format f.
func (c *Client) SetBundle(ctx context.Context, p Printer, td string, r io.Reader, f BundleFormat) error {
	const op = "bundle set"
	if td == "" {
		return fmt.Errorf("%s: --id (the federated trust domain) is required", op)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("%s: reading bundle: %w", op, err)
	}
	b, err := ParseBundle(td, data, f)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	resp, err := c.bundle.BatchSetFederatedBundle(ctx, &bundlev1.BatchSetFederatedBundleRequest{Bundle: []*types.Bundle{b}})
	if err != nil {
		return c.rpcError(op, err)
	}
	return p.bundleResults(op, resp, len(resp.Results), func(i int) (string, *types.Status) {
		return b.TrustDomain, resp.Results[i].Status
	}, "Bundle for %s set\n")
}

// bundleResults prints the outcome of a one-or-more-bundle batch call.
func (p Printer) bundleResults(op string, resp proto.Message, n int, result func(int) (string, *types.Status), okFormat string) error {
	failed := 0
	for i := range n {
		td, st := result(i)
		if code := codes.Code(st.GetCode()); code != codes.OK {
			failed++
			msg := st.GetMessage()
			// The API names the request's modes; the command line has
			// flags for them.
			msg = strings.Replace(msg, "delete with mode DISSOCIATE or DELETE",
				"run again with --mode dissociate (keep those entries, without this trust domain) or --mode delete (delete them)", 1)
			fmt.Fprintf(p.errw(), "%s: bundle for %s: %s (%s)\n", op, td, msg, code)
		} else if !p.JSON() {
			fmt.Fprintf(p.Out, okFormat, td)
		}
	}
	if p.JSON() {
		if err := p.printJSON(resp); err != nil {
			return err
		}
	}
	if failed > 0 {
		return &BatchError{Op: op, Failed: failed, Total: n, Noun: "bundles"}
	}
	return nil
}

// DeleteMode is what happens to entries federating with a deleted bundle.
type DeleteMode = bundlev1.BatchDeleteFederatedBundleRequest_Mode

// ParseDeleteMode parses --mode: restrict (default: refuse while entries
// federate with the trust domain), delete (delete those entries) or
// dissociate (remove the trust domain from them).
func ParseDeleteMode(s string) (DeleteMode, error) {
	switch strings.ToLower(s) {
	case "", "restrict":
		return bundlev1.BatchDeleteFederatedBundleRequest_RESTRICT, nil
	case "delete":
		return bundlev1.BatchDeleteFederatedBundleRequest_DELETE, nil
	case "dissociate":
		return bundlev1.BatchDeleteFederatedBundleRequest_DISSOCIATE, nil
	}
	return 0, fmt.Errorf("unknown delete mode %q (want restrict, delete or dissociate)", s)
}

// DeleteBundle deletes the federated bundle of trust domain td.
func (c *Client) DeleteBundle(ctx context.Context, p Printer, td string, mode DeleteMode) error {
	const op = "bundle delete"
	if td == "" {
		return fmt.Errorf("%s: --id (the federated trust domain) is required", op)
	}
	name, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		return fmt.Errorf("%s: --id %q: %v", op, td, err)
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	resp, err := c.bundle.BatchDeleteFederatedBundle(ctx, &bundlev1.BatchDeleteFederatedBundleRequest{
		TrustDomains: []string{name.Name()}, Mode: mode,
	})
	if err != nil {
		return c.rpcError(op, err)
	}
	return p.bundleResults(op, resp, len(resp.Results), func(i int) (string, *types.Status) {
		return resp.Results[i].TrustDomain, resp.Results[i].Status
	}, "Bundle for %s deleted\n")
}

// CountBundles prints how many bundles (own and federated) the server holds.
func (c *Client) CountBundles(ctx context.Context, p Printer) error {
	const op = "bundle count"
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	resp, err := c.bundle.CountBundles(ctx, &bundlev1.CountBundlesRequest{})
	if err != nil {
		return c.rpcError(op, err)
	}
	if p.JSON() {
		return p.printJSON(resp)
	}
	fmt.Fprintln(p.Out, plural(int(resp.Count), "bundle", "bundles"))
	return nil
}

// pruneBundleMethod is arbor's own admin call (internal/api/prune.go): SPIRE's
// bundle.v1 has no prune. Request google.protobuf.Duration (the grace
// period), response spire.api.types.Bundle, removed counts in the header.
const (
	pruneBundleMethod = "/arbor.admin.v1.Bundle/PruneBundle"
	prunedX509Header  = "arbor-pruned-x509"
	prunedJWTHeader   = "arbor-pruned-jwt"
)

// PruneBundle removes from this server's own bundle the X.509 and JWT
// authorities that expired more than grace ago (zero: every expired one),
// old upstream roots included, and prints how many it removed. The server
// keeps the authorities its CA still holds. Children drop what their parent
// pruned at their own next rotation step (after their own grace period), or
// at once with a prune of their own.
func (c *Client) PruneBundle(ctx context.Context, p Printer, grace time.Duration) error {
	const op = "bundle prune"
	if grace < 0 {
		return fmt.Errorf("%s: --grace %v is negative", op, grace)
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	var hdr metadata.MD
	b := new(types.Bundle)
	if err := c.conn.Invoke(ctx, pruneBundleMethod, durationpb.New(grace), b, grpc.Header(&hdr)); err != nil {
		return c.rpcError(op, err)
	}
	if p.JSON() {
		return p.printJSON(b)
	}
	count := func(key string) string {
		if v := hdr.Get(key); len(v) == 1 {
			if _, err := strconv.Atoi(v[0]); err == nil {
				return v[0]
			}
		}
		return "?"
	}
	fmt.Fprintf(p.Out, "Pruned %s X.509 and %s JWT authorities expired more than %v ago; the bundle holds %s and %s\n",
		count(prunedX509Header), count(prunedJWTHeader), grace,
		plural(len(b.X509Authorities), "X.509 authority", "X.509 authorities"),
		plural(len(b.JwtAuthorities), "JWT authority", "JWT authorities"))
	return nil
}
