package tfprovider

import (
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/types"
)

func TestFormatSeconds(t *testing.T) {
	for n, want := range map[int32]string{1: "1s", 90: "1m30s", 60: "1m", 3600: "1h", 5400: "1h30m", 3601: "1h0m1s", 86400: "1d", 7 * 86400: "7d", 90000: "25h"} {
		if got := formatSeconds(n); got != want {
			t.Errorf("formatSeconds(%d) = %q, want %q", n, got, want)
		}
		if back, err := parseSeconds(formatSeconds(n), 0); err != nil || back != n {
			t.Errorf("parseSeconds(formatSeconds(%d)) = %d, %v", n, back, err)
		}
	}
}

// The state keeps the user's spelling of a duration the server holds as
// the same seconds, and shows the server's value otherwise.
func TestDurationState(t *testing.T) {
	cases := []struct {
		prior types.String
		n     int32
		want  types.String
	}{
		{types.StringValue("1h"), 3600, types.StringValue("1h")},
		{types.StringValue("60m"), 3600, types.StringValue("60m")},
		{types.StringValue("3600s"), 3600, types.StringValue("3600s")},
		{types.StringValue("1d"), 86400, types.StringValue("1d")},
		{types.StringValue("1h"), 7200, types.StringValue("2h")},
		{types.StringNull(), 0, types.StringNull()},
		{types.StringNull(), 600, types.StringValue("10m")},
		{types.StringValue("1h"), 0, types.StringNull()},
	}
	for _, tc := range cases {
		if got := durationState(tc.prior, tc.n); !got.Equal(tc.want) {
			t.Errorf("durationState(%v, %d) = %v, want %v", tc.prior, tc.n, got, tc.want)
		}
	}
}

func TestParseSecondsRefusals(t *testing.T) {
	for _, s := range []string{"", "1 hour", "1.5s", "-1s", "0.5d1ms", "100000000d"} {
		if n, err := parseSeconds(s, 0); err == nil {
			t.Errorf("parseSeconds(%q) = %d, want an error", s, n)
		}
	}
	if _, err := parseSeconds("0s", 1); err == nil {
		t.Errorf("parseSeconds(\"0s\", 1ns) accepted a duration shorter than the minimum")
	}
}

// The provider's timeout reads durations as every other attribute does.
func TestProviderTimeout(t *testing.T) {
	for in, want := range map[string]time.Duration{"30s": 30 * time.Second, "2m": 2 * time.Minute, "1d": 24 * time.Hour} {
		o, err := providerModel{Timeout: types.StringValue(in)}.options()
		if err != nil || o.timeout != want {
			t.Errorf("timeout %q = %v, %v; want %v", in, o.timeout, err, want)
		}
	}
	for _, in := range []string{"0s", "soon", "-1s"} {
		if _, err := (providerModel{Timeout: types.StringValue(in)}).options(); err == nil {
			t.Errorf("timeout %q accepted", in)
		}
	}
}
