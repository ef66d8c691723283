// Package serverconn dials the servers of one tier from an agent (or a
// downstream tier's parent link) so that the caller fails over between
// them: given several addresses, or one DNS name with several records, the
// connection stays on one server while it answers and moves to another when
// it fails, and a Tracker says which server answered last.
//
// The addresses go to gRPC's pick_first balancer in a per-connection random
// order (agents spread over the replicas instead of all picking the first);
// pick_first keeps one subchannel while it is READY and, when it breaks,
// tries the others in turn, with gRPC's jittered reconnect backoff. Nothing
// else changes for the caller: the replicas of a tier share the attested
// node state, so an agent never attests again to move.
package serverconn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// serviceConfig picks the first reachable address of a shuffled list and
// sticks to it.
const serviceConfig = `{"loadBalancingConfig":[{"pick_first":{"shuffleAddressList":true}}]}`

// scheme names the manual resolver of a multi-address connection (each
// connection has its own, registered on it only).
const scheme = "arbor-servers"

// Split parses a server address flag or attribute value: one host:port, or
// several separated by commas (spaces around them ignored). Each must be a
// host:port; duplicates are refused.
func Split(s string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if err := Check(a); err != nil {
			return nil, err
		}
		if seen[a] {
			return nil, fmt.Errorf("server address %s is listed twice", a)
		}
		seen[a] = true
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, errors.New("no server address given")
	}
	return out, nil
}

// Check reports whether a is a host:port with a non-empty host and port.
func Check(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("server address %q is not host:port", a)
	}
	return nil
}

// Dial returns a client connection to addrs (at least one). One address is
// dialed through gRPC's DNS resolver, so a name with several records fails
// over between them; several are handed to the balancer as they are. t,
// when not nil, learns the address of the server each call reached.
func Dial(addrs []string, t *Tracker, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	if len(addrs) == 0 {
		return nil, errors.New("serverconn: no server address")
	}
	opts = append([]grpc.DialOption{grpc.WithDefaultServiceConfig(serviceConfig)}, opts...)
	if t != nil {
		opts = append(opts, grpc.WithChainUnaryInterceptor(t.unary), grpc.WithChainStreamInterceptor(t.stream))
	}
	target := "dns:///" + addrs[0]
	if len(addrs) > 1 {
		r := manual.NewBuilderWithScheme(scheme)
		state := resolver.State{}
		for _, a := range addrs {
			state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
		}
		r.InitialState(state)
		opts = append(opts, grpc.WithResolvers(r))
		target = scheme + ":///" + strings.Join(addrs, ",")
	}
	cc, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("serverconn: connecting to %s: %w", strings.Join(addrs, ", "), err)
	}
	return cc, nil
}

// clientWindow is the receive window FixedWindow gives a connection, per
// stream and per connection: a page of a sync (the largest message an
// agent receives) arrives without waiting for a window update, and 4 MiB
// per round trip is 40 MB/s on a 100 ms link.
const clientWindow = 4 << 20

// FixedWindow returns the dial options of a fixed receive window. With
// grpc's default dynamic window a client answers nearly every response's
// DATA frame with a window update and a bandwidth-probing PING, which the
// server must read and acknowledge: an extra exchange of frames per call on
// every agent's connection, for a probe that only pays off for bulk
// transfers on long links. Agents and downstream servers make many small
// calls; they dial with these.
func FixedWindow() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithStaticStreamWindowSize(clientWindow), grpc.WithStaticConnWindowSize(clientWindow)}
}

// Tracker records the server (its address as dialed, resolved: ip:port)
// that the latest successful call reached, and calls OnChange when it
// differs from the one before. The zero value is ready to use.
type Tracker struct {
	// OnChange, when set before the first call, runs (outside the lock)
	// each time the current server changes; from is "" for the first one.
	OnChange func(from, to string)

	mu  sync.Mutex
	cur string
}

// Current is the address of the server the latest successful call
// reached, "" before any.
func (t *Tracker) Current() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cur
}

func (t *Tracker) observe(p *peer.Peer) {
	if p == nil || p.Addr == nil {
		return
	}
	addr := p.Addr.String()
	t.mu.Lock()
	from := t.cur
	t.cur = addr
	t.mu.Unlock()
	if from != addr && t.OnChange != nil {
		t.OnChange(from, addr)
	}
}

func (t *Tracker) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	var p peer.Peer
	err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Peer(&p))...)
	if err == nil {
		t.observe(&p)
	}
	return err
}

func (t *Tracker) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, err
	}
	return &trackedStream{ClientStream: cs, t: t}, nil
}

// trackedStream observes its peer once the server has answered (its first
// header or message): the transport is chosen by then.
type trackedStream struct {
	grpc.ClientStream
	t    *Tracker
	once sync.Once
}

func (s *trackedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil {
		s.once.Do(func() {
			if p, ok := peer.FromContext(s.ClientStream.Context()); ok {
				s.t.observe(p)
			}
		})
	}
	return err
}
