package entrycache

import (
	"slices"
	"sort"
	"strings"

	"github.com/arborid/arbor/internal/datastore"
)

// Block sizes of ordered: a block is split when it reaches blockMax entries
// and merged into a neighbour when it falls below blockMin. Bulk loads fill
// blocks to blockFill so that the first inserts do not split at once.
const (
	blockMax  = 512
	blockFill = 384
	blockMin  = blockMax / 8
)

// ordered keeps entries sorted by ID in a list of blocks, a two-level B-tree
// of sorts: inserting or removing moves at most blockMax pointers within a
// block plus one pointer per block, so it stays cheap at 100k+ entries while
// costing about one pointer per entry.
type ordered struct {
	// blocks are non-empty, each sorted by ID, and every ID of blocks[i]
	// is less than every ID of blocks[i+1].
	blocks [][]*datastore.Entry
}

func compareID(e *datastore.Entry, id string) int { return strings.Compare(e.ID, id) }

// build replaces the content with all (whose IDs must be unique); it sorts
// all in place.
func (o *ordered) build(all []*datastore.Entry) {
	slices.SortFunc(all, func(a, b *datastore.Entry) int { return strings.Compare(a.ID, b.ID) })
	o.blocks = make([][]*datastore.Entry, 0, (len(all)+blockFill-1)/blockFill)
	for len(all) > 0 {
		n := min(len(all), blockFill)
		b := make([]*datastore.Entry, n, blockMax)
		copy(b, all[:n])
		o.blocks = append(o.blocks, b)
		all = all[n:]
	}
}

// blockFor returns the index of the block that holds id or would hold it: the
// first block whose last ID is >= id, or the last block.
func (o *ordered) blockFor(id string) int {
	i := sort.Search(len(o.blocks), func(i int) bool {
		b := o.blocks[i]
		return b[len(b)-1].ID >= id
	})
	return min(i, len(o.blocks)-1)
}

// put inserts e, or replaces the entry with the same ID.
func (o *ordered) put(e *datastore.Entry) {
	if len(o.blocks) == 0 {
		b := make([]*datastore.Entry, 1, blockMax)
		b[0] = e
		o.blocks = append(o.blocks, b)
		return
	}
	bi := o.blockFor(e.ID)
	b := o.blocks[bi]
	i, found := slices.BinarySearchFunc(b, e.ID, compareID)
	if found {
		b[i] = e
		return
	}
	if len(b) == blockMax {
		// Split in halves, each with room to grow in place.
		right := make([]*datastore.Entry, blockMax/2, blockMax)
		copy(right, b[blockMax/2:])
		clear(b[blockMax/2:])
		b = b[:blockMax/2]
		o.blocks[bi] = b
		o.blocks = slices.Insert(o.blocks, bi+1, right)
		if i > len(b) {
			bi, b, i = bi+1, right, i-len(b)
		}
	}
	o.blocks[bi] = slices.Insert(b, i, e)
}

// remove deletes the entry with the given ID, if present.
func (o *ordered) remove(id string) {
	if len(o.blocks) == 0 {
		return
	}
	bi := o.blockFor(id)
	b := o.blocks[bi]
	i, found := slices.BinarySearchFunc(b, id, compareID)
	if !found {
		return
	}
	b = slices.Delete(b, i, i+1)
	o.blocks[bi] = b
	switch {
	case len(b) == 0:
		o.blocks = slices.Delete(o.blocks, bi, bi+1)
	case len(b) < blockMin:
		// Merge with a neighbour when both fit in one block, so that mass
		// deletions do not leave a long list of nearly empty blocks.
		if bi+1 < len(o.blocks) && len(b)+len(o.blocks[bi+1]) <= blockFill {
			o.blocks[bi] = append(b, o.blocks[bi+1]...)
			o.blocks = slices.Delete(o.blocks, bi+1, bi+2)
		} else if bi > 0 && len(b)+len(o.blocks[bi-1]) <= blockFill {
			o.blocks[bi-1] = append(o.blocks[bi-1], b...)
			o.blocks = slices.Delete(o.blocks, bi, bi+1)
		}
	}
}

// ascendAfter calls fn for each entry with an ID greater than after, in
// order, until fn returns false.
func (o *ordered) ascendAfter(after string, fn func(*datastore.Entry) bool) {
	if len(o.blocks) == 0 {
		return
	}
	bi, i := 0, 0
	if after != "" {
		bi = o.blockFor(after)
		var found bool
		i, found = slices.BinarySearchFunc(o.blocks[bi], after, compareID)
		if found {
			i++
		}
	}
	for ; bi < len(o.blocks); bi, i = bi+1, 0 {
		for _, e := range o.blocks[bi][i:] {
			if !fn(e) {
				return
			}
		}
	}
}

// len returns the number of entries (for tests).
func (o *ordered) len() int {
	n := 0
	for _, b := range o.blocks {
		n += len(b)
	}
	return n
}
