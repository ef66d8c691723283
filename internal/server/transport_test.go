package server_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/arborid/arbor/internal/testkit/h2sniff"
)

// sniffCreds is TLS whose handshaken connection counts the frames the
// client reads in tally.
type sniffCreds struct {
	credentials.TransportCredentials
	tally *h2sniff.Tally
}

func (c sniffCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		return nil, nil, err
	}
	return h2sniff.Wrap(conn, c.tally, false), info, nil
}

// An agent's call costs the server one request and one response: it does
// not answer each request with a window update and a bandwidth-probing PING
// (grpc's default dynamic window does, and then reads the client's ACK),
// which on a server of thousands of agents is an extra exchange of frames
// and wake-ups per sync.
func TestAgentCallsCarryNoServerPings(t *testing.T) {
	h := startServer(t)
	agent := h.newAgent()
	for i := range 5 {
		h.createEntry(&types.Entry{ParentId: protoID(agent.ID.Path()), SpiffeId: protoID(fmt.Sprintf("/w/%d", i)),
			Selectors: []*types.Selector{sel("unix", fmt.Sprintf("uid:%d", i))}})
	}
	tally := &h2sniff.Tally{}
	tc := h.clientTLS()
	tc.GetClientCertificate = tlsconfig.GetClientCertificate(svidSource{agent})
	conn, err := grpc.NewClient(h.cfg.ListenAddr, grpc.WithTransportCredentials(sniffCreds{credentials.NewTLS(tc), tally}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := entryv1.NewEntryClient(conn)
	sync := func() {
		t.Helper()
		stream := must(client.SyncAuthorizedEntries(ctxT(t)))(t)
		must(0, stream.Send(&entryv1.SyncAuthorizedEntriesRequest{}))(t)
		resp := must(stream.Recv())(t)
		if got := len(resp.EntryRevisions) + len(resp.Entries); got != 5 {
			t.Fatalf("sync returned %d entries, want 5", got)
		}
		stream.CloseSend()
		if _, err := stream.Recv(); err != io.EOF {
			t.Fatalf("after CloseSend: %v, want EOF", err)
		}
	}
	sync() // the connection's set-up frames
	pings0, updates0 := tally.Pings(), tally.WindowUpdates()
	const calls = 50
	for range calls {
		sync()
	}
	pings, updates := tally.Pings(), tally.WindowUpdates()
	if pings != pings0 {
		t.Errorf("the server sent %d PINGs over %d syncs, want none", pings-pings0, calls)
	}
	if updates-updates0 > calls/10 {
		t.Errorf("the server sent %d WINDOW_UPDATEs over %d syncs, want at most %d", updates-updates0, calls, calls/10)
	}
}
