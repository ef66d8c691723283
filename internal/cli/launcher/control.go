package launcher

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

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

// serveControl answers POST /stop?tier=NAME and /start?tier=NAME.
func (l *launcher) serveControl(ctx context.Context) (func(), error) {
	path, err := ControlSocket(l.f)
	if err != nil {
		return nil, err
	}
	os.Remove(path)
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("launcher: control socket: %w", err)
	}
	os.Chmod(path, 0o600)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /stop", func(w http.ResponseWriter, r *http.Request) {
		if err := l.stopTier(r.URL.Query().Get("tier")); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintln(w, "stopped")
	})
	mux.HandleFunc("POST /start", func(w http.ResponseWriter, r *http.Request) {
		if err := l.startTierAgain(ctx, r.URL.Query().Get("tier")); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintln(w, "started")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(lis)
	return func() { srv.Close(); os.Remove(path) }, nil
}

func (l *launcher) stopTier(name string) error {
	t := l.tierOf(name)
	if t == nil {
		return fmt.Errorf("no tier %q", name)
	}
	l.mu.Lock()
	p := t.server
	t.server = nil
	l.mu.Unlock()
	if p == nil {
		return fmt.Errorf("tier %q is already down", name)
	}
	p.stop()
	fmt.Fprintf(l.opts.Out, "  %s: stopped on request; its children and agents keep running from what they hold\n", name)
	return nil
}

func (l *launcher) startTierAgain(ctx context.Context, name string) error {
	t := l.tierOf(name)
	if t == nil {
		return fmt.Errorf("no tier %q", name)
	}
	l.mu.Lock()
	up := t.server != nil
	l.mu.Unlock()
	if up {
		return fmt.Errorf("tier %q is already running", name)
	}
	if err := l.startServer(ctx, t); err != nil {
		return err
	}
	fmt.Fprintf(l.opts.Out, "  %s: started again\n", name)
	return nil
}

// Control asks a running `arbor up` of f to stop or start one tier.
func Control(ctx context.Context, f *topology.File, action, tier string) (string, error) {
	path, err := ControlSocket(f)
	if err != nil {
		return "", err
	}
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}, Timeout: 2 * time.Minute}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://arbor-up/"+action+"?tier="+tier, nil)
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
		return "", fmt.Errorf("%s %s: %s", action, tier, msg)
	}
	return msg, nil
}
