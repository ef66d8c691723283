package svidcli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestAddress(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, flag, env string
		want            string
		wantErr         bool
	}{
		{name: "default", want: "unix:///tmp/arbor-agent/public/api.sock"},
		{name: "flag wins over env", flag: "/run/a.sock", env: "unix:///run/b.sock", want: "unix:///run/a.sock"},
		{name: "relative flag", flag: "a.sock", want: "unix://" + filepath.Join(wd, "a.sock")},
		{name: "env address", env: "unix:///run/b.sock", want: "unix:///run/b.sock"},
		{name: "env tcp address", env: "tcp://127.0.0.1:8000", want: "tcp://127.0.0.1:8000"},
		{name: "env bare path", env: "/run/c.sock", want: "unix:///run/c.sock"},
		{name: "env relative unix address", env: "unix:b.sock", wantErr: true},
		{name: "env unknown scheme", env: "http://x", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string {
				if k == SocketEnv {
					return tc.env
				}
				return ""
			}
			got, err := Address(tc.flag, getenv)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("Address(%q, env %q) = %q, %v; want %q, error %v", tc.flag, tc.env, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseFormat(t *testing.T) {
	for in, want := range map[string]Format{"": FormatPretty, "pretty": FormatPretty, "TEXT": FormatPretty, "json": FormatJSON} {
		if got, err := ParseFormat(in); err != nil || got != want {
			t.Errorf("ParseFormat(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseFormat("yaml"); err == nil {
		t.Error(`ParseFormat("yaml") succeeded, want an error`)
	}
}

func TestFetchX509(t *testing.T) {
	ctx := testContext(t)
	p := newPKI(t)
	addr := serve(t, &workloadServer{pki: p})
	web := p.svids[0].leaf
	now := web.NotAfter.Add(-30 * time.Minute)
	opts := Options{Addr: addr, Now: func() time.Time { return now }}

	t.Run("pretty", func(t *testing.T) {
		var out bytes.Buffer
		if err := FetchX509(ctx, &out, opts, ""); err != nil {
			t.Fatalf("FetchX509 = %v", err)
		}
		for _, want := range []string{
			"Received 2 SVIDs\n",
			"SPIFFE ID:     spiffe://example.org/web\n",
			"Hint:          internal\n",
			"SPIFFE ID:     spiffe://example.org/db\n",
			"Valid until:   " + web.NotAfter.UTC().Format(time.RFC3339) + " (expires in 30m0s)\n",
			"Intermediates: 1\n",
			"Bundle example.org\n",
			"Bundle partner.org\n",
		} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("FetchX509 output lacks %q:\n%s", want, out.String())
			}
		}
	})

	t.Run("json", func(t *testing.T) {
		var out bytes.Buffer
		o := opts
		o.Format = FormatJSON
		if err := FetchX509(ctx, &out, o, ""); err != nil {
			t.Fatalf("FetchX509 = %v", err)
		}
		var got X509Output
		if err := json.Unmarshal(out.Bytes(), &got); err != nil {
			t.Fatalf("FetchX509 JSON %s: %v", out.String(), err)
		}
		var want X509Output
		for _, s := range p.svids {
			want.SVIDs = append(want.SVIDs, X509SVIDOutput{
				SPIFFEID: s.id.String(), Hint: s.hint, SerialNumber: s.leaf.SerialNumber.Text(16),
				NotBefore: s.leaf.NotBefore.UTC(), ExpiresAt: s.leaf.NotAfter.UTC(), Intermediates: 1,
			})
		}
		want.Bundles = []BundleOutput{
			{TrustDomain: "example.org", Authorities: 1, ExpiresAt: p.root.NotAfter.UTC()},
			{TrustDomain: "partner.org", Authorities: 1, ExpiresAt: p.partnerRoot.NotAfter.UTC()},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("FetchX509 JSON (-want +got):\n%s", diff)
		}
	})

	t.Run("write", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "certs")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		// A key file left world-readable must come back 0600.
		if err := os.WriteFile(filepath.Join(dir, "svid.0.key"), []byte("old"), 0o644); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := FetchX509(ctx, &out, opts, dir); err != nil {
			t.Fatalf("FetchX509(write %s) = %v", dir, err)
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		modes := map[string]os.FileMode{}
		for _, e := range entries {
			fi, err := e.Info()
			if err != nil {
				t.Fatal(err)
			}
			modes[e.Name()] = fi.Mode().Perm()
		}
		wantModes := map[string]os.FileMode{
			"svid.0.pem": 0o644, "svid.0.key": 0o600, "bundle.0.pem": 0o644, "federated_bundle.0.0.pem": 0o644,
			"svid.1.pem": 0o644, "svid.1.key": 0o600, "bundle.1.pem": 0o644, "federated_bundle.1.0.pem": 0o644,
		}
		if diff := cmp.Diff(wantModes, modes); diff != "" {
			t.Errorf("files written (-want +got):\n%s", diff)
		}
		if !strings.Contains(out.String(), "Wrote svid.0.pem, svid.0.key, bundle.0.pem, federated_bundle.0.0.pem, svid.1.pem") {
			t.Errorf("FetchX509 output does not list the written files:\n%s", out.String())
		}
		for i, s := range p.svids {
			svid, err := x509svid.Load(filepath.Join(dir, fmt.Sprintf("svid.%d.pem", i)), filepath.Join(dir, fmt.Sprintf("svid.%d.key", i)))
			if err != nil {
				t.Fatalf("x509svid.Load(svid %d) = %v", i, err)
			}
			if svid.ID != s.id || len(svid.Certificates) != 2 || !svid.Certificates[0].Equal(s.leaf) || !svid.Certificates[1].Equal(p.intermediate) {
				t.Errorf("svid %d on disk = %s with %d certificates, want %s, leaf and intermediate", i, svid.ID, len(svid.Certificates), s.id)
			}
		}
		b, err := x509bundle.Load(td, filepath.Join(dir, "bundle.0.pem"))
		if err != nil {
			t.Fatalf("x509bundle.Load(bundle.0.pem) = %v", err)
		}
		if cas := b.X509Authorities(); len(cas) != 1 || !cas[0].Equal(p.root) {
			t.Errorf("bundle.0.pem holds %d certificates, want the example.org root", len(cas))
		}
		fb, err := x509bundle.Load(partner, filepath.Join(dir, "federated_bundle.0.0.pem"))
		if err != nil {
			t.Fatalf("x509bundle.Load(federated_bundle.0.0.pem) = %v", err)
		}
		if cas := fb.X509Authorities(); len(cas) != 1 || !cas[0].Equal(p.partnerRoot) {
			t.Errorf("federated_bundle.0.0.pem holds %d certificates, want the partner.org root", len(cas))
		}
	})
}

func TestFetchJWT(t *testing.T) {
	ctx := testContext(t)
	p := newPKI(t)
	addr := serve(t, &workloadServer{pki: p})
	opts := Options{Addr: addr}

	t.Run("json, every identity, two audiences", func(t *testing.T) {
		var out bytes.Buffer
		o := opts
		o.Format = FormatJSON
		if err := FetchJWT(ctx, &out, o, []string{"billing", "spiffe://example.org/api"}, ""); err != nil {
			t.Fatalf("FetchJWT = %v", err)
		}
		var got []JWTOutput
		if err := json.Unmarshal(out.Bytes(), &got); err != nil {
			t.Fatalf("FetchJWT JSON %s: %v", out.String(), err)
		}
		var ids []string
		for _, s := range got {
			ids = append(ids, s.SPIFFEID)
			svid, err := jwtsvid.ParseAndValidate(s.Token, p.jwtBundles(), []string{"billing"})
			if err != nil {
				t.Fatalf("printed token for %s does not validate: %v", s.SPIFFEID, err)
			}
			if svid.ID.String() != s.SPIFFEID || s.Claims["sub"] != s.SPIFFEID {
				t.Errorf("token subject %s, claims sub %v, printed %s", svid.ID, s.Claims["sub"], s.SPIFFEID)
			}
			if diff := cmp.Diff([]string{"billing", "spiffe://example.org/api"}, s.Audience); diff != "" {
				t.Errorf("audience (-want +got):\n%s", diff)
			}
		}
		if diff := cmp.Diff([]string{"spiffe://example.org/web", "spiffe://example.org/db"}, ids); diff != "" {
			t.Errorf("SPIFFE IDs (-want +got):\n%s", diff)
		}
		if got[0].Hint != "internal" {
			t.Errorf("hint = %q, want internal", got[0].Hint)
		}
	})

	t.Run("pretty, one identity", func(t *testing.T) {
		var out bytes.Buffer
		if err := FetchJWT(ctx, &out, opts, []string{"billing"}, dbID.String()); err != nil {
			t.Fatalf("FetchJWT = %v", err)
		}
		s := out.String()
		if strings.Contains(s, "spiffe://example.org/web") {
			t.Errorf("FetchJWT(--spiffe-id db) printed web's token:\n%s", s)
		}
		for _, want := range []string{"SPIFFE ID: spiffe://example.org/db\n", "Audience:  billing\n", "Token:     ey", `"sub": "spiffe://example.org/db"`, "(expires in "} {
			if !strings.Contains(s, want) {
				t.Errorf("FetchJWT output lacks %q:\n%s", want, s)
			}
		}
	})

	for _, tc := range []struct {
		name      string
		audiences []string
		id        string
		want      string
	}{
		{"no audience", nil, "", "no audience"},
		{"blank audience", []string{" "}, "", "no audience"},
		{"bad SPIFFE ID", []string{"a"}, "example.org/web", "--spiffe-id"},
		{"identity not issued", []string{"a"}, "spiffe://example.org/other", ErrNoIdentity.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := FetchJWT(ctx, &out, opts, tc.audiences, tc.id)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("FetchJWT(%q, %q) = %v, want one line containing %q", tc.audiences, tc.id, err, tc.want)
			}
			if out.Len() != 0 {
				t.Errorf("FetchJWT printed %q on error", out.String())
			}
		})
	}
}

