package k8spsat_test

import (
	"context"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/arborid/arbor/internal/nodeattest/k8spsat"
	"github.com/arborid/arbor/internal/nodeattest/k8spsat/k8spsattest"
)

// BenchmarkAttest measures attestations per second against the fake API
// server over TLS on loopback, serially and from parallel callers, and
// reports each against a baseline measured in the same run: the same three
// API calls made directly with one client-go clientset (x_direct_calls is
// the attestation's time over the baseline's).
func BenchmarkAttest(b *testing.B) {
	c := newCluster(b, k8spsattest.Config{})
	c.add(defaultAgent)
	a := must(k8spsat.New(k8spsat.Config{Clusters: map[string]k8spsat.ClusterConfig{"prod": c.clusterConfig()}}, td))
	token := c.token(b, defaultAgent, k8spsattest.TokenOptions{})
	p := payload(b, "prod", token)
	ctx := context.Background()

	rc := must(clientcmd.BuildConfigFromFlags("", c.kubeconfig))
	// As the attestor asks: JSON, no client-side rate limit.
	rc.QPS = -1
	rc.ContentType, rc.AcceptContentTypes = "application/json", "application/json"
	cs := must(kubernetes.NewForConfig(rc))
	direct := func() {
		review := &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{"spire-server"}}}
		if _, err := cs.AuthenticationV1().TokenReviews().Create(ctx, review, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		if _, err := cs.CoreV1().Pods(defaultAgent.namespace).Get(ctx, defaultAgent.name, metav1.GetOptions{}); err != nil {
			b.Fatal(err)
		}
		if _, err := cs.CoreV1().Nodes().Get(ctx, defaultAgent.node, metav1.GetOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	attest := func() {
		if _, err := a.Attest(ctx, p, nil); err != nil {
			b.Fatal(err)
		}
	}
	const baselineRuns = 1000
	for range 20 { // warm both connections
		direct()
		attest()
	}

	b.Run("serial", func(b *testing.B) {
		start := time.Now()
		for range baselineRuns {
			direct()
		}
		basePerOp := time.Since(start) / baselineRuns
		b.ResetTimer()
		for b.Loop() {
			attest()
		}
		perOp := b.Elapsed() / time.Duration(b.N)
		b.ReportMetric(float64(time.Second)/float64(perOp), "attestations/s")
		b.ReportMetric(float64(perOp)/float64(basePerOp), "x_direct_calls")
	})
	b.Run("parallel", func(b *testing.B) {
		parallel := func(n int, f func()) time.Duration {
			start := time.Now()
			done := make(chan struct{})
			work := make(chan struct{}, n)
			for range n {
				work <- struct{}{}
			}
			close(work)
			const callers = 8
			for range callers {
				go func() {
					for range work {
						f()
					}
					done <- struct{}{}
				}()
			}
			for range callers {
				<-done
			}
			return time.Since(start)
		}
		basePerOp := parallel(baselineRuns, direct) / baselineRuns
		b.ResetTimer()
		elapsed := parallel(b.N, attest)
		perOp := elapsed / time.Duration(b.N)
		b.ReportMetric(float64(time.Second)/float64(perOp), "attestations/s")
		b.ReportMetric(float64(perOp)/float64(basePerOp), "x_direct_calls")
	})
}
