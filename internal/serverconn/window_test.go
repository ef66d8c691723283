package serverconn

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// pingCounter parses the HTTP/2 frames a server reads from its clients
// (plaintext here) and counts the PINGs they start (not ACKs).
type pingCounter struct {
	mu    sync.Mutex
	pings int
}

type sniffListener struct {
	net.Listener
	c *pingCounter
}

func (l sniffListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sniffConn{Conn: conn, c: l.c, skip: len("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")}, nil
}

type sniffConn struct {
	net.Conn
	c    *pingCounter
	skip int // client preface bytes still to skip
	buf  []byte
}

func (s *sniffConn) Read(p []byte) (int, error) {
	n, err := s.Conn.Read(p)
	b := p[:n]
	if s.skip > 0 {
		k := min(s.skip, len(b))
		s.skip -= k
		b = b[k:]
	}
	s.buf = append(s.buf, b...)
	for len(s.buf) >= 9 {
		size := int(s.buf[0])<<16 | int(s.buf[1])<<8 | int(s.buf[2])
		if len(s.buf) < 9+size {
			break
		}
		if s.buf[3] == 0x6 && s.buf[4]&0x1 == 0 { // PING, not an ACK
			s.c.mu.Lock()
			s.c.pings++
			s.c.mu.Unlock()
		}
		s.buf = s.buf[9+size:]
	}
	return n, err
}

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
			counter := &pingCounter{}
			srv := grpc.NewServer()
			healthpb.RegisterHealthServer(srv, health.NewServer())
			go srv.Serve(sniffListener{l, counter})
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
			counter.mu.Lock()
			pings := counter.pings
			counter.mu.Unlock()
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
