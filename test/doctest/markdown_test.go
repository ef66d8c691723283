package doctest

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// A kind says how a shell block of a document is checked.
type kind string

const (
	kindRun      kind = "run"      // run from a copy of the repository files
	kindTree     kind = "tree"     // run while `arbor up FILE` serves a tree
	kindSkip     kind = "skip"     // not run, for the reason given
	kindSynopsis kind = "synopsis" // usage lines: each command and flag exists
)

// A block is one fenced shell block of a document and its marker.
type block struct {
	file   string // the document, relative to the repository root
	line   int    // the line of the opening fence, 1-based
	lang   string // the fence's info string: sh, bash, shell or console
	body   []string
	marker marker
}

func (b block) String() string { return fmt.Sprintf("%s:%d", b.file, b.line) }

// A marker is the parsed `<!-- doctest: ... -->` comment before a fence.
type marker struct {
	kind   kind
	arg    string // tree: the topology file; skip: the reason
	output bool   // compare the printed output with the block's
	exit   int    // the exit status of the block's last command; the others exit 0
}

// shellLangs are the fence info strings whose blocks are shell commands.
var shellLangs = map[string]bool{"sh": true, "bash": true, "shell": true, "console": true}

var (
	markerRE = regexp.MustCompile(`^<!--\s*doctest:\s*(.*?)\s*-->$`)
	fenceRE  = regexp.MustCompile("^( *)(```+|~~~+)\\s*([^`\\s]*)")
	// commandRE recognizes a shell command written as an indented block,
	// which the test cannot see and so refuses.
	commandRE = regexp.MustCompile(`^(\$ |arbor |go |\./|spire-server |spire-agent |curl |export |sudo |kubectl |openssl |\(umask |[A-Z_]+=\$\()`)
)

// parseMarker parses the text of a doctest comment: a kind, then options
// separated by commas.
func parseMarker(s string) (marker, error) {
	parts := strings.Split(s, ",")
	head := strings.Fields(parts[0])
	if len(head) == 0 {
		return marker{}, fmt.Errorf("empty doctest marker")
	}
	m := marker{kind: kind(head[0])}
	rest := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(parts[0]), head[0]))
	switch m.kind {
	case kindRun, kindSynopsis:
		if rest != "" {
			return marker{}, fmt.Errorf("doctest: %s takes no argument, got %q", m.kind, rest)
		}
	case kindTree:
		if len(head) != 2 {
			return marker{}, fmt.Errorf("doctest: tree needs one topology file, as in <!-- doctest: tree examples/quickstart.hcl -->")
		}
		m.arg = head[1]
	case kindSkip:
		// The reason may itself hold commas.
		m.arg = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(s), "skip"))
		if m.arg == "" {
			return marker{}, fmt.Errorf("doctest: skip needs a reason, as in <!-- doctest: skip needs an AWS account -->")
		}
		return m, nil
	default:
		return marker{}, fmt.Errorf("doctest: unknown kind %q (run, tree FILE, skip REASON or synopsis)", head[0])
	}
	for _, opt := range parts[1:] {
		f := strings.Fields(opt)
		switch {
		case len(f) == 1 && f[0] == "output":
			m.output = true
		case len(f) == 2 && f[0] == "exit":
			n, err := strconv.Atoi(f[1])
			if err != nil {
				return marker{}, fmt.Errorf("doctest: exit %q is not a number", f[1])
			}
			m.exit = n
		default:
			return marker{}, fmt.Errorf("doctest: unknown option %q (output, exit N)", strings.TrimSpace(opt))
		}
	}
	if m.kind == kindSynopsis && (m.output || m.exit != 0) {
		return marker{}, fmt.Errorf("doctest: synopsis takes no options")
	}
	return m, nil
}

