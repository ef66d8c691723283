// Package svidcli is the workload side of the command line: the calls and the
// output behind `arbor svid fetch x509|jwt` and `arbor svid validate`. It talks
// to any agent's SPIFFE Workload API (arbor's or spire-agent's) with go-spiffe's
// client, writes to an io.Writer and returns one-line errors, so tests drive it
// without the command line.
//
// Errors are prefixed with the command they come from ("svid fetch x509:");
// branchable ones wrap ErrUnreachable, ErrNoIdentity or ErrInvalidToken.
package svidcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	bundlev1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/bundle/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/arborid/arbor/internal/cli/output"
)

const (
	// SocketEnv is the standard SPIFFE variable naming the Workload API
	// address (unix:///path/to/api.sock); a bare absolute path is accepted too.
	SocketEnv = "SPIFFE_ENDPOINT_SOCKET"
	// DefaultSocketPath is the Workload API socket used when neither
	// --socket-path nor SocketEnv is given: where `arbor agent` listens by
	// default (spire-agent's is /tmp/spire-agent/public/api.sock).
	DefaultSocketPath = "/tmp/arbor-agent/public/api.sock"
	// DefaultTimeout bounds a command when Options.Timeout is zero.
	DefaultTimeout = 10 * time.Second
)

var (
	// ErrUnreachable means no Workload API answers at the address.
	ErrUnreachable = errors.New("cannot reach the Workload API")
	// ErrNoIdentity means the agent answered but has no SVID for this
	// process (no registration entry matches its selectors).
	ErrNoIdentity = errors.New("the agent has no identity for this process")
	// ErrInvalidToken means the Workload API rejected a JWT-SVID.
	ErrInvalidToken = errors.New("invalid JWT-SVID")
)

// Address resolves the Workload API address: socketPath (a file path,
// relative or absolute) when given, else the SocketEnv variable read through
// getenv (os.Getenv when nil), else DefaultSocketPath. The result is an
// address go-spiffe accepts, such as unix:///tmp/arbor-agent/public/api.sock.
func Address(socketPath string, getenv func(string) string) (string, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if socketPath == "" {
		env := getenv(SocketEnv)
		if env == "" {
			socketPath = DefaultSocketPath
		} else if strings.Contains(env, "://") || strings.HasPrefix(env, "unix:") {
			if err := workloadapi.ValidateAddress(env); err != nil {
				return "", fmt.Errorf("$%s=%q: %v", SocketEnv, env, err)
			}
			return env, nil
		} else {
			socketPath = env
		}
	}
	abs, err := filepath.Abs(socketPath)
	if err != nil {
		return "", fmt.Errorf("socket path %q: %v", socketPath, err)
	}
	return (&url.URL{Scheme: "unix", Path: abs}).String(), nil
}

// Format is how results are printed (FormatJSON: one JSON document (see docs/workload.md)).
type Format = output.Format

// The formats, and their parser, are the command line's one definition.
const (
	FormatPretty = output.FormatPretty
	FormatJSON   = output.FormatJSON
)

// ParseFormat parses an --output value: "pretty" (or "text", or empty) or "json".
func ParseFormat(s string) (Format, error) { return output.ParseFormat(s) }

// Options are what every command needs. The zero value talks to
// DefaultSocketPath with DefaultTimeout and prints FormatPretty.
type Options struct {
	// Addr is the Workload API address (see Address); "" means DefaultSocketPath.
	Addr string
	// Timeout bounds the whole command; zero means DefaultTimeout.
	Timeout time.Duration
	// Format selects pretty or JSON output.
	Format Format
	// Now tells the time for "expires in"; if nil, time.Now is used.
	Now func() time.Time
}

func (o Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o Options) timeout() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return DefaultTimeout
}

func (o Options) addr() string {
	if o.Addr != "" {
		return o.Addr
	}
	return "unix://" + DefaultSocketPath
}

