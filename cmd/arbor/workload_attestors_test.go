package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/arborid/arbor/agent/workloadattestor/docker"
	"github.com/arborid/arbor/agent/workloadattestor/k8s"
	"github.com/arborid/arbor/agent/workloadattestor/unix"
	"github.com/arborid/arbor/internal/tier"
)

// TestWorkloadAttestorFlags: unix always runs; k8s and docker run when
// --workload-attestor names them or one of their flags is given; an
// unknown kind, and a kind whose settings its attestor refuses, are errors.
func TestWorkloadAttestorFlags(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	for _, c := range []struct {
		args    []string
		want    string // the attestors' types, in order
		wantErr string
	}{
		{args: nil, want: "unix"},
		{args: []string{"--unix-workload-path"}, want: "unix"},
		{args: []string{"--workload-attestor", "k8s", "--kubelet-read-only-port", "10255"}, want: "unix k8s"},
		{args: []string{"--kubelet-read-only-port", "10255"}, want: "unix k8s"},
		{args: []string{"--docker-socket-path", sock}, want: "unix docker"},
		{args: []string{"--workload-attestor", "docker,k8s", "--docker-socket-path", sock, "--kubelet-read-only-port", "10255"}, want: "unix k8s docker"},
		{args: []string{"--workload-attestor", "unix"}, want: "unix"},
		{args: []string{"--workload-attestor", "kubernetes"}, wantErr: `--workload-attestor "kubernetes": want k8s or docker`},
		{args: []string{"--kubelet-read-only-port", "10255", "--kubelet-secure-port", "10250"}, wantErr: "exclusive"},
		{args: []string{"--docker-socket-path", "tcp://127.0.0.1:2375"}, wantErr: "docker"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
			var f workloadAttestorFlags
			f.register(fs)
			if err := fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			atts, closer, err := f.build(fs, tier.WorkloadAttestors{}, nil)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("build(%v) = %v, want an error containing %q", c.args, err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("build(%v) = %v", c.args, err)
			}
			defer closer.Close()
			var got []string
			for _, a := range atts {
				switch a.(type) {
				case *unix.Attestor:
					got = append(got, "unix")
				case *k8s.Attestor:
					got = append(got, "k8s")
				case *docker.Attestor:
					got = append(got, "docker")
				default:
					got = append(got, fmt.Sprintf("%T", a))
				}
			}
			if strings.Join(got, " ") != c.want {
				t.Errorf("build(%v) = %v, want %s", c.args, got, c.want)
			}
		})
	}
}
