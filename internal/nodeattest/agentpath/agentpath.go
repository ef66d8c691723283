// Package agentpath renders a node attestor's agent_path_template as SPIRE
// does (text/template over the attestor's data, the sprig functions SPIRE
// offers, a missing key an error) and turns the result into an agent ID
// only when it is a canonical SPIFFE ID path.
package agentpath

import (
	"bytes"
	"crypto/sha1" //nolint:gosec // offered to templates as SPIRE's sha1sum
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"strings"
	"text/template"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Funcs is the subset of the sprig functions SPIRE offers templates
// that agent paths plausibly need, with sprig's argument order (the piped
// value last). A template using another function fails to parse.
var Funcs = template.FuncMap{
	"lower":      strings.ToLower,
	"upper":      strings.ToUpper,
	"trim":       strings.TrimSpace,
	"trimAll":    func(cut, s string) string { return strings.Trim(s, cut) },
	"trimPrefix": func(prefix, s string) string { return strings.TrimPrefix(s, prefix) },
	"trimSuffix": func(suffix, s string) string { return strings.TrimSuffix(s, suffix) },
	"replace":    func(old, new, s string) string { return strings.ReplaceAll(s, old, new) },
	"contains":   func(sub, s string) bool { return strings.Contains(s, sub) },
	"hasPrefix":  func(prefix, s string) bool { return strings.HasPrefix(s, prefix) },
	"hasSuffix":  func(suffix, s string) bool { return strings.HasSuffix(s, suffix) },
	"base":       path.Base,
	"dir":        path.Dir,
	"sha1sum": func(s string) string {
		sum := sha1.Sum([]byte(s)) //nolint:gosec // see import
		return hex.EncodeToString(sum[:])
	},
	"sha256sum": func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return hex.EncodeToString(sum[:])
	},
}

// Template is a parsed agent_path_template.
type Template struct{ t *template.Template }

// Parse parses text with Funcs; a missing map key fails rendering.
func Parse(text string) (*Template, error) {
	t, err := template.New("agent_path_template").Option("missingkey=error").Funcs(Funcs).Parse(text)
	if err != nil {
		return nil, err
	}
	return &Template{t: t}, nil
}

// Render executes the template on data.
func (t *Template) Render(data any) (string, error) {
	var buf bytes.Buffer
	if err := t.t.Execute(&buf, data); err != nil {
		return "", fmt.Errorf("rendering agent path template: %v", err)
	}
	return buf.String(), nil
}

// ID returns spiffe://<td>/spire/agent<rendered>, refusing an empty path and
// one that is not a canonical SPIFFE ID path (no "." or ".." segment, no
// empty segment, no character outside [A-Za-z0-9._-], so no
// percent-encoding).
func ID(td spiffeid.TrustDomain, rendered string) (spiffeid.ID, error) {
	if rendered == "" {
		return spiffeid.ID{}, errors.New("agent path template rendered an empty path")
	}
	if err := spiffeid.ValidatePath(rendered); err != nil {
		return spiffeid.ID{}, fmt.Errorf("agent path template rendered invalid path %q: %v", rendered, err)
	}
	id, err := spiffeid.FromPath(td, "/spire/agent"+rendered)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("agent ID: %v", err)
	}
	return id, nil
}

// SameSegments reports whether plain, the template rendered again with
// every "/" of the values an outsider sets (tags, labels, claims) replaced,
// has as many segments as rendered: a value that adds segments would let
// whoever sets it choose the shape of the agent ID (CVE-2021-27099).
func SameSegments(rendered, plain string) bool {
	return strings.Count(rendered, "/") == strings.Count(plain, "/")
}
