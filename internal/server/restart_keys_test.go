package server_test

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/arborid/arbor/internal/server"
)

// tierState is what must not change when a server restarts.
type tierState struct {
	CASerial, JWTKID string
	X509             [][]byte
	KIDs             []string
	Sequence         uint64
}

func stateOf(h *harness) tierState {
	ca, _ := h.srv.CA().X509CA()
	b := h.srv.Bundles().Own()
	kids := ownKIDs(h)
	slices.Sort(kids)
	return tierState{
		CASerial: ca.SerialNumber.String(), JWTKID: h.srv.CA().Status().JWTKey.KeyID,
		X509: ownX509(h), KIDs: kids, Sequence: b.SequenceNumber,
	}
}

// TestRestartsDoNotPileUpKeys: restarting a root and its
// child five times each (alternately, the child also while its parent is
// back) keeps the same active X.509 CA and JWT key on both, and neither
// bundle grows or even changes its sequence number: a key is reused after a
// restart, not replaced (spiffe/spire#4429).
func TestRestartsDoNotPileUpKeys(t *testing.T) {
	root := startServer(t)
	child := startChildOn(t, root, "child", 100*time.Millisecond, func(c *server.Config) { c.CATTL = 2 * time.Hour })
	waitFor(t, "both JWT keys in both bundles", func() bool { return len(ownKIDs(root)) == 2 && len(ownKIDs(child)) == 2 })
	wantRoot, wantChild := stateOf(root), stateOf(child)
	if len(wantRoot.X509) != 1 || !cmp.Equal(wantRoot.X509, wantChild.X509) {
		t.Fatalf("before restarts: root bundle has %d X.509 authorities, child's equal: %t; want the one root in both", len(wantRoot.X509), cmp.Equal(wantRoot.X509, wantChild.X509))
	}
	for i := range 5 {
		root.restart()
		child.restart()
		// A round trip through the parent after the restarts: the child
		// syncs the root's bundle (nothing new) and the root answers.
		waitFor(t, "the child reaching the restarted root", func() bool {
			_, err := child.srv.SyncParentBundle(ctxT(t))
			return err == nil
		})
		for name, c := range map[string]struct {
			h    *harness
			want tierState
		}{"root": {root, wantRoot}, "child": {child, wantChild}} {
			if diff := cmp.Diff(c.want, stateOf(c.h)); diff != "" {
				t.Fatalf("after restart %d the %s changed (-before +after):\n%s", i+1, name, diff)
			}
		}
	}
}
