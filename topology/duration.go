package topology

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ParseDuration parses a duration as written in a topology file: a Go
// duration ("90m", "1h30m") optionally led by a number of days ("7d",
// "1d12h", "1.5d"). Negative durations are rejected.
func ParseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("topology: empty duration")
	}
	var days time.Duration
	rest := s
	// No Go duration unit contains a "d", so the first one ends the days.
	if before, after, ok := strings.Cut(s, "d"); ok {
		n, err := strconv.ParseFloat(before, 64)
		if err != nil || n < 0 || math.IsInf(n, 0) || math.IsNaN(n) || strings.ContainsAny(before, "+-eEnN") {
			return 0, fmt.Errorf("topology: invalid duration %q: bad number of days %q", s, before)
		}
		hours := n * 24
		if hours > float64(math.MaxInt64/int64(time.Hour)) {
			return 0, fmt.Errorf("topology: invalid duration %q: too long", s)
		}
		days = time.Duration(hours * float64(time.Hour))
		rest = after
	}
	var d time.Duration
	if rest != "" {
		if strings.HasPrefix(rest, "-") || (days != 0 && strings.HasPrefix(rest, "+")) {
			return 0, fmt.Errorf("topology: invalid duration %q", s)
		}
		var err error
		d, err = time.ParseDuration(rest)
		if err != nil {
			return 0, fmt.Errorf("topology: invalid duration %q: %v", s, strings.TrimPrefix(err.Error(), "time: "))
		}
	}
	if d > math.MaxInt64-days {
		return 0, fmt.Errorf("topology: invalid duration %q: too long", s)
	}
	return days + d, nil
}

// FormatDuration prints d the way a topology file writes it (and
// ParseDuration reads it back): "7d", "1h30m", "5m".
func FormatDuration(d time.Duration) string { return formatDuration(d) }

// formatDuration prints d the way a user would write it: two or more whole
// days as "Nd", otherwise Go's form without zero units ("1h30m", "2h", "5m").
func formatDuration(d time.Duration) string {
	if d >= 48*time.Hour && d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
