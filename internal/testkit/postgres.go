package testkit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/arborid/arbor/internal/testkit/freeport"
)

// Postgres is a PostgreSQL cluster of its own, run for one test so that the
// test can stop and start it (a database outage) without touching the shared
// cluster on port 5432. It listens on 127.0.0.1 only, on a port picked when
// it is created and kept across Stop and Start, so DSN never changes. Its
// superuser is "arbor" with trust authentication; the data directory lives
// under a temporary directory removed at the test's cleanup.
type Postgres struct {
	bin     string // directory of initdb, pg_ctl, postgres
	dir     string // temporary directory holding data/, the socket and the log
	data    string
	logFile string
	port    int
	asRoot  bool // run the binaries as the postgres user through runuser

	mu      sync.Mutex
	running bool
	paused  []int // PIDs stopped by Pause, continued by Resume
}

// postgresBinDir finds the directory of PostgreSQL's server binaries: the
// highest version under /usr/lib/postgresql (Debian's layout; 15 on our
// machines), else the directory of an initdb on PATH.
func postgresBinDir() (string, error) {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(matches, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(matches[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(matches[j]))))
		return vi < vj
	})
	if len(matches) > 0 {
		return filepath.Dir(matches[len(matches)-1]), nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("initdb not found under /usr/lib/postgresql/*/bin or on PATH: install the postgresql package (test/run does: apt-get install postgresql)")
}

// StartPostgres initialises a new cluster (initdb), starts it and waits until
// it accepts connections (60 s at most). The cluster is stopped and its
// directory removed at the test's cleanup. A missing PostgreSQL installation
// fails the test with a message saying what to install: it never skips.
//
// Run as root, the cluster's files belong to the postgres user and its
// binaries run through runuser (PostgreSQL refuses to run as root).
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	bin, err := postgresBinDir()
	if err != nil {
		t.Fatalf("testkit.StartPostgres: %v", err)
	}
	p := &Postgres{bin: bin, asRoot: os.Geteuid() == 0}
	dir, err := os.MkdirTemp("", "arbpg")
	if err != nil {
		t.Fatal(err)
	}
	p.dir = dir
	p.data = filepath.Join(dir, "data")
	p.logFile = filepath.Join(dir, "postgres.log")
	t.Cleanup(func() {
		p.stop(t, "immediate")
		os.RemoveAll(dir)
	})
	if p.asRoot {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("testkit.StartPostgres: running as root needs the postgres user (created by the postgresql package): %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	p.port = port

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := p.run(ctx, "initdb", "-D", p.data, "-U", "arbor", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"); err != nil {
		t.Fatalf("testkit.StartPostgres: initdb: %v\n%s", err, out)
	}
	// Settings go into postgresql.conf so that every Start uses the same
	// ones. fsync is off: the tests stop the cluster cleanly (a shutdown
	// checkpoint writes everything), and nothing here survives the test.
	conf := fmt.Sprintf("\nport = %d\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\nfsync = off\nfull_page_writes = off\nmax_connections = 200\nshared_buffers = 32MB\n", port, dir)
	f, err := os.OpenFile(filepath.Join(p.data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString(conf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	p.Start(t)
	return p
}

// DSN is the URL of the cluster's "postgres" database as its superuser.
func (p *Postgres) DSN() string {
	return fmt.Sprintf("postgres://arbor@127.0.0.1:%d/postgres?sslmode=disable", p.port)
}

// Port is the TCP port the cluster listens on (on 127.0.0.1).
func (p *Postgres) Port() int { return p.port }

// Start starts the stopped cluster on its port and waits until it accepts
// connections (60 s at most). Starting a running cluster does nothing.
func (p *Postgres) Start(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := p.run(ctx, "pg_ctl", "-D", p.data, "-l", p.logFile, "-w", "-t", "50", "start"); err != nil {
		log, _ := os.ReadFile(p.logFile)
		t.Fatalf("testkit.Postgres.Start: pg_ctl start (port %d): %v\n%s\n--- server log ---\n%s", p.port, err, out, tail(log, 4000))
	}
	p.running = true
	for {
		c, err := pgx.Connect(ctx, p.DSN())
		if err == nil {
			c.Close(ctx)
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("testkit.Postgres.Start: cluster on port %d started but refuses connections: %v", p.port, err)
		}
		time.Sleep(PollEvery)
	}
}

// Stop stops the cluster with pg_ctl's fast mode, the way an operator's
// `pg_ctlcluster ... stop` does: open sessions are ended (clients see SQLSTATE
// 57P01 admin_shutdown), new connections are refused, and every committed
// transaction is on disk. Stopping a stopped cluster does nothing.
func (p *Postgres) Stop(t testing.TB) {
	t.Helper()
	if err := p.stop(t, "fast"); err != nil {
		t.Fatalf("testkit.Postgres.Stop: %v", err)
	}
}

// Kill stops the cluster with pg_ctl's immediate mode: every PostgreSQL
// process exits at once without a checkpoint, as in a crash (committed
// transactions survive through the WAL replay at the next Start).
func (p *Postgres) Kill(t testing.TB) {
	t.Helper()
	if err := p.stop(t, "immediate"); err != nil {
		t.Fatalf("testkit.Postgres.Kill: %v", err)
	}
}

// Pause freezes every process of the cluster (SIGSTOP): connections and
// new dials are accepted by the kernel but nothing answers, as with a
// database host that hangs or a network that drops packets, so clients wait
// for their deadlines. Resume continues them; the cleanup does too.
func (p *Postgres) Pause(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running || p.paused != nil {
		t.Fatal("testkit.Postgres.Pause: the cluster is not running, or already paused")
	}
	pidFile, err := os.ReadFile(filepath.Join(p.data, "postmaster.pid"))
	if err != nil {
		t.Fatalf("testkit.Postgres.Pause: %v", err)
	}
	first, _, _ := strings.Cut(string(pidFile), "\n")
	postmaster, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		t.Fatalf("testkit.Postgres.Pause: postmaster.pid: %v", err)
	}
	// The postmaster first, so it forks no new backend, then its children.
	pids := append([]int{postmaster}, childrenOf(postmaster)...)
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil && !errors.Is(err, syscall.ESRCH) {
			t.Fatalf("testkit.Postgres.Pause: SIGSTOP %d: %v", pid, err)
		}
	}
	p.paused = pids
}

// Resume continues the processes Pause froze.
func (p *Postgres) Resume(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resumeLocked()
}

func (p *Postgres) resumeLocked() {
	for i := len(p.paused) - 1; i >= 0; i-- {
		syscall.Kill(p.paused[i], syscall.SIGCONT)
	}
	p.paused = nil
}

// childrenOf lists the processes whose parent is pid (from /proc).
func childrenOf(pid int) []int {
	var out []int
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		child, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the parenthesised command name: state, ppid, ...
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(stat[i+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

func (p *Postgres) stop(t testing.TB, mode string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running {
		return nil
	}
	p.resumeLocked()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := p.run(ctx, "pg_ctl", "-D", p.data, "-m", mode, "-w", "-t", "50", "stop"); err != nil {
		return fmt.Errorf("pg_ctl stop -m %s (port %d): %v\n%s", mode, p.port, err, out)
	}
	p.running = false
	return nil
}

// run runs one of the cluster's binaries, as the postgres user when this
// process is root.
func (p *Postgres) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	path := filepath.Join(p.bin, name)
	var cmd *exec.Cmd
	if p.asRoot {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	cmd.Dir = p.dir
	return cmd.CombinedOutput()
}

func freePort() (int, error) { return freeport.Port() }

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}
