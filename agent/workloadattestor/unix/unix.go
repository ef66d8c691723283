// Package unix is the agent's "unix" workload attestor: it reads a Workload API
// caller's user, groups and (optionally) binary from /proc and returns the same
// selectors as SPIRE's unix workload attestor (unix:uid, unix:user, unix:gid,
// unix:group, unix:supplementary_gid, unix:supplementary_group, unix:path,
// unix:sha256), so registration entries written for spire-agent match on an
// arbor agent unchanged. It also reads a Unix socket peer's credentials
// (SO_PEERCRED), which is how the Workload API learns the caller's pid.
//
// Like SPIRE, the uid and gid are the process's effective ids (the second
// field of the Uid:/Gid: lines of /proc/<pid>/status), and the supplementary
// groups are its Groups: line. Names come from os/user; an id without a name
// simply yields no user/group selector.
package unix

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/arborid/arbor/internal/selector"
)

// SelectorType is the type of every selector this attestor produces.
const SelectorType = "unix"

var (
	// ErrNoProcess means the process does not exist, or exited (or its pid
	// was reused) while it was being attested.
	ErrNoProcess = errors.New("unix: process not found")
	// ErrWorkloadTooLarge means the workload binary is larger than
	// Config.WorkloadSizeLimit, so it was not hashed.
	ErrWorkloadTooLarge = errors.New("unix: workload binary exceeds the size limit")
	// ErrMalformedProc means /proc/<pid>/status or stat could not be parsed.
	ErrMalformedProc = errors.New("unix: malformed proc file")
)

// Config configures an Attestor. The zero value attests uid, gid and groups
// from /proc only.
type Config struct {
	// DiscoverWorkloadPath adds unix:path (the target of /proc/<pid>/exe) and,
	// unless WorkloadSizeLimit is negative, unix:sha256 of that binary. The
	// agent then needs permission to read the workload's /proc/<pid>/exe:
	// run it as root or as the workload's user. If the path or the digest
	// cannot be obtained, attestation fails (as in SPIRE).
	DiscoverWorkloadPath bool

	// WorkloadSizeLimit bounds the size in bytes of a binary the attestor is
	// willing to hash, with SPIRE's workload_size_limit meaning so a SPIRE
	// configuration carries over: 0 means no limit, a negative value means
	// never hash (no unix:sha256 selector). A binary over the limit fails
	// attestation with ErrWorkloadTooLarge. Every call hashes the whole
	// binary, so an agent serving untrusted local users should set a limit
	// (for example 128 MiB) or disable hashing.
	WorkloadSizeLimit int64

	// ProcRoot is the proc filesystem to read; "" means /proc. Set it to the
	// host's /proc mounted elsewhere (an agent in a container) or to a fake
	// tree in tests.
	ProcRoot string
}

// Attestor is the unix workload attestor. It is safe for concurrent use.
type Attestor struct {
	cfg Config

	// lookupUser and lookupGroup map ids to names (os/user by default).
	lookupUser  func(uid string) (string, error)
	lookupGroup func(gid string) (string, error)
	// afterRead, when set (tests), runs after the process's files were read
	// and before the final liveness check.
	afterRead func()
}

// New returns an Attestor for cfg.
func New(cfg Config) (*Attestor, error) {
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	fi, err := os.Stat(cfg.ProcRoot)
	if err != nil {
		return nil, fmt.Errorf("unix: proc root: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("unix: proc root %s is not a directory", cfg.ProcRoot)
	}
	return &Attestor{
		cfg: cfg,
		lookupUser: func(uid string) (string, error) {
			u, err := user.LookupId(uid)
			if err != nil {
				return "", err
			}
			return u.Username, nil
		},
		lookupGroup: func(gid string) (string, error) {
			g, err := user.LookupGroupId(gid)
			if err != nil {
				return "", err
			}
			return g.Name, nil
		},
	}, nil
}

// Attest returns the unix selectors of process pid, in SPIRE's order: uid,
// user, gid, group, then each supplementary gid and group, then path and
// sha256. It returns an error wrapping ErrNoProcess when pid does not exist
// or exits (or is replaced by another process with the same pid) before
// attestation completes, so a caller never gets another process's selectors.
func (a *Attestor) Attest(ctx context.Context, pid int32) ([]selector.Selector, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("%w: invalid pid %d", ErrNoProcess, pid)
	}
	dir := filepath.Join(a.cfg.ProcRoot, strconv.FormatInt(int64(pid), 10))

	start, err := startTime(dir)
	if err != nil {
		return nil, a.procErr(pid, err)
	}
	st, err := readStatus(dir)
	if err != nil {
		return nil, a.procErr(pid, err)
	}

	var out []selector.Selector
	add := func(kind, value string) {
		out = append(out, selector.Selector{Type: SelectorType, Value: kind + ":" + value})
	}
	add("uid", st.uid)
	if name, err := a.lookupUser(st.uid); err == nil && name != "" {
		add("user", name)
	}
	add("gid", st.gid)
	if name, err := a.lookupGroup(st.gid); err == nil && name != "" {
		add("group", name)
	}
	for _, g := range st.groups {
		add("supplementary_gid", g)
		if name, err := a.lookupGroup(g); err == nil && name != "" {
			add("supplementary_group", name)
		}
	}

	if a.cfg.DiscoverWorkloadPath {
		exe := filepath.Join(dir, "exe")
		path, err := os.Readlink(exe)
		if err != nil {
			return nil, a.procErr(pid, fmt.Errorf("workload path: %w", err))
		}
		add("path", path)
		if a.cfg.WorkloadSizeLimit >= 0 {
			// Hash through /proc/<pid>/exe rather than path: it is the very
			// file the process runs, even in another mount namespace.
			sum, err := hashFile(ctx, exe, a.cfg.WorkloadSizeLimit)
			if err != nil {
				if errors.Is(err, ErrWorkloadTooLarge) || ctx.Err() != nil {
					return nil, err
				}
				return nil, a.procErr(pid, fmt.Errorf("workload sha256: %w", err))
			}
			add("sha256", sum)
		}
	}

	if a.afterRead != nil {
		a.afterRead()
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("unix: attest pid %d: %w", pid, err)
	}
	// The process must still be the one we started reading: same pid, same
	// start time. Otherwise it exited, or its pid now belongs to another.
	end, err := startTime(dir)
	if err != nil {
		return nil, a.procErr(pid, err)
	}
	if end != start {
		return nil, fmt.Errorf("%w: pid %d was reused during attestation", ErrNoProcess, pid)
	}
	return out, nil
}

