package scale

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/arborid/arbor/internal/testkit"
	"github.com/arborid/arbor/internal/testkit/freeport"
	"github.com/arborid/arbor/test/load/loadgen"
)

// arborBin is the arbor binary every test runs, built once by TestMain.
var arborBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "arbor-scale-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	arborBin = filepath.Join(dir, "arbor")
	if out, err := exec.Command("go", "build", "-o", arborBin, "../../cmd/arbor").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ./cmd/arbor: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// serverProc is one `arbor server` process with its own state directory,
// started, killed and started again on the same state.
type serverProc struct {
	t          *testing.T
	dir        string
	topology   string
	admin      string
	port       int
	healthPort int
	cmd        *exec.Cmd
	exited     chan struct{}
	starts     int
}

func freePort(t *testing.T) int { return freeport.Must(t) }

// newServer writes the topology of a single root server whose datastore is
// the given block (`datastore "sqlite" {}` or a postgres one).
func newServer(t *testing.T, datastore string) *serverProc {
	dir := testkit.ShortDir(t)
	s := &serverProc{t: t, dir: dir, admin: filepath.Join(dir, "admin.sock"), port: freePort(t), healthPort: freePort(t)}
	s.topology = filepath.Join(dir, "topology.hcl")
	hcl := fmt.Sprintf(`trust_domain = "example.org"
server "root" {
  listen        = "127.0.0.1:%d"
  admin_socket  = %q
  health_listen = "127.0.0.1:%d"
  state_dir     = %q
  %s
}
`, s.port, s.admin, s.healthPort, filepath.Join(dir, "state"), datastore)
	if err := os.WriteFile(s.topology, []byte(hcl), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.kill)
	return s
}

func (s *serverProc) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }
func (s *serverProc) pid() int     { return s.cmd.Process.Pid }

// start runs the server and waits until its /ready answers 200; it returns
// the time from the exec to then.
func (s *serverProc) start(timeout time.Duration) time.Duration {
	s.t.Helper()
	s.starts++
	logf, err := os.Create(filepath.Join(s.dir, fmt.Sprintf("server-%d.log", s.starts)))
	if err != nil {
		s.t.Fatal(err)
	}
	s.cmd = exec.Command(arborBin, "server", "--topology", s.topology, "--node", "root", "--log-level", "warn")
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	begin := time.Now()
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.exited = make(chan struct{})
	go func() { s.cmd.Wait(); logf.Close(); close(s.exited) }()
	url := fmt.Sprintf("http://127.0.0.1:%d/ready", s.healthPort)
	client := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(timeout); ; {
		select {
		case <-s.exited:
			log, _ := os.ReadFile(logf.Name())
			s.t.Fatalf("server exited before it was ready:\n%s", log)
		default:
		}
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(begin)
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("server not ready within %v", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kill ends the process with SIGKILL, as a crash would, and waits for it.
func (s *serverProc) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
}

// dialAdmin connects to the admin socket.
func (s *serverProc) dialAdmin() *grpc.ClientConn {
	s.t.Helper()
	conn, err := grpc.NewClient("unix://"+s.admin, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { conn.Close() })
	return conn
}

// rss reads the process's resident memory after letting it settle.
func (s *serverProc) rss(settle time.Duration) int64 {
	s.t.Helper()
	time.Sleep(settle)
	p, err := loadgen.ReadProc(s.pid())
	if err != nil {
		s.t.Fatal(err)
	}
	return p.RSSBytes
}

// settledRSS polls the server's RSS every second until it has not fallen
// for five polls in a row, or until limit, and returns the last reading.
func (s *serverProc) settledRSS(limit time.Duration) int64 {
	s.t.Helper()
	last, still := s.rss(0), 0
	for deadline := time.Now().Add(limit); still < 5 && time.Now().Before(deadline); {
		cur := s.rss(time.Second)
		if cur < last-last/200 {
			still = 0
		} else {
			still++
		}
		last = cur
	}
	return last
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// callCtx bounds one admin call.
func callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, 2*time.Minute)
}