// call connects to the Workload API and runs fn under the command's timeout;
// failures come back as one line prefixed with op.
func (o Options) call(ctx context.Context, op string, fn func(context.Context, *workloadapi.Client) error) error {
	addr := o.addr()
	if err := checkSocket(addr); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout())
	defer cancel()
	c, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		return fmt.Errorf("%s: %w at %s: %v", op, ErrUnreachable, addr, err)
	}
	defer c.Close()
	if err := fn(ctx, c); err != nil {
		return o.callErr(ctx, op, addr, err)
	}
	return nil
}

// checkSocket fails early, with a clear message, when a unix address names
// no socket: gRPC's own error for that is a paragraph.
func checkSocket(addr string) error {
	u, err := url.Parse(addr)
	if err != nil || u.Scheme != "unix" {
		return nil // let go-spiffe judge other addresses
	}
	fi, err := os.Stat(u.Path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: socket %s does not exist (is the agent running? set --socket-path or $%s)", ErrUnreachable, u.Path, SocketEnv)
	case err != nil:
		return fmt.Errorf("%w: socket %s: %v", ErrUnreachable, u.Path, errors.Unwrap(err))
	case fi.Mode()&os.ModeSocket == 0:
		return fmt.Errorf("%w: %s is not a Unix socket", ErrUnreachable, u.Path)
	}
	return nil
}

// callErr turns a failed Workload API call into one readable line.
func (o Options) callErr(ctx context.Context, op, addr string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: the Workload API at %s did not answer within %s", op, addr, o.timeout())
		}
		return fmt.Errorf("%s: %w", op, err)
	}
	msg := oneLine(st.Message())
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Errorf("%s: %w at %s (%s)", op, ErrUnreachable, addr, lastCause(msg))
	case codes.DeadlineExceeded:
		return fmt.Errorf("%s: the Workload API at %s did not answer within %s", op, addr, o.timeout())
	case codes.Canceled:
		return fmt.Errorf("%s: canceled", op)
	case codes.PermissionDenied:
		return fmt.Errorf("%s: %w (%s): check that a registration entry matches this process's selectors", op, ErrNoIdentity, msg)
	case codes.Unimplemented:
		if strings.Contains(msg, "unknown service") {
			what := "another gRPC service"
			if servesServerAPI(addr) {
				what = "a server's admin socket (the SPIRE server API)"
			}
			return fmt.Errorf("%s: %s is %s, not an agent's Workload API socket: give the agent's socket (--socket-path, or $%s)", op, addr, what, SocketEnv)
		}
	}
	return fmt.Errorf("%s: %s (%s)", op, msg, st.Code())
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

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// expiresIn says how long until t, or how long ago it passed.
func expiresIn(now, t time.Time) string {
	d := t.Sub(now).Round(time.Second)
	if d < 0 {
		return "expired " + (-d).String() + " ago"
	}
	return "expires in " + d.String()
}

// ReadToken returns token, or the trimmed contents of file ("-": stdin).
// Exactly one of them must be given.
func ReadToken(token, file string, stdin io.Reader) (string, error) {
	switch {
	case token != "" && file != "":
		return "", errors.New("give either --token or --token-file, not both")
	case token != "":
		return strings.TrimSpace(token), nil
	case file == "":
		return "", errors.New("no token: pass --token or --token-file")
	}
	var b []byte
	var err error
	if file == "-" {
		if stdin == nil {
			return "", errors.New("no token on standard input")
		}
		b, err = io.ReadAll(io.LimitReader(stdin, 1<<20))
	} else {
		b, err = os.ReadFile(file)
	}
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("token file %s is empty", file)
	}
	return t, nil
}

// servesServerAPI tells whether addr answers the SPIRE server API's bundle
// call, as a server's admin socket does.
func servesServerAPI(addr string) bool {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return false
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = bundlev1.NewBundleClient(conn).GetBundle(ctx, &bundlev1.GetBundleRequest{})
	return err == nil
}
