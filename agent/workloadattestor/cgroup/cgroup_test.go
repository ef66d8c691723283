package cgroup

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const (
	cid  = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961"
	cid2 = "09bc3d7ade839efec32b6bec4ec79d099027a668ddba043083ec21d3c3b8f1e6"
	host = "93529524695bb00d91c1f6dba692ea8d3550c3b94fb2463af7bc9ec82f992d26"
	uid  = "2c48913c-b29f-11e7-9350-020968147796"
	uid2 = "a2830d0d-b0f0-4ff0-81b5-0ee4e299cf80"
)

// under is uid with the systemd driver's escaping.
var under = strings.ReplaceAll(uid, "-", "_")

// v1 repeats a cgroup v1 path over the usual hierarchies, as the kernel
// lists them (highest hierarchy ID first).
func v1(path string) string {
	var b strings.Builder
	for i, c := range []string{"name=systemd", "blkio", "freezer", "cpu,cpuacct", "memory", "cpuset", "net_cls,net_prio", "perf_event", "pids", "devices", "hugetlb"} {
		b.WriteString(strings.Join([]string{itoa(11 - i), c, path}, ":") + "\n")
	}
	return b.String()
}

func itoa(i int) string { return string(rune('0'+i/10)) + string(rune('0'+i%10)) }

