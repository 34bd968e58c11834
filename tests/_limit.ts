/**
 * A time limit for every test of the suite. Deno has no per-test timeout, so
 * this module, loaded before each test module with
 * `deno test --preload tests/_limit.ts` (the `test` task does), wraps
 * `Deno.test`: each test races a timer and fails with
 * `Test "<name>" exceeded its time limit of <ms> ms` instead of hanging.
 *
 * - The default limit is {@linkcode DEFAULT_LIMIT_MS}; the environment variable
 *   `NETSQLITE_TEST_LIMIT_MS` replaces it for a run (e.g. on a slow machine).
 * - A test that needs a different limit says so with {@linkcode withTimeLimit}.
 * - With `NETSQLITE_TEST_TRACE=<file>` every test appends `start` and `end`
 *   lines to that file, so that `.ci/run` can name the tests that were running
 *   when it stopped a stuck run (with `--parallel`, Deno prints a test's line
 *   only when the test ends).
 *
 * The timer is unref'd: a test whose promise can never settle still fails at
 * once with Deno's own "Promise resolution is still pending" error, and the
 * timer only matters while the test waits on real I/O (a socket, a child).
 * A test that blocks the event loop synchronously cannot be stopped from
 * inside; `.ci/run`'s overall `timeout` ends such a run and names the test.
 * Failures of wrapped tests point at this file as their location; the stack
 * of the error itself still names the test file and line.
 *
 * @module
 */

/**
 * The default limit per test, in milliseconds. Reason: the slowest tests (the
 * crash trials, the soak, the conformance files) take 5–15 s on the shared
 * 2-core CI machine; 60 s leaves four times that for load and still ends a
 * hang within a minute.
 */
export const DEFAULT_LIMIT_MS = 60_000;

const LIMIT = Symbol.for("netsqlite.test.limitMs");
const WRAPPED = Symbol.for("netsqlite.test.limitWrapped");

type TestFn = (t: Deno.TestContext) => void | Promise<void>;

/**
 * Gives one test its own time limit (in place of the default).
 *
 * @param ms The limit in milliseconds; state its reason next to the call.
 * @param fn The test function.
 * @returns The same function, marked with its limit.
 */
export function withTimeLimit<F extends TestFn>(ms: number, fn: F): F {
  if (!Number.isFinite(ms) || ms <= 0) throw new RangeError(`Invalid time limit: ${ms}`);
  (fn as F & { [LIMIT]?: number })[LIMIT] = ms;
  return fn;
}

function defaultLimit(): number {
  let raw: string | undefined;
  try {
    raw = Deno.env.get("NETSQLITE_TEST_LIMIT_MS");
  } catch { /* no --allow-env: the default */ }
  const ms = raw === undefined || raw === "" ? DEFAULT_LIMIT_MS : Number(raw);
  if (!Number.isFinite(ms) || ms <= 0) {
    throw new RangeError(`Invalid NETSQLITE_TEST_LIMIT_MS: "${raw}"`);
  }
  return ms;
}

function traceFile(): string | undefined {
  try {
    return Deno.env.get("NETSQLITE_TEST_TRACE") || undefined;
  } catch {
    return undefined;
  }
}

const where = (() => {
  try {
    return Deno.mainModule.replace(/^file:\/\/.*\/(tests\/|)/, "");
  } catch {
    return "?";
  }
})();

function trace(event: "start" | "end", name: string): void {
  const file = traceFile();
  if (file === undefined) return;
  try {
    Deno.writeTextFileSync(file, `${event}\t${where}\t${name}\n`, { append: true });
  } catch { /* tracing is best effort */ }
}

/** Wraps a test function so it fails naming the test when it runs past its limit. */
function limited(name: string, fn: TestFn): TestFn {
  if ((fn as { [WRAPPED]?: true })[WRAPPED]) return fn;
  const ms = (fn as { [LIMIT]?: number })[LIMIT] ?? defaultLimit();
  const wrapped = async (t: Deno.TestContext): Promise<void> => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<never>((_, reject) => {
      const id = setTimeout(() => {
        reject(
          new Error(
            `Test "${name}" exceeded its time limit of ${ms} ms (tests/_limit.ts; ` +
              `NETSQLITE_TEST_LIMIT_MS changes the default)`,
          ),
        );
      }, ms);
      Deno.unrefTimer(id);
      timer = id;
    });
    trace("start", name);
    try {
      await Promise.race([(async () => await fn(t))(), expired]);
    } finally {
      clearTimeout(timer);
      trace("end", name);
    }
  };
  (wrapped as unknown as { [WRAPPED]: true })[WRAPPED] = true;
  return wrapped;
}

type Options = Omit<Deno.TestDefinition, "fn" | "name">;

/** Turns any of `Deno.test`'s call forms into one definition with a limited `fn`. */
function definition(args: unknown[]): Deno.TestDefinition {
  const [a, b, c] = args;
  let def: Deno.TestDefinition;
  if (typeof a === "function") {
    def = { name: a.name, fn: a as TestFn };
  } else if (typeof a === "string") {
    def = typeof b === "function"
      ? { name: a, fn: b as TestFn }
      : { ...(b as Options), name: a, fn: c as TestFn };
  } else if (typeof b === "function") {
    const opts = a as Options & { name?: string };
    def = { ...opts, name: opts.name ?? (b as TestFn).name, fn: b as TestFn };
  } else {
    def = { ...(a as Deno.TestDefinition) };
  }
  if (typeof def.fn === "function") def.fn = limited(def.name, def.fn);
  return def;
}

const original = Deno.test;
if (!(original as unknown as { [WRAPPED]?: true })[WRAPPED]) {
  const test = function (...args: unknown[]): void {
    original(definition(args));
  };
  Object.assign(test, original, {
    only: (...args: unknown[]) => original({ ...definition(args), only: true }),
    ignore: (...args: unknown[]) => original({ ...definition(args), ignore: true }),
    [WRAPPED]: true,
  });
  (Deno as { test: unknown }).test = test;
}
