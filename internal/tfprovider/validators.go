package tfprovider

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/idpolicy"
	"github.com/arborid/arbor/internal/selector"
	"github.com/arborid/arbor/topology"
)

// The validators check values at plan time, so that a typo fails `tofu
// plan` at its line instead of the server refusing it during apply. Each
// checks one known string; null and unknown values pass (the value is
// checked again when it becomes known).

// idRule says which of SPIRE's rules a SPIFFE ID attribute follows.
type idRule int

const (
	// idWorkload: a registration entry's SPIFFE ID or a join token's
	// alias: not under /spire (idpolicy.WorkloadID).
	idWorkload idRule = iota
	// idMember: an entry's parent, any member with a path (idpolicy.ParentID).
	idMember
	// idAny: any valid SPIFFE ID (a federated endpoint's).
	idAny
)

// spiffeIDValidator checks a SPIFFE ID string.
type spiffeIDValidator struct{ rule idRule }

func (v spiffeIDValidator) Description(context.Context) string {
	switch v.rule {
	case idWorkload:
		return "a SPIFFE ID spiffe://<trust domain>/<path> outside the reserved /spire namespace"
	case idMember:
		return "a SPIFFE ID spiffe://<trust domain>/<path> with a non-empty path"
	}
	return "a SPIFFE ID spiffe://<trust domain>[/<path>]"
}

func (v spiffeIDValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (v spiffeIDValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if !known(req.ConfigValue) {
		return
	}
	if err := checkSPIFFEID(req.ConfigValue.ValueString(), v.rule); err != nil {
		resp.Diagnostics.AddAttributeError(req.Path, "invalid SPIFFE ID", err.Error())
	}
}

func checkSPIFFEID(s string, rule idRule) error {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return fmt.Errorf("%q is not a SPIFFE ID: %v", s, err)
	}
	switch rule {
	case idWorkload:
		err = idpolicy.WorkloadID(id.TrustDomain(), id)
	case idMember:
		err = idpolicy.ParentID(id.TrustDomain(), id)
	}
	if err != nil {
		return fmt.Errorf("SPIFFE ID %v", err)
	}
	return nil
}

// selectorsValidator checks every element of a set of "type:value" selectors.
type selectorsValidator struct{}

func (selectorsValidator) Description(context.Context) string {
	return `selectors "type:value" such as "unix:uid:1000"`
}

func (v selectorsValidator) MarkdownDescription(ctx context.Context) string {
	return v.Description(ctx)
}

func (selectorsValidator) ValidateSet(ctx context.Context, req validator.SetRequest, resp *validator.SetResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	var elems []types.String
	resp.Diagnostics.Append(req.ConfigValue.ElementsAs(ctx, &elems, false)...)
	for _, e := range elems {
		if !known(e) {
			continue
		}
		if _, err := selector.Parse(e.ValueString()); err != nil {
			resp.Diagnostics.AddAttributeError(req.Path, "invalid selector", err.Error())
		}
	}
}

// trustDomainsValidator checks every element of a set of trust domain names.
type trustDomainsValidator struct{}

func (trustDomainsValidator) Description(context.Context) string {
	return `trust domain names such as "example.org"`
}

func (v trustDomainsValidator) MarkdownDescription(ctx context.Context) string {
	return v.Description(ctx)
}

func (trustDomainsValidator) ValidateSet(ctx context.Context, req validator.SetRequest, resp *validator.SetResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	var elems []types.String
	resp.Diagnostics.Append(req.ConfigValue.ElementsAs(ctx, &elems, false)...)
	for _, e := range elems {
		if known(e) {
			if err := checkTrustDomain(e.ValueString()); err != nil {
				resp.Diagnostics.AddAttributeError(req.Path, "invalid trust domain", err.Error())
			}
		}
	}
}

// trustDomainValidator checks one trust domain name.
type trustDomainValidator struct{}

func (trustDomainValidator) Description(context.Context) string {
	return `a trust domain name such as "example.org"`
}

func (v trustDomainValidator) MarkdownDescription(ctx context.Context) string {
	return v.Description(ctx)
}

func (trustDomainValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if known(req.ConfigValue) {
		if err := checkTrustDomain(req.ConfigValue.ValueString()); err != nil {
			resp.Diagnostics.AddAttributeError(req.Path, "invalid trust domain", err.Error())
		}
	}
}

// checkTrustDomain accepts a trust domain's name only (not spiffe://name),
// the one spelling the server gives back, so that state never differs
// from the configuration by spelling alone.
func checkTrustDomain(s string) error {
	td, err := spiffeid.TrustDomainFromString(s)
	if err != nil {
		return fmt.Errorf("%q is not a trust domain name: %v", s, err)
	}
	if td.Name() != s {
		return fmt.Errorf("%q: give the trust domain's name alone, %q", s, td.Name())
	}
	return nil
}

