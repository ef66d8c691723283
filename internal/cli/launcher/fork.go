package launcher

import (
	"errors"
	"os/exec"
	"runtime"
)

var errForkerStopped = errors.New("launcher: stopping, no new children")

// forker starts every child of one launcher from a single goroutine locked
// to its OS thread for the launcher's whole life.
//
// Children must not outlive arbor up however it dies, SIGKILL included, and
// only the kernel can act after a SIGKILL: on Linux each child is started
// with a parent-death signal (SysProcAttr.Pdeathsig, SIGTERM: the graceful
// stop every arbor process handles). The kernel sends it when the *thread*
// that forked the child exits, not the process, and Go forks from whatever
// thread the calling goroutine happens to run on; a thread the runtime
// retires would then stop a healthy child. Forking only from this locked
// thread ties the signal to the launcher: the thread lives until Up returns
// (after it has stopped the children itself) or the process dies.
//
// The alternative, children watching a pipe from the parent or polling
// getppid, needs code in every child kind and still races a parent that
// dies between fork and the first check; Go's fork path already closes that
// race for Pdeathsig (the child signals itself when its parent is gone
// before it could set it).
type forker struct {
	reqs chan forkReq
	done chan struct{}
}

type forkReq struct {
	cmd *exec.Cmd
	err chan error
}

// newForker starts the forking goroutine; stop ends it.
func newForker() (f *forker, stop func()) {
	f = &forker{reqs: make(chan forkReq), done: make(chan struct{})}
	quit := make(chan struct{})
	go func() {
		// Never unlocked: when this goroutine returns the runtime ends the
		// thread, which signals any child still running.
		runtime.LockOSThread()
		defer close(f.done)
		for {
			select {
			case r := <-f.reqs:
				r.err <- r.cmd.Start()
			case <-quit:
				return
			}
		}
	}()
	return f, func() { close(quit); <-f.done }
}

// start starts cmd from the forking thread.
func (f *forker) start(cmd *exec.Cmd) error {
	r := forkReq{cmd: cmd, err: make(chan error, 1)}
	select {
	case f.reqs <- r:
	case <-f.done:
		return errForkerStopped
	}
	return <-r.err
}
