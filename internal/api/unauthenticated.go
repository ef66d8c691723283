package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Defaults of UnauthenticatedConfig.
const (
	// DefaultUnauthenticatedFirstMessageTimeout: spire-agent (and arbor's
	// agent) send their attestation params as soon as the stream is open;
	// the only wait before them is the agent's attestor collecting its
	// payload, from a file or a local metadata service. Ten seconds is a
	// wide margin for that and for a slow link, and short enough that
	// holding idle streams buys an attacker little.
	DefaultUnauthenticatedFirstMessageTimeout = 10 * time.Second
	// DefaultUnauthenticatedStreamTimeout bounds a whole attestation,
	// challenge rounds included: an exchange is one or two round trips, a
	// signature on each side and one datastore write, so a minute is
	// generous for a slow network, a hardware key or a busy datastore.
	DefaultUnauthenticatedStreamTimeout = 60 * time.Second
	// DefaultMaxUnauthenticatedStreams: an attestation holds its slot for
	// milliseconds, so 1024 at once is far above what a fleet booting
	// together needs, while 1024 idle streams cost the server one goroutine
	// and about 15 KiB each (TestUnauthenticatedIdleStreamsBounded in
	// internal/server measures it).
	DefaultMaxUnauthenticatedStreams = 1024
)

// UnauthenticatedConfig configures UnauthenticatedStreams. It must not be
// modified after NewUnauthenticatedStreams.
type UnauthenticatedConfig struct {
	// FirstMessageTimeout is how long a stream may stay open before its
	// first message has been read; zero means
	// DefaultUnauthenticatedFirstMessageTimeout.
	FirstMessageTimeout time.Duration
	// Timeout bounds the whole exchange from the stream's opening;
	// zero means DefaultUnauthenticatedStreamTimeout.
	Timeout time.Duration
	// MaxStreams caps such streams in flight across the server; zero means
	// DefaultMaxUnauthenticatedStreams.
	MaxStreams int
	// Logger; nil discards.
	Logger *slog.Logger
	// Registerer for metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// UnauthenticatedStreams bounds the streams that anyone may open before
// authenticating: the methods whose rule is RuleAnyone and that read a
// stream of client messages (today AttestAgent). Each such stream must send
// its first message within FirstMessageTimeout and finish within Timeout, or
// it ends with DeadlineExceeded; past MaxStreams in flight, new ones are
// refused with ResourceExhausted before any goroutine is started for them.
//
// It has two halves that a server installs together: TapHandle
// (grpc.InTapHandle) admits the stream and arms its bounds, and
// StreamInterceptor (first in grpc.ChainStreamInterceptor) notes the first
// message and counts a bound that ended the stream. A bound is enforced by
// expiring the stream's own context, the one the transport's reads and
// writes wait on: the handler's pending RecvMsg returns at once, grpc sends
// DeadlineExceeded, and no goroutine outlives the stream. (A context derived
// inside an interceptor could not do that: RecvMsg watches only the context
// the transport created, and a handler running in a second goroutine would
// double the goroutines an idle stream holds.)
type UnauthenticatedStreams struct {
	first, timeout time.Duration
	max            int
	log            *slog.Logger
	// bounded holds the full method names the bounds apply to.
	bounded map[string]bool

	mu        sync.Mutex // guards inFlight, saturated and refusedRun
	inFlight  int
	saturated bool
	// refusedRun counts the streams refused since the last time the
	// server reached its maximum.
	refusedRun int

	inFlightGauge prometheus.Gauge
	refused       prometheus.Counter
	timedOut      *prometheus.CounterVec
}

// NewUnauthenticatedStreams returns the limiter for the methods the rule table opens
// to anyone that take a client stream.
func NewUnauthenticatedStreams(cfg UnauthenticatedConfig) (*UnauthenticatedStreams, error) {
	if cfg.FirstMessageTimeout < 0 {
		return nil, fmt.Errorf("api: unauthenticated first message timeout %v is negative", cfg.FirstMessageTimeout)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("api: unauthenticated stream timeout %v is negative", cfg.Timeout)
	}
	if cfg.MaxStreams < 0 {
		return nil, fmt.Errorf("api: maximum unauthenticated streams %d is negative", cfg.MaxStreams)
	}
	u := &UnauthenticatedStreams{
		first:   cfg.FirstMessageTimeout,
		timeout: cfg.Timeout,
		max:     cfg.MaxStreams,
		log:     cfg.Logger,
		bounded: anyoneClientStreams(),
		inFlightGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "arbor_api_unauthenticated_streams_in_flight",
			Help: "Streams open before authentication (AttestAgent) in flight.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arbor_api_unauthenticated_streams_refused_total",
			Help: "Unauthenticated streams refused with ResourceExhausted because the server held its maximum.",
		}),
		timedOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arbor_api_unauthenticated_streams_timed_out_total",
			Help: "Unauthenticated streams ended with DeadlineExceeded, by the bound that ended them (first_message, exchange).",
		}, []string{"bound"}),
	}
	if u.first == 0 {
		u.first = DefaultUnauthenticatedFirstMessageTimeout
	}
	if u.timeout == 0 {
		u.timeout = DefaultUnauthenticatedStreamTimeout
	}
	if u.max == 0 {
		u.max = DefaultMaxUnauthenticatedStreams
	}
	if u.log == nil {
		u.log = slog.New(slog.DiscardHandler)
	}
	for _, b := range []bound{boundFirstMessage, boundExchange} {
		u.timedOut.WithLabelValues(b.String()) // export zeros, so rates start at once
	}
	if r := cfg.Registerer; r != nil {
		maxGauge := prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "arbor_api_unauthenticated_streams_max",
			Help: "The most unauthenticated streams the server holds at once.",
		})
		maxGauge.Set(float64(u.max))
		r.MustRegister(u.inFlightGauge, u.refused, u.timedOut, maxGauge)
	}
	return u, nil
}

