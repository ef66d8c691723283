package k8s

import (
	"errors"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/arborid/arbor/agent/workloadattestor/cgroup"
)

// FuzzParsePodList feeds the kubelet's /pods parser and the matching that
// follows it arbitrary bytes. Neither may panic; the parser refuses only with
// errNotPodList and keeps only pods with a UID; and a match is only ever the
// one pod whose status lists exactly "<runtime>://<the caller's container>",
// under the caller's pod UID, with that pod's own pod-uid and the status's
// container-name.
func FuzzParsePodList(f *testing.F) {
	f.Add(podListJSON(nil))
	f.Add(podListJSON([]corev1.Pod{webPod()}))
	f.Fuzz(func(t *testing.T, body []byte) {
		pods, err := parsePodList(body)
		if err != nil {
			if !errors.Is(err, errNotPodList) || pods != nil {
				t.Fatalf("parsePodList = %d pods, %v; want nil and errNotPodList", len(pods), err)
			}
			return
		}
		for _, p := range pods {
			if p.UID == "" {
				t.Fatalf("parsePodList kept a pod without a UID: %+v", p.ObjectMeta)
			}
		}
		a := &Attestor{}
		for _, where := range []cgroup.Pod{{UID: podUID, ContainerID: webID}, {ContainerID: webID}} {
			values, err := a.match(pods, where)
			if err != nil {
				if !errors.Is(err, ErrAmbiguous) {
					t.Fatalf("match(%+v) = %v, want nil or ErrAmbiguous", where, err)
				}
				continue
			}
			if values == nil {
				continue
			}
			var holders int
			for i := range pods {
				if where.UID != "" && string(pods[i].UID) != where.UID {
					continue
				}
				if s, ok := containerStatus(&pods[i], where.ContainerID); ok {
					holders++
					if id := s.ContainerID; !strings.HasSuffix(id, "://"+where.ContainerID) || strings.HasPrefix(id, "://") || strings.Count(id, "://") != 1 && !strings.HasPrefix(id[strings.Index(id, "://")+3:], where.ContainerID) {
						t.Fatalf("container status ID %q taken for container %s", id, where.ContainerID)
					}
					if !slices.Contains(values, "pod-uid:"+string(pods[i].UID)) || !slices.Contains(values, "container-name:"+s.Name) {
						t.Fatalf("match(%+v) = %q, not the selectors of pod %q container %q", where, values, pods[i].UID, s.Name)
					}
				}
			}
			if holders != 1 {
				t.Fatalf("match(%+v) = %q with %d pods holding the container, want exactly 1", where, values, holders)
			}
		}
	})
}
