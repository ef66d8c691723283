// Package admin is the client side of a server's admin socket: the calls and
// the output formatting behind `arbor entry|token|bundle|agent|healthcheck`.
// It speaks SPIRE's server API (spire-api-sdk), so it works against any tier's
// admin socket, and every function writes to an io.Writer and returns an error,
// so tests drive it without the command line.
//
// Errors are prefixed with the admin command they come from ("entry create:"),
// which is what the user typed; a failed RPC is an *RPCError with the server's
// message and the status code name, never gRPC's "rpc error: code = ..." text.
package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	agentv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/agent/v1"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	entryv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/entry/v1"
	trustdomainv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/trustdomain/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/arborid/arbor/internal/cli/output"
)

// SocketEnv is the environment variable naming the admin socket when no
// --socket-path is given.
const SocketEnv = "ARBOR_ADMIN_SOCKET"

// DefaultTimeout bounds every admin command when Client.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// pageSize is how many records list commands ask for per page.
const pageSize = 500

var (
	// ErrNoSocket means neither a socket path nor SocketEnv was given.
	ErrNoSocket = errors.New("no admin socket given: pass --socket-path (spire-server: -socketPath) or set " + SocketEnv)
	// ErrUnreachable means no server answers on the admin socket.
	ErrUnreachable = errors.New("cannot reach the server")
)

// SocketPath picks the admin socket: flag when set, else the SocketEnv
// variable read through getenv (os.Getenv when nil), else ErrNoSocket.
func SocketPath(flag string, getenv func(string) string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if getenv == nil {
		getenv = os.Getenv
	}
	if p := getenv(SocketEnv); p != "" {
		return p, nil
	}
	return "", ErrNoSocket
}

// Client is a connection to one server's admin socket.
type Client struct {
	// Timeout bounds each admin command (all pages of a list); zero means DefaultTimeout.
	Timeout time.Duration

	socket string
	tcp    bool // socket is a TCP address (DialTLS)
	conn   *grpc.ClientConn
	entry  entryv1.EntryClient
	agent  agentv1.AgentClient
	bundle bundlev1.BundleClient
	td     trustdomainv1.TrustDomainClient
	health healthpb.HealthClient
}

// Dial connects to the admin socket at path (absolute or relative). It fails
// with ErrUnreachable when nothing is at path; otherwise the connection is
// made lazily by the first call.
func Dial(path string) (*Client, error) {
	if path == "" {
		return nil, ErrNoSocket
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("%w: admin socket %s does not exist (is the server running?)", ErrUnreachable, path)
	case err != nil:
		return nil, fmt.Errorf("%w: admin socket %s: %v", ErrUnreachable, path, errors.Unwrap(err))
	case fi.Mode()&os.ModeSocket == 0:
		return nil, fmt.Errorf("%w: %s is not a Unix socket", ErrUnreachable, path)
	}
	return Open(path)
}

// Open is Dial for a socket that may not exist yet (a server being
// started): nothing is checked, the first call connects, and calls fail
// with ErrUnreachable until the server serves.
func Open(path string) (*Client, error) {
	if path == "" {
		return nil, ErrNoSocket
	}
	target := "unix:" + path
	if filepath.IsAbs(path) {
		target = "unix://" + path
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("%w: admin socket %s: %v", ErrUnreachable, path, err)
	}
	return newClient(path, conn), nil
}

// where names the endpoint in messages.
func (c *Client) where() string {
	if c.tcp {
		return "server address " + c.socket
	}
	return "admin socket " + c.socket
}

// newClient is the client of one connection to endpoint (an admin socket
// path or a TCP address).
func newClient(endpoint string, conn *grpc.ClientConn) *Client {
	return &Client{
		socket: endpoint,
		conn:   conn,
		entry:  entryv1.NewEntryClient(conn),
		agent:  agentv1.NewAgentClient(conn),
		bundle: bundlev1.NewBundleClient(conn),
		td:     trustdomainv1.NewTrustDomainClient(conn),
		health: healthpb.NewHealthClient(conn),
	}
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

func (c *Client) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	d := c.Timeout
	if d == 0 {
		d = DefaultTimeout
	}
	return context.WithTimeout(ctx, d)
}

