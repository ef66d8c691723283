package svidcli

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// fileContent is one file a target writes.
type fileContent struct {
	path string
	data []byte
	mode os.FileMode
}

// pickSVID finds the target's SVID in what the agent sent.
func (t *Target) pickSVID(xc *workloadapi.X509Context) (*x509svid.SVID, error) {
	if len(xc.SVIDs) == 0 {
		return nil, errors.New("the agent sent no X509-SVID")
	}
	switch {
	case !t.ID.IsZero():
		for _, s := range xc.SVIDs {
			if s.ID == t.ID {
				return s, nil
			}
		}
		return nil, fmt.Errorf("the agent gives this process no SVID for %s (it gives %s): check the entry's selectors", t.ID, svidIDs(xc.SVIDs))
	case t.Hint != "":
		for _, s := range xc.SVIDs {
			if s.Hint == t.Hint {
				return s, nil
			}
		}
		return nil, fmt.Errorf("the agent gives this process no SVID with hint %q (it gives %s)", t.Hint, svidIDs(xc.SVIDs))
	}
	return xc.SVIDs[0], nil
}

func svidIDs(svids []*x509svid.SVID) string {
	var ids []string
	for _, s := range svids {
		id := s.ID.String()
		if s.Hint != "" {
			id += " (hint " + s.Hint + ")"
		}
		ids = append(ids, id)
	}
	return strings.Join(ids, ", ")
}

// render computes the X.509 files of the target from svid and bundles.
func (t *Target) render(svid *x509svid.SVID, bundles *x509bundle.Set) ([]fileContent, error) {
	chain, key, err := svid.Marshal()
	if err != nil {
		return nil, fmt.Errorf("encode SVID %s: %w", svid.ID, err)
	}
	var out []fileContent
	if t.KeyFile != "" {
		out = append(out, fileContent{t.KeyFile, key, t.KeyMode})
	}
	if t.CertFile != "" {
		out = append(out, fileContent{t.CertFile, chain, 0o644})
	}
	if t.CombinedFile != "" {
		out = append(out, fileContent{t.CombinedFile, slices.Concat(chain, key), t.KeyMode})
	}
	if t.BundleFile != "" {
		b, err := t.bundlePEM(svid.ID.TrustDomain(), bundles)
		if err != nil {
			return nil, err
		}
		out = append(out, fileContent{t.BundleFile, b, 0o644})
	}
	return out, nil
}

// bundlePEM is the own trust domain's CA certificates, then the chosen
// federated ones in trust domain order.
func (t *Target) bundlePEM(own spiffeid.TrustDomain, bundles *x509bundle.Set) ([]byte, error) {
	if bundles == nil {
		return nil, fmt.Errorf("the agent sent no bundle for %s", own)
	}
	b, ok := bundles.Get(own)
	if !ok || len(b.X509Authorities()) == 0 {
		return nil, fmt.Errorf("the agent sent no bundle for %s", own)
	}
	var buf bytes.Buffer
	add := func(b *x509bundle.Bundle) {
		for _, c := range b.X509Authorities() {
			pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		}
	}
	add(b)
	for _, fb := range sortedBundles(bundles) {
		td := fb.TrustDomain()
		if td == own || !(t.AllFederated || slices.Contains(t.Federated, td)) {
			continue
		}
		add(fb)
	}
	for _, td := range t.Federated {
		if _, ok := bundles.Get(td); !ok {
			return nil, fmt.Errorf("the agent sent no bundle for federated trust domain %s (is the entry federated with it?)", td)
		}
	}
	return buf.Bytes(), nil
}

// commitFiles replaces files as one step as far as a file system allows: every
// new content is first written to a temporary file beside its target (with its
// mode and owner already set), and only when all of them are written are they
// renamed into place. A failure before the renames leaves every old file as
// it was.
func commitFiles(files []fileContent, owner *FileOwner) error {
	var temps []string
	defer func() {
		for _, tmp := range temps {
			os.Remove(tmp) // no-op once renamed
		}
	}()
	for _, f := range files {
		tmp, err := stageFile(f, owner)
		if err != nil {
			return err
		}
		temps = append(temps, tmp)
	}
	for i, f := range files {
		if err := os.Rename(temps[i], f.path); err != nil {
			return fmt.Errorf("write %s: %w", f.path, err)
		}
	}
	return nil
}

// stageFile writes f's content to a new temporary file in f's directory and
// returns its name.
func stageFile(f fileContent, owner *FileOwner) (string, error) {
	dir := filepath.Dir(f.path)
	if fi, err := os.Stat(dir); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("write %s: directory %s does not exist", f.path, dir)
		}
		return "", fmt.Errorf("write %s: %w", f.path, err)
	} else if !fi.IsDir() {
		return "", fmt.Errorf("write %s: %s is not a directory", f.path, dir)
	}
	tf, err := os.CreateTemp(dir, "."+filepath.Base(f.path)+".*.tmp")
	if err != nil {
		return "", fmt.Errorf("write %s: %w", f.path, unwrapPath(err))
	}
	tmp := tf.Name()
	fail := func(err error) (string, error) {
		tf.Close()
		os.Remove(tmp)
		return "", fmt.Errorf("write %s: %w", f.path, unwrapPath(err))
	}
	// The mode is set before any content is written, so a key is never
	// readable by others, not even for a moment.
	if err := tf.Chmod(f.mode); err != nil {
		return fail(err)
	}
	if owner != nil {
		if err := tf.Chown(owner.UID, owner.GID); err != nil {
			return fail(fmt.Errorf("set owner %d:%d: %w", owner.UID, owner.GID, unwrapPath(err)))
		}
	}
	if _, err := tf.Write(f.data); err != nil {
		return fail(err)
	}
	if err := tf.Sync(); err != nil {
		return fail(err)
	}
	if err := tf.Close(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("write %s: %w", f.path, unwrapPath(err))
	}
	return tmp, nil
}

// unwrapPath drops the *PathError's path, which names the temporary file.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
