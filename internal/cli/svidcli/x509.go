package svidcli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// X509Output is the JSON document `arbor svid fetch x509 --output json` prints.
type X509Output struct {
	SVIDs   []X509SVIDOutput `json:"svids"`
	Bundles []BundleOutput   `json:"bundles"`
	// Written lists the files written with --write, in order.
	Written []string `json:"written,omitempty"`
}

// X509SVIDOutput describes one X509-SVID.
type X509SVIDOutput struct {
	SPIFFEID     string    `json:"spiffe_id"`
	Hint         string    `json:"hint,omitempty"`
	SerialNumber string    `json:"serial_number"`
	NotBefore    time.Time `json:"not_before"`
	ExpiresAt    time.Time `json:"expires_at"`
	// Intermediates is the number of CA certificates after the leaf.
	Intermediates int `json:"intermediates"`
}

// BundleOutput describes the X.509 authorities of one trust domain.
type BundleOutput struct {
	TrustDomain string `json:"trust_domain"`
	Authorities int    `json:"authorities"`
	// ExpiresAt is when the first of its authorities expires.
	ExpiresAt time.Time `json:"expires_at"`
}

// FetchX509 fetches this process's X509-SVIDs and bundles and prints each
// SVID's SPIFFE ID, hint and validity. When writeDir is not empty it also
// writes, like `spire-agent api fetch x509 -write`, for each SVID i:
// svid.<i>.pem (certificate chain, leaf first), svid.<i>.key (PKCS#8 private
// key, mode 0600), bundle.<i>.pem (the SVID's trust domain's authorities) and
// federated_bundle.<i>.<j>.pem for every other trust domain, creating writeDir
// if needed.
func FetchX509(ctx context.Context, w io.Writer, o Options, writeDir string) error {
	const op = "svid fetch x509"
	var xc *workloadapi.X509Context
	err := o.call(ctx, op, func(ctx context.Context, c *workloadapi.Client) error {
		var err error
		xc, err = c.FetchX509Context(ctx)
		return err
	})
	if err != nil {
		return err
	}

	out := X509Output{}
	for _, s := range xc.SVIDs {
		leaf := s.Certificates[0]
		out.SVIDs = append(out.SVIDs, X509SVIDOutput{
			SPIFFEID:      s.ID.String(),
			Hint:          s.Hint,
			SerialNumber:  leaf.SerialNumber.Text(16),
			NotBefore:     leaf.NotBefore.UTC(),
			ExpiresAt:     leaf.NotAfter.UTC(),
			Intermediates: len(s.Certificates) - 1,
		})
	}
	bundles := sortedBundles(xc.Bundles)
	for _, b := range bundles {
		bo := BundleOutput{TrustDomain: b.TrustDomain().Name(), Authorities: len(b.X509Authorities())}
		for _, ca := range b.X509Authorities() {
			if bo.ExpiresAt.IsZero() || ca.NotAfter.Before(bo.ExpiresAt) {
				bo.ExpiresAt = ca.NotAfter.UTC()
			}
		}
		out.Bundles = append(out.Bundles, bo)
	}

	if writeDir != "" {
		out.Written, err = writeX509(writeDir, xc, bundles)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
	}

	if o.Format == FormatJSON {
		return writeJSON(w, out)
	}
	return printX509(w, o.now(), out, writeDir)
}

func sortedBundles(set *x509bundle.Set) []*x509bundle.Bundle {
	if set == nil {
		return nil
	}
	bs := set.Bundles()
	slices.SortFunc(bs, func(a, b *x509bundle.Bundle) int {
		return strings.Compare(a.TrustDomain().Name(), b.TrustDomain().Name())
	})
	return bs
}

func printX509(w io.Writer, now time.Time, out X509Output, writeDir string) error {
	tw := tabwriter.NewWriter(w, 0, 8, 1, ' ', 0)
	noun := "SVIDs"
	if len(out.SVIDs) == 1 {
		noun = "SVID"
	}
	fmt.Fprintf(tw, "Received %d %s\n", len(out.SVIDs), noun)
	for i, s := range out.SVIDs {
		fmt.Fprintf(tw, "\nSVID %d\n", i)
		fmt.Fprintf(tw, "  SPIFFE ID:\t%s\n", s.SPIFFEID)
		if s.Hint != "" {
			fmt.Fprintf(tw, "  Hint:\t%s\n", s.Hint)
		}
		fmt.Fprintf(tw, "  Serial number:\t%s\n", s.SerialNumber)
		fmt.Fprintf(tw, "  Valid after:\t%s\n", s.NotBefore.Format(time.RFC3339))
		fmt.Fprintf(tw, "  Valid until:\t%s (%s)\n", s.ExpiresAt.Format(time.RFC3339), expiresIn(now, s.ExpiresAt))
		fmt.Fprintf(tw, "  Intermediates:\t%d\n", s.Intermediates)
	}
	for _, b := range out.Bundles {
		fmt.Fprintf(tw, "\nBundle %s\n", b.TrustDomain)
		fmt.Fprintf(tw, "  Authorities:\t%d\n", b.Authorities)
		if !b.ExpiresAt.IsZero() {
			fmt.Fprintf(tw, "  First expiry:\t%s (%s)\n", b.ExpiresAt.Format(time.RFC3339), expiresIn(now, b.ExpiresAt))
		}
	}
	if len(out.Written) > 0 {
		fmt.Fprintf(tw, "\nWrote %s to %s\n", strings.Join(out.Written, ", "), writeDir)
	}
	return tw.Flush()
}

// writeX509 writes the files described at FetchX509 and returns their names.
func writeX509(dir string, xc *workloadapi.X509Context, bundles []*x509bundle.Bundle) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("write directory: %w", err)
	}
	var written []string
	write := func(name string, data []byte, perm os.FileMode) error {
		if err := writeFileAtomic(filepath.Join(dir, name), data, perm); err != nil {
			return err
		}
		written = append(written, name)
		return nil
	}
	for i, s := range xc.SVIDs {
		certs, key, err := s.Marshal()
		if err != nil {
			return written, fmt.Errorf("encode SVID %s: %w", s.ID, err)
		}
		if err := write(fmt.Sprintf("svid.%d.pem", i), certs, 0o644); err != nil {
			return written, err
		}
		if err := write(fmt.Sprintf("svid.%d.key", i), key, 0o600); err != nil {
			return written, err
		}
		federated := 0
		for _, b := range bundles {
			pem, err := b.Marshal()
			if err != nil {
				return written, fmt.Errorf("encode bundle %s: %w", b.TrustDomain(), err)
			}
			name := fmt.Sprintf("bundle.%d.pem", i)
			if b.TrustDomain() != s.ID.TrustDomain() {
				name = fmt.Sprintf("federated_bundle.%d.%d.pem", i, federated)
				federated++
			}
			if err := write(name, pem, 0o644); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// writeFileAtomic replaces path with data: the content is written to a new
// file that already has perm (so a key is never readable by others, even
// briefly, and an existing file's looser mode does not survive) and renamed
// into place.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
