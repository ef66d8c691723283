package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/arborid/arbor/topology"
)

// warnOldState prints one warning line for each server of f among nodes
// (every server when nodes is empty) that keeps its state in the default
// place, when that place holds no state yet but the layout before
// per-file state roots (.arbor/NAME beside the file, shared by every file of
// the folder) does. The state is not moved: several files of one folder
// used that directory, and only the user knows whose it is.
func warnOldState(w io.Writer, f *topology.File, nodes ...string) {
	for _, s := range f.Servers {
		if len(nodes) > 0 && !slices.Contains(nodes, s.Name) {
			continue
		}
		if line := oldStateWarning(f, s); line != "" {
			fmt.Fprintln(w, line)
		}
	}
}

func oldStateWarning(f *topology.File, s *topology.Server) string {
	if s.StateDir != filepath.Join(topology.StateRoot(f.Path), s.Name) {
		return "" // state_dir set in the file: nothing moved
	}
	old := filepath.Join(filepath.Dir(f.Path), topology.DefaultStateDirName, s.Name)
	if !holdsState(old) || holdsState(s.StateDir) {
		return ""
	}
	return fmt.Sprintf("arbor: warning: server %q: its state is now kept in %s, which holds none yet, and %s holds state of the former layout "+
		"(shared by every file of the folder with a server %q); if it is this file's, stop arbor and move it: mkdir -p %s && mv %s/* %s/",
		s.Name, s.StateDir, old, s.Name, s.StateDir, old, s.StateDir)
}

// holdsState reports whether dir holds a server's state: its CA or its
// SQLite datastore.
func holdsState(dir string) bool {
	for _, name := range []string{"ca", "datastore.sqlite3"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return true
		}
	}
	return false
}
