//go:build linux

package unix

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// PeerCred returns the pid, uid and gid of the process at the other end of
// conn, as the kernel recorded them when that process connected (SO_PEERCRED).
// Credentials cannot be forged by the peer, which is what makes them the
// Workload API's starting point for attestation.
func PeerCred(conn *net.UnixConn) (pid int32, uid, gid uint32, err error) {
	if conn == nil {
		return 0, 0, 0, fmt.Errorf("unix: peer credentials: nil connection")
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("unix: peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, 0, 0, fmt.Errorf("unix: peer credentials: %w", err)
	}
	if credErr != nil {
		return 0, 0, 0, fmt.Errorf("unix: peer credentials: %w", credErr)
	}
	return cred.Pid, cred.Uid, cred.Gid, nil
}
