package admin_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/arborid/arbor/internal/cli/admin"
)

func TestShowBundle(t *testing.T) {
	s, socket := startServer(t)
	c := dial(t, socket)
	ctx := testContext(t)
	var o outputs
	own := s.Bundles().Own()
	var wantX509 [][]byte
	for _, a := range own.X509Authorities {
		wantX509 = append(wantX509, a.Cert)
	}

	if err := c.ShowBundle(ctx, o.printer(admin.FormatPretty), admin.BundlePEM); err != nil {
		t.Fatalf("ShowBundle(pem): %v", err)
	}
	if got := parsePEMCerts(t, o.out.Bytes()); !cmp.Equal(got, wantX509) || len(got) == 0 {
		t.Errorf("ShowBundle(pem) certificates differ from the server's X.509 authorities (%d vs %d)", len(got), len(wantX509))
	}

	if err := c.ShowBundle(ctx, o.printer(admin.FormatPretty), admin.BundleSPIFFE); err != nil {
		t.Fatalf("ShowBundle(spiffe): %v", err)
	}
	sb, err := spiffebundle.Parse(td, o.out.Bytes())
	if err != nil {
		t.Fatalf("ShowBundle(spiffe) output does not parse as a SPIFFE bundle: %v\n%s", err, o.out.String())
	}
	var gotX509 [][]byte
	for _, c := range sb.X509Authorities() {
		gotX509 = append(gotX509, c.Raw)
	}
	if !cmp.Equal(gotX509, wantX509) {
		t.Error("SPIFFE bundle X.509 authorities differ from the server's")
	}
	if len(sb.JWTAuthorities()) != len(own.JWTAuthorities) || len(own.JWTAuthorities) == 0 {
		t.Errorf("SPIFFE bundle has %d JWT authorities, want %d (> 0)", len(sb.JWTAuthorities()), len(own.JWTAuthorities))
	}
	for _, k := range own.JWTAuthorities {
		if !sb.HasJWTAuthority(k.KeyID) {
			t.Errorf("SPIFFE bundle lacks JWT authority %q", k.KeyID)
		}
	}
	if seq, ok := sb.SequenceNumber(); !ok || seq != own.SequenceNumber {
		t.Errorf("SPIFFE bundle sequence = %d, %t; want %d", seq, ok, own.SequenceNumber)
	}
	for _, use := range []string{`"use": "x509-svid"`, `"use": "jwt-svid"`} {
		if !strings.Contains(o.out.String(), use) {
			t.Errorf("SPIFFE bundle lacks %s", use)
		}
	}

	if err := c.ShowBundle(ctx, o.printer(admin.FormatJSON), admin.BundlePEM); err != nil {
		t.Fatal(err)
	}
	var b types.Bundle
	if err := protojson.Unmarshal(o.out.Bytes(), &b); err != nil || b.TrustDomain != "example.org" || len(b.X509Authorities) != len(wantX509) {
		t.Errorf("ShowBundle(json) = %q (%v)", o.out.String(), err)
	}
}

