package selector_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/arborid/arbor/internal/selector"
)

// FuzzParse checks that Parse never panics, refuses only with ErrInvalid,
// and that what it accepts is valid and prints back to its input.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"unix:uid:1000", "k8s:ns:default", "x509pop:san:a:b:c", "spiffe_id:spiffe://example.org/spire/agent/x",
		"", ":", "a:", ":b", "a", "a::", "::b", "unix:uid:", "ä:ü", "type:\x00", "a\nb:c",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := selector.Parse(s)
		if err != nil {
			if !errors.Is(err, selector.ErrInvalid) {
				t.Fatalf("Parse(%q) = %v, want an ErrInvalid error", s, err)
			}
			if sel != (selector.Selector{}) {
				t.Fatalf("Parse(%q) = %+v with error %v, want the zero Selector", s, sel, err)
			}
			return
		}
		if err := sel.Validate(); err != nil {
			t.Fatalf("Parse(%q) = %+v, which Validate refuses: %v", s, sel, err)
		}
		if strings.Contains(sel.Type, ":") || sel.Type == "" || sel.Value == "" {
			t.Fatalf("Parse(%q) = %+v, want a type without ':' and a non-empty value", s, sel)
		}
		if got := sel.String(); got != s {
			t.Fatalf("Parse(%q).String() = %q, want the input", s, got)
		}
		again, err := selector.Parse(sel.String())
		if err != nil || again != sel {
			t.Fatalf("Parse(Parse(%q).String()) = %+v, %v, want %+v", s, again, err, sel)
		}
		if sorted := selector.Sorted([]selector.Selector{sel, sel}); len(sorted) != 1 || sorted[0] != sel {
			t.Fatalf("Sorted of %+v twice = %+v, want it once", sel, sorted)
		}
	})
}
