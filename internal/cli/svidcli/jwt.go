package svidcli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// JWTOutput describes one JWT-SVID; `arbor svid fetch jwt --output json`
// prints a JSON array of them.
type JWTOutput struct {
	SPIFFEID  string         `json:"spiffe_id"`
	Hint      string         `json:"hint,omitempty"`
	Audience  []string       `json:"audience"`
	ExpiresAt time.Time      `json:"expires_at"`
	Token     string         `json:"token"`
	Claims    map[string]any `json:"claims"`
}

// ValidateOutput is what `arbor svid validate --output json` prints.
type ValidateOutput struct {
	SPIFFEID string         `json:"spiffe_id"`
	Claims   map[string]any `json:"claims"`
}

// FetchJWT fetches JWT-SVIDs for audiences (at least one) and prints each
// token with its SPIFFE ID, expiry and claims. spiffeID, when not empty,
// asks for the SVID of that identity only (the process must be entitled to it).
func FetchJWT(ctx context.Context, w io.Writer, o Options, audiences []string, spiffeID string) error {
	const op = "svid fetch jwt"
	params, err := jwtParams(audiences, spiffeID)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	var svids []*jwtsvid.SVID
	err = o.call(ctx, op, func(ctx context.Context, c *workloadapi.Client) error {
		var err error
		svids, err = c.FetchJWTSVIDs(ctx, params)
		return err
	})
	if err != nil {
		return err
	}
	out := make([]JWTOutput, 0, len(svids))
	for _, s := range svids {
		out = append(out, JWTOutput{
			SPIFFEID:  s.ID.String(),
			Hint:      s.Hint,
			Audience:  s.Audience,
			ExpiresAt: s.Expiry.UTC(),
			Token:     s.Marshal(),
			Claims:    s.Claims,
		})
	}
	if o.Format == FormatJSON {
		return writeJSON(w, out)
	}
	now := o.now()
	tw := tabwriter.NewWriter(w, 0, 8, 1, ' ', 0)
	for i, s := range out {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		fmt.Fprintf(tw, "SPIFFE ID:\t%s\n", s.SPIFFEID)
		if s.Hint != "" {
			fmt.Fprintf(tw, "Hint:\t%s\n", s.Hint)
		}
		fmt.Fprintf(tw, "Audience:\t%s\n", strings.Join(s.Audience, ", "))
		fmt.Fprintf(tw, "Expires:\t%s (%s)\n", s.ExpiresAt.Format(time.RFC3339), expiresIn(now, s.ExpiresAt))
		fmt.Fprintf(tw, "Token:\t%s\n", s.Token)
		if err := printClaims(tw, s.Claims); err != nil {
			return err
		}
	}
	return tw.Flush()
}

func jwtParams(audiences []string, spiffeID string) (jwtsvid.Params, error) {
	var auds []string
	for _, a := range audiences {
		if a = strings.TrimSpace(a); a != "" {
			auds = append(auds, a)
		}
	}
	if len(auds) == 0 {
		return jwtsvid.Params{}, errors.New("no audience: pass --audience at least once")
	}
	p := jwtsvid.Params{Audience: auds[0], ExtraAudiences: auds[1:]}
	if spiffeID != "" {
		id, err := spiffeid.FromString(spiffeID)
		if err != nil {
			return jwtsvid.Params{}, fmt.Errorf("--spiffe-id %q: %v", spiffeID, err)
		}
		p.Subject = id
	}
	return p, nil
}

// Validate asks the Workload API to validate token for audience and prints
// the SPIFFE ID and claims. A token the agent rejects returns an error
// wrapping ErrInvalidToken with the agent's reason.
func Validate(ctx context.Context, w io.Writer, o Options, audience, token string) error {
	const op = "svid validate"
	if strings.TrimSpace(audience) == "" {
		return fmt.Errorf("%s: no audience: pass --audience", op)
	}
	if token == "" {
		return fmt.Errorf("%s: no token", op)
	}
	var svid *jwtsvid.SVID
	err := o.call(ctx, op, func(ctx context.Context, c *workloadapi.Client) error {
		var err error
		svid, err = c.ValidateJWTSVID(ctx, token, audience)
		if st, ok := status.FromError(err); ok && st.Code() == codes.InvalidArgument {
			// The Workload API answers InvalidArgument for every token it
			// will not accept: bad signature, audience, expiry or format.
			return fmt.Errorf("%w: %s", ErrInvalidToken, oneLine(st.Message()))
		}
		return err
	})
	if err != nil {
		return err
	}
	out := ValidateOutput{SPIFFEID: svid.ID.String(), Claims: svid.Claims}
	if o.Format == FormatJSON {
		return writeJSON(w, out)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 1, ' ', 0)
	fmt.Fprintln(tw, "SVID is valid.")
	fmt.Fprintf(tw, "SPIFFE ID:\t%s\n", out.SPIFFEID)
	if err := printClaims(tw, out.Claims); err != nil {
		return err
	}
	return tw.Flush()
}

// printClaims prints claims as indented JSON (keys sorted by encoding/json).
func printClaims(w io.Writer, claims map[string]any) error {
	b, err := json.MarshalIndent(claims, "  ", "  ")
	if err != nil {
		return fmt.Errorf("encode claims: %w", err)
	}
	_, err = fmt.Fprintf(w, "Claims:\n  %s\n", b)
	return err
}
