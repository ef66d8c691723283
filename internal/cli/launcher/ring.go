package launcher

// ringOrder orders items around the demo ring (each item neighbours the
// next, the last the first) so that neighbours have different keys (trust
// domains) wherever possible. Items of one key keep their order; items of a
// single key are returned as they are.
//
// Each next item is the first left of the key with the most items left,
// other than the previous item's key; on a tie, the first item's key (the
// last item neighbours the first, so that key must not be what is left at
// the end), then the key seen first in items. The ring then has neighbours
// of one key only where one key holds more than half the items, when no
// order avoids it (TestRingOrderEveryMix compares with every order).
func ringOrder[T any](items []T, key func(T) string) []T {
	var keys []string
	left := map[string][]T{}
	for _, it := range items {
		k := key(it)
		if _, ok := left[k]; !ok {
			keys = append(keys, k)
		}
		left[k] = append(left[k], it)
	}
	out := make([]T, 0, len(items))
	first, prev := "", ""
	for len(out) < len(items) {
		next := ""
		for _, k := range keys {
			if len(left[k]) == 0 || k == prev && len(out) > 0 {
				continue
			}
			if next == "" || len(left[k]) > len(left[next]) || len(left[k]) == len(left[next]) && k == first && len(out) > 0 {
				next = k
			}
		}
		if next == "" {
			next = prev // only the previous item's key has items left
		}
		if len(out) == 0 {
			first = next
		}
		out = append(out, left[next][0])
		left[next] = left[next][1:]
		prev = next
	}
	return out
}