// procErr wraps an error reading /proc/<pid>: a missing file (or ESRCH)
// means the process is gone.
func (a *Attestor) procErr(pid int32, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("%w: pid %d (it exited or never existed)", ErrNoProcess, pid)
	}
	if errors.Is(err, ErrMalformedProc) {
		return fmt.Errorf("%w (pid %d)", err, pid)
	}
	return fmt.Errorf("unix: attest pid %d: %w", pid, err)
}

type status struct {
	uid, gid string
	groups   []string
}

// readStatus parses the Uid:, Gid: and Groups: lines of dir/status. The
// Uid:/Gid: lines hold real, effective, saved and filesystem ids; the
// effective one is used, as SPIRE does.
func readStatus(dir string) (status, error) {
	f, err := os.Open(filepath.Join(dir, "status"))
	if err != nil {
		return status{}, err
	}
	defer f.Close()
	var st status
	var haveUID, haveGID bool
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(value)
		switch key {
		case "Uid":
			if st.uid, err = effectiveID(fields); err != nil {
				return status{}, fmt.Errorf("%w: status Uid line: %v", ErrMalformedProc, err)
			}
			haveUID = true
		case "Gid":
			if st.gid, err = effectiveID(fields); err != nil {
				return status{}, fmt.Errorf("%w: status Gid line: %v", ErrMalformedProc, err)
			}
			haveGID = true
		case "Groups":
			for _, g := range fields {
				if _, err := strconv.ParseUint(g, 10, 32); err != nil {
					return status{}, fmt.Errorf("%w: status Groups line: bad gid %q", ErrMalformedProc, g)
				}
				st.groups = append(st.groups, g)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return status{}, err
	}
	switch {
	case !haveUID:
		return status{}, fmt.Errorf("%w: status has no Uid line", ErrMalformedProc)
	case !haveGID:
		return status{}, fmt.Errorf("%w: status has no Gid line", ErrMalformedProc)
	}
	return st, nil
}

// effectiveID picks the effective id from a Uid:/Gid: line's fields (a lone
// id is taken as is).
func effectiveID(fields []string) (string, error) {
	var id string
	switch len(fields) {
	case 0:
		return "", errors.New("no ids")
	case 1:
		id = fields[0]
	default:
		id = fields[1]
	}
	if _, err := strconv.ParseUint(id, 10, 32); err != nil {
		return "", fmt.Errorf("bad id %q", id)
	}
	return id, nil
}

// startTime returns field 22 of dir/stat, the process's start time in clock
// ticks since boot; together with the pid it names one process for good.
func startTime(dir string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may itself contain
	// spaces and parentheses, so count fields from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("%w: stat has no command name", ErrMalformedProc)
	}
	fields := strings.Fields(string(b[i+1:]))
	const startTimeField = 22 - 3 // fields after ')' start at field 3
	if len(fields) <= startTimeField {
		return 0, fmt.Errorf("%w: stat has %d fields, want at least 22", ErrMalformedProc, len(fields)+2)
	}
	t, err := strconv.ParseUint(fields[startTimeField], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: stat start time %q", ErrMalformedProc, fields[startTimeField])
	}
	return t, nil
}

// hashFile returns the hex SHA-256 of the file at path, refusing files
// larger than limit bytes (limit 0: no limit).
func hashFile(ctx context.Context, path string, limit int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if limit > 0 && fi.Size() > limit {
		return "", fmt.Errorf("%w: %d bytes > %d", ErrWorkloadTooLarge, fi.Size(), limit)
	}
	var r io.Reader = ctxReader{ctx: ctx, r: f}
	if limit > 0 {
		// The file may grow after Stat: never read more than the limit allows.
		r = io.LimitReader(r, limit+1)
	}
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return "", err
	}
	if limit > 0 && n > limit {
		return "", fmt.Errorf("%w: more than %d bytes", ErrWorkloadTooLarge, limit)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ctxReader stops a long read when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, fmt.Errorf("unix: hashing workload binary: %w", err)
	}
	return c.r.Read(p)
}
