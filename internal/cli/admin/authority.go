package admin

// The authority commands (arbor authority x509|jwt|upstream ...) and the
// logger commands, over localauthority.v1 and logger.v1 as spire-server's
// localauthority, upstreamauthority and logger commands use them.

import (
	"context"
	"fmt"
	"strings"

	localauthorityv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/localauthority/v1"
	loggerv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/logger/v1"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"google.golang.org/protobuf/proto"
)

// AuthorityKind is the kind of authority a command acts on.
type AuthorityKind string

// The kinds of local authority.
const (
	AuthorityX509 AuthorityKind = "x509"
	AuthorityJWT  AuthorityKind = "jwt"
)

func (k AuthorityKind) title() string {
	if k == AuthorityJWT {
		return "JWT"
	}
	return "X.509"
}

func printState(b *strings.Builder, s *localauthorityv1.AuthorityState) {
	fmt.Fprintf(b, "  Authority ID: %s\n", s.AuthorityId)
	if s.ExpiresAt != 0 {
		fmt.Fprintf(b, "  Expires at: %s\n", formatUnix(s.ExpiresAt))
	}
	if s.UpstreamAuthoritySubjectKeyId != "" {
		fmt.Fprintf(b, "  Upstream authority subject key ID: %s\n", s.UpstreamAuthoritySubjectKeyId)
	}
}

func (p Printer) printAuthority(resp proto.Message, heading string, s *localauthorityv1.AuthorityState) error {
	if p.JSON() {
		return p.printJSON(resp)
	}
	var b strings.Builder
	b.WriteString(heading + ":\n")
	printState(&b, s)
	_, err := fmt.Fprint(p.Out, b.String())
	return err
}

// ShowAuthorities prints the active, prepared and old authorities of kind.
func (c *Client) ShowAuthorities(ctx context.Context, p Printer, kind AuthorityKind) error {
	op := "authority " + string(kind) + " show"
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	la := localauthorityv1.NewLocalAuthorityClient(c.conn)
	var resp proto.Message
	var active, prepared, old *localauthorityv1.AuthorityState
	if kind == AuthorityJWT {
		r, err := la.GetJWTAuthorityState(ctx, &localauthorityv1.GetJWTAuthorityStateRequest{})
		if err != nil {
			return c.rpcError(op, err)
		}
		resp, active, prepared, old = r, r.Active, r.Prepared, r.Old
	} else {
		r, err := la.GetX509AuthorityState(ctx, &localauthorityv1.GetX509AuthorityStateRequest{})
		if err != nil {
			return c.rpcError(op, err)
		}
		resp, active, prepared, old = r, r.Active, r.Prepared, r.Old
	}
	if p.JSON() {
		return p.printJSON(resp)
	}
	var b strings.Builder
	for i, part := range []struct {
		name string
		s    *localauthorityv1.AuthorityState
	}{{"Active", active}, {"Prepared", prepared}, {"Old", old}} {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "%s %s authority:\n", part.name, kind.title())
		if part.s == nil {
			fmt.Fprintf(&b, "  No %s %s authority found\n", strings.ToLower(part.name), kind.title())
			continue
		}
		printState(&b, part.s)
	}
	_, err := fmt.Fprint(p.Out, b.String())
	return err
}

// PrepareAuthority prepares a new authority of kind and prints it.
func (c *Client) PrepareAuthority(ctx context.Context, p Printer, kind AuthorityKind) error {
	op := "authority " + string(kind) + " prepare"
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	la := localauthorityv1.NewLocalAuthorityClient(c.conn)
	heading := "Prepared " + kind.title() + " authority"
	if kind == AuthorityJWT {
		r, err := la.PrepareJWTAuthority(ctx, &localauthorityv1.PrepareJWTAuthorityRequest{})
		if err != nil {
			return c.rpcError(op, err)
		}
		return p.printAuthority(r, heading, r.PreparedAuthority)
	}
	r, err := la.PrepareX509Authority(ctx, &localauthorityv1.PrepareX509AuthorityRequest{})
	if err != nil {
		return c.rpcError(op, err)
	}
	return p.printAuthority(r, heading, r.PreparedAuthority)
}

// AuthorityAction is what a command does to a named authority.
type AuthorityAction string

// The actions on a named local authority.
const (
	ActionActivate AuthorityAction = "activate"
	ActionTaint    AuthorityAction = "taint"
	ActionRevoke   AuthorityAction = "revoke"
)

