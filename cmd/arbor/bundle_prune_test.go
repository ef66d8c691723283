package main

import "testing"

// TestBundlePrune runs `arbor bundle prune` against a real server: a fresh
// server has nothing expired, so nothing is pruned and its own root and
// JWT key stay; a negative grace is refused before any call.
func TestBundlePrune(t *testing.T) {
	socket := startServer(t)
	tests := []struct {
		args    []string
		want    string
		wantErr string
	}{
		{[]string{"bundle", "prune", "--socket-path", socket}, "Pruned 0 X.509 and 0 JWT authorities expired more than 0s ago; the bundle holds 1 X.509 authority and 1 JWT authority\n", ""},
		{[]string{"bundle", "prune", "--socket-path", socket, "--grace", "1h"}, "Pruned 0 X.509 and 0 JWT authorities expired more than 1h0m0s ago; the bundle holds 1 X.509 authority and 1 JWT authority\n", ""},
		{[]string{"bundle", "prune", "--socket-path", socket, "--grace", "-1h"}, "", "bundle prune: --grace -1h0m0s is negative"},
	}
	for _, tt := range tests {
		out, _, err := arbor(t, "", tt.args...)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("arbor %q: error %v, want %q", tt.args, err, tt.wantErr)
			}
			continue
		}
		if err != nil || out != tt.want {
			t.Errorf("arbor %q = %q, %v; want %q", tt.args, out, err, tt.want)
		}
	}
}
