package topology

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// FormatDiagnostics renders diagnostics the way the CLI prints them, one per
// diagnostic:
//
//	file:line:col: error: summary
//	  detail
//
// files, which may be nil, maps file names to parsed files; when it holds
// the diagnostic's file, the offending source line follows the detail.
// (hcl.NewDiagnosticTextWriter gives a longer form with context.)
func FormatDiagnostics(diags hcl.Diagnostics, files map[string]*hcl.File) string {
	var b strings.Builder
	for _, d := range diags {
		sev := "error"
		if d.Severity == hcl.DiagWarning {
			sev = "warning"
		}
		if d.Subject != nil {
			fmt.Fprintf(&b, "%s:%d:%d: ", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
		}
		fmt.Fprintf(&b, "%s: %s\n", sev, d.Summary)
		if d.Detail != "" {
			for _, line := range strings.Split(d.Detail, "\n") {
				fmt.Fprintf(&b, "  %s\n", line)
			}
		}
		if d.Subject != nil && files != nil {
			if f := files[d.Subject.Filename]; f != nil {
				if line, ok := sourceLine(f.Bytes, d.Subject.Start.Line); ok {
					fmt.Fprintf(&b, "  %4d | %s\n", d.Subject.Start.Line, line)
				}
			}
		}
	}
	return b.String()
}

func sourceLine(src []byte, n int) (string, bool) {
	if n < 1 {
		return "", false
	}
	lines := strings.Split(string(src), "\n")
	if n > len(lines) {
		return "", false
	}
	return strings.TrimRight(lines[n-1], "\r"), true
}

// sortDiagnostics orders diagnostics by position so that output is stable
// (hcl reports unknown attributes in map order); positionless ones go first.
func sortDiagnostics(diags hcl.Diagnostics) hcl.Diagnostics {
	slices.SortStableFunc(diags, func(a, b *hcl.Diagnostic) int {
		switch {
		case a.Subject == nil && b.Subject == nil:
			return 0
		case a.Subject == nil:
			return -1
		case b.Subject == nil:
			return 1
		}
		return cmp.Or(
			cmp.Compare(a.Subject.Filename, b.Subject.Filename),
			cmp.Compare(a.Subject.Start.Byte, b.Subject.Start.Byte),
		)
	})
	return diags
}

// explain adds a way to fix it to the few diagnostics hcl writes without
// one. hcl's diagnostics carry no codes, so its summaries are the only handle.
func explain(diags hcl.Diagnostics, varNames []string) hcl.Diagnostics {
	declared := "The topology declares no variables."
	if len(varNames) > 0 {
		declared = "Declared variables: " + strings.Join(varNames, ", ") + "."
	}
	for _, d := range diags {
		switch {
		case d.Summary == "Variables not allowed":
			d.Detail = "A variable's default must be a constant: write the value itself, or read it with env(\"NAME\") or file(\"path\")."
		case d.Summary == "Unknown variable":
			d.Detail = strings.TrimSpace(d.Detail + " The only references are var.NAME, for variables declared with variable \"NAME\" { default = ... }. " + declared)
		case d.Summary == "Unsupported attribute" && strings.Contains(d.Detail, "does not have an attribute named"):
			d.Detail = strings.TrimSpace(d.Detail + " Declare it with a variable block, or fix the name. " + declared)
		case d.Summary == "Function calls not allowed", d.Summary == "Call to unknown function":
			d.Detail = strings.TrimSpace(d.Detail + " The functions available are env(\"NAME\"), env(\"NAME\", \"fallback\"), file(\"path\") and trimspace(s).")
		}
	}
	return diags
}

// checkHostPort accepts "host:port" with a numeric port; host may be empty
// (all interfaces) or a bracketed IPv6 address.
func checkHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return errors.New(ae.Err)
		}
		return err
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

// suggest returns the candidate closest to given when it is a likely typo.
func suggest(given string, candidates []string) string {
	best, bestDist := "", 3
	for _, c := range candidates {
		if d := editDistance(given, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

// quotedList renders ["a" "b" "c"] as `"a", "b" or "c"`.
func quotedList(items []string) string {
	q := make([]string, len(items))
	for i, it := range items {
		q[i] = strconv.Quote(it)
	}
	if len(q) <= 1 {
		return strings.Join(q, "")
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
