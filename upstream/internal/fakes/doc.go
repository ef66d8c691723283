// Package fakes holds wire-format fakes of the external authorities the
// upstream adapters talk to — HashiCorp Vault's HTTP API and AWS Private
// CA's JSON 1.1 protocol — so that the adapters' tests, the mixed-tree tests
// and the cold-start benchmark exercise the real vault/api client and AWS SDK
// against one shared implementation. Every fake signs with a real CA key and
// records each request it served, so callers can count round trips. Test code
// only.
package fakes
