//go:build !linux

package launcher

import "syscall"

// childAttr puts a child in its own process group. Without Linux's
// parent-death signal a child outlives an arbor up killed with SIGKILL.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
