package svidcli

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func writeConfig(t *testing.T, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "watch.hcl")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadWatchConfig(t *testing.T) {
	path := writeConfig(t, `
socket_path   = "/run/agent.sock"
health_listen = "127.0.0.1:8089"

svid "web" {
  spiffe_id      = "spiffe://example.org/web"
  cert_file      = "web/svid.pem"
  key_file       = "/etc/web/svid.key"
  bundle_file    = "web/bundle.pem"
  federated_with = ["partner.org"]
  key_mode       = "0640"
  owner          = "0"
  group          = "0"
  reload_signal  = "hup"
  pid_file       = "/run/nginx.pid"
}

svid "db" {
  hint           = "internal"
  combined_file  = "db.pem"
  bundle_file    = "db-ca.pem"
  federated_with = ["*"]
  reload_command = "pg_ctlcluster 15 main reload"
  reload_timeout = "5s"
  jwt {
    audience = ["spiffe://example.org/billing", "extra"]
    file     = "db.jwt"
  }
}
`)
	cfg, err := LoadWatchConfig(path)
	if err != nil {
		t.Fatalf("LoadWatchConfig = %v", err)
	}
	dir := filepath.Dir(path)
	want := &WatchConfig{
		Addr: "unix:///run/agent.sock", HealthListen: "127.0.0.1:8089",
		Targets: []Target{{
			Name: "web", ID: webID, CertFile: filepath.Join(dir, "web/svid.pem"), KeyFile: "/etc/web/svid.key",
			BundleFile: filepath.Join(dir, "web/bundle.pem"), Federated: []spiffeid.TrustDomain{partner},
			KeyMode: 0o640, Owner: &FileOwner{UID: 0, GID: 0}, ReloadSignal: syscall.SIGHUP, PIDFile: "/run/nginx.pid",
			ReloadTimeout: DefaultReloadTimeout,
		}, {
			Name: "db", Hint: "internal", CombinedFile: filepath.Join(dir, "db.pem"), BundleFile: filepath.Join(dir, "db-ca.pem"),
			AllFederated: true, KeyMode: 0o600, ReloadCommand: "pg_ctlcluster 15 main reload", ReloadTimeout: 5 * time.Second,
			JWTAudiences: []string{"spiffe://example.org/billing", "extra"}, JWTFile: filepath.Join(dir, "db.jwt"),
		}},
	}
	if diff := cmp.Diff(want, cfg, cmp.Comparer(func(a, b spiffeid.ID) bool { return a == b }),
		cmp.Comparer(func(a, b spiffeid.TrustDomain) bool { return a == b })); diff != "" {
		t.Errorf("LoadWatchConfig (-want +got):\n%s", diff)
	}
}

