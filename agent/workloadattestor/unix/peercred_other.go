//go:build !linux

package unix

import (
	"errors"
	"net"
)

// errUnsupported is returned by PeerCred on systems without SO_PEERCRED.
var errUnsupported = errors.New("unix: peer credentials are only supported on linux")

// PeerCred is only implemented on linux; elsewhere it always fails.
func PeerCred(conn *net.UnixConn) (pid int32, uid, gid uint32, err error) {
	return 0, 0, 0, errUnsupported
}