func TestValidate(t *testing.T) {
	ctx := testContext(t)
	p := newPKI(t)
	addr := serve(t, &workloadServer{pki: p})
	opts := Options{Addr: addr}
	good := mustSignJWT(t, p.jwtKey, jwtKeyID, webID, []string{"billing"}, time.Now().Add(5*time.Minute))

	t.Run("valid", func(t *testing.T) {
		var out bytes.Buffer
		if err := Validate(ctx, &out, opts, "billing", good); err != nil {
			t.Fatalf("Validate = %v", err)
		}
		for _, want := range []string{"SVID is valid.\n", "SPIFFE ID: spiffe://example.org/web\n", `"aud": "billing"`, `"sub": "spiffe://example.org/web"`} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("Validate output lacks %q:\n%s", want, out.String())
			}
		}
	})

	t.Run("valid json", func(t *testing.T) {
		var out bytes.Buffer
		o := opts
		o.Format = FormatJSON
		if err := Validate(ctx, &out, o, "billing", good); err != nil {
			t.Fatalf("Validate = %v", err)
		}
		var got ValidateOutput
		if err := json.Unmarshal(out.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		if got.SPIFFEID != webID.String() || got.Claims["sub"] != webID.String() {
			t.Errorf("Validate JSON = %+v, want web", got)
		}
	})

	foreign := mustSignJWT(t, newKey(t), jwtKeyID, webID, []string{"billing"}, time.Now().Add(5*time.Minute))
	unknownKey := mustSignJWT(t, p.jwtKey, "k2", webID, []string{"billing"}, time.Now().Add(5*time.Minute))
	expired := mustSignJWT(t, p.jwtKey, jwtKeyID, webID, []string{"billing"}, time.Now().Add(-5*time.Minute))
	for _, tc := range []struct {
		name, audience, token string
	}{
		{"signed by a foreign key", "billing", foreign},
		{"unknown key id", "billing", unknownKey},
		{"expired", "billing", expired},
		{"wrong audience", "payroll", good},
		{"malformed", "billing", "not.a.jwt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := Validate(ctx, &out, opts, tc.audience, tc.token)
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("Validate(%s) = %v, want ErrInvalidToken", tc.name, err)
			}
			if msg := err.Error(); strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "svid validate: invalid JWT-SVID: ") {
				t.Errorf("Validate(%s) error = %q, want one line starting with the command", tc.name, msg)
			}
			if out.Len() != 0 {
				t.Errorf("Validate printed %q for an invalid token", out.String())
			}
		})
	}

	if err := Validate(ctx, &bytes.Buffer{}, opts, "", good); err == nil {
		t.Error("Validate with no audience succeeded")
	}
}

