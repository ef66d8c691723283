package launcher

import "syscall"

// childAttr puts a child in its own process group (Ctrl-C reaches arbor up,
// which stops the children in order) and has the kernel send it SIGTERM
// when arbor up's forking thread ends, however arbor up died.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
