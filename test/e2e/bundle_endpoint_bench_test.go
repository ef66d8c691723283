package e2e

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkBundleEndpointVsSpire measures arbor's bundle endpoint and a real
// spire-server's (v1.13.3, same machine, same client) side by side:
// requests per second and p99 with 16 concurrent keep-alive HTTPS clients,
// alternating 2 s windows so that machine noise hits both. It reports the
// ratios arbor / spire-server.
//
//	go test ./test/e2e -run '^$' -bench BundleEndpointVsSpire -benchtime 1x
func BenchmarkBundleEndpointVsSpire(b *testing.B) {
	requireSetup(b)
	dir := b.TempDir()
	arborPort, spirePort := freePort(b), freePort(b)

	a := newArbor(b, fmt.Sprintf("bundle_endpoint {\n    listen = \"127.0.0.1:%d\"\n  }", arborPort))
	a.start(b)
	startFederatedSpireServer(b, defaultSpire(), dir, nil, fmt.Sprintf(`federation {
    bundle_endpoint {
      address = "127.0.0.1"
      port    = %d
    }
  }`, spirePort))
	targets := []struct {
		name string
		url  string
	}{
		{"arbor", fmt.Sprintf("https://127.0.0.1:%d", arborPort)},
		{"spire", fmt.Sprintf("https://127.0.0.1:%d", spirePort)},
	}
	const clients, window, rounds = 16, 2 * time.Second, 3
	type result struct {
		n   int
		lat []time.Duration
	}
	totals := map[string]*result{}
	for range b.N {
		for range rounds {
			for _, tg := range targets {
				r := hammer(b, tg.url, clients, window)
				tot := totals[tg.name]
				if tot == nil {
					tot = &result{}
					totals[tg.name] = tot
				}
				tot.n += r.n
				tot.lat = append(tot.lat, r.lat...)
			}
		}
	}
	rate := func(name string) float64 { return float64(totals[name].n) / (float64(b.N*rounds) * window.Seconds()) }
	p99 := func(name string) time.Duration {
		l := totals[name].lat
		slices.Sort(l)
		return l[len(l)*99/100]
	}
	b.ReportMetric(rate("arbor"), "arbor_req/s")
	b.ReportMetric(rate("spire"), "spire_req/s")
	b.ReportMetric(rate("arbor")/rate("spire"), "req/s_ratio")
	b.ReportMetric(float64(p99("arbor").Microseconds())/1000, "arbor_p99_ms")
	b.ReportMetric(float64(p99("spire").Microseconds())/1000, "spire_p99_ms")
	b.ReportMetric(float64(p99("arbor"))/float64(p99("spire")), "p99_ratio")
}

type hammerResult struct {
	n   int
	lat []time.Duration
}

// hammer GETs url from clients goroutines for d over keep-alive connections
// (certificates are not verified: the two endpoints are measured, not their
// authentication, which the tests check).
func hammer(b *testing.B, url string, clients int, d time.Duration) hammerResult {
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, MaxIdleConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var mu sync.Mutex
	var out hammerResult
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			var lat []time.Duration
			for time.Now().Before(deadline) {
				start := time.Now()
				resp, err := c.Get(url)
				if err != nil {
					b.Errorf("GET %s: %v", url, err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("GET %s: %s", url, resp.Status)
					return
				}
				lat = append(lat, time.Since(start))
			}
			mu.Lock()
			out.n += len(lat)
			out.lat = append(out.lat, lat...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}