// anyoneClientStreams returns the methods of the rule table that anyone may call and
// that read a stream of client messages, as their protobuf descriptors say.
// Server-streaming methods (health Watch) are subscriptions meant to last;
// they are not bounded here.
func anyoneClientStreams() map[string]bool {
	out := make(map[string]bool)
	for method, rule := range rules {
		if rule != RuleAnyone {
			continue
		}
		service, name, ok := strings.Cut(strings.TrimPrefix(method, "/"), "/")
		if !ok {
			continue
		}
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
		if err != nil {
			continue
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			continue
		}
		if md := sd.Methods().ByName(protoreflect.Name(name)); md != nil && md.IsStreamingClient() {
			out[method] = true
		}
	}
	return out
}

// bound names the limit that ended a stream.
type bound int32

const (
	boundNone bound = iota
	boundFirstMessage
	boundExchange
)

func (b bound) String() string {
	switch b {
	case boundFirstMessage:
		return "first_message"
	case boundExchange:
		return "exchange"
	}
	return "none"
}

// streamLimits is the state of one admitted stream, carried in its context
// from TapHandle to StreamInterceptor.
type streamLimits struct {
	u        *UnauthenticatedStreams
	ctx      context.Context // canceled by a bound, or when the stream ends
	cancel   context.CancelCauseFunc
	deadline time.Time // of the whole exchange
	first    *time.Timer
	total    *time.Timer
	read     atomic.Bool  // the first message has been read
	expired  atomic.Int32 // the first bound that fired

	mu       sync.Mutex  // guards stop and released
	stop     func() bool // unregisters the release on the stream's end
	released bool
}

type streamLimitsKey struct{}

// TapHandle admits a new stream before the transport starts a goroutine
// for it (install it with grpc.InTapHandle). A bounded method past the
// maximum in flight is refused with ResourceExhausted; an admitted one gets
// a context that its bounds cancel. It runs on the connection's reader and
// does no blocking work.
func (u *UnauthenticatedStreams) TapHandle(ctx context.Context, info *tap.Info) (context.Context, error) {
	if !u.bounded[info.FullMethodName] {
		return ctx, nil
	}
	if !u.acquire() {
		return nil, status.Errorf(codes.ResourceExhausted, "server holds its maximum of %d unauthenticated streams; retry later", u.max)
	}
	inner, cancel := context.WithCancelCause(ctx)
	l := &streamLimits{u: u, ctx: inner, cancel: cancel, deadline: time.Now().Add(u.timeout)}
	l.first = time.AfterFunc(u.first, func() {
		if !l.read.Load() {
			l.expire(boundFirstMessage)
		}
	})
	l.total = time.AfterFunc(u.timeout, func() { l.expire(boundExchange) })
	// The transport cancels ctx when the stream ends however it ends, even
	// if no handler ever runs for it; StreamInterceptor releases first and
	// unregisters this, so normally it never runs.
	stop := context.AfterFunc(ctx, l.release)
	l.mu.Lock()
	l.stop = stop
	l.mu.Unlock()
	return &limitedContext{Context: inner, limits: l}, nil
}

// limitedContext is an admitted stream's context. Once a bound has expired
// it reports context.DeadlineExceeded, so that the transport ends the
// stream, and grpc answers the caller, with codes.DeadlineExceeded.
// Everything else is the canceled context it wraps (whose Done it returns,
// so contexts derived from it are wired to that one without a goroutine).
type limitedContext struct {
	context.Context
	limits *streamLimits
}

func (c *limitedContext) Deadline() (time.Time, bool) {
	if d, ok := c.Context.Deadline(); ok && d.Before(c.limits.deadline) {
		return d, true
	}
	return c.limits.deadline, true
}