// parseDoc returns the shell blocks of a document, and one error per shell
// block without a valid marker and per shell command left in an indented
// block.
func parseDoc(file, text string) ([]block, []error) {
	var (
		blocks []block
		errs   []error
	)
	lines := strings.Split(text, "\n")
	prevBlank := true
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if m := fenceRE.FindStringSubmatch(l); m != nil {
			indent, fence, lang := len(m[1]), m[2], m[3]
			b := block{file: file, line: i + 1, lang: lang}
			j := i + 1
			for ; j < len(lines); j++ {
				t := strings.TrimLeft(lines[j], " ")
				if strings.HasPrefix(t, fence) && strings.TrimSpace(strings.TrimLeft(t, fence[:1])) == "" {
					break
				}
				b.body = append(b.body, trimIndent(lines[j], indent))
			}
			if j == len(lines) {
				errs = append(errs, fmt.Errorf("%s: fence not closed", b))
			}
			prev := ""
			if i > 0 {
				prev = strings.TrimSpace(lines[i-1])
			}
			mm := markerRE.FindStringSubmatch(prev)
			switch {
			case shellLangs[lang] && mm == nil:
				errs = append(errs, fmt.Errorf("%s: ```%s block without a marker: put <!-- doctest: run -->, <!-- doctest: tree FILE -->, <!-- doctest: skip REASON --> or <!-- doctest: synopsis --> on the line before it (docs/doctest.md)", b, lang))
			case shellLangs[lang]:
				mk, err := parseMarker(mm[1])
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %v", b, err))
					break
				}
				if mk.output && lang != "console" {
					errs = append(errs, fmt.Errorf("%s: output is compared only in ```console blocks ($ before each command)", b))
					break
				}
				b.marker = mk
				blocks = append(blocks, b)
			case lang == "" && len(b.body) > 0 && commandRE.MatchString(strings.TrimSpace(b.body[0])):
				errs = append(errs, fmt.Errorf("%s: shell commands in a fence without a language: make it ```sh (or ```console) with a doctest marker (docs/doctest.md)", b))
			case mm != nil:
				errs = append(errs, fmt.Errorf("%s: doctest marker before a ```%s block, which is not shell (sh, bash, shell, console)", b, lang))
			}
			i = j
			prevBlank = false
			continue
		}
		if prevBlank && strings.HasPrefix(l, "    ") && commandRE.MatchString(strings.TrimSpace(l)) {
			errs = append(errs, fmt.Errorf("%s:%d: shell command in an indented block: fence it as ```sh (or ```console) with a doctest marker (docs/doctest.md)", file, i+1))
		}
		prevBlank = strings.TrimSpace(l) == ""
	}
	return blocks, errs
}

// trimIndent removes up to n leading spaces, the indentation of a fence
// inside a list item.
func trimIndent(s string, n int) string {
	for k := 0; k < n && strings.HasPrefix(s, " "); k++ {
		s = s[1:]
	}
	return s
}

// A step is one command of a block and, in a console block, the output
// shown after it.
type step struct {
	line int // the command's line in the document
	cmd  string
	want []string
}

// steps splits a block's body into commands. In a console block a command
// starts with "$ " and the lines up to the next one are its output; in the
// others every line is a command, comments and blank lines aside. A line
// ending in a backslash continues on the next.
func (b block) steps() []step {
	var out []step
	console := b.lang == "console"
	for i := 0; i < len(b.body); i++ {
		l := b.body[i]
		t := strings.TrimSpace(l)
		if console {
			if !strings.HasPrefix(t, "$ ") {
				if len(out) > 0 {
					out[len(out)-1].want = append(out[len(out)-1].want, strings.TrimRight(l, " "))
				}
				continue
			}
			t = strings.TrimPrefix(t, "$ ")
		} else if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		s := step{line: b.line + 1 + i, cmd: t}
		for strings.HasSuffix(s.cmd, `\`) && i+1 < len(b.body) {
			i++
			s.cmd = strings.TrimSuffix(s.cmd, `\`) + " " + strings.TrimSpace(b.body[i])
		}
		out = append(out, s)
	}
	for k := range out {
		for len(out[k].want) > 0 && out[k].want[len(out[k].want)-1] == "" {
			out[k].want = out[k].want[:len(out[k].want)-1]
		}
	}
	return out
}

// matchOutput reports whether got matches want line by line. A want line
// that is only "..." stands for any number of lines; elsewhere "..." (or
// "…") stands for any text within a line. Trailing spaces are ignored.
func matchOutput(want, got []string) bool {
	if len(want) == 0 {
		return len(got) == 0
	}
	w := strings.TrimRight(want[0], " ")
	if strings.TrimSpace(w) == "..." {
		for k := 0; k <= len(got); k++ {
			if matchOutput(want[1:], got[k:]) {
				return true
			}
		}
		return false
	}
	if len(got) == 0 || !matchLine(w, strings.TrimRight(got[0], " ")) {
		return false
	}
	return matchOutput(want[1:], got[1:])
}

// matchLine matches one line, "..." and "…" as wildcards.
func matchLine(want, got string) bool {
	parts := regexp.MustCompile(`\.\.\.|…`).Split(want, -1)
	var re strings.Builder
	re.WriteString("^")
	for k, p := range parts {
		if k > 0 {
			re.WriteString(".*")
		}
		re.WriteString(regexp.QuoteMeta(p))
	}
	re.WriteString("$")
	return regexp.MustCompile(re.String()).MatchString(got)
}