// ActOnAuthority activates, taints or revokes the authority of kind named id.
func (c *Client) ActOnAuthority(ctx context.Context, p Printer, kind AuthorityKind, action AuthorityAction, id string) error {
	op := "authority " + string(kind) + " " + string(action)
	if id == "" {
		return fmt.Errorf("%s: --authority-id is required (the ID arbor authority %s show prints)", op, kind)
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	la := localauthorityv1.NewLocalAuthorityClient(c.conn)
	var resp proto.Message
	var st *localauthorityv1.AuthorityState
	var err error
	switch {
	case kind == AuthorityX509 && action == ActionActivate:
		var r *localauthorityv1.ActivateX509AuthorityResponse
		if r, err = la.ActivateX509Authority(ctx, &localauthorityv1.ActivateX509AuthorityRequest{AuthorityId: id}); err == nil {
			resp, st = r, r.ActivatedAuthority
		}
	case kind == AuthorityX509 && action == ActionTaint:
		var r *localauthorityv1.TaintX509AuthorityResponse
		if r, err = la.TaintX509Authority(ctx, &localauthorityv1.TaintX509AuthorityRequest{AuthorityId: id}); err == nil {
			resp, st = r, r.TaintedAuthority
		}
	case kind == AuthorityX509 && action == ActionRevoke:
		var r *localauthorityv1.RevokeX509AuthorityResponse
		if r, err = la.RevokeX509Authority(ctx, &localauthorityv1.RevokeX509AuthorityRequest{AuthorityId: id}); err == nil {
			resp, st = r, r.RevokedAuthority
		}
	case kind == AuthorityJWT && action == ActionActivate:
		var r *localauthorityv1.ActivateJWTAuthorityResponse
		if r, err = la.ActivateJWTAuthority(ctx, &localauthorityv1.ActivateJWTAuthorityRequest{AuthorityId: id}); err == nil {
			resp, st = r, r.ActivatedAuthority
		}
	case kind == AuthorityJWT && action == ActionTaint:
		var r *localauthorityv1.TaintJWTAuthorityResponse
		if r, err = la.TaintJWTAuthority(ctx, &localauthorityv1.TaintJWTAuthorityRequest{AuthorityId: id}); err == nil {
			resp, st = r, r.TaintedAuthority
		}
	case kind == AuthorityJWT && action == ActionRevoke:
		var r *localauthorityv1.RevokeJWTAuthorityResponse
		if r, err = la.RevokeJWTAuthority(ctx, &localauthorityv1.RevokeJWTAuthorityRequest{AuthorityId: id}); err == nil {
			resp, st = r, r.RevokedAuthority
		}
	default:
		return fmt.Errorf("%s: unknown authority kind or action", op)
	}
	if err != nil {
		return c.rpcError(op, err)
	}
	past := map[AuthorityAction]string{ActionActivate: "Activated", ActionTaint: "Tainted", ActionRevoke: "Revoked"}[action]
	return p.printAuthority(resp, past+" "+kind.title()+" authority", st)
}

// ActOnUpstreamAuthority taints or revokes the upstream X.509 authority
// with the subject key ID skid.
func (c *Client) ActOnUpstreamAuthority(ctx context.Context, p Printer, action AuthorityAction, skid string) error {
	op := "authority upstream " + string(action)
	if skid == "" {
		return fmt.Errorf("%s: --subject-key-id is required (the upstream authority subject key ID arbor authority x509 show prints for the old authority)", op)
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	la := localauthorityv1.NewLocalAuthorityClient(c.conn)
	var resp proto.Message
	var got string
	switch action {
	case ActionTaint:
		r, err := la.TaintX509UpstreamAuthority(ctx, &localauthorityv1.TaintX509UpstreamAuthorityRequest{SubjectKeyId: skid})
		if err != nil {
			return c.rpcError(op, err)
		}
		resp, got = r, r.UpstreamAuthoritySubjectKeyId
	case ActionRevoke:
		r, err := la.RevokeX509UpstreamAuthority(ctx, &localauthorityv1.RevokeX509UpstreamAuthorityRequest{SubjectKeyId: skid})
		if err != nil {
			return c.rpcError(op, err)
		}
		resp, got = r, r.UpstreamAuthoritySubjectKeyId
	default:
		return fmt.Errorf("%s: unknown action", op)
	}
	if p.JSON() {
		return p.printJSON(resp)
	}
	past := map[AuthorityAction]string{ActionTaint: "Tainted", ActionRevoke: "Revoked"}[action]
	_, err := fmt.Fprintf(p.Out, "%s X.509 upstream authority:\n  Subject key ID: %s\n", past, got)
	return err
}

// logLevelNames are SPIRE's level names, the values of logger set --level.
var logLevelNames = map[string]types.LogLevel{
	"panic": types.LogLevel_PANIC, "fatal": types.LogLevel_FATAL, "error": types.LogLevel_ERROR,
	"warn": types.LogLevel_WARN, "info": types.LogLevel_INFO, "debug": types.LogLevel_DEBUG, "trace": types.LogLevel_TRACE,
}

func (p Printer) printLogger(l *types.Logger) error {
	if p.JSON() {
		return p.printJSON(l)
	}
	_, err := fmt.Fprintf(p.Out, "Logger Level : %s\nLaunch Level : %s\n", strings.ToLower(l.CurrentLevel.String()), strings.ToLower(l.LaunchLevel.String()))
	return err
}

// GetLogger prints the server's current and launch log levels.
func (c *Client) GetLogger(ctx context.Context, p Printer) error {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	l, err := loggerv1.NewLoggerClient(c.conn).GetLogger(ctx, &loggerv1.GetLoggerRequest{})
	if err != nil {
		return c.rpcError("logger get", err)
	}
	return p.printLogger(l)
}

// SetLogLevel sets the server's log level by SPIRE's name (panic, fatal,
// error, warn, info, debug, trace).
func (c *Client) SetLogLevel(ctx context.Context, p Printer, level string) error {
	const op = "logger set"
	lv, ok := logLevelNames[strings.ToLower(strings.TrimSpace(level))]
	if !ok {
		return fmt.Errorf("%s: --level %q: want one of panic, fatal, error, warn, info, debug, trace", op, level)
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	l, err := loggerv1.NewLoggerClient(c.conn).SetLogLevel(ctx, &loggerv1.SetLogLevelRequest{NewLevel: lv})
	if err != nil {
		return c.rpcError(op, err)
	}
	return p.printLogger(l)
}

// ResetLogLevel sets the server's log level back to its launch level.
func (c *Client) ResetLogLevel(ctx context.Context, p Printer) error {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	l, err := loggerv1.NewLoggerClient(c.conn).ResetLogLevel(ctx, &loggerv1.ResetLogLevelRequest{})
	if err != nil {
		return c.rpcError("logger reset", err)
	}
	return p.printLogger(l)
}
