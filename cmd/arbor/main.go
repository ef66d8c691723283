// Command arbor runs and administers a hierarchical SPIFFE identity plane:
// the root, regional and leaf server tiers of a trust domain described in one
// topology file, their agents, and the admin CLI. Cobra wiring lives here
// only; every command calls into a package.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "arbor: %v\n", err)
		os.Exit(1)
	}
}
