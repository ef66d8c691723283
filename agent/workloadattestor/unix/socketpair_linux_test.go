package unix

import sysunix "golang.org/x/sys/unix"

func sysSocketpair() ([2]int, error) {
	return sysunix.Socketpair(sysunix.AF_UNIX, sysunix.SOCK_STREAM|sysunix.SOCK_CLOEXEC, 0)
}
