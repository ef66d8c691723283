package bench

import (
	"testing"

	"github.com/arborid/arbor/internal/testkit"
)

// postgresDSN creates a fresh schema and returns a DSN using it.
func postgresDSN(b *testing.B) string { return testkit.PostgresDSN(b) }
