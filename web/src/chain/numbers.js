// Integers as parsed meta holds them (format/strictjson.js): a Number when safe, a BigInt
// beyond 2^53. The chain rules compute on u64 values as BigInt only.

/** A u64 from a meta value: BigInt or a safe integer Number. */
export function big(value) {
  return typeof value === 'bigint' ? value : BigInt(value);
}

/** Whether `value` is an integer as a parsed meta value holds one. */
export function isInteger(value) {
  return typeof value === 'bigint' || Number.isInteger(value);
}
