/**
 * An application that embeds the server (`serve()` in its own process) and
 * dies while a statement steps in the background (FFI engine) dies of its own
 * error, printed, with Deno's usual exit code: not of SIGSEGV because the
 * isolate's teardown unloaded libsqlite3 under the running step (the library
 * is pinned, engine/binding/_pin.ts). Runs tests/fixtures/die_during_step.ts
 * as a child process. Skipped with node:sqlite (no background steps).
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { loadSqlite } from "../engine/binding/load.ts";

const FIXTURE = fileURLToPath(new URL("./fixtures/die_during_step.ts", import.meta.url));

/** True when the server's default engine here is FFI (it alone steps in the background). */
function ffiByDefault(): boolean {
  if (Deno.env.get("NETSQLITE_ENGINE") === "node") return false;
  try {
    const sqlite = loadSqlite();
    sqlite.close();
    return sqlite.engine === "ffi";
  } catch {
    return false;
  }
}

const ignore = !ffiByDefault();

interface Ended {
  code: number;
  signal: Deno.Signal | null;
  stdout: string;
  stderr: string;
}

/** Runs the fixture with `how` to its end. */
async function runFixture(how: string): Promise<Ended> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", FIXTURE, how],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: out.code,
    signal: out.signal,
    stdout: decoder.decode(out.stdout),
    stderr: decoder.decode(out.stderr),
  };
}

/** The child ended by its own uncaught error: printed, exit code 1, no signal. */
function assertDiedOfOwnError(ended: Ended, message: RegExp): void {
  const detail = `code ${ended.code}, signal ${ended.signal}, stderr:\n${ended.stderr}`;
  assert.equal(ended.signal, null, detail);
  assert.equal(ended.code, 1, detail);
  assert.match(ended.stderr, message, detail);
  assert.doesNotMatch(ended.stderr, /Segmentation fault|SIGSEGV/, detail);
}

Deno.test({
  name:
    "an embedding app's uncaught exception during a background step prints its error and exits 1",
  ignore,
  async fn() {
    assertDiedOfOwnError(await runFixture("throw"), /Uncaught Error: app bug: thrown/);
  },
});

Deno.test({
  name:
    "an embedding app's unhandled rejection during a background step prints its error and exits 1",
  ignore,
  async fn() {
    assertDiedOfOwnError(
      await runFixture("reject"),
      /Uncaught \(in promise\) Error: app bug: rejected/,
    );
  },
});

Deno.test({
  name: "terminating a Worker that embeds the server during a background step leaves its process " +
    "running",
  ignore,
  async fn() {
    const ended = await runFixture("worker");
    const detail = `code ${ended.code}, signal ${ended.signal}, stderr:\n${ended.stderr}`;
    assert.equal(ended.signal, null, detail);
    assert.equal(ended.code, 0, detail);
    assert.equal(ended.stdout, "worker gone\n", detail);
  },
});
