// Ranges of u64 numbers (BigInt), searched by bisection: a range a signed notice may make
// 2^64 wide is never expanded into its members, so a notice claiming 2^63 numbers costs
// what one claiming a single number costs (FORMAT §6.2, "Ranges are ranges").

/** At most this many runs of numbers per device and list in the phone's memory (§6.3). */
export const MAX_RUNS = 4096;

export const compareBig = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
export const maxBig = (a, b) => (a > b ? a : b);
export const minBig = (a, b) => (a < b ? a : b);

/** First position in the sorted `list` whose key is >= `value`. */
export function bisectLeft(list, value, key = (x) => x) {
  let low = 0;
  let high = list.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (key(list[middle]) < value) low = middle + 1;
    else high = middle;
  }
  return low;
}

/** First position in the sorted `list` whose key is > `value`. */
export function bisectRight(list, value, key = (x) => x) {
  let low = 0;
  let high = list.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (value < key(list[middle])) high = middle;
    else low = middle + 1;
  }
  return low;
}

const byRun = (a, b) => compareBig(a[0], b[0]) || compareBig(a[1], b[1]);

/**
 * Sorted, merged runs [first, last] (adjacent runs joined), at most `limit` of them: the
 * newest are kept, since forgetting old numbers only weakens later checks.
 */
export function runsOf(runs, limit = MAX_RUNS) {
  const merged = [];
  for (const [first, last] of [...runs].sort(byRun)) {
    const top = merged[merged.length - 1];
    if (top && first <= top[1] + 1n) top[1] = maxBig(top[1], last);
    else merged.push([first, last]);
  }
  return merged.slice(Math.max(0, merged.length - limit));
}

/** Runs of consecutive numbers, from any seqs. */
export function seqsAsRuns(seqs) {
  return runsOf([...seqs].map((seq) => [seq, seq]));
}

/** The lowest number of the sorted, disjoint `runs` in first..last, or null. */
export function firstIn(runs, first, last) {
  let at = bisectRight(runs, first, (run) => run[0]) - 1;
  if (at >= 0 && runs[at][1] >= first) return first;
  at += 1;
  if (at < runs.length && runs[at][0] <= last) return runs[at][0];
  return null;
}

/** `runs` minus the sorted seqs `present`: O(runs + present). */
export function without(runs, present) {
  const out = [];
  for (const run of runs) {
    let [low] = run;
    const high = run[1];
    let at = bisectLeft(present, low);
    while (low <= high) {
      if (at < present.length && present[at] <= high) {
        if (present[at] > low) out.push([low, present[at] - 1n]);
        low = present[at] + 1n;
        at += 1;
      } else {
        out.push([low, high]);
        break;
      }
    }
  }
  return out;
}

/** A union of integer intervals, queried by bisection. */
export class Intervals {
  constructor(ranges) {
    const merged = [];
    for (const [first, last] of ranges.filter((r) => r[0] <= r[1]).sort(byRun)) {
      const top = merged[merged.length - 1];
      if (top && first <= top[1] + 1n) top[1] = maxBig(top[1], last);
      else merged.push([first, last]);
    }
    this.firsts = merged.map((run) => run[0]);
    this.lasts = merged.map((run) => run[1]);
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

/**
 * Announced ranges ({first, last, ...}) sorted by first number, for lookups in logarithmic
 * time however many there are and however they overlap (overlaps are reported elsewhere;
 * any covering range then serves). A max-tree over the ranges' last numbers answers "the
 * last range, in order of first number, that starts at or before n and reaches n"
 * without walking the ranges in between.
 */
export class GapIndex {
  constructor(gaps) {
    this.gaps = [...gaps].sort((a, b) => compareBig(a.first, b.first));
    this.firsts = this.gaps.map((gap) => gap.first);
    this.leaves = 1;
    while (this.leaves < this.gaps.length) this.leaves *= 2;
    const reach = new Array(2 * this.leaves).fill(-1n); // node i: the furthest last below it
    this.gaps.forEach((gap, i) => (reach[this.leaves + i] = gap.last));
    for (let node = this.leaves - 1; node > 0; node--) {
      reach[node] = maxBig(reach[2 * node], reach[2 * node + 1]);
    }
    this.reach = reach;
  }

  /** The range holding `seq` that starts last, or null. */
  covering(seq) {
    const at = bisectRight(this.firsts, seq) - 1;
    const found = at >= 0 ? this.#rightmost(1, 0, this.leaves, at, seq) : null;
    return found === null ? null : this.gaps[found];
  }

  #rightmost(node, low, high, at, seq) {
    if (low > at || this.reach[node] < seq) return null;
    if (high - low === 1) return low;
    const middle = (low + high) >> 1;
    const found = this.#rightmost(2 * node + 1, middle, high, at, seq);
    return found !== null ? found : this.#rightmost(2 * node, low, middle, at, seq);
  }

  /** The ranges sharing a number with first..last, in order of first number. */
  overlapping(first, last) {
    const upto = bisectRight(this.firsts, last) - 1;
    const found = [];
    this.#reaching(1, 0, this.leaves, upto, first, found);
    return found.map((index) => this.gaps[index]);
  }

  #reaching(node, low, high, upto, first, found) {
    if (low > upto || this.reach[node] < first) return;
    if (high - low === 1) {
      found.push(low);
      return;
    }
    const middle = (low + high) >> 1;
    this.#reaching(2 * node, low, middle, upto, first, found);
    this.#reaching(2 * node + 1, middle, high, upto, first, found);
  }

  /** The first number of the nearest range starting after `seq`, or null. */
  nextFirst(seq) {
    const at = bisectRight(this.firsts, seq);
    return at < this.firsts.length ? this.firsts[at] : null;
  }

  /** first..last split into runs, each [first, last, range or null] for not announced. */
  split(first, last) {
    const runs = [];
    let seq = first;
    while (seq <= last) {
      const gap = this.covering(seq);
      let end;
      if (gap !== null) {
        end = minBig(gap.last, last);
      } else {
        const start = this.nextFirst(seq);
        end = start === null || start > last ? last : start - 1n;
      }
      runs.push([seq, end, gap]);
      seq = end + 1n;
    }
    return runs;
  }
}
