package svidcli

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultReloadTimeout bounds a reload command when Target.ReloadTimeout is zero.
const DefaultReloadTimeout = 30 * time.Second

// WatchConfig is what `arbor svid watch` keeps on disk. It must not be
// modified after Watch starts.
type WatchConfig struct {
	// Addr is the Workload API address (see Address); "" means DefaultSocketPath.
	Addr string
	// HealthListen serves /live and /ready over HTTP; "" disables it.
	HealthListen string
	// HealthListener, when set, serves /live and /ready instead of
	// HealthListen (a test's 127.0.0.1:0, or an inherited socket); Watch
	// closes it.
	HealthListener net.Listener
	// Targets are the SVIDs to keep, at least one; their names are unique.
	Targets []Target
	// Once writes every target once (and reloads) and returns, instead of
	// watching: for an init container or a cron job.
	Once bool

	// RetryBase and RetryMax bound the jittered exponential backoff of a
	// failed write or reload; zero means 1s and 30s.
	RetryBase, RetryMax time.Duration
	// Logger receives state changes (written, reloaded, failed, recovered);
	// nil discards them.
	Logger *slog.Logger
	// Now tells the time (JWT refresh); if nil, time.Now is used.
	Now func() time.Time
}

// Target is one SVID kept as files: the `svid "NAME" { ... }` block of a
// watch file, or the flags of `arbor svid watch` without --config.
type Target struct {
	// Name identifies the target in logs and in /ready.
	Name string
	// ID selects the SVID by SPIFFE ID; with neither ID nor Hint, the first
	// SVID the agent sends (its default) is used.
	ID spiffeid.ID
	// Hint selects the SVID by the entry's hint.
	Hint string

	// CertFile receives the certificate chain, leaf first (PEM, 0644).
	CertFile string
	// KeyFile receives the private key (PKCS#8 PEM, KeyMode).
	KeyFile string
	// BundleFile receives the CA certificates of the SVID's trust domain
	// and of the Federated ones (PEM, 0644).
	BundleFile string
	// CombinedFile receives the chain followed by the key in one PEM file
	// (KeyMode), as HAProxy's crt takes it.
	CombinedFile string
	// Federated names the federated trust domains whose CA certificates
	// also go into BundleFile; AllFederated takes every one the agent sends.
	Federated    []spiffeid.TrustDomain
	AllFederated bool

	// JWTAudiences and JWTFile, both set or both empty: a JWT-SVID for the
	// audiences (the first is the audience, the others extra ones) kept in
	// JWTFile (mode 0600), renewed at half its lifetime.
	JWTAudiences []string
	JWTFile      string

	// Owner owns every file written; nil keeps the writer's user and group.
	Owner *FileOwner
	// KeyMode is the mode of KeyFile and CombinedFile; zero means 0600.
	// Never readable by others.
	KeyMode os.FileMode

	// ReloadCommand runs with /bin/sh -c after every change of the files.
	ReloadCommand string
	// ReloadTimeout bounds it; zero means DefaultReloadTimeout.
	ReloadTimeout time.Duration
	// ReloadSignal is sent after every change to PID, or to the process
	// whose PID is the first line of PIDFile (read each time).
	ReloadSignal syscall.Signal
	PID          int
	PIDFile      string
}

// files are the target's output paths in the order they are committed.
func (t *Target) files() []string {
	var out []string
	for _, f := range []string{t.KeyFile, t.CertFile, t.CombinedFile, t.BundleFile, t.JWTFile} {
		if f != "" {
			out = append(out, f)
		}
	}
	return out
}

