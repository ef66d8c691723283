package ha

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/arborid/arbor/internal/testkit"
	"github.com/arborid/arbor/test/load/loadgen"
)

// TestIssuanceOneVsThreeReplicas measures X509-SVID issuance of one tier
// with 50 simulated agents pointed at one replica against the same agents
// spread over three (each picks one of the list at random), side by side
// in one run, alternating twice. It asserts only that every call
// succeeded; the ratio is reported. On this test's 2-core machine the
// three replicas share the cores the one had to itself, so the ratio
// says what replication costs or gains per machine, not per replica.
func TestIssuanceOneVsThreeReplicas(t *testing.T) {
	ctx := testkit.Context(t, 6*time.Minute)
	tr := newTier(t, 3, testkit.PostgresDSN(t), "")
	tr.startAll()

	gens := map[string]*loadgen.Generator{
		"one replica":    tr.simulatedAgents(ctx, tr.replicas[0].addr()),
		"three replicas": tr.simulatedAgents(ctx, tr.addrs()),
	}
	rate := map[string][]float64{}
	for round := range 2 {
		for _, name := range []string{"one replica", "three replicas"} {
			rep, err := gens[name].Run(ctx, loadgen.Load{Name: fmt.Sprintf("%s round %d", name, round+1), Duration: 6 * time.Second, X509: true})
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if rep.Errors != 0 || rep.X509PerSecond == 0 {
				t.Errorf("%s round %d: %d errors, %.0f X509-SVIDs/s", name, round+1, rep.Errors, rep.X509PerSecond)
			}
			rate[name] = append(rate[name], rep.X509PerSecond)
		}
	}
	mean := func(xs []float64) float64 {
		s := 0.0
		for _, x := range xs {
			s += x
		}
		return s / float64(len(xs))
	}
	one, three := mean(rate["one replica"]), mean(rate["three replicas"])
	rounds := func(xs []float64) string {
		var out []string
		for _, x := range xs {
			out = append(out, fmt.Sprintf("%.0f", x))
		}
		return strings.Join(out, ", ")
	}
	t.Logf("X509-SVID issuance, 50 agents, batches of 10: one replica %.0f/s (rounds %s), three replicas %.0f/s (rounds %s): three/one = %.2f",
		one, rounds(rate["one replica"]), three, rounds(rate["three replicas"]), three/one)
}
