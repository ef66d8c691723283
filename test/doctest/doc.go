// Package doctest runs the shell commands that README.md, examples/README.md
// and docs/*.md show, so a documented command that stops working fails
// `go test ./...`. It has only tests; docs/doctest.md describes the markers
// that say how each block of a document is run.
package doctest