// Validate checks one target and fills in its defaults.
func (t *Target) Validate() error {
	if t.KeyMode == 0 {
		t.KeyMode = 0o600
	}
	if t.ReloadTimeout == 0 {
		t.ReloadTimeout = DefaultReloadTimeout
	}
	switch {
	case t.CertFile == "" && t.KeyFile == "" && t.BundleFile == "" && t.CombinedFile == "" && t.JWTFile == "":
		return errors.New("nothing to write: give at least one of cert_file, key_file, bundle_file, combined_file or a jwt block")
	case (t.CertFile == "") != (t.KeyFile == ""):
		return errors.New("cert_file and key_file go together: a certificate without its key (or the reverse) cannot be used")
	case !t.ID.IsZero() && t.Hint != "":
		return errors.New("give spiffe_id or hint, not both")
	case t.KeyMode&^0o777 != 0 || t.KeyMode&0o007 != 0:
		return fmt.Errorf("key_mode %04o lets every user read the private key: use 0600 or 0640", t.KeyMode)
	case t.KeyMode&0o400 == 0:
		return fmt.Errorf("key_mode %04o does not let the owner read the key", t.KeyMode)
	case (len(t.JWTAudiences) == 0) != (t.JWTFile == ""):
		return errors.New("a jwt block needs both audience and file")
	case t.ReloadSignal != 0 && t.PID == 0 && t.PIDFile == "":
		return errors.New("reload_signal needs pid or pid_file")
	case t.ReloadSignal == 0 && (t.PID != 0 || t.PIDFile != ""):
		return errors.New("pid and pid_file need reload_signal")
	case t.PID != 0 && t.PIDFile != "":
		return errors.New("give pid or pid_file, not both")
	case t.PID < 0:
		return fmt.Errorf("pid %d is not a process id", t.PID)
	case t.ReloadTimeout < 0:
		return fmt.Errorf("reload_timeout %v is negative", t.ReloadTimeout)
	case t.BundleFile == "" && (len(t.Federated) > 0 || t.AllFederated):
		return errors.New("federated_with needs bundle_file")
	}
	seen := map[string]bool{}
	for _, f := range t.files() {
		abs, err := filepath.Abs(f)
		if err != nil {
			return fmt.Errorf("%s: %v", f, err)
		}
		if seen[abs] {
			return fmt.Errorf("%s is named twice: every file of a target must be its own", f)
		}
		seen[abs] = true
	}
	return nil
}

// Validate checks the whole configuration and fills in its defaults.
func (c *WatchConfig) Validate() error {
	if len(c.Targets) == 0 {
		return errors.New("no svid to keep: give a --config file with svid blocks, or --cert/--key/--bundle")
	}
	names := map[string]bool{}
	files := map[string]string{}
	for i := range c.Targets {
		t := &c.Targets[i]
		if err := t.Validate(); err != nil {
			return fmt.Errorf("svid %q: %w", t.Name, err)
		}
		if names[t.Name] {
			return fmt.Errorf("svid %q is defined twice", t.Name)
		}
		names[t.Name] = true
		for _, f := range t.files() {
			abs, _ := filepath.Abs(f)
			if other, ok := files[abs]; ok {
				return fmt.Errorf("svid %q: %s is also written by svid %q: two writers of one file would undo each other", t.Name, f, other)
			}
			files[abs] = t.Name
		}
	}
	if c.HealthListen != "" {
		if _, _, err := net.SplitHostPort(c.HealthListen); err != nil {
			return fmt.Errorf("health_listen %q: %v", c.HealthListen, err)
		}
	}
	return nil
}

// ParseSignal parses a signal name (HUP, SIGHUP, usr1) or number.
func ParseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, fmt.Errorf("signal %d is out of range", n)
		}
		return syscall.Signal(n), nil
	}
	name := strings.TrimPrefix(strings.ToUpper(s), "SIG")
	if sig, ok := signalNames[name]; ok {
		return sig, nil
	}
	known := make([]string, 0, len(signalNames))
	for k := range signalNames {
		known = append(known, k)
	}
	slices.Sort(known)
	return 0, fmt.Errorf("unknown signal %q (known: %s)", s, strings.Join(known, ", "))
}

var signalNames = map[string]syscall.Signal{
	"HUP": syscall.SIGHUP, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT, "TERM": syscall.SIGTERM,
	"USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "WINCH": syscall.SIGWINCH, "ALRM": syscall.SIGALRM,
}

// FileOwner is who owns the written files; -1 keeps the writer's id.
type FileOwner struct{ UID, GID int }

