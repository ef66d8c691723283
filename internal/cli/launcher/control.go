package launcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/arborid/arbor/internal/statelock"
	"github.com/arborid/arbor/internal/unixsock"
	"github.com/arborid/arbor/topology"
)

// ControlSocket is where a running `arbor up` of f listens for --stop and
// --start: the root server's state directory.
func ControlSocket(f *topology.File) (string, error) {
	r := f.Root()
	if r == nil {
		return "", errors.New("launcher: the topology has no root server")
	}
	return filepath.Join(r.StateDir, "up.sock"), nil
}

// upLockName is the lock file of a running `arbor up`, beside its control
// socket.
const upLockName = "up.lock"

// lockFiles takes, for each file, the lock beside its control socket, held
// until release: one `arbor up` at a time runs a topology file, and a
// second is refused (a *statelock.HeldError naming the first one's PID)
// before it starts or touches anything.
func lockFiles(files []*topology.File) (release func(), _ error) {
	paths := make([]string, len(files))
	for i, f := range files {
		paths[i] = f.Path
	}
	self := "arbor up " + strings.Join(paths, " ")
	var locks []*statelock.Lock
	release = func() {
		for _, l := range locks {
			l.Release()
		}
	}
	for _, f := range files {
		sock, err := ControlSocket(f)
		if err != nil {
			release()
			return nil, err
		}
		l, err := statelock.Acquire(filepath.Join(filepath.Dir(sock), upLockName), "topology "+f.Path, self)
		if err != nil {
			release()
			return nil, err
		}
		locks = append(locks, l)
	}
	return release, nil
}

// serveControl answers, on each file's control socket, POST
// /stop?tier=NAME and /start?tier=NAME for the server NAME of that file.
func (l *launcher) serveControl(ctx context.Context) (func(), error) {
	var stops []func()
	stopAll := func() {
		for _, stop := range stops {
			stop()
		}
	}
	for _, f := range l.files {
		stop, err := l.serveControlOf(ctx, f)
		if err != nil {
			stopAll()
			return nil, err
		}
		stops = append(stops, stop)
	}
	return stopAll, nil
}

func (l *launcher) serveControlOf(ctx context.Context, f *topology.File) (func(), error) {
	path, err := ControlSocket(f)
	if err != nil {
		return nil, err
	}
	// Never another process's: a served one is refused, a stale one
	// replaced, and it is removed at exit only while it is still this one.
	lis, err := unixsock.Listen(path)
	if err != nil {
		return nil, fmt.Errorf("launcher: control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		lis.Close()
		return nil, fmt.Errorf("launcher: control socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(l.state(f))
	})
	notReady := func(w http.ResponseWriter) bool {
		if l.ready.Load() {
			return false
		}
		http.Error(w, "arbor up is still starting the tree; try again once it prints ready", http.StatusServiceUnavailable)
		return true
	}
	mux.HandleFunc("POST /stop", func(w http.ResponseWriter, r *http.Request) {
		if notReady(w) {
			return
		}
		if err := l.stopTier(f, r.URL.Query().Get("tier")); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintln(w, "stopped")
	})
	mux.HandleFunc("POST /start", func(w http.ResponseWriter, r *http.Request) {
		if notReady(w) {
			return
		}
		if err := l.startTierAgain(ctx, f, r.URL.Query().Get("tier")); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintln(w, "started")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(lis)
	return func() { srv.Close(); lis.Close() }, nil
}

func (l *launcher) stopTier(f *topology.File, name string) error {
	t := l.tierOf(f, name)
	if t == nil {
		return fmt.Errorf("no tier %q", name)
	}
	// The replicas of a block run beside each other: stopping one leaves
	// the tier served by the others.
	also := ""
	if t.srv.Replicas > 1 {
		also = fmt.Sprintf("; the other %d replica(s) of %s keep serving", t.srv.Replicas-1, t.srv.Name)
	}
	l.mu.Lock()
	p := t.server
	t.server = nil
	l.mu.Unlock()
	if p == nil {
		return fmt.Errorf("tier %q is already down", t.label)
	}
	p.stop()
	fmt.Fprintf(l.opts.Out, "  %s: stopped on request; its children and agents keep running from what they hold%s\n", t.label, also)
	return nil
}

func (l *launcher) startTierAgain(ctx context.Context, f *topology.File, name string) error {
	t := l.tierOf(f, name)
	if t == nil {
		return fmt.Errorf("no tier %q", name)
	}
	l.mu.Lock()
	up := t.server != nil
	l.mu.Unlock()
	if up {
		return fmt.Errorf("tier %q is already running", t.label)
	}
	if err := l.startServer(ctx, t); err != nil {
		return err
	}
	fmt.Fprintf(l.opts.Out, "  %s: started again\n", t.label)
	return nil
}

// Control asks a running `arbor up` to stop or start one tier: name is
// TD/NAME or a server name only one of files declares, and the request goes
// to the control socket of the file that declares it.
func Control(ctx context.Context, files []*topology.File, action, name string) (string, error) {
	if err := checkFiles(files); err != nil {
		return "", err
	}
	f, s, err := resolveTier(files, name)
	if err != nil {
		return "", err
	}
	tier := s.Node()
	path, err := ControlSocket(f)
	if err != nil {
		return "", err
	}
	client := controlClient(path, 2*time.Minute)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://arbor-up/"+action+"?tier="+url.QueryEscape(tier), nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("no arbor up running for %s (control socket %s): %w", f.Path, path, err)
	}
	defer resp.Body.Close()
	var b [512]byte
	n, _ := resp.Body.Read(b[:])
	msg := string(b[:n])
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s %s: %s", action, name, strings.TrimSpace(msg))
	}
	return msg, nil
}
