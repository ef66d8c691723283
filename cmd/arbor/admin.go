package main

import "github.com/spf13/cobra"

// adminCommands returns the admin CLI commands (entry, token, bundle, agent,
// healthcheck) that talk to a server's admin socket.
func adminCommands() []*cobra.Command { return nil }