// ParseOwner resolves a user (name or uid) and a group (name or gid); with
// neither it returns nil. A user given without a group also sets the group
// to the user's primary group.
func ParseOwner(owner, group string) (*FileOwner, error) {
	if owner == "" && group == "" {
		return nil, nil
	}
	o := &FileOwner{UID: -1, GID: -1}
	if owner != "" {
		u, err := lookupUser(owner)
		if err != nil {
			return nil, err
		}
		o.UID, _ = strconv.Atoi(u.Uid)
		if group == "" {
			o.GID, _ = strconv.Atoi(u.Gid)
		}
	}
	if group != "" {
		g, err := lookupGroup(group)
		if err != nil {
			return nil, err
		}
		o.GID, _ = strconv.Atoi(g.Gid)
	}
	return o, nil
}

func lookupUser(s string) (*user.User, error) {
	if _, err := strconv.Atoi(s); err == nil {
		if u, err := user.LookupId(s); err == nil {
			return u, nil
		}
		// A numeric uid with no name is still an owner.
		return &user.User{Uid: s, Gid: "-1"}, nil
	}
	u, err := user.Lookup(s)
	if err != nil {
		return nil, fmt.Errorf("owner %q: no such user", s)
	}
	return u, nil
}

func lookupGroup(s string) (*user.Group, error) {
	if _, err := strconv.Atoi(s); err == nil {
		return &user.Group{Gid: s}, nil
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		return nil, fmt.Errorf("group %q: no such group", s)
	}
	return g, nil
}

// ParseKeyMode parses an octal file mode such as "0640".
func ParseKeyMode(s string) (os.FileMode, error) {
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o777 {
		return 0, fmt.Errorf("key_mode %q is not an octal file mode such as 0600 or 0640", s)
	}
	return os.FileMode(n), nil
}

// ParseFederated parses trust domain names; "*" means every federated one.
func ParseFederated(names []string) (tds []spiffeid.TrustDomain, all bool, err error) {
	for _, n := range names {
		if n == "*" {
			all = true
			continue
		}
		td, err := spiffeid.TrustDomainFromString(n)
		if err != nil {
			return nil, false, fmt.Errorf("federated_with %q: %v", n, err)
		}
		tds = append(tds, td)
	}
	return tds, all, nil
}

// watchFile is the HCL schema of a watch file; gohcl has no remain field,
// so an unknown attribute is a diagnostic at its line.
type watchFile struct {
	SocketPath   string      `hcl:"socket_path,optional"`
	HealthListen string      `hcl:"health_listen,optional"`
	SVIDs        []watchSVID `hcl:"svid,block"`
}

type watchSVID struct {
	Name          string    `hcl:"name,label"`
	SPIFFEID      string    `hcl:"spiffe_id,optional"`
	Hint          string    `hcl:"hint,optional"`
	CertFile      string    `hcl:"cert_file,optional"`
	KeyFile       string    `hcl:"key_file,optional"`
	BundleFile    string    `hcl:"bundle_file,optional"`
	CombinedFile  string    `hcl:"combined_file,optional"`
	FederatedWith []string  `hcl:"federated_with,optional"`
	Owner         string    `hcl:"owner,optional"`
	Group         string    `hcl:"group,optional"`
	KeyMode       string    `hcl:"key_mode,optional"`
	ReloadCommand string    `hcl:"reload_command,optional"`
	ReloadTimeout string    `hcl:"reload_timeout,optional"`
	ReloadSignal  string    `hcl:"reload_signal,optional"`
	PID           int       `hcl:"pid,optional"`
	PIDFile       string    `hcl:"pid_file,optional"`
	JWT           *watchJWT `hcl:"jwt,block"`
}

type watchJWT struct {
	Audience []string `hcl:"audience"`
	File     string   `hcl:"file"`
}

