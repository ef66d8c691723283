package selector

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    Selector
		wantErr bool
	}{
		{"unix:uid:1000", Selector{"unix", "uid:1000"}, false},
		{"k8s:ns:default", Selector{"k8s", "ns:default"}, false},
		{"docker:label:a=b", Selector{"docker", "label:a=b"}, false},
		{"nocolon", Selector{}, true},
		{":value", Selector{}, true},
		{"type:", Selector{}, true},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("Parse(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q) error %v does not wrap ErrInvalid", tt.in, err)
		}
		if err == nil && got.String() != tt.in {
			t.Errorf("Parse(%q).String() = %q", tt.in, got.String())
		}
	}
}

func TestSets(t *testing.T) {
	a := Selector{"unix", "uid:1"}
	b := Selector{"unix", "gid:2"}
	c := Selector{"k8s", "ns:x"}
	tests := []struct {
		sub, super []Selector
		subset     bool
	}{
		{nil, nil, true},
		{nil, []Selector{a}, true},
		{[]Selector{a}, []Selector{a, b}, true},
		{[]Selector{a, b}, []Selector{b, a, c}, true},
		{[]Selector{a, a}, []Selector{a}, true},
		{[]Selector{a, c}, []Selector{a, b}, false},
		{[]Selector{a}, nil, false},
	}
	for _, tt := range tests {
		if got := IsSubset(tt.sub, tt.super); got != tt.subset {
			t.Errorf("IsSubset(%v, %v) = %v, want %v", tt.sub, tt.super, got, tt.subset)
		}
	}
	if !Equal([]Selector{a, b, a}, []Selector{b, a}) {
		t.Error("Equal ignores order and repeats: got false")
	}
	if Equal([]Selector{a}, []Selector{a, b}) {
		t.Error("Equal([a], [a b]) = true")
	}
	if got := Sorted([]Selector{c, a, b, a}); len(got) != 3 || got[0] != c || got[1] != b || got[2] != a {
		t.Errorf("Sorted = %v, want [k8s:ns:x unix:gid:2 unix:uid:1]", got)
	}
}
