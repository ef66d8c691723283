package delivery

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/testkit"
)

// Bad flags and a bad watch file are one line on stderr and exit status 1,
// before anything is written.
func TestWatchRefusesBadInput(t *testing.T) {
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "watch.hcl")
	if err := os.WriteFile(conf, []byte("svid \"web\" {\n  cert_file = \"a.pem\"\n  key_file  = \"a.key\"\n  key_mode  = \"0644\"\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--cert", filepath.Join(dir, "a.pem")}, "arbor: svid watch: --cert and --key go together"},
		{[]string{"--cert", "a", "--key", "b", "--signal", "HUP"}, "arbor: svid watch: --signal needs --pid or --pid-file"},
		{[]string{"--cert", "a", "--key", "b", "--signal", "BOOM", "--pid", "1"}, `arbor: svid watch: --signal: unknown signal "BOOM"`},
		{nil, "arbor: svid watch: nothing to write"},
		{[]string{"--config", conf}, conf + ":1:1: svid \"web\": key_mode 0644 lets every user read the private key"},
		{[]string{"--config", conf, "--cert", "x"}, "give --config or the flags of one SVID"},
	} {
		ctx := testkit.Context(t, 30*time.Second)
		cmd := exec.CommandContext(ctx, arborBin, append([]string{"svid", "watch"}, tc.args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("arbor svid watch %q: %v, want exit status 1", tc.args, err)
		}
		msg := strings.TrimSpace(stderr.String())
		if strings.Count(msg, "\n") != 0 || !strings.HasPrefix(msg, "arbor: svid watch: ") || !strings.Contains(msg, tc.want) {
			t.Errorf("arbor svid watch %q printed %q, want one line with %q", tc.args, msg, tc.want)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("refused commands wrote %v, want nothing", entries)
	}
}

// A running watch whose target directory does not exist and whose other
// target's reload command fails keeps running: /ready answers 503 naming
// both, each failure is logged once however often it is retried, the
// healthy target beside them is written, and once the directory exists that
// target recovers by itself.
func TestWatchKeepsRunningOnFailures(t *testing.T) {
	tr := startTree(t)
	web := spiffeid.RequireFromPath(td, "/web")
	tr.entry(web, 0)
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	attempts := filepath.Join(dir, "attempts")
	reload := fmt.Sprintf("echo x >> %s; echo 'nginx: [emerg] cannot load certificate' >&2; exit 1", attempts)
	conf := filepath.Join(dir, "watch.hcl")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`
svid "nodir" {
  cert_file = "missing/svid.pem"
  key_file  = "missing/svid.key"
}
svid "badreload" {
  cert_file      = "r.pem"
  key_file       = "r.key"
  reload_command = %q
}
svid "fine" {
  combined_file = "fine.pem"
}
`, reload)), 0o644); err != nil {
		t.Fatal(err)
	}
	w := tr.runWatch("--config", conf)

	c := http.Client{Timeout: 5 * time.Second}
	ready := func() (int, string) {
		resp, err := c.Get(w.health + "/ready")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		return resp.StatusCode, string(b)
	}
	wantNodir := `svid "nodir": write ` + filepath.Join(missing, "svid.key") + ": directory " + missing + " does not exist"
	wantReload := `svid "badreload": reload command "` + reload + `" failed: exit status 1: nginx: [emerg] cannot load certificate`
	testkit.Poll(t, 30*time.Second, "/ready naming both failures, after retries", func() error {
		code, body := ready()
		if code != http.StatusServiceUnavailable || !strings.Contains(body, wantNodir) || !strings.Contains(body, wantReload) {
			return fmt.Errorf("/ready = %d %q", code, body)
		}
		if n := countLines(attempts); n < 3 {
			return fmt.Errorf("reload command tried %d times", n)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(dir, "fine.pem")); err != nil {
		t.Errorf("the healthy target was not written: %v", err)
	}
	if n := w.logs.count("reload command"); n != 1 {
		t.Errorf("the failing reload was logged %d times over %d attempts, want once:\n%s", n, countLines(attempts), w.logs)
	}
	if n := w.logs.count("does not exist"); n != 1 {
		t.Errorf("the missing directory was logged %d times, want once:\n%s", n, w.logs)
	}

	if err := os.Mkdir(missing, 0o755); err != nil {
		t.Fatal(err)
	}
	testkit.Poll(t, 60*time.Second, "the nodir target recovering", func() error {
		if _, body := ready(); strings.Contains(body, `svid "nodir"`) {
			return fmt.Errorf("/ready still %q", body)
		}
		if _, err := os.Stat(filepath.Join(missing, "svid.key")); err != nil {
			return err
		}
		return nil
	})
	if code, body := ready(); code != http.StatusServiceUnavailable || !strings.Contains(body, wantReload) {
		t.Errorf("/ready = %d %q, want the reload failure still", code, body)
	}
}

func countLines(path string) int {
	b, _ := os.ReadFile(path)
	return bytes.Count(b, []byte("\n"))
}
