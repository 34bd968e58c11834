/**
 * Differential test: a seeded random sequence of DDL, DML and reads, issued
 * by several netsqlite clients and by a direct SQLite connection to the same
 * file (another program committing behind the server's back), must give
 * exactly what the same sequence gives on one plain SQLite connection.
 *
 * Why the earlier suites missed stale schemas and outside commits: every
 * test created its tables once and then only read and wrote rows, no test
 * re-created a table under a name already read through the server, and no
 * test wrote to the file except through the server. This sequence does all
 * of that, hundreds of times, with the reader's snapshot and statement
 * caches warm.
 *
 * Seeds are fixed; `NETSQLITE_SEED=n` runs seed n alone. A failure names
 * the seed and the step, and prints the steps so far.
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import type { Client, Statement } from "../client.ts";
import { prng } from "./_bytes.ts";
import { startServer } from "./_helpers.ts";

const SEEDS = Deno.env.get("NETSQLITE_SEED") !== undefined
  ? [Number(Deno.env.get("NETSQLITE_SEED"))]
  : [1, 2, 3, 4];
const STEPS = 600;

type Value = null | number | bigint | string | Uint8Array;
type Actor = "A" | "B" | "C" | "direct";
interface Step {
  actor: Actor;
  kind: "exec" | "run" | "query" | "prepared";
  sql: string;
  params: Value[];
}
type Outcome =
  | { ok: true; columns?: string[]; rows?: unknown[][]; changes?: number }
  | { ok: false; message: string };

const CHECK_SCHEMA = "SELECT schema_version FROM pragma_schema_version";
const COLUMN_NAMES = ["a", "b", "c", "d", "x", "y"];

/** Generates one step from a rough model of the schema (it may be wrong: that is fine). */
class Generator {
  readonly #rnd: () => number;
  readonly tables = new Map<string, string[]>();
  readonly views = new Set<string>();
  #n = 0;

  constructor(seed: number) {
    this.#rnd = prng(seed);
  }

