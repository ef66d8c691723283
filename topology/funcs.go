package topology

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
)

// functions returns the functions expressions in a topology file may call.
// Relative paths given to file() are relative to dir, the directory holding
// the topology file, so that a file can be moved together with what it reads.
func functions(dir string, lookupEnv func(string) (string, bool)) map[string]function.Function {
	return map[string]function.Function{
		"env":       envFunc(lookupEnv),
		"file":      fileFunc(dir),
		"trimspace": trimspaceFunc,
	}
}

// envFunc is env("NAME") or env("NAME", "fallback"): the value of an
// environment variable. An unset variable without a fallback is an error,
// because an empty secret (a DSN, say) would only fail later and further
// from its cause.
func envFunc(lookupEnv func(string) (string, bool)) function.Function {
	return function.New(&function.Spec{
		Description: "Returns the value of an environment variable, or the fallback when it is not set.",
		Params: []function.Parameter{
			{Name: "name", Type: cty.String},
		},
		VarParam: &function.Parameter{Name: "fallback", Type: cty.String},
		Type:     function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			name := args[0].AsString()
			if name == "" || strings.ContainsAny(name, "=\x00") {
				return cty.NilVal, function.NewArgErrorf(0, "%q is not an environment variable name", name)
			}
			if len(args) > 2 {
				return cty.NilVal, function.NewArgErrorf(2, "env takes a name and at most one fallback value")
			}
			if v, ok := lookupEnv(name); ok {
				return cty.StringVal(v), nil
			}
			if len(args) == 2 {
				return args[1], nil
			}
			return cty.NilVal, function.NewArgErrorf(0,
				"environment variable %s is not set; export it before running arbor, or give a fallback: env(%q, \"value\")", name, name)
		},
	})
}

// fileFunc is file("path"): the contents of a UTF-8 text file.
func fileFunc(dir string) function.Function {
	return function.New(&function.Spec{
		Description: "Returns the contents of a text file; relative paths are relative to the topology file.",
		Params: []function.Parameter{
			{Name: "path", Type: cty.String},
		},
		Type: function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			p := args[0].AsString()
			if p == "" {
				return cty.NilVal, function.NewArgErrorf(0, "the path is empty")
			}
			full := resolvePath(dir, p)
			b, err := os.ReadFile(full)
			if err != nil {
				return cty.NilVal, function.NewArgErrorf(0, "cannot read %s (paths are relative to the topology file's directory): %v", full, unwrapPathError(err))
			}
			if !utf8.Valid(b) {
				return cty.NilVal, function.NewArgErrorf(0, "%s is not UTF-8 text", full)
			}
			return cty.StringVal(string(b)), nil
		},
	})
}

// trimspaceFunc removes leading and trailing white space, typically the
// final newline of a secret read with file().
var trimspaceFunc = function.New(&function.Spec{
	Description: "Removes leading and trailing white space.",
	Params:      []function.Parameter{{Name: "s", Type: cty.String}},
	Type:        function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		return cty.StringVal(strings.TrimSpace(args[0].AsString())), nil
	},
})

// resolvePath joins a relative path to dir; absolute paths are kept.
func resolvePath(dir, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(dir, p)
}

func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return fmt.Errorf("%v", pe.Err)
	}
	return err
}
