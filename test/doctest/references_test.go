package doctest

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// refRE finds what reads as a file of the repository: a path with a folder
// (docs/cli.md, internal/server/oidc_test.go) or an upper-case Markdown
// name (DESIGN.md).
var refRE = regexp.MustCompile("(?:^|[\\s(`\"'])((?:[A-Za-z0-9_.-]+/)+[A-Za-z0-9_.-]+\\.(?:md|hcl|go|sh)|[A-Z][A-Z_]+\\.md)\\b")

// TestDocReferences fails on a document naming a repository file that does
// not exist, relative to the repository root, to the document or to
// examples/ (the docs name example files as that folder lists them).
func TestDocReferences(t *testing.T) {
	for _, f := range docFiles(t) {
		text, err := os.ReadFile(filepath.Join(repoRoot, f))
		if err != nil {
			t.Fatal(err)
		}
		for n, line := range strings.Split(string(text), "\n") {
			for _, m := range refRE.FindAllStringSubmatch(line, -1) {
				ref := m[1]
				if strings.Contains(ref, ".arbor/") || strings.HasPrefix(ref, "/") {
					continue // state a run creates, or a path of the reader's machine
				}
				if exists(filepath.Join(repoRoot, ref)) || exists(filepath.Join(repoRoot, filepath.Dir(f), ref)) ||
					exists(filepath.Join(repoRoot, "examples", ref)) {
					continue
				}
				t.Errorf("%s:%d: %s does not exist", f, n+1, ref)
			}
		}
	}
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