// RPCError is a call the server refused: Op is the admin command, Code the
// status code name (as the server API defines it) and Message the server's reason.
type RPCError struct {
	Op      string
	Code    codes.Code
	Message string
}

func (e *RPCError) Error() string {
	return fmt.Sprintf("%s: %s (%s)", e.Op, e.Message, e.Code)
}

// rpcError turns a failed call into one readable line.
func (c *Client) rpcError(op string, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", op, err)
	}
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Errorf("%s: %w on %s (%s)", op, ErrUnreachable, c.where(), lastCause(st.Message()))
	case codes.DeadlineExceeded:
		return fmt.Errorf("%s: the server did not answer in time on %s", op, c.where())
	case codes.Canceled:
		return fmt.Errorf("%s: canceled", op)
	case codes.Unimplemented:
		if strings.Contains(st.Message(), "unknown service") && c.servesWorkloadAPI() {
			return fmt.Errorf("%s: %s is an agent's Workload API socket, not a server's admin socket: give the server's admin socket (-socketPath; the admin_socket of its server block, by default STATE_DIR/admin.sock)", op, c.socket)
		}
	}
	return &RPCError{Op: op, Code: st.Code(), Message: st.Message()}
}

// servesWorkloadAPI tells whether the socket answers the SPIFFE Workload
// API: an agent (arbor's or spire-agent's) refuses a call without the
// workload.spiffe.io header with InvalidArgument, where a server has no
// such service.
func (c *Client) servesWorkloadAPI() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := c.conn.Invoke(ctx, "/SpiffeWorkloadAPI/FetchJWTSVID", &workload.JWTSVIDRequest{Audience: []string{"arbor-probe"}}, new(workload.JWTSVIDResponse))
	return status.Code(err) == codes.InvalidArgument
}

// lastCause keeps the innermost reason of a gRPC transport message such as
// `connection error: desc = "transport: Error while dialing: dial unix x: connect: connection refused"`.
func lastCause(msg string) string {
	msg = strings.TrimRight(msg, `"`)
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		return msg[i+2:]
	}
	return msg
}

// BatchError reports a batch call in which some items failed; each failure
// has already been printed.
type BatchError struct {
	Op            string
	Failed, Total int
	// Noun names the items, plural ("entries").
	Noun string
}

func (e *BatchError) Error() string {
	return fmt.Sprintf("%s: %d of %d %s failed", e.Op, e.Failed, e.Total, e.Noun)
}

// Format is how results are printed (FormatJSON: the protojson encoding of the API response).
type Format = output.Format

// The formats, and their parser, are the command line's one definition.
const (
	FormatPretty = output.FormatPretty
	FormatJSON   = output.FormatJSON
)

// ParseFormat parses an --output value: "pretty" (or "text", or empty) or "json".
func ParseFormat(s string) (Format, error) { return output.ParseFormat(s) }

// Printer is where and how a command prints.
type Printer struct {
	// Out receives results.
	Out io.Writer
	// Err receives per-item failures of batch calls; nil means Out.
	Err    io.Writer
	Format Format
}

func (p Printer) errw() io.Writer {
	if p.Err != nil {
		return p.Err
	}
	return p.Out
}

// JSON reports whether p prints JSON.
func (p Printer) JSON() bool { return p.Format == FormatJSON }

var jsonOptions = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// printJSON writes m as one protojson document (proto field names, every
// field present) followed by a newline.
func (p Printer) printJSON(m proto.Message) error {
	b, err := jsonOptions.Marshal(m)
	if err != nil {
		return fmt.Errorf("encoding JSON: %w", err)
	}
	b = append(b, '\n')
	_, err = p.Out.Write(b)
	return err
}

// plural returns "1 entry" or "3 entries" given the singular and plural nouns.
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func formatUnix(sec int64) string {
	return time.Unix(sec, 0).UTC().Format(time.RFC3339)
}
