/**
 * The SQLite binding in-process: `deno bench -A bench/binding_bench.ts`.
 *
 * Point read and 100-row read on the benchmark fixture (`items`, 10,000
 * rows), through `engine/binding` on the FFI implementation (system
 * libsqlite3) and on node:sqlite, with raw node:sqlite `StatementSync` as
 * the baseline. Statements are prepared outside the timed functions, but for
 * the script group (an `exec` script walked statement by statement).
 *
 * @module
 */

import type { StatementSync } from "node:sqlite";
import type { Stmt } from "../engine/binding/binding.ts";
import { loadSqlite } from "../engine/binding/load.ts";
import { RowsEncoder } from "../protocol/rows_encoder.ts";
import { buildFixture, randomId, randomRangeStart, SQL } from "./_server.ts";

const dir = Deno.makeTempDirSync({ prefix: "netsqlite-binding-bench-" });
const path = `${dir}/bench.db`;
const raw = buildFixture(path, { synchronous: "normal" });
const rawPoint = raw.prepare(SQL.pointRead) as StatementSync & {
  setReturnArrays(on: boolean): void;
};
rawPoint.setReturnArrays(true);
const rawRange = raw.prepare(SQL.range100) as typeof rawPoint;
rawRange.setReturnArrays(true);

const engines = [loadSqlite({ engine: "ffi" }), loadSqlite({ engine: "node" })];
const statements = engines.map((sqlite) => {
  const db = sqlite.open(path, { readOnly: true, busyTimeout: 1000 });
  return {
    name: `${sqlite.engine} (SQLite ${sqlite.version})`,
    db,
    point: db.prepare(SQL.pointRead)!,
    range: db.prepare(SQL.range100)!,
  };
});

globalThis.addEventListener("unload", () => {
  for (const s of statements) s.db.close();
  raw.close();
  Deno.removeSync(dir, { recursive: true });
});

function pointRead(stmt: Stmt): unknown {
  stmt.bind([randomId()]);
  const rows = stmt.all();
  if (rows.length !== 1) throw new Error("missing row");
  return rows;
}

function pointReadByStep(stmt: Stmt): unknown {
  stmt.bind([randomId()]);
  if (!stmt.step()) throw new Error("missing row");
  const row = stmt.row();
  stmt.reset();
  return row;
}

const encoder = new RowsEncoder();

/** The server's path: rows encoded straight into MessagePack. */
function rangeReadEncoded(stmt: Stmt): unknown {
  stmt.bind([randomRangeStart()]);
  encoder.begin();
  if (stmt.allInto(encoder, 1 << 24) !== 100) throw new Error("missing rows");
  return encoder.finish();
}

function rangeRead(stmt: Stmt): unknown {
  stmt.bind([randomRangeStart()]);
  const rows = stmt.all();
  if (rows.length !== 100) throw new Error("missing rows");
  return rows;
}

Deno.bench("raw node:sqlite all()", { group: "point read", baseline: true }, () => {
  rawPoint.all(BigInt(randomId()));
});
for (const s of statements) {
  Deno.bench(`${s.name} bind+all()`, { group: "point read" }, () => {
    pointRead(s.point);
  });
}
Deno.bench(`${statements[0].name} bind+step+row+reset`, { group: "point read" }, () => {
  pointReadByStep(statements[0].point);
});

Deno.bench("raw node:sqlite all()", { group: "100-row read", baseline: true }, () => {
  rawRange.all(BigInt(randomRangeStart()));
});
for (const s of statements) {
  Deno.bench(`${s.name} bind+all()`, { group: "100-row read" }, () => {
    rangeRead(s.range);
  });
}
for (const s of statements) {
  Deno.bench(`${s.name} bind+allInto(RowsEncoder)`, { group: "100-row read" }, () => {
    rangeReadEncoded(s.range);
  });
}

/** A script of `select 1;` × 10,000 walked statement by statement, as `exec` does. */
const SCRIPT = "select 1;".repeat(10_000);
for (const s of statements) {
  Deno.bench(`${s.name} script of 10,000 statements`, { group: "script" }, () => {
    let from = 0;
    for (let st = s.db.prepare(SCRIPT, from); st !== null; st = s.db.prepare(SCRIPT, from)) {
      st.all();
      from = st.end;
      st.finalize();
    }
  });
}