  #pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.#rnd() * items.length)];
  }

  #int(n: number): number {
    return Math.floor(this.#rnd() * n);
  }

  #value(): Value {
    switch (this.#int(7)) {
      case 0:
        return null;
      case 1:
        return this.#int(1000) - 500;
      case 2:
        return this.#pick([2n ** 62n, -(2n ** 63n), 2n ** 53n + 1n, 9007199254740991]);
      case 3:
        return this.#int(100000) / 7;
      case 4:
        return this.#pick(["", "héllo", "x".repeat(this.#int(40)), "🙂 row"]);
      case 5:
        return new Uint8Array([this.#int(256), 0, this.#int(256)]);
      default:
        return `s${this.#int(50)}`;
    }
  }

  #columns(): string[] {
    const cols = [...COLUMN_NAMES].sort(() => this.#rnd() - 0.5);
    return cols.slice(0, 1 + this.#int(4));
  }

  #tableName(): string {
    return this.#pick(["t0", "t1", "t2"]);
  }

  next(): Step {
    const actor = this.#pick<Actor>(["A", "A", "B", "C", "direct"]);
    const name = this.#tableName();
    const cols = this.tables.get(name);
    const r = this.#int(100);
    if (cols === undefined || r < 6) {
      if (cols !== undefined) {
        this.tables.delete(name);
        return { actor, kind: "exec", sql: `DROP TABLE ${name}`, params: [] };
      }
      const fresh = this.#columns();
      this.tables.set(name, fresh);
      return {
        actor,
        kind: "exec",
        sql: `CREATE TABLE ${name} (${fresh.join(", ")})`,
        params: [],
      };
    }
    if (r < 10) {
      const add = COLUMN_NAMES.find((c) => !cols.includes(c)) ?? `z${this.#n++}`;
      cols.push(add);
      return { actor, kind: "exec", sql: `ALTER TABLE ${name} ADD COLUMN ${add}`, params: [] };
    }
    if (r < 13) {
      const i = this.#int(cols.length);
      const to = `${cols[i]}${this.#n++}`;
      const sql = `ALTER TABLE ${name} RENAME COLUMN ${cols[i]} TO ${to}`;
      cols[i] = to;
      return { actor, kind: "exec", sql, params: [] };
    }
    if (r < 16) {
      const view = `v_${name}`;
      if (this.views.has(view)) {
        this.views.delete(view);
        return { actor, kind: "exec", sql: `DROP VIEW ${view}`, params: [] };
      }
      this.views.add(view);
      return {
        actor,
        kind: "exec",
        sql: `CREATE VIEW ${view} AS SELECT * FROM ${name}`,
        params: [],
      };
    }
    if (r < 18) {
      return {
        actor,
        kind: "exec",
        sql: `CREATE INDEX IF NOT EXISTS i_${name}_${cols[0]} ON ${name}(${cols[0]})`,
        params: [],
      };
    }
    if (r < 20) {
      return {
        actor: actor === "direct" ? "A" : actor,
        kind: "exec",
        sql: `PRAGMA user_version = ${this.#int(1000)}`,
        params: [],
      };
    }
    if (r < 22) return { actor, kind: "query", sql: "PRAGMA user_version", params: [] };
    if (r < 23) return { actor: "A", kind: "exec", sql: "VACUUM", params: [] };
    if (r < 45) {
      // Sometimes one value too many or too few: the error must match too.
      const n = Math.max(0, cols.length + (this.#int(10) === 0 ? this.#pick([-1, 1]) : 0));
      const params = Array.from({ length: n }, () => this.#value());
      return {
        actor,
        kind: "run",
        sql: `INSERT INTO ${name} VALUES (${params.map(() => "?").join(", ")})`,
        params,
      };
    }
    if (r < 52) {
      const col = this.#pick(cols);
      return {
        actor,
        kind: "run",
        sql: `UPDATE ${name} SET ${col} = ? WHERE rowid % 2 = 0`,
        params: [this.#value()],
      };
    }
    if (r < 56) {
      return { actor, kind: "run", sql: `DELETE FROM ${name} WHERE rowid % 3 = 0`, params: [] };
    }
    if (r < 64) {
      const view = `v_${name}`;
      const from = this.views.has(view) && this.#int(2) === 0 ? view : name;
      return { actor, kind: "query", sql: `SELECT * FROM ${from} ORDER BY 1, 2`, params: [] };
    }
    if (r < 72) {
      return {
        actor: actor === "direct" ? "B" : actor,
        kind: "prepared",
        sql: `SELECT * FROM ${name} ORDER BY rowid`,
        params: [],
      };
    }
    if (r < 78) {
      return { actor, kind: "query", sql: `SELECT count(*), max(rowid) FROM ${name}`, params: [] };
    }
    return { actor, kind: "query", sql: `SELECT * FROM ${name} ORDER BY rowid`, params: [] };
  }
}

/** Integers as the server returns them: numbers when safe, bigint beyond. */
function normalize(rows: unknown[][]): unknown[][] {
  return rows.map((row) =>
    row.map((v) =>
      typeof v === "bigint" && v >= -(2n ** 53n) + 1n && v <= 2n ** 53n - 1n ? Number(v) : v
    )
  );
}

/** node:sqlite binds numbers as REAL: integers go as bigint, as the server binds them. */
function directParams(params: Value[]): (Value)[] {
  return params.map((v) => typeof v === "number" && Number.isSafeInteger(v) ? BigInt(v) : v);
}

function runDirect(db: DatabaseSync, step: Step): Outcome {
  try {
    if (step.kind === "exec") {
      db.exec(step.sql);
      return { ok: true };
    }
    const stmt = db.prepare(step.sql);
    stmt.setReadBigInts(true);
    if (step.kind === "run") {
      const info = stmt.run(...directParams(step.params) as never[]);
      return { ok: true, changes: Number(info.changes) };
    }
    (stmt as unknown as { setReturnArrays(on: boolean): void }).setReturnArrays(true);
    const rows = stmt.all(...directParams(step.params) as never[]) as unknown as unknown[][];
    return { ok: true, columns: stmt.columns().map((c) => c.name), rows: normalize(rows) };
  } catch (err) {
    return { ok: false, message: (err as Error).message };
  }
}

async function runClient(
  db: Client,
  prepared: Map<string, Statement>,
  step: Step,
): Promise<Outcome> {
  try {
    if (step.kind === "exec") {
      await db.exec(step.sql);
      return { ok: true };
    }
    if (step.kind === "run") {
      const info = await db.run(step.sql, step.params);
      return { ok: true, changes: Number(info.changes) };
    }
    if (step.kind === "prepared") {
      // A statement prepared before schema changes, used after them.
      let stmt = prepared.get(step.sql);
      if (stmt === undefined) {
        stmt = await db.prepare(step.sql);
        prepared.set(step.sql, stmt);
      }
      const rows = await stmt.all();
      const columns = rows.length > 0 ? Object.keys(rows[0]) : undefined;
      return { ok: true, columns, rows: rows.map((r) => Object.values(r)) };
    }
    const stmt = await db.prepare(step.sql);
    try {
      const rows = await stmt.values(step.params);
      return { ok: true, columns: [...stmt.columns], rows };
    } finally {
      await stmt.finalize();
    }
  } catch (err) {
    return { ok: false, message: (err as Error).message };
  }
}

function show(v: unknown): string {
  return JSON.stringify(v, (_k, x) => typeof x === "bigint" ? `${x}n` : x);
}

function describe(step: Step, i: number): string {
  return `#${i} ${step.actor} ${step.kind} ${step.sql}`;
}

for (const seed of SEEDS) {
  Deno.test(`Engine: ${STEPS} random DDL/DML/read steps from three clients and a direct connection match plain SQLite (seed ${seed})`, async () => {
    await using srv = await startServer({ synchronous: "normal" });
    const clients: Record<"A" | "B" | "C", Client> = {
      A: await srv.client(),
      B: await srv.client(),
      C: await srv.client(),
    };
    const prepared: Record<"A" | "B" | "C", Map<string, Statement>> = {
      A: new Map(),
      B: new Map(),
      C: new Map(),
    };
    const direct = new DatabaseSync(srv.database, { timeout: 5000 });
    const oracle = new DatabaseSync(":memory:");
    const gen = new Generator(seed);
    const log: string[] = [];
    try {
      for (let i = 0; i < STEPS; i++) {
        const step = gen.next();
        log.push(describe(step, i));
        const expected = runDirect(oracle, step.kind === "prepared" ? { ...step } : step);
        // SQLite itself lets a connection prepare against a schema another
        // connection changed (it checks only when a transaction starts):
        // the direct program checks first, as a careful program must.
        if (step.actor === "direct") direct.prepare(CHECK_SCHEMA).all();
        const got = step.actor === "direct"
          ? runDirect(direct, step)
          : await runClient(clients[step.actor], prepared[step.actor], step);
        const where = `seed ${seed}, step ${describe(step, i)}\nsteps so far:\n${
          log.slice(-25).join("\n")
        }`;
        if (got.ok !== expected.ok) {
          assert.fail(`${where}\nexpected ${show(expected)}\ngot ${show(got)}`);
        }
        if (!got.ok || !expected.ok) continue;
        if (expected.changes !== undefined) assert.equal(got.changes, expected.changes, where);
        if (expected.rows !== undefined) {
          assert.deepEqual(got.rows, expected.rows, where);
          // A prepared statement with no rows reports no column names here.
          if (got.columns !== undefined) assert.deepEqual(got.columns, expected.columns, where);
        }
      }
    } finally {
      direct.close();
      oracle.close();
      for (const [name, c] of Object.entries(clients)) {
        for (const s of prepared[name as "A"].values()) await s.finalize().catch(() => {});
        await c.close();
      }
    }
  });
}

Deno.test("Engine: a commit by another program is seen by the very next read through the server", async () => {
  await using srv = await startServer({ synchronous: "normal" });
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)");
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]]);
  const direct = new DatabaseSync(srv.database, { timeout: 5000 });
  try {
    for (let i = 1; i <= 50; i++) {
      direct.exec(`INSERT INTO t VALUES (${i})`);
      // No other commit through the server in between: the snapshot must move.
      assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[i]]);
    }
    direct.exec("ALTER TABLE t ADD COLUMN note TEXT");
    direct.exec("UPDATE t SET note = 'n' || id");
    assert.deepEqual(await db.query("SELECT * FROM t WHERE id = 7"), [{ id: 7, note: "n7" }]);
    // The writer sees the outside schema too: a 2-value INSERT compiles.
    await db.run("INSERT INTO t VALUES (?, ?)", [100, "w"]);
    assert.deepEqual(await db.values("SELECT note FROM t WHERE id = 100"), [["w"]]);
  } finally {
    direct.close();
  }
});

