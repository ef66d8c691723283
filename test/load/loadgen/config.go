// Package loadgen simulates SPIRE agents against any server that implements
// the SPIRE server API (arbor or spire-server): it seeds registration entries
// and join tokens through the admin socket, attests agents over TLS, and then
// drives the agent RPCs (SyncAuthorizedEntries, BatchNewX509SVID,
// NewJWTSVID) while it records latency, throughput, errors by status code and
// the server process's memory and CPU.
//
// A run has two steps: Setup seeds and attests once, then Run may be called
// several times with different loads (sync only, issuance, fewer agents) on
// the same seeded server.
package loadgen

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Shape names how the seeded entries' selectors look.
type Shape string

// Selector shapes.
const (
	// ShapeUnix gives each entry one selector, unix:uid:<n>.
	ShapeUnix Shape = "unix"
	// ShapeK8s gives each entry three: k8s:ns, k8s:sa and k8s:pod-label.
	ShapeK8s Shape = "k8s"
	// ShapeMixed alternates unix and k8s entries.
	ShapeMixed Shape = "mixed"
)

// Parenting names how the simulated agents' entries are parented.
type Parenting string

// Parentings.
const (
	// ParentDirect parents each agent's entries to its agent ID.
	ParentDirect Parenting = "direct"
	// ParentAlias creates each join token with a node alias shared by a
	// group of agents and parents the group's entries to the alias, so the
	// server must resolve aliases to authorize them.
	ParentAlias Parenting = "alias"
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("loadgen: bad configuration")

// Config says where the server is and what to seed. Zero values are
// documented per field. It must not be modified after New.
type Config struct {
	// AdminSocket is the server's admin API Unix socket. Required.
	AdminSocket string
	// ServerAddr is the host:port agents dial (TLS), or the comma-separated
	// host:ports of several servers of one tier (replicas): each agent stays
	// on one and moves to another when it fails. Required.
	ServerAddr string
	// TrustDomain of the server. Required.
	TrustDomain spiffeid.TrustDomain

	// Agents is how many agents are attested; zero means 1.
	Agents int
	// Entries is the total number of registration entries seeded. Entries
	// beyond what the simulated agents own are spread over OtherParents
	// agent IDs that never connect, as the rest of a large fleet would be.
	Entries int
	// EntriesPerAgent is how many entries each simulated agent (or alias
	// group) is authorized for; zero means 10. It is lowered when Entries is
	// too small to give every agent that many.
	EntriesPerAgent int
	// OtherParents is the number of never-connecting parents; zero means 1000.
	OtherParents int
	// Shape of the selectors; "" means ShapeUnix.
	Shape Shape
	// Parenting of the agents' entries; "" means ParentDirect.
	Parenting Parenting
	// AgentsPerAlias is the group size for ParentAlias; zero means 10.
	AgentsPerAlias int
	// SeedBatch is the number of entries per BatchCreateEntry; zero means 500.
	SeedBatch int
	// SeedConcurrency is how many BatchCreateEntry calls are in flight;
	// zero means 2.
	SeedConcurrency int
	// SetupConcurrency is how many join tokens, attestations and warm-up
	// syncs are in flight during Setup; zero means 8.
	SetupConcurrency int

	// ServerPID, when non-zero, is a local process whose RSS and CPU time are
	// read from /proc.
	ServerPID int
	// Progress receives a progress line every ProgressEvery while a load
	// runs; nil disables it.
	Progress      io.Writer
	ProgressEvery time.Duration // zero: 2s
	// WarmupTimeout bounds the wait for every agent to see its entries after
	// seeding (servers with a periodically reloaded cache lag); zero: 2m.
	WarmupTimeout time.Duration
	// RPCTimeout bounds one RPC; zero: 60s.
	RPCTimeout time.Duration
}

// Load is one measured phase. Either Duration or Iterations bounds it.
type Load struct {
	// Name labels the phase in reports.
	Name string
	// Agents is how many of the attested agents take part; zero means all.
	Agents int
	// Interval between the starts of two iterations of one agent; zero
	// runs iterations back to back.
	Interval time.Duration
	// Duration bounds the phase; zero means only Iterations bounds it.
	Duration time.Duration
	// Iterations bounds each agent's iterations; zero means only Duration.
	Iterations int
	// Sync makes every iteration sync the agent's authorized entries.
	Sync bool
	// X509 makes every iteration request an X509-SVID for each of the
	// agent's entries with BatchNewX509SVID.
	X509 bool
	// X509Batch is the number of SVIDs per BatchNewX509SVID; zero means 50.
	X509Batch int
	// JWT is how many JWT-SVIDs (NewJWTSVID) each iteration requests.
	JWT int
	// Workers bounds the iterations in flight when Interval is set: one
	// dispatcher staggers the agents over the interval and hands them to
	// this many goroutines; zero means 256.
	Workers int
	// PerAgentGoroutines runs one goroutine with its own timer per agent
	// instead (always so when Interval is zero: back to back).
	PerAgentGoroutines bool
}

func (c *Config) withDefaults() (Config, error) {
	out := *c
	if out.AdminSocket == "" || out.ServerAddr == "" || out.TrustDomain.IsZero() {
		return out, fmt.Errorf("%w: admin socket, server address and trust domain are required", ErrConfig)
	}
	if out.Agents <= 0 {
		out.Agents = 1
	}
	if out.EntriesPerAgent <= 0 {
		out.EntriesPerAgent = 10
	}
	if out.OtherParents <= 0 {
		out.OtherParents = 1000
	}
	if out.AgentsPerAlias <= 0 {
		out.AgentsPerAlias = 10
	}
	if out.SeedBatch <= 0 {
		out.SeedBatch = 500
	}
	if out.SeedConcurrency <= 0 {
		out.SeedConcurrency = 2
	}
	if out.SetupConcurrency <= 0 {
		out.SetupConcurrency = 8
	}
	if out.ProgressEvery <= 0 {
		out.ProgressEvery = 2 * time.Second
	}
	if out.WarmupTimeout <= 0 {
		out.WarmupTimeout = 2 * time.Minute
	}
	if out.RPCTimeout <= 0 {
		out.RPCTimeout = 60 * time.Second
	}
	switch out.Shape {
	case "":
		out.Shape = ShapeUnix
	case ShapeUnix, ShapeK8s, ShapeMixed:
	default:
		return out, fmt.Errorf("%w: selector shape %q (want unix, k8s or mixed)", ErrConfig, out.Shape)
	}
	switch out.Parenting {
	case "":
		out.Parenting = ParentDirect
	case ParentDirect, ParentAlias:
	default:
		return out, fmt.Errorf("%w: parenting %q (want direct or alias)", ErrConfig, out.Parenting)
	}
	if out.Entries < 0 {
		return out, fmt.Errorf("%w: entries %d is negative", ErrConfig, out.Entries)
	}
	return out, nil
}

// groups is the number of entry owners among the simulated agents: one per
// agent, or one per alias group.
func (c *Config) groups() int {
	if c.Parenting == ParentAlias {
		return (c.Agents + c.AgentsPerAlias - 1) / c.AgentsPerAlias
	}
	return c.Agents
}

// perGroup is how many entries each owner gets, limited by Entries.
func (c *Config) perGroup() int {
	g := c.groups()
	if g == 0 {
		return 0
	}
	return min(c.EntriesPerAgent, c.Entries/g)
}
