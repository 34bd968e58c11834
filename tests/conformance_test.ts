/**
 * Conformance: SQLite's sqllogictest scripts (shared/conformance/sqllogictest)
 * run through netsqlite and directly on node:sqlite. Every record SQLite
 * itself passes must pass through netsqlite, and every statement and query
 * must give the same outcome and values both ways.
 *
 * Run with `deno task conformance`.
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { startServer, tempDir } from "./_helpers.ts";
import { connect } from "../mod.ts";
import { appliesTo, parseScript, type QueryRecord } from "./sqllogictest/parser.ts";
import {
  clientExecutor,
  directExecutor,
  formatValue,
  hashValues,
  normalizeValue,
  type RecordResult,
  type RunReport,
  runScript,
} from "./sqllogictest/runner.ts";

const CORPUS = new URL("../../shared/conformance/sqllogictest/", import.meta.url);

/** Every `*.test` file under the corpus, as paths relative to it, sorted. */
async function listScripts(dir: URL, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isDirectory) {
        out.push(...await listScripts(new URL(`${entry.name}/`, dir), `${prefix}${entry.name}/`));
      } else if (entry.isFile && entry.name.endsWith(".test")) {
        out.push(`${prefix}${entry.name}`);
      }
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return out.sort();
}

const SCRIPTS = await listScripts(CORPUS);

/** Requests kept in flight on the netsqlite connection. */
const PIPELINE = 256;

Deno.test("listScripts: the sqllogictest corpus is present next to the repo", () => {
  assert.ok(
    SCRIPTS.length >= 14,
    `expected the corpus at ${CORPUS.pathname}, found ${SCRIPTS.length} scripts`,
  );
  assert.ok(SCRIPTS.includes("select1.test") && SCRIPTS.includes("evidence/in1.test"));
});

Deno.test("parseScript: reads statements, queries, conditions, hash-threshold and halt", () => {
  const script = parseScript(
    [
      "# comment",
      "hash-threshold 8",
      "",
      "statement ok",
      "CREATE TABLE t(a, b)",
      "",
      "onlyif sqlite # a comment after the engine",
      "skipif mysql",
      "query IT rowsort label-1",
      "SELECT a,",
      "  b FROM t",
      "----",
      "1",
      "x",
      "",
      "query R nosort",
      "SELECT 1.5",
      "",
      "statement error",
      "SELECT nope",
      "",
      "onlyif mssql",
      "halt",
      "",
    ].join("\r\n"),
  );
  assert.deepEqual(script.records.map((r) => r.type), [
    "hash-threshold",
    "statement",
    "query",
    "query",
    "statement",
    "halt",
  ]);
  const q = script.records[2] as QueryRecord;
  assert.equal(q.types, "IT");
  assert.equal(q.sort, "rowsort");
  assert.equal(q.label, "label-1");
  assert.equal(q.sql, "SELECT a,\n  b FROM t");
  assert.deepEqual(q.expected, ["1", "x"]);
  assert.deepEqual(q.conditions, [
    { kind: "onlyif", engine: "sqlite" },
    { kind: "skipif", engine: "mysql" },
  ]);
  assert.equal(q.line, 9);
  assert.equal((script.records[3] as QueryRecord).expected, null);
  assert.equal(appliesTo(q), true);
  assert.equal(appliesTo(q, "mysql"), false);
  assert.equal(appliesTo(script.records[5]), false);
  assert.throws(() => parseScript("query X nosort\nSELECT 1\n", "bad.test"), /bad\.test:1/);
});

Deno.test("formatValue: prints values the way SQLite's sqllogictest driver does", () => {
  assert.equal(formatValue(null, "I"), "NULL");
  assert.equal(formatValue(null, "T"), "NULL");
  assert.equal(formatValue("", "T"), "(empty)");
  assert.equal(formatValue("a\tb\u00e9", "T"), "a@b@@");
  assert.equal(formatValue(42, "I"), "42");
  assert.equal(formatValue(-2.7, "I"), "-2");
  assert.equal(formatValue(0.5, "I"), "0");
  assert.equal(formatValue(1e30, "I"), "9223372036854775807");
  assert.equal(formatValue(9223372036854775807n, "I"), "9223372036854775807");
  assert.equal(formatValue("  12abc", "I"), "12");
  assert.equal(formatValue("abc", "I"), "0");
  assert.equal(formatValue(1.25, "R"), "1.250");
  assert.equal(formatValue(3, "R"), "3.000");
  assert.equal(formatValue(-9223372036854775808n, "R"), "-9223372036854776000.000");
  assert.equal(formatValue(-0.0004, "R"), "-0.000");
  assert.equal(formatValue(1.5, "T"), "1.5");
  assert.equal(formatValue(7, "T"), "7");
  assert.equal(formatValue(1e21, "T"), "1.0e+21");
  assert.equal(hashValues([]), "d41d8cd98f00b204e9800998ecf8427e");
  assert.equal(hashValues(["1", "2"]), "6ddb4095eb719e2a9f0a3f95677d24e0");
});

