package admin_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arborid/arbor/internal/cli/admin"
)

// DialTLS refuses, in one line naming what is wrong, what it cannot use,
// before any connection is made.
func TestDialTLSRefusals(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		opts admin.TLSOptions
		want string
		is   error
	}{
		{"no address", admin.TLSOptions{}, "no server address given", admin.ErrUnreachable},
		{"not host:port", admin.TLSOptions{Address: "localhost"}, `server address "localhost" is not host:port`, nil},
		{"missing SVID", admin.TLSOptions{Address: "127.0.0.1:1", CertFile: filepath.Join(dir, "none.pem"), KeyFile: filepath.Join(dir, "none.key")},
			"admin X509-SVID (" + filepath.Join(dir, "none.pem"), nil},
		{"unreadable SVID", admin.TLSOptions{Address: "127.0.0.1:1", CertFile: garbage, KeyFile: garbage}, "admin X509-SVID (" + garbage, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := admin.DialTLS(tc.opts)
			if err == nil {
				c.Close()
				t.Fatalf("DialTLS(%+v) succeeded, want an error", tc.opts)
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("DialTLS(%+v) = %q, want one line with %q", tc.opts, err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("DialTLS(%+v) = %v, want errors.Is %v", tc.opts, err, tc.is)
			}
		})
	}
}
