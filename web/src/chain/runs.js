// Sorted BigInt sequences and runs of consecutive numbers, searched by bisection: a range a
// signed notice may make 2^64 wide is never expanded into its members.

/** First position in the sorted `list` whose value is >= `value` (by `key`). */
export function bisectLeft(list, value, key = (x) => x) {
  let low = 0;
  let high = list.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (key(list[middle]) < value) low = middle + 1;
    else high = middle;
  }
  return low;
}

/** First position in the sorted `list` whose value is > `value` (by `key`). */
export function bisectRight(list, value, key = (x) => x) {
  let low = 0;
  let high = list.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (value < key(list[middle])) high = middle;
    else low = middle + 1;
  }
  return low;
}

export const compareBig = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
export const maxBig = (a, b) => (a > b ? a : b);
export const minBig = (a, b) => (a < b ? a : b);

/** A u64 from a meta value: BigInt or a safe integer Number. */
export function big(value) {
  return typeof value === 'bigint' ? value : BigInt(value);
}

/** Whether `value` is an integer as a parsed meta value holds one. */
export function isInteger(value) {
  return typeof value === 'bigint' || Number.isInteger(value);
}

/** A union of integer intervals [first, last], queried by bisection. */
export class Intervals {
  constructor(ranges) {
    const merged = [];
    const sorted = ranges
      .filter(([first, last]) => first <= last)
      .sort((a, b) => compareBig(a[0], b[0]) || compareBig(a[1], b[1]));
    for (const [first, last] of sorted) {
      const top = merged[merged.length - 1];
      if (top && first <= top[1] + 1n) top[1] = maxBig(top[1], last);
      else merged.push([first, last]);
    }
    this.firsts = merged.map((r) => r[0]);
    this.lasts = merged.map((r) => r[1]);
  }

  has(value) {
    return this.covers(value, value);
  }

  /** Whether every number of first..last is in the union. */
  covers(first, last) {
    const at = bisectRight(this.firsts, first) - 1;
    return at >= 0 && last <= this.lasts[at];
  }
}
