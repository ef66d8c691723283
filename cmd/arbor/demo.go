package main

import (
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/cli/demo"
)

func newDemoWorkloadCommand() *cobra.Command {
	var socket, listen, peer, peerID, jwtFrom, jwtFromID, statusFile string
	var every time.Duration
	cmd := &cobra.Command{
		Use:    "demo-workload",
		Short:  "Run the demo workload arbor up starts on each leaf",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pid, err := spiffeid.FromString(peerID)
			if err != nil {
				return err
			}
			jid, err := spiffeid.FromString(jwtFromID)
			if err != nil {
				return err
			}
			abs, err := filepath.Abs(socket)
			if err != nil {
				return err
			}
			log, err := newLogger(os.Stderr, "info", "text")
			if err != nil {
				return err
			}
			return demo.Run(cmd.Context(), demo.Config{
				WorkloadAPIAddr: "unix://" + abs, Listen: listen, Peer: peer, PeerID: pid,
				JWTFrom: jwtFrom, JWTFromID: jid, Every: every, StatusFile: statusFile, Logger: log,
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&socket, "socket-path", "", "Workload API socket")
	f.StringVar(&listen, "listen", "127.0.0.1:0", "mTLS listen address")
	f.StringVar(&peer, "peer", "", "address of the workload to keep an mTLS connection to")
	f.StringVar(&peerID, "peer-id", "", "its SPIFFE ID")
	f.StringVar(&jwtFrom, "jwt-from", "", "address of the workload to get a JWT-SVID from")
	f.StringVar(&jwtFromID, "jwt-from-id", "", "its SPIFFE ID")
	f.StringVar(&statusFile, "status-file", "", "where to write the latest check results (JSON)")
	f.DurationVar(&every, "every", 5*time.Second, "check interval")
	return cmd
}
