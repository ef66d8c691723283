// Command load simulates SPIRE agents against a server implementing the
// SPIRE server API — arbor or spire-server — and reports throughput, latency
// per RPC, errors by status code and the server's RSS and CPU.
//
//	go run ./test/load --admin-socket /path/admin.sock --server-addr 127.0.0.1:8081 \
//	    --agents 20 --entries 10000 --interval 5s --duration 60s --server-pid $(pidof arbor)
//
// It creates join tokens and entries through the admin socket, attests every
// agent, waits until each sees its entries, then runs every agent's loop:
// sync, BatchNewX509SVID for its entries, NewJWTSVID. See docs/performance.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/test/load/loadgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

// output is what --output json prints.
type output struct {
	Setup *loadgen.SetupReport `json:"setup"`
	Load  *loadgen.Report      `json:"load"`
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// errFailures is returned when the run saw errors, so scripts can tell.
var errFailures = errors.New("the server answered some calls with errors")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg      loadgen.Config
		load     = loadgen.Load{Name: "load"}
		td       = fs.String("trust-domain", "example.org", "trust domain of the server")
		shape    = fs.String("shape", "unix", "selector shape of seeded entries: unix (1 selector), k8s (3), mixed")
		parent   = fs.String("parenting", "direct", "direct: entries parented to agent IDs; alias: to node aliases shared by --agents-per-alias agents")
		format   = fs.String("output", "text", "text or json")
		progress = fs.Duration("progress", 2*time.Second, "progress line interval on stderr (0: none)")
		cpuProf  = fs.String("cpuprofile", "", "write the load generator's CPU profile of the load phase to this file")
		heapProf = fs.String("memprofile", "", "write the load generator's heap profile after the load phase to this file")
		gogc     = fs.Int("gogc", 0, "the load generator's GOGC (0: the environment's): a larger value spends less of the shared CPU on its own garbage collection")
	)
	fs.StringVar(&cfg.AdminSocket, "admin-socket", "", "server admin API Unix socket (required)")
	fs.StringVar(&cfg.ServerAddr, "server-addr", "127.0.0.1:8081", "server agent API address (TLS)")
	fs.IntVar(&cfg.Agents, "agents", 10, "number of simulated agents")
	fs.IntVar(&cfg.Entries, "entries", 1000, "total registration entries to seed")
	fs.IntVar(&cfg.EntriesPerAgent, "entries-per-agent", 10, "entries each agent (or alias group) is authorized for")
	fs.IntVar(&cfg.OtherParents, "other-parents", 1000, "never-connecting parents the remaining entries are spread over")
	fs.IntVar(&cfg.SeedConcurrency, "seed-concurrency", 2, "BatchCreateEntry calls in flight while seeding")
	fs.IntVar(&cfg.SetupConcurrency, "setup-concurrency", 8, "join tokens, attestations and warm-up syncs in flight during setup")
	fs.IntVar(&cfg.AgentsPerAlias, "agents-per-alias", 10, "agents sharing one node alias (--parenting alias)")
	fs.IntVar(&cfg.ServerPID, "server-pid", 0, "local server pid whose RSS and CPU are read from /proc")
	fs.DurationVar(&cfg.WarmupTimeout, "warmup-timeout", 2*time.Minute, "how long agents may wait to see their entries after seeding")
	fs.DurationVar(&load.Interval, "interval", 5*time.Second, "time between two iterations of one agent (0: back to back)")
	fs.DurationVar(&load.Duration, "duration", 30*time.Second, "how long the load runs (0: only --iterations bounds it)")
	fs.IntVar(&load.Iterations, "iterations", 0, "iterations per agent (0: only --duration bounds it)")
	fs.BoolVar(&load.Sync, "sync", true, "sync authorized entries every iteration")
	fs.BoolVar(&load.X509, "x509", true, "request an X509-SVID for each entry every iteration")
	fs.IntVar(&load.X509Batch, "x509-batch", 50, "SVIDs per BatchNewX509SVID call")
	fs.IntVar(&load.JWT, "jwt", 1, "JWT-SVIDs per iteration")
	fs.IntVar(&load.Workers, "workers", 256, "iterations in flight with --interval: one dispatcher staggers the agents over the interval")
	fs.BoolVar(&load.PerAgentGoroutines, "per-agent-goroutines", false, "one goroutine and timer per agent instead of the dispatcher and workers")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if cfg.TrustDomain, err = spiffeid.TrustDomainFromString(*td); err != nil {
		return fmt.Errorf("--trust-domain: %w", err)
	}
	cfg.Shape, cfg.Parenting = loadgen.Shape(*shape), loadgen.Parenting(*parent)
	if *progress > 0 {
		cfg.Progress, cfg.ProgressEvery = stderr, *progress
	}
	if *gogc != 0 {
		debug.SetGCPercent(*gogc)
	}
	if *format != "text" && *format != "json" {
		return fmt.Errorf("--output %q: want text or json", *format)
	}
	gen, err := loadgen.New(cfg)
	if err != nil {
		return err
	}
	defer gen.Close()
	setup, err := gen.Setup(ctx)
	if err != nil {
		return err
	}
	if *format == "text" {
		setup.WriteText(stdout)
	}
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	rep, err := gen.Run(ctx, load)
	if *cpuProf != "" {
		pprof.StopCPUProfile()
	}
	if err != nil {
		return err
	}
	if *heapProf != "" {
		if err := writeHeapProfile(*heapProf); err != nil {
			return err
		}
	}
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(output{Setup: setup, Load: rep}); err != nil {
			return err
		}
	} else if err := rep.WriteText(stdout); err != nil {
		return err
	}
	if setup.Errors+rep.Errors > 0 {
		return fmt.Errorf("%w: %d", errFailures, setup.Errors+rep.Errors)
	}
	return nil
}