Deno.test("formatValue: matches SQLite's own printf('%.3f'), CAST AS INTEGER and CAST AS TEXT", () => {
  const db = new DatabaseSync(":memory:");
  try {
    const stmt = db.prepare(
      "SELECT printf('%.3f', CAST(?1 AS REAL)), CAST(CAST(?1 AS REAL) AS INTEGER), " +
        "CAST(CAST(?1 AS REAL) AS TEXT)",
    ) as unknown as {
      all(x: number): unknown[][];
      setReturnArrays(b: boolean): void;
      setReadBigInts(b: boolean): void;
    };
    stmt.setReturnArrays(true);
    stmt.setReadBigInts(true);
    let state = 0x2545f491;
    const rnd = () => {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      return (state >>> 0) / 2 ** 32;
    };
    const values = [0.1, 0.1245, 115.1755, -450.6755, 1e16, 1e17, 123456789012345.6, 2.5, -0.0004];
    for (let i = 0; i < 3000; i++) {
      const scale = 10 ** Math.floor(rnd() * 19 - 4);
      const x = (rnd() - 0.5) * scale;
      // Values that end in a 5 at the fourth decimal are ties for %.3f.
      values.push(x, Math.round(x * 1e4) / 1e4 + (Math.round(rnd() * 9) + 0.5) / 1e4);
    }
    for (const x of values) {
      const [r, i, t] = stmt.all(x)[0];
      assert.equal(formatValue(x, "R"), r, `printf('%.3f', ${x})`);
      assert.equal(formatValue(x, "I"), String(i), `CAST(${x} AS INTEGER)`);
      if (!Number.isSafeInteger(x)) assert.equal(formatValue(x, "T"), t, `CAST(${x} AS TEXT)`);
    }
  } finally {
    db.close();
  }
});

/** Where a script's two runs disagree; empty when they agree. */
function differences(net: RunReport, direct: RunReport): string[] {
  const out: string[] = [];
  for (let k = 0; k < net.results.length; k++) {
    const a = net.results[k];
    const b = direct.results[k];
    const where = `line ${a.line}: ${a.sql.replace(/\s+/g, " ")}`;
    if (a.status === "skip" || b.status === "skip") {
      if (a.status !== b.status) out.push(`${where}: skipped on one side only`);
      continue;
    }
    if (a.succeeded !== b.succeeded) {
      out.push(
        `${where}: netsqlite ${a.succeeded ? "succeeded" : `failed (${a.error})`}, ` +
          `node:sqlite ${b.succeeded ? "succeeded" : `failed (${b.error})`}`,
      );
      continue;
    }
    if (a.kind !== "query" || !a.succeeded) continue;
    try {
      assert.deepStrictEqual(a.rows!.map((r) => r.map(normalizeValue)), b.rows);
    } catch {
      out.push(`${where}: rows differ: netsqlite ${show(a)}, node:sqlite ${show(b)}`);
      continue;
    }
    if (a.hash !== b.hash) out.push(`${where}: formatted values differ`);
  }
  return out;
}

