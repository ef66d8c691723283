// Package terraform runs the Terraform provider and modules (terraform/)
// with a real OpenTofu (built from the module proxy by test/tofupeer and
// cached) against real arbor processes: the example tree of
// terraform/examples/tree is applied, its tiers are started from the
// modules' outputs exactly as a VM's cloud-init would start them, and the
// test checks what the tiers then do (intermediates, SVIDs, destroy).
//
// The provider is installed for tofu through a filesystem mirror of the
// binary built here; the CLI configuration has no other installation
// method, so nothing is downloaded.
package terraform

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/cli/admin"
	"github.com/arborid/arbor/internal/testkit"
)

// repoRoot is the repository root, seen from this package's directory.
const repoRoot = "../.."

// providerVersion is the version the provider is installed under in the
// filesystem mirror.
const providerVersion = "0.1.0"

var (
	binDir   string // arbor and the provider, built by TestMain
	arborBin string
	tofuBin  string
	cliRC    string // tofu's CLI configuration (the filesystem mirror)
	setupErr error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "arbor-tf-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	setupErr = setup(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func setup(dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	binDir = dir
	arborBin = filepath.Join(dir, "arbor")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", arborBin, "github.com/arborid/arbor/cmd/arbor").CombinedOutput(); err != nil {
		return fmt.Errorf("building arbor: %v\n%s", err, out)
	}
	plat := runtime.GOOS + "_" + runtime.GOARCH
	mirror := filepath.Join(dir, "mirror")
	provDir := filepath.Join(mirror, "registry.opentofu.org", "arborid", "arbor", providerVersion, plat)
	if err := os.MkdirAll(provDir, 0o755); err != nil {
		return err
	}
	prov := filepath.Join(provDir, "terraform-provider-arbor_v"+providerVersion)
	if out, err := exec.CommandContext(ctx, "go", "build", "-ldflags", "-X main.version="+providerVersion, "-o", prov, "github.com/arborid/arbor/terraform/provider").CombinedOutput(); err != nil {
		return fmt.Errorf("building the provider: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, "bash", filepath.Join(repoRoot, "test", "tofupeer", "build.sh")).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("test/tofupeer/build.sh: %v\n%s", err, ee.Stderr)
		}
		return fmt.Errorf("test/tofupeer/build.sh: %v", err)
	}
	tofuBin = filepath.Join(strings.TrimSpace(string(out)), "tofu")
	cliRC = filepath.Join(dir, "tofurc")
	rc := fmt.Sprintf("provider_installation {\n  filesystem_mirror {\n    path    = %q\n    include = [\"registry.opentofu.org/arborid/arbor\"]\n  }\n}\n", mirror)
	return os.WriteFile(cliRC, []byte(rc), 0o644)
}

func needSetup(t *testing.T) {
	t.Helper()
	if setupErr != nil {
		t.Fatal(setupErr)
	}
}

// tofuResult is one tofu command's outcome.
type tofuResult struct {
	code           int
	stdout, stderr string
}

func (r tofuResult) String() string {
	return fmt.Sprintf("exit %d\n--- stdout\n%s\n--- stderr\n%s", r.code, r.stdout, r.stderr)
}

// tofu runs tofu in dir with the test's CLI configuration, bounded by
// timeout, and returns what it did; a tofu that cannot start fails the test.
func tofu(t *testing.T, dir string, timeout time.Duration, args ...string) tofuResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if len(args) > 0 && args[0] != "output" && args[0] != "show" {
		args = append([]string{args[0], "-no-color"}, args[1:]...)
	}
	cmd := exec.CommandContext(ctx, tofuBin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"TF_CLI_CONFIG_FILE="+cliRC, "TF_IN_AUTOMATION=1", "TF_INPUT=0", "CHECKPOINT_DISABLE=1",
		"TF_PLUGIN_CACHE_DIR=")
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	r := tofuResult{stdout: so.String(), stderr: se.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("tofu %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("tofu %s did not finish within %v:\n%s", strings.Join(args, " "), timeout, r)
	}
	return r
}

// mustTofu is tofu that fails the test unless tofu exits 0.
func mustTofu(t *testing.T, dir string, timeout time.Duration, args ...string) tofuResult {
	t.Helper()
	r := tofu(t, dir, timeout, args...)
	if r.code != 0 {
		t.Fatalf("tofu %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// copyTree copies the repository's terraform/ folder (modules and examples,
// not the provider's Go code) to dst/terraform, so tofu's state and
// .terraform stay out of the repository.
func copyTree(t *testing.T, dst string) string {
	t.Helper()
	src := filepath.Join(repoRoot, "terraform")
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			switch d.Name() {
			case "provider", ".terraform":
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, "terraform", rel), 0o755)
		}
		if strings.HasSuffix(p, ".tfstate") || strings.HasSuffix(p, ".tfstate.backup") || d.Name() == ".terraform.lock.hcl" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, "terraform", rel), b, 0o644)
	})
	if err != nil {
		t.Fatalf("copying terraform/: %v", err)
	}
	return filepath.Join(dst, "terraform")
}

// proc is an arbor process the test started, stopped at cleanup.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan error
}

// start runs argv (argv[0] is a program path) with its output in
// logDir/name.log, and stops it (SIGTERM, then SIGKILL after 15 s) at the
// test's cleanup.
func start(t *testing.T, logDir, name string, argv []string) *proc {
	t.Helper()
	if len(argv) == 0 {
		t.Fatalf("%s: empty command", name)
	}
	logPath := filepath.Join(logDir, name+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		t.Fatalf("starting %s (%s): %v", name, strings.Join(argv, " "), err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); lf.Close() }()
	t.Cleanup(func() { p.stop(t) })
	return p
}

func (p *proc) stop(t *testing.T) {
	if p.cmd.ProcessState != nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		t.Errorf("%s did not stop within 15s of SIGTERM", p.name)
	}
}

// tail is the end of the process's log, for failure messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return fmt.Sprintf("--- %s (%s)\n%s", p.name, p.log, b)
}

// exited reports an early exit of any of procs.
func exited(procs ...*proc) error {
	for _, p := range procs {
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("%s exited: %v\n%s", p.name, err, p.tail())
		default:
		}
	}
	return nil
}

// waitServing waits until the server behind the admin socket reports
// SERVING, failing the test (with the logs of procs) after timeout.
func waitServing(t *testing.T, socket string, timeout time.Duration, procs ...*proc) *admin.Client {
	t.Helper()
	var c *admin.Client
	err := testkit.PollErr(timeout, "server on "+socket+" serving", func() error {
		if err := exited(procs...); err != nil {
			return err
		}
		if c == nil {
			var err error
			if c, err = admin.Dial(socket); err != nil {
				return err
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return c.Serving(ctx)
	})
	if err != nil {
		var logs []string
		for _, p := range procs {
			logs = append(logs, p.tail())
		}
		t.Fatalf("%v\n%s", err, strings.Join(logs, "\n"))
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// writeFiles writes a module's files output (absolute path → content), as
// cloud-init's write_files would; files named like a secret get mode 0600.
func writeFiles(t *testing.T, files map[string]string) {
	t.Helper()
	for p, content := range files {
		if !filepath.IsAbs(p) {
			t.Fatalf("files output has a relative path %q", p)
		}
		mode := fs.FileMode(0o644)
		if strings.Contains(filepath.Base(p), "token") {
			mode = 0o600
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
}

// execOutput runs a program for its standard output (standard error on failure).
func execOutput(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var se bytes.Buffer
	cmd.Stderr = &se
	out, err := cmd.Output()
	if err != nil {
		return se.Bytes(), err
	}
	return out, nil
}
