package doctest

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseMarker(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    marker
		wantErr string
	}{
		{in: "run", want: marker{kind: kindRun}},
		{in: "run, output", want: marker{kind: kindRun, output: true}},
		{in: "run, output, exit 1", want: marker{kind: kindRun, output: true, exit: 1}},
		{in: "tree examples/quickstart.hcl, output", want: marker{kind: kindTree, arg: "examples/quickstart.hcl", output: true}},
		{in: "skip needs an AWS account, and root", want: marker{kind: kindSkip, arg: "needs an AWS account, and root"}},
		{in: "synopsis", want: marker{kind: kindSynopsis}},
		{in: "skip", wantErr: "skip needs a reason"},
		{in: "tree", wantErr: "tree needs one topology file"},
		{in: "run, outptu", wantErr: `unknown option "outptu"`},
		{in: "runn", wantErr: `unknown kind "runn"`},
		{in: "run, exit x", wantErr: `exit "x" is not a number`},
	} {
		got, err := parseMarker(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parseMarker(%q) error = %v, want one containing %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseMarker(%q): %v", tc.in, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(marker{})); diff != "" {
			t.Errorf("parseMarker(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}

// TestUnmarkedShellBlocksFail checks that a document cannot add a shell
// block, fenced or indented, without saying how the test runs it.
func TestUnmarkedShellBlocksFail(t *testing.T) {
	doc := strings.Join([]string{
		"# doc",
		"",
		"```sh",
		"arbor topology validate examples/quickstart.hcl",
		"```",
		"",
		"    arbor topology plan examples/quickstart.hcl",
		"",
		"<!-- doctest: skip -->",
		"```console",
		"$ arbor up x.hcl",
		"```",
		"",
		"```hcl",
		"server \"root\" {}",
		"```",
		"",
		"<!-- doctest: run -->",
		"  ```bash",
		"  arbor --help",
		"  ```",
	}, "\n")
	blocks, errs := parseDoc("x.md", doc)
	var got []string
	for _, err := range errs {
		got = append(got, err.Error())
	}
	want := []string{"x.md:3: ```sh block without a marker", "x.md:7: shell command in an indented block", "x.md:10: doctest: skip needs a reason"}
	if len(got) != len(want) {
		t.Fatalf("parseDoc errors = %q, want %d", got, len(want))
	}
	for k := range want {
		if !strings.HasPrefix(got[k], want[k]) {
			t.Errorf("parseDoc error %d = %q, want it to start with %q", k, got[k], want[k])
		}
	}
	if len(blocks) != 1 || blocks[0].line != 19 || blocks[0].marker.kind != kindRun || blocks[0].body[0] != "arbor --help" {
		t.Errorf("parseDoc blocks = %+v, want the bash block at line 19, unindented", blocks)
	}
}

func TestSteps(t *testing.T) {
	b := block{file: "x.md", line: 1, lang: "console", body: []string{
		"$ arbor entry create --parent-id spiffe://example.org/host \\",
		"    --spiffe-id spiffe://example.org/web",
		"Entry ID: ...",
		"",
		"$ arbor entry count",
		"1 registration entry",
	}}
	want := []step{
		{line: 2, cmd: "arbor entry create --parent-id spiffe://example.org/host  --spiffe-id spiffe://example.org/web", want: []string{"Entry ID: ..."}},
		{line: 6, cmd: "arbor entry count", want: []string{"1 registration entry"}},
	}
	if diff := cmp.Diff(want, b.steps(), cmp.AllowUnexported(step{})); diff != "" {
		t.Errorf("steps (-want +got):\n%s", diff)
	}
}

func TestMatchOutput(t *testing.T) {
	for _, tc := range []struct {
		want, got string
		ok        bool
	}{
		{"a\nb", "a\nb", true},
		{"a\nb", "a\nc", false},
		{"Serial number: 5f1c…", "Serial number: 5f1c0a77", true},
		{"CA until ... (...)", "CA until 2026-12-04T13:52:09Z (47h56m)", true},
		{"first\n...\nlast", "first\nx\ny\nlast", true},
		{"first\n...\nlast", "first\nlast", true},
		{"first\n...", "first", true},
		{"a", "a\nextra", false},
		{"a.b", "axb", false},
	} {
		if got := matchOutput(strings.Split(tc.want, "\n"), strings.Split(tc.got, "\n")); got != tc.ok {
			t.Errorf("matchOutput(%q, %q) = %v, want %v", tc.want, tc.got, got, tc.ok)
		}
	}
}