func (c *limitedContext) Err() error {
	err := c.Context.Err()
	if err != nil && c.limits.ended() != boundNone {
		return context.DeadlineExceeded
	}
	return err
}

func (c *limitedContext) Value(key any) any {
	if key == (streamLimitsKey{}) {
		return c.limits
	}
	return c.Context.Value(key)
}

// errBoundExpired is the cause with which a bound cancels a stream.
var errBoundExpired = errors.New("api: unauthenticated stream exceeded its bound")

// expire ends the stream on its first expired bound: canceling its context
// makes the handler's pending RecvMsg (or SendMsg) return.
func (l *streamLimits) expire(b bound) {
	if l.expired.CompareAndSwap(int32(boundNone), int32(b)) {
		l.cancel(errBoundExpired)
	}
}

// ended returns the bound that ended the stream, or boundNone while the
// stream is live or when it ended otherwise (its caller left first, say).
func (l *streamLimits) ended() bound {
	if context.Cause(l.ctx) != errBoundExpired {
		return boundNone
	}
	return bound(l.expired.Load())
}

// release gives the stream's slot back, once.
func (l *streamLimits) release() {
	l.mu.Lock()
	stop, released := l.stop, l.released
	l.released = true
	l.mu.Unlock()
	if released {
		return
	}
	if stop != nil { // nil when the stream had ended before TapHandle returned
		stop()
	}
	l.first.Stop()
	l.total.Stop()
	l.u.release()
}

// StreamInterceptor runs a bounded method's handler on a stream that
// records its first message, and answers DeadlineExceeded when a bound
// ended it. Put it before the authorization interceptor, with TapHandle
// installed on the same server.
func (u *UnauthenticatedStreams) StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !u.bounded[info.FullMethod] {
		if info.IsClientStream && rules[info.FullMethod] == RuleAnyone {
			// The rule table opened a client stream to anyone that its protobuf
			// descriptor did not show; refuse it rather than serve it unbounded.
			u.log.Error("unauthenticated client stream has no bounds", "method", info.FullMethod)
			return status.Errorf(codes.Internal, "method %s is not bounded for unauthenticated callers", info.FullMethod)
		}
		return handler(srv, ss)
	}
	l, ok := ss.Context().Value(streamLimitsKey{}).(*streamLimits)
	if !ok {
		u.log.Error("unauthenticated stream admitted without the tap handle", "method", info.FullMethod)
		return status.Errorf(codes.Internal, "method %s is not bounded on this server", info.FullMethod)
	}
	defer l.release()
	err := handler(srv, &limitedStream{ServerStream: ss, limits: l})
	if b := l.ended(); b != boundNone && err != nil {
		u.timedOut.WithLabelValues(b.String()).Inc()
		return u.expiredStatus(b)
	}
	return err
}

func (u *UnauthenticatedStreams) expiredStatus(b bound) error {
	if b == boundFirstMessage {
		return status.Errorf(codes.DeadlineExceeded, "no message within %v of opening the stream", u.first)
	}
	return status.Errorf(codes.DeadlineExceeded, "exchange did not complete within %v", u.timeout)
}

func (u *UnauthenticatedStreams) acquire() bool {
	u.mu.Lock()
	if u.inFlight < u.max {
		u.inFlight++
		u.inFlightGauge.Set(float64(u.inFlight))
		u.mu.Unlock()
		return true
	}
	u.refusedRun++
	changed := !u.saturated
	u.saturated = true
	u.mu.Unlock()
	u.refused.Inc()
	if changed {
		u.log.Warn("unauthenticated streams at their maximum; refusing new ones", "max_streams", u.max)
	}
	return false
}

// release frees a slot. The server is back to normal once half the slots
// are free, so a load hovering at the maximum logs one pair of lines, not
// one per stream.
func (u *UnauthenticatedStreams) release() {
	u.mu.Lock()
	u.inFlight--
	u.inFlightGauge.Set(float64(u.inFlight))
	var refused int
	changed := u.saturated && u.inFlight <= u.max/2
	if changed {
		u.saturated = false
		refused, u.refusedRun = u.refusedRun, 0
	}
	inFlight := u.inFlight
	u.mu.Unlock()
	if changed {
		u.log.Info("unauthenticated streams below their maximum again", "in_flight", inFlight, "refused", refused)
	}
}

// limitedStream notes the first message read, which disarms the
// first-message bound.
type limitedStream struct {
	grpc.ServerStream
	limits *streamLimits
}

func (s *limitedStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	l := s.limits
	if err == nil && l.read.CompareAndSwap(false, true) {
		l.first.Stop()
	}
	if b := l.ended(); b != boundNone {
		// A message that raced with the bound is not acted on.
		return l.u.expiredStatus(b)
	}
	return err
}
