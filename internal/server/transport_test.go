package server_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// HTTP/2 frame types (RFC 9113, section 6) and the PING ACK flag.
const (
	frameWindowUpdate = 0x8
	framePing         = 0x6
	flagAck           = 0x1
)

// frameCounter parses the HTTP/2 frames a client reads (after TLS) and
// counts those the server sent of each type; pings counts only pings the
// server started (not its ACKs of the client's).
type frameCounter struct {
	mu      sync.Mutex
	buf     []byte
	pings   int
	updates int
}

func (f *frameCounter) feed(p []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.buf = append(f.buf, p...)
	for len(f.buf) >= 9 {
		n := int(f.buf[0])<<16 | int(f.buf[1])<<8 | int(f.buf[2])
		if len(f.buf) < 9+n {
			return
		}
		typ, flags := f.buf[3], f.buf[4]
		switch {
		case typ == framePing && flags&flagAck == 0:
			f.pings++
		case typ == frameWindowUpdate:
			f.updates++
		}
		f.buf = f.buf[9+n:]
	}
}

func (f *frameCounter) counts() (pings, updates int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pings, f.updates
}

// sniffConn hands everything the client reads to a frameCounter.
type sniffConn struct {
	net.Conn
	frames *frameCounter
}

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.frames.feed(p[:n])
	return n, err
}

// sniffCreds is TLS whose handshaken connection is a sniffConn.
type sniffCreds struct {
	credentials.TransportCredentials
	frames *frameCounter
}

func (c sniffCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		return nil, nil, err
	}
	return &sniffConn{Conn: conn, frames: c.frames}, info, nil
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
	frames := &frameCounter{}
	tc := h.clientTLS()
	tc.GetClientCertificate = tlsconfig.GetClientCertificate(svidSource{agent})
	conn, err := grpc.NewClient(h.cfg.ListenAddr, grpc.WithTransportCredentials(sniffCreds{credentials.NewTLS(tc), frames}))
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
	pings0, updates0 := frames.counts()
	const calls = 50
	for range calls {
		sync()
	}
	pings, updates := frames.counts()
	if pings != pings0 {
		t.Errorf("the server sent %d PINGs over %d syncs, want none", pings-pings0, calls)
	}
	if updates-updates0 > calls/10 {
		t.Errorf("the server sent %d WINDOW_UPDATEs over %d syncs, want at most %d", updates-updates0, calls, calls/10)
	}
}
