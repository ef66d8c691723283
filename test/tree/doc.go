// Package tree holds end-to-end tests of a wide nested tree of in-process
// arbor servers — one root, eight regional tiers and a leaf under each —
// for properties that only show with many sibling subtrees, such as every
// tier's bundle converging on the same JWT authorities after any tier
// rotates its key.
package tree
