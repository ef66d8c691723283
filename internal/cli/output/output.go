// Package output is how the command line prints results: the one --output
// format every arbor command accepts.
package output

import (
	"fmt"
	"strings"
)

// Format is how results are printed.
type Format int

const (
	// FormatPretty is human-readable text (SPIRE's "pretty").
	FormatPretty Format = iota
	// FormatJSON is one JSON document, for scripts.
	FormatJSON
)

// ParseFormat parses an --output value: "pretty" (or "text", or empty) or "json".
func ParseFormat(s string) (Format, error) {
	switch strings.ToLower(s) {
	case "", "pretty", "text":
		return FormatPretty, nil
	case "json":
		return FormatJSON, nil
	}
	return 0, fmt.Errorf("unknown output format %q (want pretty or json)", s)
}