// durationValidator checks a duration as topology.ParseDuration reads it
// ("90s", "1h", "7d"), whole seconds, at least min.
type durationValidator struct{ min time.Duration }

func (v durationValidator) Description(context.Context) string {
	return fmt.Sprintf(`a duration such as "90s", "1h" or "7d" of whole seconds, at least %v`, v.min)
}

func (v durationValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (v durationValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if !known(req.ConfigValue) {
		return
	}
	if _, err := parseSeconds(req.ConfigValue.ValueString(), v.min); err != nil {
		resp.Diagnostics.AddAttributeError(req.Path, "invalid duration", err.Error())
	}
}

// rfc3339Validator checks an RFC 3339 timestamp.
type rfc3339Validator struct{}

func (rfc3339Validator) Description(context.Context) string {
	return `an RFC 3339 timestamp such as "2030-01-02T15:04:05Z"`
}

func (v rfc3339Validator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (rfc3339Validator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if !known(req.ConfigValue) {
		return
	}
	if _, err := time.Parse(time.RFC3339, req.ConfigValue.ValueString()); err != nil {
		resp.Diagnostics.AddAttributeError(req.Path, "invalid timestamp",
			fmt.Sprintf("%q is not an RFC 3339 timestamp such as \"2030-01-02T15:04:05Z\"", req.ConfigValue.ValueString()))
	}
}

// oneOfValidator accepts one of a few words.
type oneOfValidator []string

func (v oneOfValidator) Description(context.Context) string {
	return "one of " + strings.Join(v, ", ")
}

func (v oneOfValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (v oneOfValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if known(req.ConfigValue) && !slices.Contains(v, req.ConfigValue.ValueString()) {
		resp.Diagnostics.AddAttributeError(req.Path, "invalid value",
			fmt.Sprintf("%q is not one of %s", req.ConfigValue.ValueString(), strings.Join(v, ", ")))
	}
}

// httpsURLValidator accepts an https:// URL with a host and no credentials,
// what a bundle endpoint must be.
type httpsURLValidator struct{}

func (httpsURLValidator) Description(context.Context) string {
	return "an https:// URL with a host and no credentials"
}

func (v httpsURLValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (httpsURLValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if !known(req.ConfigValue) {
		return
	}
	s := req.ConfigValue.ValueString()
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
		resp.Diagnostics.AddAttributeError(req.Path, "invalid bundle endpoint URL",
			fmt.Sprintf("%q is not an https:// URL with a host and no credentials", s))
	}
}

func known(v types.String) bool { return !v.IsNull() && !v.IsUnknown() }

// parseSeconds reads a duration string in whole seconds, at least min.
func parseSeconds(s string, min time.Duration) (int32, error) {
	d, err := topology.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration such as \"90s\", \"1h\" or \"7d\"", s)
	}
	switch {
	case d%time.Second != 0:
		return 0, fmt.Errorf("duration %q is not whole seconds", s)
	case d < min:
		return 0, fmt.Errorf("duration %q is shorter than %v", s, min)
	case d/time.Second > 1<<31-1:
		return 0, fmt.Errorf("duration %q is too long", s)
	}
	return int32(d / time.Second), nil
}

// formatSeconds spells n seconds shortly: whole days as "7d", else the
// Go way without zero units ("1h", "1h30m", "1m30s"). It is what a
// duration imported or changed on the server is shown as.
func formatSeconds(n int32) string {
	const day = 24 * 60 * 60
	if n > 0 && n%day == 0 {
		return fmt.Sprintf("%dd", n/day)
	}
	s := (time.Duration(n) * time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// durationState is the state value of a duration the server holds as n
// seconds, given the prior value: the prior spelling when it means n
// seconds ("1h" stays "1h"), null for 0 when unset means the server's
// default, else n formatted.
func durationState(prior types.String, n int32) types.String {
	if known(prior) {
		if p, err := parseSeconds(prior.ValueString(), 0); err == nil && p == n {
			return prior
		}
	}
	if n == 0 {
		return types.StringNull()
	}
	return types.StringValue(formatSeconds(n))
}

// timeState is the state value of a timestamp the server holds as Unix
// seconds: the prior spelling when it is the same instant, null for 0.
func timeState(prior types.String, unix int64) types.String {
	if known(prior) {
		if t, err := time.Parse(time.RFC3339, prior.ValueString()); err == nil && t.Unix() == unix {
			return prior
		}
	}
	if unix == 0 {
		return types.StringNull()
	}
	return types.StringValue(time.Unix(unix, 0).UTC().Format(time.RFC3339))
}
