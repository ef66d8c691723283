package doctest

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestHelpExamples checks the Examples of every `arbor ... --help`: each
// example's --flags exist, and the example files and state paths it names
// (examples/x.hcl, examples/.arbor/x/...) are those of a file in examples/,
// so an example copied into a shell at the repository root finds them.
func TestHelpExamples(t *testing.T) {
	h := newHarness(t)
	pathRE := regexp.MustCompile(`examples/(?:\.arbor/([A-Za-z0-9_-]+)/)?[A-Za-z0-9_./-]*`)
	flagRE := regexp.MustCompile(`(?:^|\s)(--[a-z][a-z0-9-]*)`)
	seen := map[string]bool{}
	examples := 0
	var walk func(words []string)
	walk = func(words []string) {
		key := strings.Join(words, " ")
		if seen[key] {
			return
		}
		seen[key] = true
		help, err := h.helpOf(words)
		if err != nil {
			t.Errorf("arbor %s --help: %v", key, err)
			return
		}
		for _, ex := range section(help, "Examples:") {
			line, _, _ := strings.Cut(strings.TrimSpace(ex), " #")
			examples++
			for _, m := range pathRE.FindAllStringSubmatch(line, -1) {
				p := strings.TrimRight(m[0], ".,;:)")
				if m[1] != "" {
					p = "examples/" + m[1] + ".hcl"
				}
				if strings.HasSuffix(p, ".hcl") && !exists(filepath.Join(repoRoot, p)) {
					t.Errorf("arbor %s --help: example %q: %s does not exist", key, line, p)
				}
			}
			for _, m := range flagRE.FindAllStringSubmatch(line, -1) {
				if !regexp.MustCompile(regexp.QuoteMeta(m[1]) + `\b`).MatchString(help) {
					t.Errorf("arbor %s --help: example %q: no flag %s", key, line, m[1])
				}
			}
		}
		for _, c := range section(help, "Available Commands:") {
			f := strings.Fields(c)
			if len(f) == 0 || f[0] == "help" || f[0] == "completion" {
				continue
			}
			walk(append(append([]string{}, words...), f[0]))
		}
	}
	walk(nil)
	if len(seen) < 10 || examples < 20 {
		t.Fatalf("walked %d commands and %d example lines, want arbor's whole tree", len(seen), examples)
	}
	t.Logf("%d commands, %d example lines", len(seen), examples)
}

// section returns the indented lines of a cobra help section, up to the
// next title; a line ending in a backslash is joined with the next.
func section(help, title string) []string {
	_, rest, ok := strings.Cut(help, "\n"+title+"\n")
	if !ok {
		return nil
	}
	var out []string
	cont := false
	for _, l := range strings.Split(rest, "\n") {
		if l != "" && !strings.HasPrefix(l, " ") {
			break
		}
		switch {
		case strings.TrimSpace(l) == "" || strings.HasPrefix(strings.TrimSpace(l), "#"):
			cont = false
			continue
		case cont:
			out[len(out)-1] = strings.TrimSuffix(out[len(out)-1], "\\") + " " + strings.TrimSpace(l)
		default:
			out = append(out, l)
		}
		cont = strings.HasSuffix(l, "\\")
	}
	return out
}