// Every mistake in a watch file is refused with where it is and what to do.
func TestLoadWatchConfigErrors(t *testing.T) {
	const ok = `cert_file = "a.pem"
  key_file = "a.key"`
	for _, tc := range []struct {
		name, src string
		want      []string
	}{
		{"unknown attribute", "svid \"a\" {\n  " + ok + "\n  cert_fle = \"x\"\n}", []string{"watch.hcl:4:3", "cert_fle"}},
		{"no svid", `socket_path = "/x"`, []string{"no svid block"}},
		{"nothing to write", "svid \"a\" {\n  spiffe_id = \"spiffe://example.org/a\"\n}", []string{"watch.hcl:1:1", "nothing to write"}},
		{"cert without key", "svid \"a\" {\n  cert_file = \"a.pem\"\n}", []string{"cert_file and key_file go together"}},
		{"bad spiffe id", "svid \"a\" {\n  " + ok + "\n  spiffe_id = \"example.org/a\"\n}", []string{"watch.hcl:4:3", `spiffe_id "example.org/a"`}},
		{"world-readable key", "svid \"a\" {\n  " + ok + "\n  key_mode = \"0644\"\n}", []string{"key_mode 0644 lets every user read the private key"}},
		{"bad key mode", "svid \"a\" {\n  " + ok + "\n  key_mode = \"rw\"\n}", []string{"watch.hcl:4:3", "not an octal file mode"}},
		{"unknown signal", "svid \"a\" {\n  " + ok + "\n  reload_signal = \"HUPP\"\n  pid = 1\n}", []string{"watch.hcl:4:3", `unknown signal "HUPP"`}},
		{"signal without pid", "svid \"a\" {\n  " + ok + "\n  reload_signal = \"HUP\"\n}", []string{"reload_signal needs pid or pid_file"}},
		{"pid without signal", "svid \"a\" {\n  " + ok + "\n  pid_file = \"/run/x.pid\"\n}", []string{"pid and pid_file need reload_signal"}},
		{"unknown owner", "svid \"a\" {\n  " + ok + "\n  owner = \"no-such-user-arbor\"\n}", []string{"watch.hcl:4:3", `owner "no-such-user-arbor": no such user`}},
		{"bad timeout", "svid \"a\" {\n  " + ok + "\n  reload_timeout = \"soon\"\n}", []string{"reload_timeout \"soon\""}},
		{"federated without bundle", "svid \"a\" {\n  " + ok + "\n  federated_with = [\"partner.org\"]\n}", []string{"federated_with needs bundle_file"}},
		{"bad trust domain", "svid \"a\" {\n  " + ok + "\n  bundle_file = \"b\"\n  federated_with = [\"Partner Org\"]\n}", []string{"watch.hcl:5:3", "federated_with \"Partner Org\""}},
		{"jwt without audience", "svid \"a\" {\n  jwt {\n    audience = []\n    file = \"t\"\n  }\n}", []string{"watch.hcl:2:3", "audience"}},
		{"both id and hint", "svid \"a\" {\n  " + ok + "\n  spiffe_id = \"spiffe://example.org/a\"\n  hint = \"x\"\n}", []string{"spiffe_id or hint, not both"}},
		{"one file twice", "svid \"a\" {\n  cert_file = \"a.pem\"\n  key_file = \"a.pem\"\n}", []string{"a.pem is named twice"}},
		{"two writers", "svid \"a\" {\n  " + ok + "\n}\nsvid \"b\" {\n  cert_file = \"b.pem\"\n  key_file = \"a.key\"\n}", []string{`svid "b"`, `written by svid "a"`}},
		{"duplicate name", "svid \"a\" {\n  " + ok + "\n}\nsvid \"a\" {\n  cert_file = \"b.pem\"\n  key_file = \"b.key\"\n}", []string{`svid "a" is defined twice`}},
		{"bad health_listen", "health_listen = \"8089\"\nsvid \"a\" {\n  " + ok + "\n}", []string{"watch.hcl:1:1", "health_listen \"8089\""}},
		{"syntax", "svid \"a\" {", []string{"watch.hcl:1:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadWatchConfig(writeConfig(t, tc.src))
			if err == nil {
				t.Fatalf("LoadWatchConfig(%q) succeeded, want an error containing %q", tc.src, tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("LoadWatchConfig(%q) = %v, want it to contain %q", tc.src, err, w)
				}
			}
		})
	}
	if _, err := LoadWatchConfig(filepath.Join(t.TempDir(), "none.hcl")); err == nil || !strings.Contains(err.Error(), "none.hcl") {
		t.Errorf("LoadWatchConfig(missing file) = %v, want an error naming it", err)
	}
}

// The flags of one SVID give the same Target, and their errors speak of
// flags, not of the file's attributes.
func TestTargetFlags(t *testing.T) {
	got, err := TargetFlags{SPIFFEID: "spiffe://example.org/web", CertFile: "c", KeyFile: "k", BundleFile: "b",
		FederatedWith: []string{"partner.org"}, Signal: "SIGUSR1", PID: 42, Exec: "true"}.Target()
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "svid" || got.ID != webID || got.ReloadSignal != syscall.SIGUSR1 || got.PID != 42 || got.KeyMode != 0o600 ||
		len(got.Federated) != 1 || got.Federated[0] != partner || got.ReloadCommand != "true" || got.Owner != nil {
		t.Errorf("TargetFlags.Target() = %+v", got)
	}
	for _, tc := range []struct {
		f    TargetFlags
		want string
	}{
		{TargetFlags{CertFile: "c"}, "--cert and --key go together"},
		{TargetFlags{CertFile: "c", KeyFile: "k", Signal: "HUP"}, "--signal needs --pid or --pid-file"},
		{TargetFlags{CertFile: "c", KeyFile: "k", PIDFile: "p"}, "--pid and --pid-file need --signal"},
		{TargetFlags{CertFile: "c", KeyFile: "k", KeyMode: "0666"}, "--key-mode 0666 lets every user read"},
		{TargetFlags{CertFile: "c", KeyFile: "k", FederatedWith: []string{"x"}}, "--federated-with needs --bundle"},
		{TargetFlags{CertFile: "c", KeyFile: "k", JWTAudiences: []string{"a"}}, "--jwt-audience and --jwt-file go together"},
		{TargetFlags{JWTAudiences: []string{"a"}}, "nothing to write: give at least one of --cert, --key, --bundle, --combined or --jwt-file"},
		{TargetFlags{CertFile: "c", KeyFile: "k", Owner: "no-such-user-arbor"}, `--owner "no-such-user-arbor": no such user`},
		{TargetFlags{CertFile: "c", KeyFile: "k", SPIFFEID: "web"}, `--spiffe-id "web"`},
	} {
		if _, err := tc.f.Target(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("TargetFlags%+v.Target() = %v, want an error containing %q", tc.f, err, tc.want)
		}
	}
}

