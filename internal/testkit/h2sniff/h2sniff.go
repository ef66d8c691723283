// Package h2sniff counts the HTTP/2 frames one side of a connection reads,
// for tests that check what a gRPC peer sends on the wire (after TLS, or on
// a plaintext connection).
package h2sniff

import (
	"net"
	"sync"
)

// Frame types (RFC 9113, section 6) and the PING ACK flag.
const (
	FramePing         = 0x6
	FrameWindowUpdate = 0x8
	flagAck           = 0x1
)

// clientPreface opens every client's side of an HTTP/2 connection.
const clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// Tally counts frames over one or more connections. The zero value is
// ready to use.
type Tally struct {
	mu      sync.Mutex
	pings   int // PINGs the peer started (not its ACKs)
	updates int // WINDOW_UPDATEs
}

// Pings returns the PINGs read that were not ACKs.
func (t *Tally) Pings() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pings
}

// WindowUpdates returns the WINDOW_UPDATE frames read.
func (t *Tally) WindowUpdates() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.updates
}

// conn parses what is read from the wrapped connection.
type conn struct {
	net.Conn
	t    *Tally
	skip int
	buf  []byte
}

// Wrap returns c, counting in t every frame read from it. A server's side
// reads the client's preface first: fromClient skips it.
func Wrap(c net.Conn, t *Tally, fromClient bool) net.Conn {
	w := &conn{Conn: c, t: t}
	if fromClient {
		w.skip = len(clientPreface)
	}
	return w
}

func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	b := p[:n]
	if c.skip > 0 {
		k := min(c.skip, len(b))
		c.skip -= k
		b = b[k:]
	}
	c.buf = append(c.buf, b...)
	for len(c.buf) >= 9 {
		size := int(c.buf[0])<<16 | int(c.buf[1])<<8 | int(c.buf[2])
		if len(c.buf) < 9+size {
			break
		}
		typ, flags := c.buf[3], c.buf[4]
		c.t.mu.Lock()
		switch {
		case typ == FramePing && flags&flagAck == 0:
			c.t.pings++
		case typ == FrameWindowUpdate:
			c.t.updates++
		}
		c.t.mu.Unlock()
		c.buf = c.buf[9+size:]
	}
	return n, err
}

// Listener wraps every connection l accepts (a server's side).
type Listener struct {
	net.Listener
	Tally *Tally
}

// Accept implements net.Listener.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c, l.Tally, true), nil
}