Deno.test("Engine: after DROP + CREATE with other columns, every client's next statement sees the new table", async () => {
  await using srv = await startServer({ synchronous: "normal" });
  await using a = await srv.client();
  await using b = await srv.client();
  await a.exec("CREATE TABLE t1 (a INTEGER, b INTEGER)");
  await a.run("INSERT INTO t1 VALUES (1, 2)");
  assert.deepEqual(await b.query("SELECT * FROM t1"), [{ a: 1, b: 2 }]);
  await a.exec("DROP TABLE t1");
  await a.exec("CREATE TABLE t1 (a INTEGER, b INTEGER, x TEXT)");
  // Prepared (and classified) on the shared reader first: must not see the old table.
  await a.run("INSERT INTO t1 VALUES (3, 4, 'row')");
  assert.deepEqual(await b.query("SELECT * FROM t1"), [{ a: 3, b: 4, x: "row" }]);
  // Same column count, other names: names must not go stale.
  await b.exec("DROP TABLE t1; CREATE TABLE t1 (p, q, r)");
  await b.run("INSERT INTO t1 VALUES (5, 6, 7)");
  assert.deepEqual(await a.query("SELECT * FROM t1"), [{ p: 5, q: 6, r: 7 }]);
  await a.exec("ALTER TABLE t1 RENAME COLUMN p TO pp");
  assert.deepEqual(await b.query("SELECT * FROM t1"), [{ pp: 5, q: 6, r: 7 }]);
  await b.exec("ALTER TABLE t1 ADD COLUMN z");
  assert.deepEqual(await a.query("SELECT * FROM t1"), [{ pp: 5, q: 6, r: 7, z: null }]);
  // Inside a transaction, on the writer: a rolled-back ALTER leaves no trace.
  await a.transaction(async (tx) => {
    await tx.exec("ALTER TABLE t1 ADD COLUMN w");
    assert.deepEqual(await tx.query("SELECT * FROM t1"), [{ pp: 5, q: 6, r: 7, z: null, w: null }]);
    throw new Error("undo");
  }).catch((err) => assert.equal(err.message, "undo"));
  assert.deepEqual(await a.query("SELECT * FROM t1"), [{ pp: 5, q: 6, r: 7, z: null }]);
  assert.deepEqual(await b.query("SELECT * FROM t1"), [{ pp: 5, q: 6, r: 7, z: null }]);
});

