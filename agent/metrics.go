package agent

import "github.com/prometheus/client_golang/prometheus"

// metrics are the agent's Prometheus metrics (arbor_agent_*).
type metrics struct {
	entries         prometheus.Gauge
	svids           prometheus.Gauge
	minted          prometheus.Counter
	jwtMinted       prometheus.Counter
	syncDuration    prometheus.Histogram
	syncFailures    prometheus.Counter
	connected       prometheus.Gauge
	agentSVIDExpiry prometheus.Gauge
	requests        *prometheus.CounterVec
	sdsResponses    prometheus.Counter
	server          *prometheus.GaugeVec
	serverChanges   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		entries: prometheus.NewGauge(prometheus.GaugeOpts{Name: "arbor_agent_entries", Help: "Registration entries authorized for this agent."}),
		svids:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "arbor_agent_x509_svids", Help: "X509-SVIDs in the agent's cache."}),
		minted:  prometheus.NewCounter(prometheus.CounterOpts{Name: "arbor_agent_x509_svids_minted_total", Help: "X509-SVIDs minted for workloads."}),
		jwtMinted: prometheus.NewCounter(prometheus.CounterOpts{Name: "arbor_agent_jwt_svids_minted_total",
			Help: "JWT-SVIDs minted for workloads (cache misses)."}),
		syncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "arbor_agent_sync_duration_seconds",
			Help: "Time of a successful sync of entries, bundles and due SVIDs.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
		syncFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "arbor_agent_sync_failures_total", Help: "Syncs that failed."}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "arbor_agent_server_connected",
			Help: "1 when the last sync with the server succeeded, else 0."}),
		agentSVIDExpiry: prometheus.NewGauge(prometheus.GaugeOpts{Name: "arbor_agent_svid_expiry_timestamp_seconds",
			Help: "When the agent's own X509-SVID expires (Unix time)."}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "arbor_agent_workload_api_requests_total",
			Help: "Workload API calls by method and gRPC code."}, []string{"method", "code"}),
		sdsResponses: prometheus.NewCounter(prometheus.CounterOpts{Name: "arbor_agent_sds_responses_total",
			Help: "Envoy SDS responses sent on streams (a rotation or bundle change sends one per stream it concerns)."}),
		server: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "arbor_agent_server_info",
			Help: "1 for the server (ip:port) the agent's latest successful call reached."}, []string{"address"}),
		serverChanges: prometheus.NewCounter(prometheus.CounterOpts{Name: "arbor_agent_server_changes_total",
			Help: "Times the agent moved to another server of its tier (failovers)."}),
	}
	reg.MustRegister(m.entries, m.svids, m.minted, m.jwtMinted, m.syncDuration, m.syncFailures, m.connected, m.agentSVIDExpiry,
		m.requests, m.sdsResponses, m.server, m.serverChanges)
	return m
}