// LoadWatchConfig reads a watch file (HCL: socket_path, health_listen and
// one or more svid "NAME" blocks; see docs/workload.md). Relative paths in it
// are relative to the file's directory. Errors name file:line:col.
func LoadWatchConfig(path string) (*WatchConfig, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	file, diags := hclsyntax.ParseConfig(src, path, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, diagError(diags)
	}
	var wf watchFile
	if diags := gohcl.DecodeBody(file.Body, nil, &wf); diags.HasErrors() {
		return nil, diagError(diags)
	}
	body := file.Body.(*hclsyntax.Body)
	base := filepath.Dir(path)
	rel := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(base, p)
	}
	cfg := &WatchConfig{HealthListen: wf.HealthListen}
	if wf.SocketPath != "" {
		addr, err := Address(rel(wf.SocketPath), nil)
		if err != nil {
			return nil, posError(body, "", "socket_path", err)
		}
		cfg.Addr = addr
	}
	if wf.HealthListen != "" {
		if _, _, err := net.SplitHostPort(wf.HealthListen); err != nil {
			return nil, posError(body, "", "health_listen", fmt.Errorf("health_listen %q: %v", wf.HealthListen, err))
		}
	}
	if len(wf.SVIDs) == 0 {
		return nil, fmt.Errorf("%s: no svid block: add svid \"NAME\" { cert_file = ... key_file = ... bundle_file = ... }", path)
	}
	for _, s := range wf.SVIDs {
		fail := func(attr string, err error) error { return posError(body, s.Name, attr, err) }
		t := Target{
			Name: s.Name, Hint: s.Hint,
			CertFile: rel(s.CertFile), KeyFile: rel(s.KeyFile), BundleFile: rel(s.BundleFile),
			CombinedFile: rel(s.CombinedFile), ReloadCommand: s.ReloadCommand, PID: s.PID, PIDFile: rel(s.PIDFile),
		}
		if s.SPIFFEID != "" {
			if t.ID, err = spiffeid.FromString(s.SPIFFEID); err != nil {
				return nil, fail("spiffe_id", fmt.Errorf("spiffe_id %q: %v", s.SPIFFEID, err))
			}
		}
		if t.Federated, t.AllFederated, err = ParseFederated(s.FederatedWith); err != nil {
			return nil, fail("federated_with", err)
		}
		if t.Owner, err = ParseOwner(s.Owner, s.Group); err != nil {
			attr := "owner"
			if strings.HasPrefix(err.Error(), "group") {
				attr = "group"
			}
			return nil, fail(attr, err)
		}
		if s.KeyMode != "" {
			if t.KeyMode, err = ParseKeyMode(s.KeyMode); err != nil {
				return nil, fail("key_mode", err)
			}
		}
		if s.ReloadTimeout != "" {
			if t.ReloadTimeout, err = time.ParseDuration(s.ReloadTimeout); err != nil || t.ReloadTimeout <= 0 {
				return nil, fail("reload_timeout", fmt.Errorf("reload_timeout %q is not a positive duration such as 30s", s.ReloadTimeout))
			}
		}
		if s.ReloadSignal != "" {
			if t.ReloadSignal, err = ParseSignal(s.ReloadSignal); err != nil {
				return nil, fail("reload_signal", err)
			}
		}
		if s.JWT != nil {
			t.JWTAudiences, t.JWTFile = s.JWT.Audience, rel(s.JWT.File)
			if len(t.JWTAudiences) == 0 {
				return nil, fail("jwt", errors.New("jwt: audience must name at least one audience"))
			}
		}
		if err := t.Validate(); err != nil {
			return nil, fail("", fmt.Errorf("svid %q: %w", s.Name, err))
		}
		cfg.Targets = append(cfg.Targets, t)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// diagError turns HCL diagnostics into one error, a line per diagnostic.
func diagError(diags hcl.Diagnostics) error {
	var lines []string
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		l := d.Summary
		if d.Detail != "" {
			l += ": " + d.Detail
		}
		if d.Subject != nil {
			l = fmt.Sprintf("%s:%d:%d: %s", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, l)
		}
		lines = append(lines, l)
	}
	return errors.New(strings.Join(lines, "\n"))
}

