package launcher

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// sameNeighbours counts the neighbour pairs of a ring (the last item
// neighbours the first) with the same trust domain.
func sameNeighbours(ring []string) int {
	if len(ring) < 2 {
		return 0
	}
	n := 0
	for i := range ring {
		if td(ring[i]) == td(ring[(i+1)%len(ring)]) {
			n++
		}
	}
	if len(ring) == 2 && n == 2 {
		return 1 // two items are one pair, seen from both sides
	}
	return n
}

// td is the trust domain of a "TD/leaf" test item.
func td(s string) string { d, _, _ := strings.Cut(s, "/"); return d }

// fewestSameNeighbours tries every order of items.
func fewestSameNeighbours(items []string) int {
	best := len(items)
	var permute func(k int)
	permute = func(k int) {
		if k == len(items) {
			best = min(best, sameNeighbours(items))
			return
		}
		for i := k; i < len(items); i++ {
			items[k], items[i] = items[i], items[k]
			permute(k + 1)
			items[k], items[i] = items[i], items[k]
		}
	}
	permute(0)
	return best
}

func TestRingOrder(t *testing.T) {
	tests := []struct {
		leaves []string
		want   []string // nil: only check the neighbours against every order
	}{
		{[]string{"a/1"}, []string{"a/1"}},
		{[]string{"a/1", "a/2", "a/3"}, []string{"a/1", "a/2", "a/3"}}, // one trust domain: as today
		{[]string{"a/1", "b/1"}, []string{"a/1", "b/1"}},
		{[]string{"a/1", "a/2", "b/1", "b/2"}, []string{"a/1", "b/1", "a/2", "b/2"}},
		{[]string{"a/1", "a/2", "a/3", "b/1", "b/2", "b/3"}, []string{"a/1", "b/1", "a/2", "b/2", "a/3", "b/3"}},
		{[]string{"a/1", "a/2", "b/1", "c/1"}, []string{"a/1", "b/1", "a/2", "c/1"}},
		{[]string{"b/1", "a/1", "a/2", "b/2", "a/3"}, nil},
		{[]string{"a/1", "a/2", "a/3", "b/1"}, nil},
		{[]string{"a/1", "a/2", "a/3", "a/4", "a/5", "b/1", "c/1"}, nil},
		{[]string{"a/1", "b/1", "b/2", "b/3", "b/4", "c/1"}, nil},
		{[]string{"a/1", "b/1", "c/1", "a/2", "b/2", "c/2", "a/3"}, nil},
		{[]string{"a/1", "a/2", "b/1", "b/2", "c/1", "c/2", "d/1"}, nil},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.leaves, ","), func(t *testing.T) {
			got := ringOrder(tt.leaves, td)
			if tt.want != nil && !slices.Equal(got, tt.want) {
				t.Errorf("ringOrder(%q) = %q, want %q", tt.leaves, got, tt.want)
			}
			if sorted, in := slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(tt.leaves)); !slices.Equal(sorted, in) {
				t.Fatalf("ringOrder(%q) = %q: not the same leaves", tt.leaves, got)
			}
			for _, d := range []string{"a", "b", "c", "d"} {
				of := func(s []string) []string {
					return slices.DeleteFunc(slices.Clone(s), func(x string) bool { return td(x) != d })
				}
				if !slices.Equal(of(got), of(tt.leaves)) {
					t.Errorf("ringOrder(%q) = %q: the leaves of %s are reordered", tt.leaves, got, d)
				}
			}
			if same, best := sameNeighbours(got), fewestSameNeighbours(slices.Clone(tt.leaves)); same != best {
				t.Errorf("ringOrder(%q) = %q has %d same-trust-domain neighbours, the best order %d", tt.leaves, got, same, best)
			}
		})
	}
}

// TestRingOrderEveryMix: for every mix of up to seven leaves in up to four
// trust domains, no order has fewer same-trust-domain neighbours.
func TestRingOrderEveryMix(t *testing.T) {
	var counts func(prefix []int)
	counts = func(prefix []int) {
		total := 0
		for _, c := range prefix {
			total += c
		}
		if len(prefix) == 4 {
			var leaves []string
			for d, c := range prefix {
				for i := range c {
					leaves = append(leaves, fmt.Sprintf("%c/%d", 'a'+d, i))
				}
			}
			got := ringOrder(leaves, td)
			if same, best := sameNeighbours(got), fewestSameNeighbours(slices.Clone(leaves)); same != best {
				t.Errorf("ringOrder(%q) = %q has %d same-trust-domain neighbours, the best order %d", leaves, got, same, best)
			}
			return
		}
		for c := 0; total+c <= 7; c++ {
			counts(append(slices.Clone(prefix), c))
		}
	}
	counts(nil)
}
