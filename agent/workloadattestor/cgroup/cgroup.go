// Package cgroup reads a process's control groups (/proc/<pid>/cgroup) and
// finds in their paths the container, and the Kubernetes pod, that the
// process runs in. The agent's docker and k8s workload attestors share it, so
// both locate a container the same way SPIRE's agent does (its "new container
// locator", the default since SPIRE 1.9).
//
// A container ID is a run of exactly 64 hex digits standing alone in a path
// segment; the last such segment of a path is taken. A pod UID is
// "pod" followed by a UUID whose dashes may be underscores (the systemd
// cgroup driver escapes them), in a segment before the container's. That
// covers cgroup v1 and v2, the cgroupfs and systemd drivers, the kubepods
// burstable, besteffort and guaranteed classes, and the docker-, crio- and
// cri-containerd- prefixes, also behind a cgroup namespace ("/../..").
//
// The paths are what the kernel shows the agent, and a process can be moved
// only into cgroups its user may write: the kernel, not the workload, decides
// what the agent reads. Where users have delegated cgroup subtrees (systemd's
// user@.service), a user can create paths that look like any pod's; SPIRE
// accepts those too.
package cgroup

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// MaxFileSize bounds how much of a cgroup file is read. The kernel writes
// one line per hierarchy (at most a few dozen, each path at most PATH_MAX).
const MaxFileSize = 256 << 10

var (
	// ErrMalformed means a cgroup file is not "hierarchy-ID:controllers:path"
	// lines, or is larger than MaxFileSize.
	ErrMalformed = errors.New("cgroup: malformed cgroup file")
	// ErrConflict means the paths name two different containers or pods; the
	// safe answer is neither.
	ErrConflict = errors.New("cgroup: cgroups name more than one container")
)

// Entry is one line of /proc/<pid>/cgroup.
type Entry struct {
	HierarchyID string // "0" for the cgroup v2 unified hierarchy
	Controllers string // "cpu,cpuacct"; "" for cgroup v2
	Path        string // "/kubepods/besteffort/pod<uid>/<container id>"
}

// Parse parses the contents of a cgroup file. Every line must have at least
// three colon-separated fields; the path (the third) may itself hold colons.
func Parse(data []byte) ([]Entry, error) {
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformed, len(data), MaxFileSize)
	}
	data = bytes.TrimSuffix(data, []byte("\n"))
	if len(data) == 0 {
		return nil, nil
	}
	var entries []Entry
	for i, line := range strings.Split(string(data), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) < 3 {
			return nil, fmt.Errorf("%w: line %d %q: want hierarchy-ID:controllers:path", ErrMalformed, i+1, line)
		}
		entries = append(entries, Entry{HierarchyID: f[0], Controllers: f[1], Path: f[2]})
	}
	return entries, nil
}

// Read reads and parses procRoot/<pid>/cgroup ("" means /proc). A process
// that does not exist yields an error wrapping fs.ErrNotExist.
func Read(procRoot string, pid int32) ([]Entry, error) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	if pid <= 0 {
		return nil, fmt.Errorf("cgroup: invalid pid %d", pid)
	}
	f, err := os.Open(filepath.Join(procRoot, strconv.FormatInt(int64(pid), 10), "cgroup"))
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("cgroup: read pid %d: %w", pid, err)
	}
	entries, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%w (pid %d)", err, pid)
	}
	return entries, nil
}

// Pod is where the cgroups place a process: the zero value means in no
// container.
type Pod struct {
	// UID is the Kubernetes pod UID, with dashes ("" when no path names a
	// pod, as with CRI-O under a cgroup namespace, or a plain container).
	UID string
	// ContainerID is the container's 64 hex digits ("" when none).
	ContainerID string
}

// FindPod returns the pod UID and container ID the entries name. An entry
// naming a pod wins over entries naming only a container (kind nodes list the
// node's own docker container too); entries naming neither are ignored. Two
// different pods, or two different containers, are an ErrConflict.
func FindPod(entries []Entry) (Pod, error) {
	var found Pod
	for _, e := range entries {
		p := locate(e.Path, true)
		switch {
		case p.ContainerID == "":
			continue
		case found.UID != "" && p.UID == "":
			continue
		case found.UID == "" && p.UID != "":
			found = p
			continue
		case p.UID != found.UID:
			return Pod{}, fmt.Errorf("%w: pods %q and %q", ErrConflict, found.UID, p.UID)
		case found.ContainerID != "" && p.ContainerID != found.ContainerID:
			return Pod{}, fmt.Errorf("%w: containers %q and %q", ErrConflict, found.ContainerID, p.ContainerID)
		}
		found = p
	}
	return found, nil
}

// FindContainerID returns the container ID the entries name, "" if none.
// Two different container IDs are an ErrConflict.
func FindContainerID(entries []Entry) (string, error) {
	var id string
	for _, e := range entries {
		c := locate(e.Path, false).ContainerID
		switch {
		case c == "":
		case id == "":
			id = c
		case c != id:
			return "", fmt.Errorf("%w: containers %q and %q", ErrConflict, id, c)
		}
	}
	return id, nil
}

var (
	// reContainerID is 64 hex digits between word boundaries: "docker-<id>.scope",
	// "cri-containerd:<id>", "crio-<id>", "<id>".
	reContainerID = regexp.MustCompile(`\b([[:xdigit:]]{64})\b`)
	// rePodUID is the cgroupfs ("pod<uuid>") and systemd
	// ("kubepods-burstable-pod<uuid with underscores>.slice") renderings.
	rePodUID = regexp.MustCompile(`\bpod([[:xdigit:]]{8}[-_][[:xdigit:]]{4}[-_][[:xdigit:]]{4}[-_][[:xdigit:]]{4}[-_][[:xdigit:]]{12})\b`)
)

// locate walks a path backwards to the last segment holding a container ID
// and, if pod is set, on backwards from there (starting with what precedes
// the ID in its own segment, for "pod<uid>.slice:cri-containerd:<id>") to the
// nearest pod UID.
func locate(p string, pod bool) Pod {
	// Like SPIRE, the walk stops at an empty segment ("//", a trailing "/").
	rest, seg := split(p)
	var id string
	for seg != "" {
		if m := reContainerID.FindStringSubmatchIndex(seg); m != nil {
			id = seg[m[2]:m[3]]
			seg = seg[:m[2]]
			break
		}
		rest, seg = split(rest)
	}
	if id == "" || !pod {
		return Pod{ContainerID: id}
	}
	if seg == "" {
		// The ID began its segment: the pod is in an earlier one.
		rest, seg = split(rest)
	}
	for seg != "" {
		if m := rePodUID.FindStringSubmatch(seg); m != nil {
			return Pod{UID: strings.ReplaceAll(m[1], "_", "-"), ContainerID: id}
		}
		rest, seg = split(rest)
	}
	return Pod{ContainerID: id}
}

// split cuts the last segment off p.
func split(p string) (rest, seg string) {
	rest, seg = path.Split(p)
	return strings.TrimSuffix(rest, "/"), seg
}
