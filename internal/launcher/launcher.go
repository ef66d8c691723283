// Package launcher runs every server of a topology on this machine — what
// `arbor up` does — printing the tree as it comes up and a status line per
// tier while it runs.
package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/arborid/arbor/internal/server"
	"github.com/arborid/arbor/topology"
)

// Node is one server to run.
type Node struct {
	Name   string
	Parent string
	Config server.Config
}

// Options configures Run.
type Options struct {
	// Out receives the tree and status lines.
	Out io.Writer
	// StatusEvery is the status line interval; zero means 30s.
	StatusEvery time.Duration
	// Logger for the servers; nil discards.
	Logger *slog.Logger
}

// Run starts every node, waits until each is ready, prints the tree, then
// prints status lines until ctx ends, and stops every node.
func Run(ctx context.Context, file *topology.File, nodes []Node, opts Options) error {
	if len(nodes) == 0 {
		return errors.New("launcher: the topology declares no servers")
	}
	every := opts.StatusEvery
	if every == 0 {
		every = 30 * time.Second
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type running struct {
		node Node
		srv  *server.Server
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		runErr  error
		started []running
	)
	fail := func(err error) {
		mu.Lock()
		if runErr == nil {
			runErr = err
		}
		mu.Unlock()
		cancel()
	}
	fmt.Fprintf(opts.Out, "arbor up: trust domain %s, %d server(s) from %s\n", file.TrustDomain, len(nodes), file.Path)
	for _, n := range nodes {
		cfg := n.Config
		if cfg.Logger == nil {
			cfg.Logger = opts.Logger
		}
		fmt.Fprintf(opts.Out, "  starting %s ...\n", n.Name)
		srv, err := server.New(ctx, cfg)
		if err == nil {
			err = srv.Listen()
		}
		if err != nil {
			cancel()
			wg.Wait()
			return fmt.Errorf("launcher: server %q: %w", n.Name, err)
		}
		wg.Go(func() {
			if err := srv.Run(ctx); err != nil {
				fail(fmt.Errorf("launcher: server %q: %w", n.Name, err))
			}
		})
		select {
		case <-srv.Ready():
		case <-ctx.Done():
			wg.Wait()
			return runErr
		}
		started = append(started, running{n, srv})
	}
	fmt.Fprintln(opts.Out, "\ntopology:")
	for _, r := range started {
		depth := 0
		for p := r.node.Parent; p != ""; {
			depth++
			next := ""
			for _, o := range started {
				if o.node.Name == p {
					next = o.node.Parent
				}
			}
			p = next
		}
		cert, _ := r.srv.CA().X509CA()
		fmt.Fprintf(opts.Out, "%s%s  listen=%s admin=%s CA until %s\n", strings.Repeat("  ", depth+1), r.node.Name,
			r.srv.AgentAddr(), r.srv.AdminSocket(), cert.NotAfter.UTC().Format(time.RFC3339))
	}
	fmt.Fprintln(opts.Out, "\nready; press Ctrl-C to stop")
	t := time.NewTicker(every)
	defer t.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-t.C:
			for _, r := range started {
				cert, _ := r.srv.CA().X509CA()
				seq := uint64(0)
				if b := r.srv.Bundles().Own(); b != nil {
					seq = b.SequenceNumber
				}
				fmt.Fprintf(opts.Out, "[%s] %s: CA expires in %s, bundle sequence %d\n", time.Now().Format("15:04:05"),
					r.node.Name, time.Until(cert.NotAfter).Round(time.Minute), seq)
			}
		}
	}
	fmt.Fprintln(opts.Out, "stopping ...")
	wg.Wait()
	if runErr == nil {
		fmt.Fprintln(opts.Out, "stopped")
	}
	return runErr
}
