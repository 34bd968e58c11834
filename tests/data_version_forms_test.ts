/**
 * `PRAGMA data_version` counts commits of other connections, so the server
 * answers it from one connection (the shared reader), wherever a session's
 * other statements run: its table-valued forms too, or a client comparing
 * answers of different forms, or of a cursor, could miss a commit.
 */

import assert from "node:assert/strict";
import type { Client } from "../client.ts";
import { startServer } from "./_helpers.ts";
import { isDataVersionRead } from "../engine/pragma_use.ts";

const ENGINES = ["ffi", "node"] as const;

const FORMS = [
  "PRAGMA data_version",
  "SELECT data_version FROM pragma_data_version",
  "SELECT * FROM main.pragma_data_version()",
  'select * from "PRAGMA_DATA_VERSION";',
];

/** The answer of each form by `query()` and by `iterate()`. */
async function answers(db: Client): Promise<number[]> {
  const out: number[] = [];
  for (const sql of FORMS) {
    out.push(Object.values((await db.query(sql))[0])[0] as number);
    for await (const row of db.iterate(sql)) out.push(Object.values(row)[0] as number);
  }
  return out;
}

for (const engine of ENGINES) {
  Deno.test(`${engine}: every form of PRAGMA data_version gets one answer, by query and cursor, in a transaction too`, async () => {
    await using srv = await startServer({ engine, logLevel: "error" });
    await using db = await srv.client();
    await db.exec("CREATE TABLE t (a)");
    for (let i = 0; i < 3; i++) await db.run("INSERT INTO t VALUES (1)");
    const before = await answers(db);
    assert.equal(new Set(before).size, 1, `answers ${before}`);
    await db.run("INSERT INTO t VALUES (2)");
    const after = await answers(db);
    assert.equal(new Set(after).size, 1, `answers ${after}`);
    assert.notEqual(after[0], before[0]);
    await db.exec("BEGIN");
    const inTx = await answers(db);
    await db.exec("COMMIT");
    assert.deepEqual(inTx, after);
  });
}

Deno.test("isDataVersionRead() takes the plain and table-valued reads of data_version, and nothing else", () => {
  for (const sql of FORMS) assert.ok(isDataVersionRead(sql), sql);
  for (
    const sql of [
      "PRAGMA data_version = 3",
      "SELECT data_version + 1 FROM pragma_data_version",
      "SELECT * FROM pragma_data_version, t",
      "SELECT * FROM pragma_data_version WHERE data_version > 1",
      "SELECT * FROM pragma_data_version('other')",
      "SELECT data_version FROM t",
    ]
  ) {
    assert.ok(!isDataVersionRead(sql), sql);
  }
});
