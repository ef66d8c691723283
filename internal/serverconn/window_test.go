package serverconn

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/arborid/arbor/internal/testkit/h2sniff"
)

// Calls over a FixedWindow connection carry no client PINGs; over grpc's
// default (dynamic) window nearly every response draws one, which the
// server then has to read and answer.
func TestFixedWindowSendsNoPings(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opts     []grpc.DialOption
		wantNone bool
	}{
		{"default window", nil, false},
		{"fixed window", FixedWindow(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			tally := &h2sniff.Tally{}
			srv := grpc.NewServer()
			healthpb.RegisterHealthServer(srv, health.NewServer())
			go srv.Serve(h2sniff.Listener{Listener: l, Tally: tally})
			t.Cleanup(srv.Stop)

			cc, err := Dial([]string{l.Addr().String()}, nil, append(tc.opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cc.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			client := healthpb.NewHealthClient(cc)
			const calls = 50
			for range calls {
				if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
					t.Fatal(err)
				}
			}
			pings := tally.Pings()
			if tc.wantNone && pings != 0 {
				t.Fatalf("the client sent %d PINGs over %d calls, want none", pings, calls)
			}
			if !tc.wantNone && pings < calls/2 {
				// The control: if the default window stops probing, or the
				// counter stops seeing frames, this test checks nothing.
				t.Fatalf("with grpc's default window the client sent %d PINGs over %d calls, want about one per call", pings, calls)
			}
			t.Logf("%d PINGs over %d calls", pings, calls)
		})
	}
}
