package azuremsi

import (
	"fmt"
	"io"
)

// Response bounds. An instance metadata token answer is about 3 KB, an
// OpenID discovery document 2 KB and Entra ID's key set 10 KB; a virtual
// machine or network interface from Resource Manager is a few KB.
const (
	maxIMDSResponse = 64 << 10
	maxKeysResponse = 1 << 20
	maxARMResponse  = 4 << 20
)

// readBounded reads a whole body that a bounded client returned; the error
// says what was being read.
func readBounded(body io.Reader, what string) ([]byte, error) {
	b, err := io.ReadAll(body)
	if err != nil {
		return nil, fmt.Errorf("azuremsi: reading %s: %w", what, err)
	}
	return b, nil
}