func TestFindPod(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		want       Pod
		wantErr    error
	}{
		{"v1 cgroupfs burstable docker", v1("/kubepods/burstable/pod" + uid + "/" + cid), Pod{uid, cid}, nil},
		{"v1 cgroupfs besteffort", v1("/kubepods/besteffort/pod" + uid + "/" + cid), Pod{uid, cid}, nil},
		{"v1 cgroupfs guaranteed", v1("/kubepods/pod" + uid + "/" + cid), Pod{uid, cid}, nil},
		{"v1 systemd burstable docker", v1("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + under + ".slice/docker-" + cid + ".scope"), Pod{uid, cid}, nil},
		{"v1 systemd cri-o besteffort with rdma and unified lines",
			"12:hugetlb:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + under + ".slice/crio-" + cid + ".scope\n" +
				"4:cpu,cpuacct:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + under + ".slice/crio-" + cid + ".scope\n" +
				"3:rdma:/\n" +
				"1:systemd:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + under + ".slice/crio-" + cid + ".scope\n" +
				"0::/system.slice/crio.service\n",
			Pod{uid, cid}, nil},
		{"v2 systemd containerd burstable", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + under + ".slice/cri-containerd-" + cid + ".scope\n", Pod{uid, cid}, nil},
		{"v2 systemd containerd guaranteed", "0::/kubepods.slice/kubepods-pod" + under + ".slice/cri-containerd-" + cid + ".scope\n", Pod{uid, cid}, nil},
		{"v2 systemd cri-o besteffort", "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + under + ".slice/crio-" + cid + ".scope\n", Pod{uid, cid}, nil},
		{"v2 cgroupfs containerd", "0::/kubepods/besteffort/pod" + uid + "/" + cid + "\n", Pod{uid, cid}, nil},
		{"v2 containerd colon form", "0::/kubepods-besteffort-pod" + under + ".slice:cri-containerd:" + cid + "\n", Pod{uid, cid}, nil},
		{"v2 behind a cgroup namespace", "0::/../../kubepods-besteffort-pod" + under + ".slice/cri-containerd-" + cid + ".scope\n", Pod{uid, cid}, nil},
		{"v1 behind a cgroup namespace", v1("/../../pod" + uid + "/" + cid), Pod{uid, cid}, nil},
		{"cri-o without the pod (kubeedge, same pod as the agent)", "0::/../crio-" + cid2 + ".scope", Pod{"", cid2}, nil},
		{"kind: the pod wins over the node's own container",
			v1("/docker/"+host+"/kubepods/besteffort/pod"+uid2+"/"+cid2) + "0::/docker/" + host + "/system.slice/containerd.service\n",
			Pod{uid2, cid2}, nil},
		{"kind: the node's container first, then the pod",
			"0::/docker/" + host + "/system.slice/containerd.service\n1:cpuset:/docker/" + host + "/kubepods/besteffort/pod" + uid2 + "/" + cid2 + "\n",
			Pod{uid2, cid2}, nil},
		{"container segment after the ID", "0::/kubepods/pod" + uid + "/" + cid + "/init\n", Pod{uid, cid}, nil},
		{"plain docker container: no pod", v1("/docker/" + cid), Pod{"", cid}, nil},
		{"host process", "11:hugetlb:/\n10:devices:/user.slice\n1:name=systemd:/user.slice/user-1000.slice/session-2.scope\n0::/user.slice/user-1000.slice/session-2.scope\n", Pod{}, nil},
		{"empty file", "", Pod{}, nil},
		{"63 hex digits are no container", "0::/kubepods/pod" + uid + "/" + cid[1:] + "\n", Pod{}, nil},
		{"65 hex digits are no container", "0::/kubepods/pod" + uid + "/a" + cid + "\n", Pod{}, nil},
		{"pod UID without its pod prefix", "0::/kubepods/" + uid + "/" + cid + "\n", Pod{"", cid}, nil},
		{"empty segment stops the walk", "0::/kubepods/pod" + uid + "//" + cid + "\n", Pod{"", cid}, nil},
		{"two pods", "1:cpu:/kubepods/pod" + uid + "/" + cid + "\n0::/kubepods/pod" + uid2 + "/" + cid + "\n", Pod{}, ErrConflict},
		{"two containers in one pod", "1:cpu:/kubepods/pod" + uid + "/" + cid + "\n0::/kubepods/pod" + uid + "/" + cid2 + "\n", Pod{}, ErrConflict},
		{"two containers without pods", "1:cpu:/docker/" + cid + "\n0::/docker/" + cid2 + "\n", Pod{}, ErrConflict},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entries, err := Parse([]byte(tc.file))
			if err != nil {
				t.Fatalf("Parse(%q) = %v", tc.file, err)
			}
			got, err := FindPod(entries)
			if !errors.Is(err, tc.wantErr) || got != tc.want {
				t.Errorf("FindPod(%q) = %+v, %v; want %+v, %v", tc.file, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestFindContainerID(t *testing.T) {
	for _, tc := range []struct {
		name, file, want string
		wantErr          error
	}{
		{"docker v1 cgroupfs", v1("/docker/" + cid), cid, nil},
		{"docker v1 with an rdma root line", "12:rdma:/\n" + v1("/docker/"+cid), cid, nil},
		{"docker v2 systemd", "0::/system.slice/docker-" + cid + ".scope\n", cid, nil},
		{"docker v2 cgroupfs", "0::/docker/" + cid + "\n", cid, nil},
		{"podman", "0::/machine.slice/libpod-" + cid + ".scope/container\n", cid, nil},
		{"kubernetes pod", v1("/kubepods/burstable/pod" + uid + "/" + cid), cid, nil},
		{"private cgroup namespace shows nothing", "0::/\n", "", nil},
		{"host process", "0::/user.slice/user-1000.slice/session-2.scope\n", "", nil},
		{"kind node: two containers", v1("/docker/"+host+"/kubepods/besteffort/pod"+uid2+"/"+cid2) + "0::/docker/" + host + "/system.slice/containerd.service\n", "", ErrConflict},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entries, err := Parse([]byte(tc.file))
			if err != nil {
				t.Fatalf("Parse(%q) = %v", tc.file, err)
			}
			got, err := FindContainerID(entries)
			if !errors.Is(err, tc.wantErr) || got != tc.want {
				t.Errorf("FindContainerID(%q) = %q, %v; want %q, %v", tc.file, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParse(t *testing.T) {
	got, err := Parse([]byte("4:cpu,cpuacct:/kubepods/a:b\n0::/\n"))
	want := []Entry{{"4", "cpu,cpuacct", "/kubepods/a:b"}, {"0", "", "/"}}
	if err != nil || !cmp.Equal(got, want) {
		t.Errorf("Parse = %+v, %v; want %+v", got, err, want)
	}
	for _, bad := range []string{"garbage\n", "1:cpu\n", "0::/\n\n0::/\n", strings.Repeat("0::/"+cid+"\n", MaxFileSize/68+1)} {
		if got, err := Parse([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%.40q...) = %+v, %v; want ErrMalformed", bad, got, err)
		}
	}
}

func TestRead(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "42"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "42", "cgroup"), []byte("0::/docker/"+cid+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Read(root, 42)
	if want := []Entry{{"0", "", "/docker/" + cid}}; err != nil || !cmp.Equal(got, want) {
		t.Errorf("Read(42) = %+v, %v; want %+v", got, err, want)
	}
	if _, err := Read(root, 43); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read(43) = %v, want fs.ErrNotExist", err)
	}
	if _, err := Read(root, 0); err == nil {
		t.Error("Read(0) succeeded, want an error")
	}
	// The real /proc: this process's own cgroups parse.
	if _, err := Read("", int32(os.Getpid())); err != nil {
		t.Errorf("Read(/proc, self) = %v", err)
	}
}
