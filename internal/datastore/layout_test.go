package datastore

import (
	"testing"
	"unsafe"
)

// A server holds one Entry per registration entry in memory, so its size
// is bytes per entry: 192 fits the allocator's 192-byte class, where the
// field order before it (bools between the words) made 208.
func TestEntrySize(t *testing.T) {
	// The bound is for 64-bit machines (CI and every supported server).
	if got := unsafe.Sizeof(Entry{}); unsafe.Sizeof(uintptr(0)) == 8 && got > 192 {
		t.Fatalf("unsafe.Sizeof(Entry{}) = %d, want <= 192: order new fields so the struct has no padding", got)
	}
}
