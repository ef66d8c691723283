// Package selector provides the selector value type shared by node attestation,
// workload attestation and registration entries on every tier.
package selector

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Selector is one attested property, such as unix:uid:1000 (Type "unix",
// Value "uid:1000"). The zero value is not a valid selector.
type Selector struct {
	Type  string
	Value string
}

// ErrInvalid is returned (wrapped) by Parse and Validate for malformed selectors.
var ErrInvalid = errors.New("invalid selector")

// Parse parses "type:value" where value may itself contain colons.
func Parse(s string) (Selector, error) {
	typ, value, ok := strings.Cut(s, ":")
	if !ok {
		return Selector{}, fmt.Errorf("%w %q: want type:value", ErrInvalid, s)
	}
	sel := Selector{Type: typ, Value: value}
	if err := sel.Validate(); err != nil {
		return Selector{}, err
	}
	return sel, nil
}

// Validate reports whether s has a non-empty type without colons and a non-empty value.
func (s Selector) Validate() error {
	switch {
	case s.Type == "":
		return fmt.Errorf("%w: missing type", ErrInvalid)
	case strings.Contains(s.Type, ":"):
		return fmt.Errorf("%w: type %q contains ':'", ErrInvalid, s.Type)
	case s.Value == "":
		return fmt.Errorf("%w: missing value for type %q", ErrInvalid, s.Type)
	}
	return nil
}

// String returns "type:value".
func (s Selector) String() string { return s.Type + ":" + s.Value }

// Compare orders selectors by type, then value.
func Compare(a, b Selector) int {
	if c := strings.Compare(a.Type, b.Type); c != 0 {
		return c
	}
	return strings.Compare(a.Value, b.Value)
}

// Sorted returns a sorted copy of sels with duplicates removed.
func Sorted(sels []Selector) []Selector {
	out := slices.Clone(sels)
	slices.SortFunc(out, Compare)
	return slices.Compact(out)
}

// IsSubset reports whether every selector of sub is in super.
func IsSubset(sub, super []Selector) bool {
	for _, s := range sub {
		if !slices.Contains(super, s) {
			return false
		}
	}
	return true
}

// Equal reports whether a and b hold the same set of selectors.
func Equal(a, b []Selector) bool {
	return slices.Equal(Sorted(a), Sorted(b))
}
