package e2e

import (
	"crypto/x509"
	"encoding/hex"
	"strings"
	"testing"

	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// TestSpireServerLocalAuthorityCLI drives arbor's admin socket with the real
// spire-server localauthority and logger commands of every SPIRE release:
// a whole X.509 and JWT rotation (show, prepare, activate, taint, revoke),
// the refusals spire-server prints, and the log level set and reset.
func TestSpireServerLocalAuthorityCLI(t *testing.T) {
	requireSetup(t)
	t.Parallel()
	forEachSpire(t, func(t *testing.T, p *spirePeer) {
		a := newArbor(t, `datastore "sqlite" {}`)
		a.spire = p
		a.start(t)
		refused := func(want string, args ...string) {
			t.Helper()
			r := a.cliRun(t, args...)
			if r.err == nil || !strings.Contains(r.stdout+r.stderr, want) {
				t.Errorf("spire-server %s: err %v, output %q, want a failure saying %q", strings.Join(args, " "), r.err, r.stdout+r.stderr, want)
			}
		}
		for _, kind := range []string{"x509", "jwt"} {
			t.Run(kind, func(t *testing.T) {
				var st localauthorityv1.GetX509AuthorityStateResponse
				a.cliJSON(t, &st, "localauthority", kind, "show")
				first := st.GetActive().GetAuthorityId()
				if first == "" || st.Prepared != nil || st.Old != nil {
					t.Fatalf("localauthority %s show = %v, want only an active authority", kind, &st)
				}
				if out := a.cli(t, "localauthority", kind, "show"); !strings.Contains(out, first) {
					t.Errorf("localauthority %s show printed %q, want the active authority %s", kind, out, first)
				}
				refused("unexpected authority ID", "localauthority", kind, "activate", "-authorityID", "0a0b")
				refused("unable to taint current local authority", "localauthority", kind, "taint", "-authorityID", first)
				refused("unable to use current authority", "localauthority", kind, "revoke", "-authorityID", first)

				var prep localauthorityv1.PrepareX509AuthorityResponse
				a.cliJSON(t, &prep, "localauthority", kind, "prepare")
				second := prep.GetPreparedAuthority().GetAuthorityId()
				if second == "" || second == first {
					t.Fatalf("localauthority %s prepare = %v, want a new authority", kind, &prep)
				}
				if out := a.cli(t, "localauthority", kind, "activate", "-authorityID", second); !strings.Contains(out, second) {
					t.Errorf("localauthority %s activate printed %q, want %s", kind, out, second)
				}
				a.cliJSON(t, &st, "localauthority", kind, "show")
				if st.GetActive().GetAuthorityId() != second || st.GetOld().GetAuthorityId() != first {
					t.Fatalf("localauthority %s show after activate = %v, want active %s, old %s", kind, &st, second, first)
				}
				refused("untainted", "localauthority", kind, "revoke", "-authorityID", first)
				if out := a.cli(t, "localauthority", kind, "taint", "-authorityID", first); !strings.Contains(out, first) {
					t.Errorf("localauthority %s taint printed %q, want %s", kind, out, first)
				}
				var b types.Bundle
				a.cliJSON(t, &b, "bundle", "show")
				if !tainted(t, &b, kind, first) {
					t.Fatalf("bundle show after taint: %s authority %s is not tainted", kind, first)
				}
				refused("already tainted", "localauthority", kind, "taint", "-authorityID", first)
				if out := a.cli(t, "localauthority", kind, "revoke", "-authorityID", first); !strings.Contains(out, first) {
					t.Errorf("localauthority %s revoke printed %q, want %s", kind, out, first)
				}
				a.cliJSON(t, &b, "bundle", "show")
				if present(t, &b, kind, first) {
					t.Fatalf("bundle show after revoke still holds %s authority %s", kind, first)
				}
			})
		}
		refused("upstream authority is not configured", "upstreamauthority", "taint", "-subjectKeyID", "0a0b")
		refused("upstream authority is not configured", "upstreamauthority", "revoke", "-subjectKeyID", "0a0b")

		// The topology launches the server at debug.
		if out := a.cli(t, "logger", "get"); !strings.Contains(strings.ToLower(out), "debug") {
			t.Errorf("logger get printed %q, want the launch level debug", out)
		}
		if out := a.cli(t, "logger", "set", "-level", "warn"); !strings.Contains(strings.ToLower(out), "warn") {
			t.Errorf("logger set -level warn printed %q", out)
		}
		var l types.Logger
		a.cliJSON(t, &l, "logger", "get")
		if l.CurrentLevel != types.LogLevel_WARN || l.LaunchLevel != types.LogLevel_DEBUG {
			t.Errorf("logger get after set = %v, want WARN launched at DEBUG", &l)
		}
		a.cliJSON(t, &l, "logger", "reset")
		if l.CurrentLevel != types.LogLevel_DEBUG {
			t.Errorf("logger reset = %v, want DEBUG", &l)
		}
	})
}

func tainted(t *testing.T, b *types.Bundle, kind, id string) bool {
	t.Helper()
	return authorityOf(t, b, kind, id) == 2
}

func present(t *testing.T, b *types.Bundle, kind, id string) bool {
	t.Helper()
	return authorityOf(t, b, kind, id) > 0
}

// authorityOf is 0 when the bundle lacks the authority, 1 when it holds it
// untainted, 2 tainted.
func authorityOf(t *testing.T, b *types.Bundle, kind, id string) int {
	t.Helper()
	if kind == "jwt" {
		for _, k := range b.JwtAuthorities {
			if k.KeyId == id {
				return 1 + btoi(k.Tainted)
			}
		}
		return 0
	}
	for _, a := range b.X509Authorities {
		if skidHex(t, a.Asn1) == id {
			return 1 + btoi(a.Tainted)
		}
	}
	return 0
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// skidHex is a certificate's subject key ID as spire-server names an X.509
// authority.
func skidHex(t *testing.T, der []byte) string {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(c.SubjectKeyId)
}