func TestFederatedBundles(t *testing.T) {
	_, socket := startServer(t)
	c := dial(t, socket)
	ctx := testContext(t)
	var o outputs

	if err := c.ListBundles(ctx, o.printer(admin.FormatPretty), "", admin.BundlePEM); err != nil || o.out.String() != "No federated bundles\n" {
		t.Fatalf("ListBundles(none) = %v, printed %q", err, o.out.String())
	}

	// Set partner.example from PEM and other.example from a SPIFFE bundle.
	partnerCA := newCA(t, "partner.example")
	if err := c.SetBundle(ctx, o.printer(admin.FormatPretty), "partner.example", bytes.NewReader(pemOf(partnerCA)), admin.BundlePEM); err != nil {
		t.Fatalf("SetBundle(pem): %v", err)
	}
	otherCA := newCA(t, "other.example")
	sb := spiffebundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString("other.example"), nil)
	sb.AddX509Authority(otherCA)
	if err := sb.AddJWTAuthority("k1", otherCA.PublicKey); err != nil {
		t.Fatal(err)
	}
	sb.SetSequenceNumber(7)
	doc, err := sb.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetBundle(ctx, o.printer(admin.FormatPretty), "spiffe://other.example", bytes.NewReader(doc), admin.BundleSPIFFE); err != nil {
		t.Fatalf("SetBundle(spiffe): %v", err)
	}
	if o.out.String() != "Bundle for other.example set\n" {
		t.Errorf("SetBundle printed %q", o.out.String())
	}

	// List both (PEM), then one (JSON and SPIFFE).
	if err := c.ListBundles(ctx, o.printer(admin.FormatPretty), "", admin.BundlePEM); err != nil {
		t.Fatal(err)
	}
	out := o.out.String()
	if i, j := strings.Index(out, "* other.example\n"), strings.Index(out, "* partner.example\n"); i < 0 || j < i {
		t.Errorf("ListBundles printed\n%s\nwant other.example then partner.example banners", out)
	}
	if got := parsePEMCerts(t, o.out.Bytes()); !cmp.Equal(got, [][]byte{otherCA.Raw, partnerCA.Raw}) {
		t.Errorf("ListBundles PEM holds %d certificates, want the two CAs in trust domain order", len(got))
	}
	if err := c.ListBundles(ctx, o.printer(admin.FormatJSON), "other.example", admin.BundlePEM); err != nil {
		t.Fatal(err)
	}
	var list bundlev1.ListFederatedBundlesResponse
	if err := protojson.Unmarshal(o.out.Bytes(), &list); err != nil || len(list.Bundles) != 1 {
		t.Fatalf("ListBundles(other, json) = %q (%v)", o.out.String(), err)
	}
	if b := list.Bundles[0]; b.TrustDomain != "other.example" || b.SequenceNumber != 7 || len(b.JwtAuthorities) != 1 || b.JwtAuthorities[0].KeyId != "k1" {
		t.Errorf("other.example bundle = %v, want sequence 7 and JWT key k1", b)
	}
	if err := c.ListBundles(ctx, o.printer(admin.FormatPretty), "other.example", admin.BundleSPIFFE); err != nil {
		t.Fatal(err)
	}
	jwks := o.out.String()[strings.Index(o.out.String(), "{"):]
	if got, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString("other.example"), []byte(jwks)); err != nil || !got.Equal(sb) {
		t.Errorf("ListBundles(other, spiffe) = %v; want the bundle that was set", err)
	}
	if err := c.CountBundles(ctx, o.printer(admin.FormatPretty)); err != nil || o.out.String() != "3 bundles\n" {
		t.Errorf("CountBundles = %v, printed %q; want 3 bundles", err, o.out.String())
	}

	// Delete: restrict refuses while an entry federates, dissociate proceeds.
	fed := admin.EntrySpec{ParentID: "spiffe://example.org/host", SPIFFEID: "spiffe://example.org/fed",
		Selectors: []string{"unix:uid:1"}, FederatesWith: []string{"partner.example"}}
	if err := c.CreateEntries(ctx, o.printer(admin.FormatPretty), []*types.Entry{mustEntry(t, fed)}); err != nil {
		t.Fatal(err)
	}
	err = c.DeleteBundle(ctx, o.printer(admin.FormatPretty), "partner.example", admin.DeleteMode(0))
	var be *admin.BatchError
	if !errors.As(err, &be) || !strings.Contains(o.err.String(), "(FailedPrecondition)") || !strings.Contains(o.err.String(), "run again with --mode dissociate") {
		t.Errorf("DeleteBundle(restrict) = %v, stderr %q; want a FailedPrecondition failure", err, o.err.String())
	}
	mode, _ := admin.ParseDeleteMode("dissociate")
	if err := c.DeleteBundle(ctx, o.printer(admin.FormatPretty), "partner.example", mode); err != nil || o.out.String() != "Bundle for partner.example deleted\n" {
		t.Fatalf("DeleteBundle(dissociate) = %v, printed %q", err, o.out.String())
	}
	entries, err := c.ListEntries(ctx, admin.EntryFilter{SPIFFEID: "spiffe://example.org/fed"})
	if err != nil || len(entries) != 1 || len(entries[0].FederatesWith) != 0 {
		t.Errorf("entry after dissociate = %v, %v; want it kept without federates_with", entries, err)
	}
	err = c.ListBundles(ctx, o.printer(admin.FormatPretty), "partner.example", admin.BundlePEM)
	var re *admin.RPCError
	checkOneLine(t, err)
	if !errors.As(err, &re) || re.Code.String() != "NotFound" {
		t.Errorf("ListBundles(deleted) = %v, want NotFound", err)
	}

	// Bad input never reaches the server.
	for name, call := range map[string]func() error{
		"set without id": func() error {
			return c.SetBundle(ctx, o.printer(admin.FormatPretty), "", strings.NewReader(""), admin.BundlePEM)
		},
		"set empty PEM": func() error {
			return c.SetBundle(ctx, o.printer(admin.FormatPretty), "x.example", strings.NewReader("nothing"), admin.BundlePEM)
		},
		"set bad JWKS": func() error {
			return c.SetBundle(ctx, o.printer(admin.FormatPretty), "x.example", strings.NewReader("{"), admin.BundleSPIFFE)
		},
		"delete without id":  func() error { return c.DeleteBundle(ctx, o.printer(admin.FormatPretty), "", mode) },
		"list bad trust dom": func() error { return c.ListBundles(ctx, o.printer(admin.FormatPretty), "Bad TD", admin.BundlePEM) },
	} {
		if err := call(); err == nil {
			t.Errorf("%s: nil error, want one", name)
		}
	}
}
