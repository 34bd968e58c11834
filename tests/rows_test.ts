/**
 * Rows as objects (client/rows.ts): the compiled row makers give exactly what
 * assigning the columns one by one gives — keys, their order, duplicates
 * (the last column wins), names that are awkward as JavaScript — and the
 * client's query(), get(), iterate() and prepare() agree over a live server.
 */

import assert from "node:assert/strict";
import { rowMaker, toObject, toObjects } from "../client/rows.ts";
import { startServer } from "./_helpers.ts";

/**
 * What every maker must give: own data properties in column order, the last
 * of duplicate names winning (`Object.fromEntries` defines each, `__proto__`
 * included, as an own property).
 */
function expected(columns: readonly string[], row: readonly unknown[]): Record<string, unknown> {
  return Object.fromEntries(columns.map((name, i) => [name, row[i]]));
}

const AWKWARD: string[][] = [
  ["id", "name", "value", "n"],
  ["a", "b", "a"], // duplicate: the last wins, key order of the first
  ["2", "1", "x", "10"], // integer-like keys (ordered by JavaScript itself, both ways)
  ['q"uote', "back\\slash", "new\nline", "\u2028sep", "emoji😀", "", " ", "r[0]"],
  ["}; throw new Error('x'); ({", "constructor", "toString", "hasOwnProperty"],
  ["lone\ud800"], // not well-formed: JSON.stringify escapes it
  ["__proto__", "a"],
];

Deno.test("rowMaker() makes the same objects as assigning the columns, compiled or not, for awkward names", () => {
  for (const columns of AWKWARD) {
    const row = columns.map((_, i) => (i % 2 === 0 ? i : `v${i}`));
    const want = expected(columns, row);
    // First sighting of a few rows (assigned), many rows (compiled), and again (compiled).
    for (const rows of [1, 100, 1]) {
      const got = rowMaker(columns, rows)(row);
      assert.deepEqual(Object.keys(got), Object.keys(want), JSON.stringify(columns));
      assert.deepEqual({ ...got }, { ...want });
      assert.equal(Object.getPrototypeOf(got), Object.prototype);
      for (const k of Object.keys(want)) assert.ok(Object.hasOwn(got, k));
    }
    assert.deepEqual(
      toObjects(columns, new Array(40).fill(row)).map((o) => ({ ...o })),
      new Array(40).fill({ ...want }),
    );
    assert.deepEqual({ ...toObject(columns, row) }, { ...want });
  }
  // A column named __proto__ stays an own property; the prototype stays Object's.
  const proto = rowMaker(["__proto__", "a"], 100)([{ polluted: true }, 1]);
  assert.equal(Object.getPrototypeOf(proto), Object.prototype);
  assert.deepEqual(Object.getOwnPropertyDescriptor(proto, "__proto__")?.value, { polluted: true });
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  // No columns: empty objects.
  assert.deepEqual(rowMaker([], 100)([]), {});
});

Deno.test("rowMaker() keeps values as they are: bigint, blobs, -0, null", () => {
  const columns = ["i", "b", "z", "n"];
  const row = [2n ** 63n - 1n, new Uint8Array([1, 2]), -0, null];
  const o = rowMaker(columns, 100)(row);
  assert.equal(o.i, 2n ** 63n - 1n);
  assert.equal(o.b, row[1]);
  assert.ok(Object.is(o.z, -0));
  assert.equal(o.n, null);
});

Deno.test("query(), get(), iterate() and a prepared all() give the same objects as the arrays, with duplicates and awkward names", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const sql = `SELECT value AS a, value * 2 AS "b""q", 'x' || value AS a, value AS "__proto__x", ` +
    `-value AS "2", value AS "1" FROM generate_series(1, 50)`;
  await db.exec(
    "CREATE TABLE g (value INTEGER); WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s " +
      "WHERE x < 50) INSERT INTO g SELECT x FROM s",
  );
  const q = sql.replace("generate_series(1, 50)", "g ORDER BY value");
  const columns = ["a", 'b"q', "a", "__proto__x", "2", "1"];
  const arrays = await db.values(q);
  const want = arrays.map((r) => expected(columns, r));
  for (let round = 0; round < 2; round++) {
    assert.deepEqual((await db.query(q)).map((o) => ({ ...o })), want.map((o) => ({ ...o })));
    assert.deepEqual(Object.keys((await db.query(q))[0]), ["1", "2", "a", 'b"q', "__proto__x"]);
    assert.deepEqual({ ...(await db.get(q)) }, { ...want[0] });
    const iterated = [];
    for await (const o of db.iterate(q)) iterated.push({ ...o });
    assert.deepEqual(iterated, want.map((o) => ({ ...o })));
    const stmt = await db.prepare(q);
    assert.deepEqual((await stmt.all()).map((o) => ({ ...o })), want.map((o) => ({ ...o })));
    await stmt.finalize();
  }
});

Deno.test("rows with names Object.prototype has are made under a frozen Object.prototype, in a child process", async () => {
  const rowsTs = new URL("../client/rows.ts", import.meta.url).href;
  const script = `import { rowMaker, toObject } from ${JSON.stringify(rowsTs)};
    Object.freeze(Object.prototype);
    const columns = ["toString", "b", "constructor"];
    const out = [];
    for (const rows of [1, 1, 100]) out.push(rowMaker(columns, rows)([1, 2, 3]));
    out.push(toObject(columns, [1, 2, 3]));
    console.log(JSON.stringify(out));`;
  for (const flags of [[], ["--v8-flags=--disallow-code-generation-from-strings"]]) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", ...flags, script],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const row = { toString: 1, b: 2, constructor: 3 };
    assert.deepEqual(JSON.parse(new TextDecoder().decode(out.stdout)), [row, row, row, row]);
  }
});
