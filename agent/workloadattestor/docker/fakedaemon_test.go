package docker

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
)

const (
	webID   = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961"
	otherID = "09bc3d7ade839efec32b6bec4ec79d099027a668ddba043083ec21d3c3b8f1e6"
	testPID = 4242
)

// fakeDaemon is the Docker Engine API on a Unix socket: GET /_ping (which
// the client negotiates the API version with) and GET
// /v<version>/containers/<id>/json answering the daemon's inspect JSON, or
// its 404 {"message": "No such container: <id>"}.
type fakeDaemon struct {
	sock string
	srv  *http.Server

	mu         sync.Mutex
	containers map[string]container.InspectResponse
	handler    http.HandlerFunc // when set, answers inspects instead
	paths      []string
	apiVersion string // the version /_ping announces

	inspects atomic.Int32
}

var inspectPath = regexp.MustCompile(`^/v([0-9]+\.[0-9]+)/containers/([^/]+)/json$`)

func newFakeDaemon(t *testing.T, containers ...container.InspectResponse) *fakeDaemon {
	t.Helper()
	dir, err := os.MkdirTemp("", "arbd") // socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := &fakeDaemon{sock: filepath.Join(dir, "docker.sock"), containers: map[string]container.InspectResponse{}, apiVersion: "1.47"}
	for _, c := range containers {
		d.containers[c.ID] = c
	}
	lis, err := net.Listen("unix", d.sock)
	if err != nil {
		t.Fatal(err)
	}
	d.srv = &http.Server{Handler: http.HandlerFunc(d.serve), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := d.srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("fake daemon: %v", err)
		}
	}()
	t.Cleanup(func() {
		d.srv.Close()
		<-done
	})
	return d
}

func (d *fakeDaemon) setHandler(h http.HandlerFunc) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.handler = h
}

func (d *fakeDaemon) requested() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.paths...)
}

func (d *fakeDaemon) serve(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	d.paths = append(d.paths, r.URL.Path)
	handler, version := d.handler, d.apiVersion
	d.mu.Unlock()
	w.Header().Set("Api-Version", version)
	w.Header().Set("Server", "Docker/28.5.2 (linux)")
	if r.URL.Path == "/_ping" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("OK"))
		return
	}
	m := inspectPath.FindStringSubmatch(r.URL.Path)
	if m == nil || r.Method != http.MethodGet {
		writeError(w, http.StatusNotFound, "page not found")
		return
	}
	d.inspects.Add(1)
	if handler != nil {
		handler(w, r)
		return
	}
	d.mu.Lock()
	c, ok := d.containers[m[2]]
	d.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "No such container: "+m[2])
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(c)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"message": msg})
}

// webContainer is what `docker inspect` shows of a container started with
// docker run --label ... -e ENVIRONMENT=prod -e DB_PASSWORD=... envoyproxy/envoy.
func webContainer() container.InspectResponse {
	return container.InspectResponse{
		ID: webID, Created: "2026-05-01T12:00:00.000000000Z", Path: "/docker-entrypoint.sh", Args: []string{"envoy"},
		State: &container.State{Status: container.StateRunning, Running: true, Pid: 31337, StartedAt: "2026-05-01T12:00:01Z"},
		Image: "sha256:644f45f6626c8cbf7b3e3fb3b9d7d1f8e8f3a3c1e1a1b7c8d9e0f1a2b3c4d5e6",
		Name:  "/web", Driver: "overlay2", Platform: "linux",
		HostConfig: &container.HostConfig{NetworkMode: "bridge"},
		Config: &container.Config{
			Hostname: "9bca8d63d5fa", Image: "envoyproxy/envoy:contrib-v1.29.1",
			Env: []string{
				"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
				"ENVIRONMENT=prod", "DB_PASSWORD=hunter2", "REGION=eu-west-1=a",
			},
			Labels: map[string]string{"com.example.name": "web", "com.example.cluster": "prod", "org.opencontainers.image.version": "1.29.1"},
			Cmd:    []string{"envoy"},
		},
	}
}

func writeCgroup(t testing.TB, procRoot string, pid int, content string) {
	t.Helper()
	dir := filepath.Join(procRoot, strconv.Itoa(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// inDocker is a cgroup v2 file of a container under Docker with the
// systemd driver, as the kernel shows it.
func inDocker(id string) string { return "0::/system.slice/docker-" + id + ".scope\n" }

const onHost = "0::/user.slice/user-1000.slice/session-2.scope\n"