function show(r: RecordResult): string {
  const text = JSON.stringify(
    r.rows,
    (_k, v) => typeof v === "bigint" ? `${v}n` : v instanceof Uint8Array ? `x'${hex(v)}'` : v,
  );
  return text.length > 300 ? `${text.slice(0, 300)}...` : text;
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Runs an inline script both ways and returns where they disagree. */
async function compareInline(name: string, text: string): Promise<[RunReport, string[]]> {
  const script = parseScript(text, name);
  let net: RunReport;
  {
    await using server = await startServer();
    await using client = await connect({ ...server.connectOptions, max: 1 });
    net = await runScript(script, clientExecutor(client), { pipeline: PIPELINE });
  }
  const db = new DatabaseSync(":memory:");
  try {
    const direct = await runScript(script, directExecutor(db));
    return [net, differences(net, direct)];
  } finally {
    db.close();
  }
}

/**
 * Values of every storage class, scripts, comments, errors and transactions:
 * outcomes and raw values must be identical through netsqlite and directly.
 * Queries without `----` are checked only against node:sqlite.
 */
const EXTRA_SCRIPT = `
statement ok
CREATE TABLE v(id INTEGER PRIMARY KEY, x)

statement ok
INSERT INTO v(x) VALUES (2.0), (-0.0), (0.1), (1e300), (-1e-300), (9007199254740991),
  (9007199254740993), (-9223372036854775808), (9223372036854775807), (x''), (x'00ff'),
  (''), ('a' || char(9) || 'b'), ('h\u00e9 \u{1F600}'), (NULL), (CAST(1 AS REAL))

query ITTRI nosort
SELECT id, typeof(x), x, x, x FROM v ORDER BY id

query IT rowsort
SELECT id, x FROM v WHERE typeof(x) = 'real'

statement ok
CREATE TABLE a(k INTEGER PRIMARY KEY, v TEXT NOT NULL UNIQUE); -- a comment
/* another */ INSERT INTO a VALUES (1, 'one'); INSERT INTO a VALUES (2, 'two');

query IT nosort
SELECT k, v FROM a ORDER BY k; -- trailing comment
----
1
one
2
two

statement error
INSERT INTO a VALUES (3, 'one')

statement error
INSERT INTO a VALUES (4, NULL)

statement error
SELEKT 1

statement error
INSERT INTO a VALUES (5, 'five'); INSERT INTO a VALUES (6, 'one'); INSERT INTO a VALUES (7, 'seven')

query I nosort
SELECT count(*) FROM a
----
3

statement ok
CREATE TABLE parent(id INTEGER PRIMARY KEY); CREATE TABLE child(pid REFERENCES parent(id))

statement error
INSERT INTO child VALUES (42)

statement ok
BEGIN

statement ok
INSERT INTO a VALUES (10, 'ten')

query I nosort
SELECT count(*) FROM a
----
4

statement ok
SAVEPOINT s1

statement ok
DELETE FROM a

query I nosort
SELECT count(*) FROM a
----
0

statement ok
ROLLBACK TO s1

statement ok
RELEASE s1

statement ok
ROLLBACK

query I nosort
SELECT count(*) FROM a
----
3

query I nosort
INSERT INTO a VALUES (20, 'twenty') RETURNING k
----
20

statement ok
CREATE TEMP VIEW tv AS SELECT k * 2 FROM a

query I rowsort
SELECT * FROM tv
----
10
2
4
40

query I nosort
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 20000) SELECT sum(i) FROM n
----
200010000

query IT nosort
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 5000)
SELECT i, printf('%.*c', i % 300, 'x') FROM n

query T nosort
SELECT sqlite_version() IS NOT NULL
----
1
`;

Deno.test("serve+connect: values of every type, scripts, errors and transactions equal node:sqlite's", async () => {
  const [net, diffs] = await compareInline("extra.test", EXTRA_SCRIPT);
  assert.deepEqual(diffs, []);
  // Queries without "----" are checked only against node:sqlite; the others also here.
  const failed = net.results.filter((r) => r.status !== "pass");
  assert.deepEqual(failed.map((r) => `line ${r.line}: ${r.message}`), []);
});

/**
 * Statements that read the writer connection's own state must run there:
 * `last_insert_rowid()`, `changes()`, `total_changes()`, and anything while
 * TEMP objects (which live on the writer) exist. Outside a transaction the
 * read-only connection would answer 0 and know no TEMP table. (A TEMP table
 * named like a main one is refused: tests/access_test.ts.)
 */
const WRITER_STATE_SCRIPT = `
statement ok
CREATE TABLE k(id INTEGER PRIMARY KEY, x)

statement ok
INSERT INTO k(x) VALUES (1), (2), (3)

query III nosort
SELECT last_insert_rowid(), changes(), total_changes()
----
3
3
3

statement ok
CREATE TEMP TABLE scratch(y)

statement ok
INSERT INTO scratch VALUES ('temp')

query T nosort
SELECT * FROM scratch
----
temp

query I nosort
SELECT count(*) FROM k
----
3

query T nosort
SELECT name FROM sqlite_temp_master
----
scratch
`;

Deno.test({
  name: "serve+connect: last_insert_rowid(), changes() and TEMP tables read the writer's state",
  fn: async () => {
    const [net, diffs] = await compareInline("writer_state.test", WRITER_STATE_SCRIPT);
    assert.deepEqual(diffs, []);
    assert.equal(net.failed, 0);
  },
});

for (const file of SCRIPTS) {
  Deno.test(
    `serve+connect: sqllogictest ${file} gives through netsqlite what node:sqlite gives directly`,
    async () => {
      const started = performance.now();
      const script = parseScript(await Deno.readTextFile(new URL(file, CORPUS)), file);

      let net: RunReport;
      {
        await using server = await startServer();
        await using client = await connect({ ...server.connectOptions, max: 1 });
        net = await runScript(script, clientExecutor(client), { pipeline: PIPELINE });
      }

      let direct: RunReport;
      {
        await using dir = await tempDir();
        const db = new DatabaseSync(`${dir.path}/direct.db`);
        db.exec("PRAGMA synchronous = OFF"); // durability is not under test here: skip fsyncs
        try {
          direct = await runScript(script, directExecutor(db));
        } finally {
          db.close();
        }
      }

      const ms = (performance.now() - started).toFixed(0);
      console.log(
        `conformance ${file}: ${net.records} records, ${net.passed} passed, ${net.skipped} skipped` +
          ` (${net.failed} failed; node:sqlite directly: ${direct.passed} passed, ` +
          `${direct.failed} failed, ${direct.skipped} skipped; ${ms} ms)`,
      );

      assert.equal(net.records, direct.records);
      assert.ok(direct.passed > 0, "node:sqlite passed no record: is the script readable?");
      const lost: string[] = [];
      direct.results.forEach((d, k) => {
        const n = net.results[k];
        if (d.status === "pass" && n.status !== "pass") {
          lost.push(`line ${d.line}: ${d.sql.replace(/\s+/g, " ")}: ${n.message}`);
        }
      });
      assert.deepEqual(lost, [], "records node:sqlite passes but netsqlite fails");
      assert.deepEqual(differences(net, direct), [], "netsqlite and node:sqlite disagree");
      assert.equal(net.passed, direct.passed);
    },
  );
}
