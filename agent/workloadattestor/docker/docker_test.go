package docker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/arborid/arbor/agent/workloadattestor/cgroup"
	"github.com/arborid/arbor/internal/selector"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// attestor returns an Attestor for the daemon d with a fresh proc root
// holding pid testPID's cgroup file.
func attestor(t *testing.T, d *fakeDaemon, cgroupFile string, mutate func(*Config)) *Attestor {
	t.Helper()
	cfg := Config{SocketPath: "unix://" + d.sock, ProcRoot: t.TempDir(), EnvKeys: []string{"ENVIRONMENT", "REGION"}}
	writeCgroup(t, cfg.ProcRoot, testPID, cgroupFile)
	if mutate != nil {
		mutate(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func values(sels []selector.Selector) []string {
	var out []string
	for _, s := range sels {
		if s.Type != SelectorType {
			out = append(out, "WRONG TYPE "+s.String())
			continue
		}
		out = append(out, s.Value)
	}
	return out
}

// The real moby client inspects the caller's container over the daemon's
// socket: SPIRE's label and image_id selectors, and env selectors of the
// allowed keys only (DB_PASSWORD is not one).
func TestAttestSelectors(t *testing.T) {
	d := newFakeDaemon(t, webContainer())
	a := attestor(t, d, inDocker(webID), nil)
	got, err := a.Attest(testCtx(t), testPID)
	if err != nil {
		t.Fatalf("Attest = %v", err)
	}
	want := []string{
		"label:com.example.cluster:prod", "label:com.example.name:web", "label:org.opencontainers.image.version:1.29.1",
		"env:ENVIRONMENT=prod", "env:REGION=eu-west-1=a",
		"image_id:envoyproxy/envoy:contrib-v1.29.1",
	}
	if diff := cmp.Diff(want, values(got)); diff != "" {
		t.Errorf("Attest selectors (-want +got):\n%s", diff)
	}
	// The version announced by /_ping is the one used.
	if p := d.requested(); len(p) != 2 || p[0] != "/_ping" || p[1] != "/v1.47/containers/"+webID+"/json" {
		t.Errorf("daemon requests = %q, want /_ping then the v1.47 inspect", p)
	}

	// No env keys configured: no env selectors at all.
	a = attestor(t, d, inDocker(webID), func(c *Config) { c.EnvKeys = nil })
	got, err = a.Attest(testCtx(t), testPID)
	if err != nil || strings.Contains(strings.Join(values(got), " "), "env:") {
		t.Errorf("Attest without env keys = %v, %v; want no env selector", values(got), err)
	}
}

// docker_version pins the API version: no negotiation.
func TestAttestPinnedAPIVersion(t *testing.T) {
	d := newFakeDaemon(t, webContainer())
	a := attestor(t, d, inDocker(webID), func(c *Config) { c.APIVersion = "1.44" })
	if _, err := a.Attest(testCtx(t), testPID); err != nil {
		t.Fatalf("Attest = %v", err)
	}
	if p := d.requested(); len(p) != 1 || p[0] != "/v1.44/containers/"+webID+"/json" {
		t.Errorf("daemon requests = %q, want only the v1.44 inspect", p)
	}
}

// A process in no container gets no selectors without a request; one whose
// pid has no cgroup file is an ErrNoProcess; cgroups naming two containers
// or not cgroup lines are refused.
func TestAttestCgroups(t *testing.T) {
	d := newFakeDaemon(t, webContainer())
	for _, tc := range []struct {
		name, file string
		wantErr    error
	}{
		{"host process", onHost, nil},
		{"63 hex digits are no container", inDocker(webID[1:]), nil},
		{"two containers", inDocker(webID) + "1:cpu:/docker/" + otherID + "\n", cgroup.ErrConflict},
		{"not a cgroup file", "garbage\n", cgroup.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := attestor(t, d, tc.file, nil).Attest(testCtx(t), testPID)
			if !errors.Is(err, tc.wantErr) || got != nil {
				t.Errorf("Attest = %v, %v; want no selectors, %v", values(got), err, tc.wantErr)
			}
		})
	}
	if _, err := attestor(t, d, onHost, nil).Attest(testCtx(t), testPID+1); !errors.Is(err, ErrNoProcess) {
		t.Errorf("Attest(missing pid) = %v, want ErrNoProcess", err)
	}
	if n := d.inspects.Load(); n != 0 {
		t.Errorf("daemon got %d inspects, want 0", n)
	}
}

// Every refusal of the daemon's answer fails the attestation with no
// selectors; only failures that may pass are tried again.
func TestAttestRefusals(t *testing.T) {
	huge := webContainer()
	huge.Config.Labels["blob"] = strings.Repeat("x", 64<<10)
	hugeJSON, err := json.Marshal(huge)
	if err != nil {
		t.Fatal(err)
	}
	var redirected atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		redirected.Add(1)
		json.NewEncoder(w).Encode(webContainer())
	}))
	defer target.Close()
	other := webContainer()
	other.ID = otherID

	for _, tc := range []struct {
		name     string
		handler  http.HandlerFunc
		cgroup   string
		wantErr  error
		inspects int32
	}{
		{name: "no such container", cgroup: inDocker(otherID), wantErr: ErrContainerNotFound, inspects: 1},
		{name: "oversize with its length", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(hugeJSON)))
			w.Write(hugeJSON)
		}, wantErr: ErrResponseTooLarge, inspects: 1},
		{name: "oversize, chunked", handler: func(w http.ResponseWriter, r *http.Request) {
			for i := 0; i < len(hugeJSON); i += 4096 {
				w.Write(hugeJSON[i:min(i+4096, len(hugeJSON))])
				w.(http.Flusher).Flush()
			}
		}, wantErr: ErrResponseTooLarge, inspects: 1},
		{name: "redirect", handler: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+r.URL.Path, http.StatusTemporaryRedirect)
		}, wantErr: ErrRedirect, inspects: 1},
		{name: "another container's document", handler: func(w http.ResponseWriter, r *http.Request) {
			json.NewEncoder(w).Encode(other)
		}, wantErr: errNotContainer, inspects: 1},
		{name: "no Config", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"Id":"` + webID + `"}`))
		}, wantErr: errNotContainer, inspects: 1},
		{name: "not JSON, tried again", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("<html>"))
		}, wantErr: ErrDocker, inspects: 3},
		{name: "daemon error, tried again", handler: func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusInternalServerError, "containerd is restarting")
		}, wantErr: ErrDocker, inspects: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newFakeDaemon(t, webContainer())
			if tc.handler != nil {
				d.setHandler(tc.handler)
			}
			if tc.cgroup == "" {
				tc.cgroup = inDocker(webID)
			}
			a := attestor(t, d, tc.cgroup, func(c *Config) { c.MaxResponseBytes = 32 << 10 })
			got, err := a.Attest(testCtx(t), testPID)
			if !errors.Is(err, tc.wantErr) || !errors.Is(err, ErrDocker) || got != nil {
				t.Fatalf("Attest = %v, %v; want %v wrapped in ErrDocker", values(got), err, tc.wantErr)
			}
			if n := d.inspects.Load(); n != tc.inspects {
				t.Errorf("daemon got %d inspects, want %d", n, tc.inspects)
			}
		})
	}
	if n := redirected.Load(); n != 0 {
		t.Errorf("redirect target got %d requests, want 0", n)
	}
}

// A daemon failing once is tried again and then answers; one that is down
// fails the attestation after MaxAttempts, without failing New.
func TestAttestRetries(t *testing.T) {
	d := newFakeDaemon(t, webContainer())
	var calls atomic.Int32
	d.setHandler(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			writeError(w, http.StatusInternalServerError, "busy")
			return
		}
		json.NewEncoder(w).Encode(webContainer())
	})
	got, err := attestor(t, d, inDocker(webID), nil).Attest(testCtx(t), testPID)
	if err != nil || len(got) == 0 {
		t.Errorf("Attest after one failure = %v, %v; want selectors", values(got), err)
	}

	a := attestor(t, d, inDocker(webID), func(c *Config) { c.SocketPath = filepath.Join(t.TempDir(), "absent.sock") })
	if _, err := a.Attest(testCtx(t), testPID); !errors.Is(err, ErrDocker) {
		t.Errorf("Attest with no daemon = %v, want ErrDocker", err)
	}
}

func TestNewRefusesConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"tcp daemon", Config{SocketPath: "tcp://127.0.0.1:2375"}, "only unix://"},
		{"relative socket", Config{SocketPath: "docker.sock"}, "absolute"},
		{"env key with =", Config{EnvKeys: []string{"A=B"}}, "environment variable"},
		{"empty env key", Config{EnvKeys: []string{""}}, "environment variable"},
		{"negative attempts", Config{MaxAttempts: -1}, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New(%+v) = %v, want an error containing %q", tc.cfg, err, tc.want)
			}
		})
	}
	for _, sock := range []string{"", "/var/run/docker.sock", "unix:///run/docker.sock"} {
		if a, err := New(Config{SocketPath: sock}); err != nil {
			t.Errorf("New(socket %q) = %v", sock, err)
		} else {
			a.Close()
		}
	}
}

// The bounded body passes answers up to the limit and fails past it.
func TestBoundedBody(t *testing.T) {
	for _, tc := range []struct {
		size, max int
		ok        bool
	}{{0, 10, true}, {10, 10, true}, {11, 10, false}, {1 << 20, 10, false}} {
		b := &boundedBody{rc: nopCloser{bytes.NewReader(make([]byte, tc.size))}, left: int64(tc.max)}
		var buf bytes.Buffer
		_, err := buf.ReadFrom(b)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrResponseTooLarge)) {
			t.Errorf("reading %d bytes with limit %d: %v, want ok=%v", tc.size, tc.max, err, tc.ok)
		}
	}
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }
