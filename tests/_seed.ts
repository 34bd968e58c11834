/**
 * Seeds for the suite's random inputs: fixed by default so that every run
 * tests the same cases, replaced for a run by the environment variable
 * `NETSQLITE_SEED`, and named in the error of a failing test so that the
 * failure can be reproduced:
 *
 * ```sh
 * NETSQLITE_SEED=1234 deno test -A tests/fuzz_test.ts
 * ```
 *
 * @module
 */

/**
 * The seed of a test's random inputs.
 *
 * @param fallback The fixed seed used when `NETSQLITE_SEED` is unset.
 * @param alias An older, file-specific variable still honoured (e.g.
 *   `NETSQLITE_FUZZ_SEED`); `NETSQLITE_SEED` wins over it.
 * @returns An integer in 0..2^32-1.
 * @throws {RangeError} When the variable is not such an integer.
 */
export function testSeed(fallback: number, alias?: string): number {
  for (const name of ["NETSQLITE_SEED", ...(alias ? [alias] : [])]) {
    const raw = Deno.env.get(name);
    if (raw === undefined || raw === "") continue;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
      throw new RangeError(`Invalid ${name}: expected an integer in 0..4294967295, got "${raw}"`);
    }
    return n;
  }
  return fallback;
}

/** The line added to a failing test's error. */
export function seedNote(seed: number): string {
  return `seed ${seed} (reproduce with NETSQLITE_SEED=${seed})`;
}

function annotate(err: unknown, seed: number): Error {
  const note = seedNote(seed);
  if (err instanceof Error && err.message.includes(note)) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new Error(`${message}\n  ${note}`, { cause: err });
}

/**
 * Runs `fn` and, when it fails, rethrows its error with the seed appended, so
 * a failure in CI prints the seed that reproduces it.
 *
 * @param seed The seed `fn` draws its inputs from.
 * @param fn The test body (sync or async).
 * @returns What `fn` returns.
 */
export function withSeed<T>(seed: number, fn: () => T): T {
  let out: T;
  try {
    out = fn();
  } catch (err) {
    throw annotate(err, seed);
  }
  if (out instanceof Promise) {
    return out.catch((err) => {
      throw annotate(err, seed);
    }) as T;
  }
  return out;
}