func TestParseSignalAndPIDFile(t *testing.T) {
	for in, want := range map[string]syscall.Signal{"HUP": syscall.SIGHUP, "sighup": syscall.SIGHUP, "USR2": syscall.SIGUSR2, "10": syscall.Signal(10)} {
		if got, err := ParseSignal(in); err != nil || got != want {
			t.Errorf("ParseSignal(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "KILLME", "0", "-1", "65"} {
		if _, err := ParseSignal(in); err == nil {
			t.Errorf("ParseSignal(%q) succeeded, want an error", in)
		}
	}
	dir := t.TempDir()
	for content, want := range map[string]int{"123\n": 123, " 77 \n/var/lib/postgresql\n": 77, "0\n": -1, "-1\n": -1, "abc": -1, "": -1} {
		p := filepath.Join(dir, "x.pid")
		os.WriteFile(p, []byte(content), 0o644)
		got, err := readPIDFile(p)
		if want < 0 {
			if err == nil {
				t.Errorf("readPIDFile(%q) = %d, want an error (kill(2) with %q would signal a group)", content, got, content)
			}
		} else if err != nil || got != want {
			t.Errorf("readPIDFile(%q) = %d, %v; want %d", content, got, err, want)
		}
	}
}

// A failure while staging any file of a target replaces none of them, and
// leaves no temporary file behind.
func TestCommitFilesAllOrNothing(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "svid.pem"), filepath.Join(dir, "sub", "svid.key")
	os.WriteFile(cert, []byte("old cert"), 0o644)
	notDir := filepath.Join(dir, "file")
	os.WriteFile(notDir, nil, 0o644)
	for _, tc := range []struct {
		name, key, want string
	}{
		{"missing directory", key, "directory " + filepath.Join(dir, "sub") + " does not exist"},
		{"not a directory", filepath.Join(notDir, "svid.key"), notDir + " is not a directory"},
	} {
		err := commitFiles([]fileContent{{cert, []byte("new cert"), 0o644}, {tc.key, []byte("new key"), 0o600}}, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: commitFiles = %v, want %q", tc.name, err, tc.want)
		}
		if b, _ := os.ReadFile(cert); string(b) != "old cert" {
			t.Errorf("%s: svid.pem = %q after a failed commit, want the old content", tc.name, b)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("directory holds %v after failed commits, want svid.pem and file only", entries)
	}

	// A key file that was world-readable becomes 0600 on replacement.
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	os.WriteFile(key, []byte("old key"), 0o644)
	if err := commitFiles([]fileContent{{cert, []byte("new cert"), 0o644}, {key, []byte("new key"), 0o600}}, &FileOwner{UID: os.Getuid(), GID: -1}); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{cert: "new cert", key: "new key"} {
		if b, _ := os.ReadFile(path); string(b) != want {
			t.Errorf("%s = %q, want %q", path, b, want)
		}
	}
	if fi, _ := os.Stat(key); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode = %v, want 0600", fi.Mode().Perm())
	}
}

// Once against a Workload API that serves two SVIDs and a federated
// bundle: targets pick their SVID by ID or by hint, the bundle file holds
// the own trust domain's CAs and exactly the federated ones asked for.
func TestWatchOncePicksSVIDsAndBundles(t *testing.T) {
	p := newPKI(t)
	addr := serve(t, &workloadServer{pki: p})
	dir := t.TempDir()
	at := func(name string) string { return filepath.Join(dir, name) }
	cfg := WatchConfig{Addr: addr, Once: true, Targets: []Target{
		{Name: "db", ID: dbID, CertFile: at("db.pem"), KeyFile: at("db.key"), BundleFile: at("db-ca.pem")},
		{Name: "web", Hint: "internal", CertFile: at("web.pem"), KeyFile: at("web.key"), BundleFile: at("web-ca.pem"), AllFederated: true},
		{Name: "first", CombinedFile: at("first.pem"), BundleFile: at("first-ca.pem"), Federated: []spiffeid.TrustDomain{partner}},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := Watch(ctx, cfg); err != nil {
		t.Fatalf("Watch(Once) = %v", err)
	}
	leafID := func(path string) string {
		c, err := readLeaf(path)
		if err != nil {
			t.Fatal(err)
		}
		return c.URIs[0].String()
	}
	for file, want := range map[string]spiffeid.ID{"db.pem": dbID, "web.pem": webID, "first.pem": webID} {
		if got := leafID(at(file)); got != want.String() {
			t.Errorf("%s holds %s, want %s", file, got, want)
		}
	}
	chain, _ := os.ReadFile(at("db.pem"))
	if n := bytes.Count(chain, []byte("BEGIN CERTIFICATE")); n != 2 {
		t.Errorf("db.pem holds %d certificates, want leaf and intermediate", n)
	}
	roots := func(path string) []string {
		b, _ := os.ReadFile(path)
		var out []string
		for {
			var blk *pem.Block
			blk, b = pem.Decode(b)
			if blk == nil {
				return out
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, c.URIs[0].String())
		}
	}
	if diff := cmp.Diff([]string{"spiffe://example.org"}, roots(at("db-ca.pem"))); diff != "" {
		t.Errorf("db-ca.pem (-want +got):\n%s", diff)
	}
	for _, f := range []string{"web-ca.pem", "first-ca.pem"} {
		if diff := cmp.Diff([]string{"spiffe://example.org", "spiffe://partner.org"}, roots(at(f))); diff != "" {
			t.Errorf("%s (-want +got):\n%s", f, diff)
		}
	}
}

// Once gives up when ctx ends, naming every target that was not written
// and why, and writes nothing for them.
func TestWatchOnceFailures(t *testing.T) {
	p := newPKI(t)
	dir := t.TempDir()
	other := spiffeid.RequireFromString("spiffe://example.org/other")
	run := func(addr string, targets ...Target) error {
		// Once waits for the whole bound; 2s was too short for the first
		// answer on a loaded CI machine (a fetch still in flight at the end).
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return Watch(ctx, WatchConfig{Addr: addr, Once: true, Targets: targets, RetryBase: 50 * time.Millisecond, RetryMax: 100 * time.Millisecond})
	}
	addr := serve(t, &workloadServer{pki: p})
	err := run(addr,
		Target{Name: "other", ID: other, CertFile: filepath.Join(dir, "o.pem"), KeyFile: filepath.Join(dir, "o.key")},
		Target{Name: "nofed", BundleFile: filepath.Join(dir, "b.pem"), Federated: []spiffeid.TrustDomain{spiffeid.RequireTrustDomainFromString("nope.org")}},
		Target{Name: "reload", CertFile: filepath.Join(dir, "r.pem"), KeyFile: filepath.Join(dir, "r.key"), ReloadCommand: "echo broken >&2; exit 7"},
	)
	for _, want := range []string{
		`svid "other": the agent gives this process no SVID for spiffe://example.org/other (it gives spiffe://example.org/web (hint internal), spiffe://example.org/db)`,
		`svid "nofed": the agent sent no bundle for federated trust domain nope.org`,
		`svid "reload": reload command "echo broken >&2; exit 7" failed: exit status 7: broken`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Watch(Once) = %v, want it to contain %q", err, want)
		}
	}
	for _, f := range []string{"o.pem", "b.pem"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("%s was written for a failing target", f)
		}
	}

	denied := serve(t, &workloadServer{pki: p, deny: true})
	err = run(denied, Target{Name: "a", CertFile: filepath.Join(dir, "a.pem"), KeyFile: filepath.Join(dir, "a.key")})
	if err == nil || !strings.Contains(err.Error(), ErrNoIdentity.Error()) {
		t.Errorf("Watch(Once) on an agent without identity = %v, want %q", err, ErrNoIdentity)
	}
	err = run("unix://"+filepath.Join(dir, "none.sock"), Target{Name: "a", CertFile: filepath.Join(dir, "a.pem"), KeyFile: filepath.Join(dir, "a.key")})
	if err == nil || !strings.Contains(err.Error(), "none.sock does not exist") {
		t.Errorf("Watch(Once) without an agent = %v, want the socket named", err)
	}

	// A reload command that does not finish is killed at its timeout.
	err = run(addr, Target{Name: "slow", CertFile: filepath.Join(dir, "s.pem"), KeyFile: filepath.Join(dir, "s.key"),
		ReloadCommand: "sleep 30", ReloadTimeout: 200 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), `reload command "sleep 30" failed: killed after 200ms`) {
		t.Errorf("Watch(Once) with a hanging reload = %v, want it killed after 200ms", err)
	}
}
