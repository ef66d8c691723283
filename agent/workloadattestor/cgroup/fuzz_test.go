package cgroup

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

var hex64 = regexp.MustCompile(`^[[:xdigit:]]{64}$`)

// FuzzParse checks that Parse and the locators never panic, refuse only with
// ErrMalformed or ErrConflict, and that what they find is in the input: a
// 64-hex-digit container ID and a UUID-shaped pod UID taken from some path.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		v1("/kubepods/burstable/pod" + uid + "/" + cid),
		"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + under + ".slice/cri-containerd-" + cid + ".scope\n",
		"0::/kubepods-besteffort-pod" + under + ".slice:cri-containerd:" + cid,
		"0::/../crio-" + cid2 + ".scope",
		"1:cpu:/kubepods/pod" + uid + "/" + cid + "\n0::/kubepods/pod" + uid2 + "/" + cid + "\n",
		"0::/", "", ":", "::", "a", "\n", "0::/a//b/", "0:::::",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) || entries != nil {
				t.Fatalf("Parse(%q) = %+v, %v; want nil and ErrMalformed", data, entries, err)
			}
			return
		}
		var lines []string
		for _, e := range entries {
			if strings.Contains(e.HierarchyID, ":") || strings.Contains(e.Controllers, ":") {
				t.Fatalf("Parse(%q) = entry %+v with a colon before its path", data, e)
			}
			lines = append(lines, e.HierarchyID+":"+e.Controllers+":"+e.Path)
		}
		if again, err := Parse([]byte(strings.Join(lines, "\n"))); err != nil || len(again) != len(entries) {
			t.Fatalf("Parse(reformatted %q) = %d entries, %v; want %d", data, len(again), err, len(entries))
		}
		pod, err := FindPod(entries)
		if err != nil && !errors.Is(err, ErrConflict) {
			t.Fatalf("FindPod(%q) = %v, want nil or ErrConflict", data, err)
		}
		if err == nil {
			checkFound(t, data, pod)
		}
		id, err := FindContainerID(entries)
		if err != nil && !errors.Is(err, ErrConflict) {
			t.Fatalf("FindContainerID(%q) = %v, want nil or ErrConflict", data, err)
		}
		if err == nil && id != "" {
			checkFound(t, data, Pod{ContainerID: id})
		}
	})
}

func checkFound(t *testing.T, data []byte, p Pod) {
	t.Helper()
	if p.ContainerID == "" {
		if p.UID != "" {
			t.Fatalf("FindPod(%q) = %+v: a pod without a container", data, p)
		}
		return
	}
	if !hex64.MatchString(p.ContainerID) || !strings.Contains(string(data), p.ContainerID) {
		t.Fatalf("found container %q in %q: want 64 hex digits from the input", p.ContainerID, data)
	}
	if p.UID != "" {
		if len(p.UID) != 36 || strings.Contains(p.UID, "_") {
			t.Fatalf("found pod %q in %q: want a UUID with dashes", p.UID, data)
		}
		if !strings.Contains(string(data), "pod"+p.UID) && !strings.Contains(string(data), "pod"+strings.ReplaceAll(p.UID, "-", "_")) &&
			!strings.Contains(strings.ReplaceAll(string(data), "_", "-"), "pod"+p.UID) {
			t.Fatalf("found pod %q, which %q does not name", p.UID, data)
		}
	}
}
