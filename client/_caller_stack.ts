/**
 * The caller's frames on an error a public call rejects with. An error from
 * the server (or a lost connection, a timeout) is built in the socket's read
 * loop or a timer, so its own stack names no frame of the code that made the
 * call. A public method catches it after its `await` and appends the frames
 * of an `Error` made there: V8's (and JavaScriptCore's) async stack traces
 * include the `async` functions awaiting the call (`at async loadUser
 * (file:///app.ts:12:3)`). Nothing is captured on success, and a failing
 * call only captures the frames (V8 formats them when read): the combined
 * `stack` string is built the first time `stack` is read, so an error that
 * is caught and handled costs little more than before.
 *
 * @module
 */

import { AbortError, ConnectionError, ProtocolError, SqliteError } from "../protocol/errors.ts";

/** The line between an error's own stack and its caller's frames. */
export const CALLER_SEPARATOR = "    --- called from ---";

/**
 * Errors left as they are: those that have their caller's frames already
 * (one rethrown by an outer public call), and those thrown by the caller's
 * own code ({@link keepStack}).
 */
const settled = new WeakSet<object>();

/**
 * Marks `err` as one that {@link withCallerFrames} leaves alone: thrown by
 * the caller's own code (a `transaction()` function), so its stack is the
 * caller's already, and an error the caller made is never changed.
 *
 * @param err What the caller's code threw.
 */
export function keepStack(err: unknown): void {
  if (typeof err === "object" && err !== null) settled.add(err);
}

/**
 * Appends the caller's frames to `err`'s `stack` and returns `err` (the same
 * object: `name`, `message`, `code` and class unchanged). Only netsqlite's
 * error classes are touched, once each; an error whose stack already passes
 * through the calling method (thrown before the call's first `await`, with
 * its caller's frames) keeps its stack as it is. Call it in the public
 * method's `catch`, after the `await` that rejected.
 *
 * `stack` becomes an accessor of `err` (own, configurable; setting it stores
 * the value given), which joins the two stacks when first read.
 *
 * @param err What the call rejected with.
 * @returns `err`.
 */
export function withCallerFrames(err: unknown): unknown {
  if (
    !(err instanceof SqliteError || err instanceof ConnectionError ||
      err instanceof ProtocolError || err instanceof AbortError) || settled.has(err)
  ) {
    return err;
  }
  settled.add(err);
  // Captured here (the async frames are only known now); formatted when read.
  const here = new Error();
  try {
    const own = Object.getOwnPropertyDescriptor(err, "stack");
    if (own === undefined || own.configurable !== true) return err;
    let joined: unknown;
    let built = false;
    Object.defineProperty(err, "stack", {
      configurable: true,
      enumerable: own.enumerable === true,
      get(): unknown {
        if (!built) {
          built = true;
          const stack = own.get !== undefined ? own.get.call(err) : own.value;
          joined = withFrames(stack, here.stack);
        }
        return joined;
      },
      set(this: Error, value: unknown): void {
        Object.defineProperty(this, "stack", {
          value,
          writable: true,
          configurable: true,
          enumerable: false,
        });
      },
    });
  } catch {
    // A frozen error: leave it as it is.
  }
  return err;
}

/** `stack` followed by the caller's frames in `here` (the stack of an `Error` made in withCallerFrames). */
function withFrames(stack: unknown, here: string | undefined): unknown {
  if (typeof stack !== "string" || typeof here !== "string") return stack;
  // "Error", then withCallerFrames' frame, then the public method's and its callers'.
  const frames = here.split("\n").slice(2).filter((line) => /^\s+at /.test(line));
  if (frames.length === 0) return stack;
  const method = /^\s+at (?:async )?(\S+) \(/.exec(frames[0])?.[1];
  if (
    method !== undefined &&
    (stack.includes(`at ${method} (`) || stack.includes(`at async ${method} (`))
  ) {
    return stack;
  }
  return `${stack}\n${CALLER_SEPARATOR}\n${frames.join("\n")}`;
}

/**
 * A copy of `err` for one more caller (same class, own properties and
 * stack), so that each caller's error gets its own frames from
 * {@link withCallerFrames}: an error object is never shared by two calls.
 *
 * @param err An error about to reject several calls.
 * @returns a new error like `err`.
 */
export function copyError<E extends Error>(err: E): E {
  const copy = Object.create(Object.getPrototypeOf(err)) as E;
  for (const key of Reflect.ownKeys(err)) {
    if (key !== "stack") {
      Object.defineProperty(copy, key, Object.getOwnPropertyDescriptor(err, key)!);
    }
  }
  Object.defineProperty(copy, "stack", {
    value: err.stack,
    writable: true,
    configurable: true,
    enumerable: false,
  });
  return copy;
}
