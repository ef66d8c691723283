package k8spsat_test

import (
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/k8spsat"
	"github.com/arborid/arbor/internal/nodeattest/k8spsat/k8spsattest"
)

// TestSetClustersAtRuntime: a cluster added while agents attest is
// accepted from then on and a removed one refused, without a restart and
// without disturbing the attestations of the cluster that stays (run with
// -race).
func TestSetClustersAtRuntime(t *testing.T) {
	east := newCluster(t, k8spsattest.Config{})
	east.add(defaultAgent)
	west := newCluster(t, k8spsattest.Config{})
	west.add(defaultAgent)
	eastPayload := payload(t, "east", east.token(t, defaultAgent, k8spsattest.TokenOptions{}))
	westPayload := payload(t, "west", west.token(t, defaultAgent, k8spsattest.TokenOptions{}))

	onlyEast := map[string]k8spsat.ClusterConfig{"east": east.clusterConfig()}
	both := map[string]k8spsat.ClusterConfig{"east": east.clusterConfig(), "west": west.clusterConfig()}
	a := must(k8spsat.New(k8spsat.Config{Clusters: onlyEast}, td))
	ctx := testContext(t)

	attestWest := func() error {
		_, err := a.Attest(ctx, westPayload, noChallenge(t))
		return err
	}
	if err := attestWest(); !errors.Is(err, nodeattest.ErrDenied) || !strings.Contains(err.Error(), `cluster "west" is not configured`) {
		t.Fatalf("Attest(west) before it is added = %v, want not configured", err)
	}

	// Agents of both clusters attest without pause while the set changes
	// under them: east must never fail, west may only be refused as not
	// configured.
	const workers, rounds = 4, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds*2)
	stop := make(chan struct{})
	for w := range workers {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				p, name := eastPayload, "east"
				if (w+i)%2 == 1 {
					p, name = westPayload, "west"
				}
				res, err := a.Attest(ctx, p, noChallenge(t))
				switch {
				case err == nil && !strings.Contains(res.AgentID.Path(), "/k8s_psat/"+name+"/"):
					errs <- errors.New("agent ID " + res.AgentID.String() + " for a payload of " + name)
				case err != nil && (name == "east" || !strings.Contains(err.Error(), "is not configured")):
					errs <- err
				}
				if ctx.Err() != nil {
					return
				}
			}
		})
	}
	for range rounds {
		if err := a.SetClusters(both); err != nil {
			t.Fatal(err)
		}
		if err := attestWest(); err != nil {
			t.Fatalf("Attest(west) after SetClusters added it = %v", err)
		}
		if err := a.SetClusters(onlyEast); err != nil {
			t.Fatal(err)
		}
		if err := attestWest(); !errors.Is(err, nodeattest.ErrDenied) {
			t.Fatalf("Attest(west) after SetClusters removed it = %v, want ErrDenied", err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent attestation: %v", err)
	}
	if st := east.api.Stats(); st.TokenReviews < rounds {
		t.Errorf("east API server saw %d TokenReviews, want the workers to have attested throughout", st.TokenReviews)
	}
}

// TestSetClustersRefusedKeepsOld: a set with one bad cluster changes
// nothing, not even the good clusters in it.
func TestSetClustersRefusedKeepsOld(t *testing.T) {
	east := newCluster(t, k8spsattest.Config{})
	east.add(defaultAgent)
	west := newCluster(t, k8spsattest.Config{})
	west.add(defaultAgent)
	a := must(k8spsat.New(k8spsat.Config{Clusters: map[string]k8spsat.ClusterConfig{"east": east.clusterConfig()}}, td))
	eastPayload := payload(t, "east", east.token(t, defaultAgent, k8spsattest.TokenOptions{}))
	westPayload := payload(t, "west", west.token(t, defaultAgent, k8spsattest.TokenOptions{}))

	bad := west.clusterConfig()
	bad.ServiceAccountAllowList = []string{"no-colon"}
	for name, set := range map[string]map[string]k8spsat.ClusterConfig{
		"bad cluster beside good ones": {"west": west.clusterConfig(), "north": bad},
		"bad name":                     {"west": west.clusterConfig(), "a/b": west.clusterConfig()},
		"missing kubeconfig":           {"west": west.clusterConfig(), "north": {ServiceAccountAllowList: []string{"a:b"}, KubeConfigFile: "/nonexistent/kubeconfig"}},
	} {
		if err := a.SetClusters(set); err == nil {
			t.Errorf("%s: SetClusters() succeeded, want it refused", name)
		}
		if got := a.Clusters(); len(got) != 1 || !reflect.DeepEqual(got["east"], east.clusterConfig()) {
			t.Errorf("%s: Clusters() after a refused SetClusters = %+v, want only east as configured", name, got)
		}
		if _, err := a.Attest(testContext(t), eastPayload, noChallenge(t)); err != nil {
			t.Errorf("%s: Attest(east) after a refused SetClusters = %v, want the old set in force", name, err)
		}
		if _, err := a.Attest(testContext(t), westPayload, noChallenge(t)); !errors.Is(err, nodeattest.ErrDenied) {
			t.Errorf("%s: Attest(west) after a refused SetClusters = %v, want ErrDenied (west not added)", name, err)
		}
	}

	// Clusters returns a copy: changing it changes nothing.
	a.Clusters()["east"].ServiceAccountAllowList[0] = "changed:by-caller"
	if got := a.Clusters()["east"].ServiceAccountAllowList; !reflect.DeepEqual(got, east.clusterConfig().ServiceAccountAllowList) {
		t.Errorf("Clusters() shares its slices with the attestor: allow list now %v", got)
	}

	// Removing every cluster is a valid set.
	if err := a.SetClusters(nil); err != nil {
		t.Fatalf("SetClusters(nil) = %v", err)
	}
	if got := a.Clusters(); len(got) != 0 {
		t.Errorf("Clusters() after SetClusters(nil) = %v, want none", got)
	}
	if _, err := a.Attest(testContext(t), eastPayload, noChallenge(t)); !errors.Is(err, nodeattest.ErrDenied) {
		t.Errorf("Attest(east) after removing every cluster = %v, want ErrDenied", err)
	}
}

// TestClientReusedAcrossAttestations: one API client per cluster, so
// attestations share its connection instead of opening one each.
func TestClientReusedAcrossAttestations(t *testing.T) {
	c := newCluster(t, k8spsattest.Config{})
	c.add(defaultAgent)
	a := must(k8spsat.New(k8spsat.Config{Clusters: map[string]k8spsat.ClusterConfig{"prod": c.clusterConfig()}}, td))
	p := payload(t, "prod", c.token(t, defaultAgent, k8spsattest.TokenOptions{}))
	const n = 20
	for range n {
		if _, err := a.Attest(testContext(t), p, noChallenge(t)); err != nil {
			t.Fatal(err)
		}
	}
	if st := c.api.Stats(); st.TokenReviews != n || st.Connections > 2 {
		t.Errorf("API server stats after %d attestations = %+v, want %d TokenReviews over at most 2 connections", n, st, n)
	}
}