func TestUnreachableAndRefused(t *testing.T) {
	ctx := testContext(t)
	p := newPKI(t)
	dir := sockDir(t)

	// A socket file nobody listens on any more.
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	regular := filepath.Join(dir, "file")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		addr    string
		timeout time.Duration
		wantIs  error
		want    string
	}{
		{name: "missing socket", addr: "unix://" + filepath.Join(dir, "missing.sock"), wantIs: ErrUnreachable, want: "does not exist"},
		{name: "not a socket", addr: "unix://" + regular, wantIs: ErrUnreachable, want: "not a Unix socket"},
		{name: "nobody listening", addr: "unix://" + stale, wantIs: ErrUnreachable, want: "connection refused"},
		{name: "no identity", addr: serve(t, &workloadServer{pki: p, deny: true}), wantIs: ErrNoIdentity, want: "no identity issued"},
		{name: "no answer", addr: serve(t, &workloadServer{pki: p, hang: true}), timeout: 300 * time.Millisecond, want: "did not answer within 300ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := Options{Addr: tc.addr, Timeout: tc.timeout}
			calls := map[string]func() error{
				"x509":     func() error { return FetchX509(ctx, &bytes.Buffer{}, opts, "") },
				"jwt":      func() error { return FetchJWT(ctx, &bytes.Buffer{}, opts, []string{"a"}, "") },
				"validate": func() error { return Validate(ctx, &bytes.Buffer{}, opts, "a", "x.y.z") },
			}
			for _, name := range slices.Sorted(maps.Keys(calls)) {
				err := calls[name]()
				if err == nil {
					t.Fatalf("%s against %s succeeded", name, tc.addr)
				}
				if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
					t.Errorf("%s error = %v, want %v", name, err, tc.wantIs)
				}
				if msg := err.Error(); !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") || strings.Contains(msg, "rpc error") {
					t.Errorf("%s error = %q, want one line with %q and no gRPC noise", name, msg, tc.want)
				}
			}
		})
	}
}

func TestReadToken(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tok")
	if err := os.WriteFile(file, []byte("  a.b.c\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, token, file, stdin string
		want                     string
		wantErr                  bool
	}{
		{name: "flag", token: " a.b.c ", want: "a.b.c"},
		{name: "file", file: file, want: "a.b.c"},
		{name: "stdin", file: "-", stdin: "d.e.f\n", want: "d.e.f"},
		{name: "both", token: "a", file: file, wantErr: true},
		{name: "neither", wantErr: true},
		{name: "missing file", file: file + ".missing", wantErr: true},
		{name: "empty file", file: empty, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadToken(tc.token, tc.file, strings.NewReader(tc.stdin))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("ReadToken(%q, %q) = %q, %v; want %q, error %v", tc.token, tc.file, got, err, tc.want, tc.wantErr)
			}
		})
	}
}