Deno.test("Engine: a server-side prepared statement follows schema changes, and fails clearly once it no longer compiles", async () => {
  await using srv = await startServer({ synchronous: "normal" });
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (a, b); INSERT INTO t VALUES (1, 2)");
  const stmt = await db.prepare("SELECT * FROM t");
  try {
    assert.deepEqual(await stmt.all(), [{ a: 1, b: 2 }]);
    await db.exec("ALTER TABLE t RENAME COLUMN a TO aa; ALTER TABLE t ADD COLUMN c");
    assert.deepEqual(await stmt.all(), [{ aa: 1, b: 2, c: null }]);
    await db.exec("DROP TABLE t");
    await assert.rejects(stmt.all(), (err: Error & { code?: string }) => {
      assert.equal(err.code, "SQLITE_ERROR");
      assert.match(err.message, /no such table: t/);
      return true;
    });
  } finally {
    await stmt.finalize();
  }
});

Deno.test("Engine: a cursor opened before a schema change keeps reading its own snapshot", async () => {
  await using srv = await startServer({ synchronous: "normal" });
  await using a = await srv.client();
  await using b = await srv.client();
  await a.exec(
    "CREATE TABLE t (n INTEGER); " +
      "INSERT INTO t WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s LIMIT 3000) SELECT x FROM s",
  );
  const seen: unknown[] = [];
  let changed = false;
  for await (const row of a.iterate<{ n: number }>("SELECT * FROM t ORDER BY n")) {
    seen.push(row.n);
    if (!changed) {
      changed = true;
      await b.exec("DROP TABLE t; CREATE TABLE t (other TEXT)");
    }
  }
  assert.equal(seen.length, 3000);
  assert.equal(seen[2999], 3000);
  assert.deepEqual(await a.query("SELECT * FROM t"), []);
  assert.deepEqual(await a.values("SELECT name FROM pragma_table_info('t')"), [["other"]]);
});

Deno.test("Client.run() of DDL reports no changes and no rowid of its own, whatever ran before", async () => {
  await using srv = await startServer({ synchronous: "normal" });
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (a)");
  await db.run("INSERT INTO t VALUES (1), (2), (3)");
  assert.deepEqual(await db.run("UPDATE t SET a = a + 1"), { changes: 3, lastInsertRowid: 0 });
  assert.deepEqual(await db.run("CREATE TABLE u (b)"), { changes: 0, lastInsertRowid: 0 });
  assert.deepEqual(await db.run("ALTER TABLE u ADD COLUMN c"), { changes: 0, lastInsertRowid: 0 });
  assert.deepEqual(await db.run("CREATE INDEX i ON t (a)"), { changes: 0, lastInsertRowid: 0 });
  assert.deepEqual(await db.run("DROP INDEX i"), { changes: 0, lastInsertRowid: 0 });
  // A real insert still reports its own.
  assert.deepEqual(await db.run("INSERT INTO u (b) VALUES (9)"), {
    changes: 1,
    lastInsertRowid: 1,
  });
});
