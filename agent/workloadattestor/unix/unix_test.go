package unix

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/arborid/arbor/internal/selector"
)

// helperEnv makes the test binary act as a Workload API client: it dials the
// Unix socket named by the variable and waits for the test to close it.
const helperEnv = "ARBOR_UNIX_TEST_DIAL"

func TestMain(m *testing.M) {
	if path := os.Getenv(helperEnv); path != "" {
		conn, err := net.DialTimeout("unix", path, 10*time.Second)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, _ = conn.Read(make([]byte, 1))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newAttestor(t *testing.T, cfg Config) *Attestor {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%+v) = %v", cfg, err)
	}
	return a
}

func sel(value string) selector.Selector { return selector.Selector{Type: "unix", Value: value} }

// idSelectors is what the attestor should say about the current process's
// ids, computed independently with the os and os/user packages.
func idSelectors(t *testing.T) []selector.Selector {
	t.Helper()
	uid, gid := strconv.Itoa(os.Geteuid()), strconv.Itoa(os.Getegid())
	want := []selector.Selector{sel("uid:" + uid)}
	if u, err := user.LookupId(uid); err == nil {
		want = append(want, sel("user:"+u.Username))
	}
	want = append(want, sel("gid:"+gid))
	if g, err := user.LookupGroupId(gid); err == nil {
		want = append(want, sel("group:"+g.Name))
	}
	groups, err := os.Getgroups()
	if err != nil {
		t.Fatalf("os.Getgroups() = %v", err)
	}
	for _, g := range groups {
		want = append(want, sel("supplementary_gid:"+strconv.Itoa(g)))
		if gr, err := user.LookupGroupId(strconv.Itoa(g)); err == nil {
			want = append(want, sel("supplementary_group:"+gr.Name))
		}
	}
	return want
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func TestAttestSelf(t *testing.T) {
	ctx := testContext(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ids := idSelectors(t)
	if os.Geteuid() == 0 && !cmp.Equal(ids[:2], []selector.Selector{sel("uid:0"), sel("user:root")}) {
		t.Fatalf("running as root but os/user says %v", ids[:2])
	}
	withPath := append(append([]selector.Selector(nil), ids...), sel("path:"+exe), sel("sha256:"+fileSHA256(t, exe)))
	for _, tc := range []struct {
		name string
		cfg  Config
		want []selector.Selector
	}{
		{"ids only", Config{}, ids},
		{"with path and sha256", Config{DiscoverWorkloadPath: true}, withPath},
		{"path without hashing", Config{DiscoverWorkloadPath: true, WorkloadSizeLimit: -1}, withPath[:len(withPath)-1]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := newAttestor(t, tc.cfg).Attest(ctx, int32(os.Getpid()))
			if err != nil {
				t.Fatalf("Attest(self) = %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Attest(self) selectors (-want +got):\n%s", diff)
			}
		})
	}
}

// startSleep runs `sleep` as a child and returns it; it is killed at cleanup.
func startSleep(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sleep: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

func TestAttestChildBinary(t *testing.T) {
	ctx := testContext(t)
	cmd := startSleep(t)
	bin, err := filepath.EvalSymlinks(cmd.Path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	sum := fileSHA256(t, bin)
	pid := int32(cmd.Process.Pid)

	for _, tc := range []struct {
		name      string
		limit     int64
		wantSHA   bool
		wantError error
	}{
		{"no limit", 0, true, nil},
		{"limit equals size", fi.Size(), true, nil},
		{"hashing disabled", -1, false, nil},
		{"over the limit", fi.Size() - 1, false, ErrWorkloadTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAttestor(t, Config{DiscoverWorkloadPath: true, WorkloadSizeLimit: tc.limit})
			got, err := a.Attest(ctx, pid)
			if tc.wantError != nil {
				if !errors.Is(err, tc.wantError) {
					t.Fatalf("Attest(sleep) error = %v, want %v", err, tc.wantError)
				}
				return
			}
			if err != nil {
				t.Fatalf("Attest(sleep) = %v", err)
			}
			// sleep runs as us, so its ids are ours.
			want := append(idSelectors(t), sel("path:"+bin))
			if tc.wantSHA {
				want = append(want, sel("sha256:"+sum))
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Attest(sleep) selectors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAttestNoProcess(t *testing.T) {
	ctx := testContext(t)
	// A child that has exited and been reaped: its pid names nothing.
	done := exec.Command("true")
	if err := done.Run(); err != nil {
		t.Fatal(err)
	}
	a := newAttestor(t, Config{DiscoverWorkloadPath: true})
	for _, pid := range []int32{
		0,
		-1,
		1<<22 + 1, // above PID_MAX_LIMIT: can never exist
		int32(done.ProcessState.Pid()),
	} {
		got, err := a.Attest(ctx, pid)
		if !errors.Is(err, ErrNoProcess) {
			t.Errorf("Attest(%d) = %v, %v; want ErrNoProcess", pid, got, err)
		}
	}
}

func TestAttestProcessExitsDuringAttestation(t *testing.T) {
	ctx := testContext(t)
	cmd := startSleep(t)
	a := newAttestor(t, Config{DiscoverWorkloadPath: true})
	a.afterRead = func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	got, err := a.Attest(ctx, int32(cmd.Process.Pid))
	if !errors.Is(err, ErrNoProcess) {
		t.Fatalf("Attest(sleep killed mid-attestation) = %v, %v; want ErrNoProcess", got, err)
	}
}

func TestAttestCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(testContext(t))
	cancel()
	a := newAttestor(t, Config{DiscoverWorkloadPath: true})
	if _, err := a.Attest(ctx, int32(os.Getpid())); !errors.Is(err, context.Canceled) {
		t.Fatalf("Attest(canceled) = %v, want context.Canceled", err)
	}
}

// fakeProc writes a proc tree with one process, pid 42.
func fakeProc(t *testing.T, status string, startTime int) (root, dir string) {
	t.Helper()
	root = t.TempDir()
	dir = filepath.Join(root, "42")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "status"), status)
	writeStat(t, dir, startTime)
	return root, dir
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeStat writes a stat line whose command name contains spaces and
// parentheses and whose field 22 is startTime.
func writeStat(t *testing.T, dir string, startTime int) {
	t.Helper()
	writeFile(t, filepath.Join(dir, "stat"),
		fmt.Sprintf("42 (my (odd) cmd) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 %d 1000 10 18446744073709551615\n", startTime))
}

func statusFile(uid, gid, groups string) string {
	return "Name:\tcmd\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t42\nPid:\t42\nPPid:\t1\n" +
		"Uid:\t" + uid + "\nGid:\t" + gid + "\nFDSize:\t64\nGroups:\t" + groups + "\nNStgid:\t42\n"
}

func TestAttestFakeProc(t *testing.T) {
	ctx := testContext(t)
	users := map[string]string{"0": "root", "1001": "web"}
	groups := map[string]string{"0": "root", "2001": "www", "5": "tty"}
	lookup := func(m map[string]string) func(string) (string, error) {
		return func(id string) (string, error) {
			if name, ok := m[id]; ok {
				return name, nil
			}
			return "", fmt.Errorf("unknown id %s", id)
		}
	}
	for _, tc := range []struct {
		name      string
		status    string
		want      []selector.Selector
		wantError error
	}{{
		name:   "effective ids are used",
		status: statusFile("1000\t1001\t1002\t1003", "2000\t2001\t2002\t2003", "5 7 "),
		want: []selector.Selector{
			sel("uid:1001"), sel("user:web"), sel("gid:2001"), sel("group:www"),
			sel("supplementary_gid:5"), sel("supplementary_group:tty"), sel("supplementary_gid:7"),
		},
	}, {
		name:   "ids without names",
		status: statusFile("3999999 3999999 3999999 3999999", "3999998 3999998 3999998 3999998", ""),
		want:   []selector.Selector{sel("uid:3999999"), sel("gid:3999998")},
	}, {
		name:   "root",
		status: statusFile("0 0 0 0", "0 0 0 0", "0"),
		want: []selector.Selector{
			sel("uid:0"), sel("user:root"), sel("gid:0"), sel("group:root"),
			sel("supplementary_gid:0"), sel("supplementary_group:root"),
		},
	}, {
		name:   "single id field",
		status: statusFile("1001", "2001", ""),
		want:   []selector.Selector{sel("uid:1001"), sel("user:web"), sel("gid:2001"), sel("group:www")},
	}, {
		name:      "no Uid line",
		status:    "Name:\tcmd\nGid:\t1 1 1 1\n",
		wantError: ErrMalformedProc,
	}, {
		name:      "no Gid line",
		status:    "Name:\tcmd\nUid:\t1 1 1 1\n",
		wantError: ErrMalformedProc,
	}, {
		name:      "garbage uid",
		status:    statusFile("1 x 1 1", "1 1 1 1", ""),
		wantError: ErrMalformedProc,
	}, {
		name:      "garbage group",
		status:    statusFile("1 1 1 1", "1 1 1 1", "4 five"),
		wantError: ErrMalformedProc,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			root, _ := fakeProc(t, tc.status, 777)
			a := newAttestor(t, Config{ProcRoot: root})
			a.lookupUser, a.lookupGroup = lookup(users), lookup(groups)
			got, err := a.Attest(ctx, 42)
			if tc.wantError != nil {
				if !errors.Is(err, tc.wantError) {
					t.Fatalf("Attest(42) = %v, %v; want error %v", got, err, tc.wantError)
				}
				return
			}
			if err != nil {
				t.Fatalf("Attest(42) = %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Attest(42) selectors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAttestFakeProcChangesDuringAttestation(t *testing.T) {
	ctx := testContext(t)
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, dir string)
	}{
		{"process exits", func(t *testing.T, dir string) {
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
		}},
		{"pid reused", func(t *testing.T, dir string) { writeStat(t, dir, 778) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, dir := fakeProc(t, statusFile("1 1 1 1", "1 1 1 1", ""), 777)
			a := newAttestor(t, Config{ProcRoot: root})
			a.afterRead = func() { tc.change(t, dir) }
			got, err := a.Attest(ctx, 42)
			if !errors.Is(err, ErrNoProcess) {
				t.Fatalf("Attest(42) = %v, %v; want ErrNoProcess", got, err)
			}
		})
	}
}

func TestAttestFakeProcMalformedStat(t *testing.T) {
	ctx := testContext(t)
	for _, stat := range []string{"42 no parens S 1\n", "42 (cmd) S 1 2 3\n", "42 (cmd) S 1 42 42 0 -1 4 1 0 0 0 1 2 0 0 20 0 1 0 soon 1\n"} {
		root, dir := fakeProc(t, statusFile("1 1 1 1", "1 1 1 1", ""), 1)
		writeFile(t, filepath.Join(dir, "stat"), stat)
		if got, err := newAttestor(t, Config{ProcRoot: root}).Attest(ctx, 42); !errors.Is(err, ErrMalformedProc) {
			t.Errorf("Attest with stat %q = %v, %v; want ErrMalformedProc", stat, got, err)
		}
	}
}

func TestNewBadProcRoot(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	writeFile(t, file, "")
	for _, root := range []string{filepath.Join(t.TempDir(), "missing"), file} {
		if _, err := New(Config{ProcRoot: root}); err == nil {
			t.Errorf("New(ProcRoot %q) succeeded, want an error", root)
		}
	}
}

func TestPeerCredListener(t *testing.T) {
	ctx := testContext(t)
	dir, err := os.MkdirTemp("", "ua")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "s"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.SetDeadline(time.Now().Add(15 * time.Second)); err != nil {
		t.Fatal(err)
	}

	t.Run("this process", func(t *testing.T) {
		client, err := net.Dial("unix", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		server, err := l.AcceptUnix()
		if err != nil {
			t.Fatal(err)
		}
		defer server.Close()
		pid, uid, gid, err := PeerCred(server)
		if err != nil {
			t.Fatalf("PeerCred = %v", err)
		}
		if want := [3]int64{int64(os.Getpid()), int64(os.Getuid()), int64(os.Getgid())}; [3]int64{int64(pid), int64(uid), int64(gid)} != want {
			t.Errorf("PeerCred = pid %d uid %d gid %d, want %v", pid, uid, gid, want)
		}
	})

	t.Run("child process then attest it", func(t *testing.T) {
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), helperEnv+"="+l.Addr().String())
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}()
		server, err := l.AcceptUnix()
		if err != nil {
			t.Fatal(err)
		}
		defer server.Close()
		pid, uid, _, err := PeerCred(server)
		if err != nil {
			t.Fatalf("PeerCred = %v", err)
		}
		if int(pid) != cmd.Process.Pid || int(uid) != os.Getuid() {
			t.Fatalf("PeerCred = pid %d uid %d, want pid %d uid %d", pid, uid, cmd.Process.Pid, os.Getuid())
		}
		sels, err := newAttestor(t, Config{DiscoverWorkloadPath: true, WorkloadSizeLimit: -1}).Attest(ctx, pid)
		if err != nil {
			t.Fatalf("Attest(peer) = %v", err)
		}
		want := append(idSelectors(t), sel("path:"+exe))
		if diff := cmp.Diff(want, sels); diff != "" {
			t.Errorf("Attest(peer) selectors (-want +got):\n%s", diff)
		}
	})
}

func TestPeerCredSocketpair(t *testing.T) {
	fds, err := sysSocketpair()
	if err != nil {
		t.Fatal(err)
	}
	var conns []*net.UnixConn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "pair"+strconv.Itoa(i))
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c.(*net.UnixConn))
	}
	for i, c := range conns {
		pid, uid, gid, err := PeerCred(c)
		if err != nil {
			t.Fatalf("PeerCred(end %d) = %v", i, err)
		}
		if int(pid) != os.Getpid() || int(uid) != os.Getuid() || int(gid) != os.Getgid() {
			t.Errorf("PeerCred(end %d) = %d %d %d, want %d %d %d", i, pid, uid, gid, os.Getpid(), os.Getuid(), os.Getgid())
		}
	}
	if _, _, _, err := PeerCred(nil); err == nil {
		t.Error("PeerCred(nil) succeeded, want an error")
	}
}