// posError prefixes err with where attr is: in the svid block named block
// (or at the top level when block is ""), else the block itself.
func posError(body *hclsyntax.Body, block, attr string, err error) error {
	r := body.SrcRange
	if block == "" {
		if a, ok := body.Attributes[attr]; ok {
			r = a.SrcRange
		}
	} else {
		for _, b := range body.Blocks {
			if b.Type != "svid" || len(b.Labels) != 1 || b.Labels[0] != block {
				continue
			}
			r = b.DefRange()
			if a, ok := b.Body.Attributes[attr]; ok {
				r = a.SrcRange
			} else {
				for _, inner := range b.Body.Blocks {
					if inner.Type == attr {
						r = inner.DefRange()
					}
				}
			}
			break
		}
	}
	return fmt.Errorf("%s:%d:%d: %w", r.Filename, r.Start.Line, r.Start.Column, err)
}

// TargetFlags are the command line's spelling of one Target (`arbor svid
// watch` without --config), as given.
type TargetFlags struct {
	Name, SPIFFEID, Hint                    string
	CertFile, KeyFile, BundleFile, Combined string
	FederatedWith                           []string
	JWTAudiences                            []string
	JWTFile                                 string
	Owner, Group, KeyMode                   string
	Exec                                    string
	ReloadTimeout                           time.Duration
	Signal                                  string
	PID                                     int
	PIDFile                                 string
}

// Set reports whether any flag that describes a target was given.
func (f TargetFlags) Set() bool {
	return f.SPIFFEID != "" || f.Hint != "" || f.CertFile != "" || f.KeyFile != "" || f.BundleFile != "" ||
		f.Combined != "" || len(f.FederatedWith) > 0 || len(f.JWTAudiences) > 0 || f.JWTFile != "" ||
		f.Owner != "" || f.Group != "" || f.KeyMode != "" || f.Exec != "" || f.Signal != "" || f.PID != 0 || f.PIDFile != ""
}

// Target parses the flags into a validated Target; errors name the flag.
func (f TargetFlags) Target() (Target, error) {
	t := Target{Name: f.Name, Hint: f.Hint, CertFile: f.CertFile, KeyFile: f.KeyFile, BundleFile: f.BundleFile,
		CombinedFile: f.Combined, JWTAudiences: f.JWTAudiences, JWTFile: f.JWTFile,
		ReloadCommand: f.Exec, ReloadTimeout: f.ReloadTimeout, PID: f.PID, PIDFile: f.PIDFile}
	if t.Name == "" {
		t.Name = "svid"
	}
	var err error
	if f.SPIFFEID != "" {
		if t.ID, err = spiffeid.FromString(f.SPIFFEID); err != nil {
			return Target{}, fmt.Errorf("--spiffe-id %q: %v", f.SPIFFEID, err)
		}
	}
	if t.Federated, t.AllFederated, err = ParseFederated(f.FederatedWith); err != nil {
		return Target{}, errors.New(flagNames.Replace(err.Error()))
	}
	if t.Owner, err = ParseOwner(f.Owner, f.Group); err != nil {
		return Target{}, errors.New(flagNames.Replace(err.Error()))
	}
	if f.KeyMode != "" {
		if t.KeyMode, err = ParseKeyMode(f.KeyMode); err != nil {
			return Target{}, errors.New(flagNames.Replace(err.Error()))
		}
	}
	if f.Signal != "" {
		if t.ReloadSignal, err = ParseSignal(f.Signal); err != nil {
			return Target{}, fmt.Errorf("--signal: %v", err)
		}
	}
	if err := t.Validate(); err != nil {
		return Target{}, errors.New(flagNames.Replace(err.Error()))
	}
	return t, nil
}

// flagNames respells a Target's validation errors with the flags' names.
var flagNames = strings.NewReplacer("cert_file", "--cert", "key_file", "--key", "bundle_file", "--bundle",
	"combined_file", "--combined", "a jwt block needs both audience and file", "--jwt-audience and --jwt-file go together",
	"or a jwt block", "or --jwt-file", "reload_signal", "--signal", "pid_file", "--pid-file", "pid ", "--pid ",
	"key_mode", "--key-mode", "federated_with", "--federated-with", "reload_timeout", "--reload-timeout",
	"owner \"", "--owner \"", "group \"", "--group \"")
