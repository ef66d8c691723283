package launcher

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// metrics is one scrape of a server's /metrics (arbor_ series only).
type metrics struct {
	// sums is each metric summed over its labels.
	sums map[string]float64
	// series are the samples of each metric with their labels.
	series map[string][]sample
}

type sample struct {
	labels map[string]string
	value  float64
}

// sum is the metric summed over its labels (zero when absent).
func (m *metrics) sum(name string) float64 { return m.sums[name] }

// has reports whether the scrape holds the metric.
func (m *metrics) has(name string) bool { _, ok := m.sums[name]; return ok }

// value sums the samples of name whose labels include every key and value
// of match (pairs: "trust_domain", "partner.example"); ok is false when no
// sample matches.
func (m *metrics) value(name string, match ...string) (v float64, ok bool) {
	for _, s := range m.series[name] {
		all := true
		for i := 0; i+1 < len(match); i += 2 {
			if s.labels[match[i]] != match[i+1] {
				all = false
				break
			}
		}
		if all {
			v, ok = v+s.value, true
		}
	}
	return v, ok
}

// scrape reads a server's /metrics.
func scrape(ctx context.Context, addr string) (*metrics, error) {
	if addr == "" {
		return nil, errors.New("no health listener")
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics answered %s", resp.Status)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics reads the Prometheus text format, keeping the arbor_ series.
func parseMetrics(r io.Reader) (*metrics, error) {
	m := &metrics{sums: map[string]float64{}, series: map[string][]sample{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "arbor_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		name, labels, ok := parseSeries(line[:i])
		if !ok {
			continue
		}
		m.sums[name] += v
		m.series[name] = append(m.series[name], sample{labels: labels, value: v})
	}
	return m, sc.Err()
}

// parseSeries splits `name{k="v",...}` into the name and its labels; label
// values may hold the format's escapes (\\, \", \n).
func parseSeries(s string) (name string, labels map[string]string, ok bool) {
	j := strings.IndexByte(s, '{')
	if j < 0 {
		return s, nil, true
	}
	name, rest := s[:j], s[j+1:]
	labels = map[string]string{}
	for {
		rest = strings.TrimLeft(rest, ", ")
		if strings.HasPrefix(rest, "}") {
			return name, labels, true
		}
		eq := strings.Index(rest, `="`)
		if eq < 0 {
			return "", nil, false
		}
		key := rest[:eq]
		rest = rest[eq+2:]
		var val strings.Builder
		closed := false
		for k := 0; k < len(rest); k++ {
			c := rest[k]
			if c == '\\' && k+1 < len(rest) {
				k++
				switch rest[k] {
				case 'n':
					val.WriteByte('\n')
				default:
					val.WriteByte(rest[k])
				}
				continue
			}
			if c == '"' {
				rest, closed = rest[k+1:], true
				break
			}
			val.WriteByte(c)
		}
		if !closed {
			return "", nil, false
		}
		labels[key] = val.String()
	}
}
