package docker

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
)

// FuzzInspectSelectors feeds the daemon's inspect answer, decoded as the
// moby client decodes it, to the checks and the selector rendering. Neither
// may panic; an answer about another container or without a Config is
// refused; and the selectors are exactly one label: per label, env: only
// for the allowed keys, and one image_id: when there is an image.
func FuzzInspectSelectors(f *testing.F) {
	b, err := json.Marshal(webContainer())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		var c container.InspectResponse
		if json.Unmarshal(data, &c) != nil {
			return
		}
		if err := checkInspect(c, webID); err != nil {
			if c.ID == webID && c.Config != nil {
				t.Fatalf("checkInspect refused the container's own document: %v", err)
			}
			return
		}
		a := &Attestor{env: map[string]bool{"ENVIRONMENT": true}}
		var labels, images int
		for _, s := range a.selectors(c) {
			if s.Type != SelectorType {
				t.Fatalf("selector %v of another type", s)
			}
			switch kind, rest, _ := strings.Cut(s.Value, ":"); kind {
			case "label":
				labels++
			case "env":
				if !strings.HasPrefix(rest, "ENVIRONMENT=") {
					t.Fatalf("env selector %q of a key not allowed", s.Value)
				}
			case "image_id":
				images++
				if rest != c.Config.Image {
					t.Fatalf("image_id %q, want %q", rest, c.Config.Image)
				}
			default:
				t.Fatalf("unexpected selector %q", s.Value)
			}
		}
		if labels != len(c.Config.Labels) || (images == 1) != (c.Config.Image != "") || images > 1 {
			t.Fatalf("%d label and %d image selectors for %d labels and image %q", labels, images, len(c.Config.Labels), c.Config.Image)
		}
	})
}
