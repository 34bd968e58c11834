/**
 * Differences found by running one set of statements through better-sqlite3
 * 12.x and through netsqlite's client (real in-process servers, both
 * engines), as a user porting code meets them. better-sqlite3 itself is not
 * needed: what it gives is written down here.
 */

import assert from "node:assert/strict";
import { SqliteError } from "../mod.ts";
import { startServer } from "./_helpers.ts";

const ENGINES = ["ffi", "node"] as const;

/** Asserts that `promise` rejects with `SqliteError` `code` and a message matching `message`. */
async function refused(promise: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof SqliteError, String(err));
    assert.equal(err.code, code);
    assert.match(err.message, message);
    return true;
  });
}

for (const engine of ENGINES) {
  // better-sqlite3 binds `?NNN` as a named parameter whose key is the bare
  // number (`stmt.get({ 1: 5 })`), as it binds `{ a }` to `:a`. netsqlite took
  // only "?1" and refused `{ 1: 5 }` saying the statement had no such
  // parameter, though it has one.
  Deno.test(`a bare number key binds ?NNN, as better-sqlite3's { 1: v } does (${engine})`, async () => {
    await using srv = await startServer({ engine });
    await using db = await srv.client();
    assert.deepEqual(await db.get("SELECT ?1 AS a", { 1: 5 }), { a: 5 });
    assert.deepEqual(await db.get("SELECT ?2 AS a, ?1 AS b", { 1: "x", 2: "y" }), {
      a: "y",
      b: "x",
    });
    assert.deepEqual(await db.get("SELECT ?1 AS a, :n AS n, ?1 AS c", { 1: 7, n: 8 }), {
      a: 7,
      n: 8,
      c: 7,
    });
    const stmt = await db.prepare("SELECT ?3 AS v, typeof(?3) AS t");
    assert.deepEqual(await stmt.get({ 3: 2n ** 60n }), { v: 2n ** 60n, t: "integer" });
    assert.deepEqual(await stmt.get({ "?3": 1 }), { v: 1, t: "integer" });
    await stmt.finalize();
    // Both spellings of one parameter are two keys for it, as `a` and `:a` are.
    await refused(
      db.get("SELECT ?1 AS a", { 1: 5, "?1": 6 }),
      "INVALID_PARAM",
      /^Cannot bind parameter "\?1": both "1" and "\?1" name it; give one$/,
    );
    // An index no parameter takes is still no key, bare or not.
    await refused(
      db.get("SELECT ?1 AS a, ?3 AS b", { 1: 1, 2: 2, 3: 3 }),
      "INVALID_PARAM",
      /^Cannot bind parameter "2": the statement has no parameter of that name$/,
    );
    // A name is not a number: `{ 1 }` still binds only what is called 1.
    await refused(
      db.get("SELECT :a AS a", { 1: 5 }),
      "INVALID_PARAM",
      /^Cannot bind parameter "1": the statement has no parameter of that name$/,
    );
  });
}

for (const engine of ENGINES) {
  // better-sqlite3's `stmt.get(null)` binds NULL to the statement's one
  // parameter; here `null` parameters are none, and the refusal said only
  // "0 were given", though the caller passed a value.
  Deno.test(`null as the parameters of a statement that has some says to pass [null] (${engine})`, async () => {
    await using srv = await startServer({ engine });
    await using db = await srv.client();
    const hint =
      /^Missing parameter values: the statement has 1 parameter, 0 were given \(null parameters are none: to bind NULL, pass \[null\]\)$/;
    await refused(db.get("SELECT ? AS a", null), "INVALID_PARAM", hint);
    await refused(db.run("SELECT ? AS a", null), "INVALID_PARAM", hint);
    await refused(db.query("SELECT ? AS a", null), "INVALID_PARAM", hint);
    await refused(db.values("SELECT ? AS a", null), "INVALID_PARAM", hint);
    await refused(
      (async () => {
        for await (const _ of db.iterate("SELECT ? AS a", null)) break;
      })(),
      "INVALID_PARAM",
      hint,
    );
    const stmt = await db.prepare("SELECT ? AS a");
    await refused(stmt.get(null), "INVALID_PARAM", hint);
    await refused(stmt.all(null), "INVALID_PARAM", hint);
    await refused(stmt.run(null), "INVALID_PARAM", hint);
    assert.deepEqual(await stmt.get([null]), { a: null });
    await stmt.finalize();
    // Left out, the message stays as it was; null on a statement without parameters is fine.
    await refused(
      db.get("SELECT ? AS a"),
      "INVALID_PARAM",
      /^Missing parameter values: the statement has 1 parameter, 0 were given$/,
    );
    assert.deepEqual(await db.get("SELECT 1 AS a", null), { a: 1 });
    // So does a statement whose parameters are named.
    await refused(db.get("SELECT :a AS a", null), "INVALID_PARAM", /pass \[null\]\)$/);
  });
}
