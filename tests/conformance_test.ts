/**
 * Conformance: SQLite's sqllogictest scripts (shared/conformance/sqllogictest)
 * run through netsqlite and directly on a reference SQLite. Every record the
 * reference passes must pass through netsqlite, and every statement and
 * query must give the same outcome (success or error) and the same values
 * (type and value, compared raw and as formatted) both ways.
 *
 * The reference is the SQLite the server under test runs, in this process:
 * on the FFI engine (`NETSQLITE_ENGINE` unset or `ffi`, when a library
 * loads) the same library file through the project's binding
 * (`loadSqlite({ engine: "ffi", library })` of engine/binding/load.ts); on
 * the node engine (`NETSQLITE_ENGINE=node`) node:sqlite's `DatabaseSync`.
 * Each test checks that both report the same `sqlite_version()`.
 *
 * Through netsqlite, records rotate deterministically over the client's
 * API: the n-th query of a script over `values()`, `query()` (objects,
 * compared in the reference's column order), `iterate({ arrays: true })`,
 * `prepare()` + `values()`, `prepare()` + `all()` (objects) and
 * `batch([{ sql }], { arrays: true })`; the n-th statement over `run()`,
 * `exec()` and `batch()` (scripts and transaction control always take
 * `exec()`); the rotation starts at the script's position in the corpus.
 * `NETSQLITE_SLT_PATH=<path>` sends every query (or statement) through one
 * path instead, e.g. `NETSQLITE_SLT_PATH=prepare.all deno task conformance`.
 *
 * Run with `deno task conformance`.
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { startServer } from "./_helpers.ts";
import { connect } from "../mod.ts";
import { loadSqlite } from "../engine/binding/load.ts";
import type { EngineInfo } from "../engine/engine_api.ts";
import { appliesTo, parseScript, type QueryRecord, type Script } from "./sqllogictest/parser.ts";
import {
  bindingExecutor,
  clientExecutor,
  type ClientExecutorOptions,
  directExecutor,
  type Executor,
  formatValue,
  hashValues,
  normalizeValue,
  objectsToRows,
  QUERY_PATHS,
  type QueryPath,
  type RecordResult,
  type RunReport,
  runScript,
  STATEMENT_PATHS,
  type StatementPath,
  statementShape,
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

/** The paths `NETSQLITE_SLT_PATH` restricts the client executor to, if set. */
const FORCED_PATHS: ClientExecutorOptions = (() => {
  const name = Deno.env.get("NETSQLITE_SLT_PATH");
  if (name === undefined || name === "") return {};
  const query = (QUERY_PATHS as readonly string[]).includes(name);
  const statement = (STATEMENT_PATHS as readonly string[]).includes(name);
  if (!query && !statement) {
    throw new TypeError(
      `Unknown path "${name}" in NETSQLITE_SLT_PATH: expected one of ` +
        [...QUERY_PATHS, ...STATEMENT_PATHS.filter((p) => p !== "batch")].join(", "),
    );
  }
  return {
    ...(query ? { query: [name as QueryPath] } : {}),
    ...(statement ? { statement: [name as StatementPath] } : {}),
  };
})();

/** A reference SQLite connection in this process. */
interface Reference {
  /** `libsqlite3 3.x.y (<file>)` or `node:sqlite 3.x.y`. */
  name: string;
  version: string;
  executor: Executor;
  close(): void;
}

/**
 * Opens the SQLite that `server` runs, directly on a new database file at
 * `path`, with the settings that change results as the server has them
 * (foreign keys on, double-quoted strings off); without fsyncs.
 */
function openReference(server: EngineInfo, path: string): Reference {
  if (server.engine === "node") {
    const db = new DatabaseSync(path); // foreign keys on, double-quoted strings off by default
    db.exec("PRAGMA synchronous = OFF");
    const version = String(db.prepare("SELECT sqlite_version() AS v").get()!.v);
    return {
      name: `node:sqlite ${version}`,
      version,
      executor: directExecutor(db),
      close: () => db.close(),
    };
  }
  assert.equal(server.engine, "ffi", `no reference for the ${server.engine} engine`);
  const sqlite = loadSqlite({ engine: "ffi", library: server.library });
  const db = sqlite.open(path, { readOnly: false, busyTimeout: 0, doubleQuotedStrings: false });
  db.exec("PRAGMA foreign_keys = ON; PRAGMA synchronous = OFF");
  return {
    name: `libsqlite3 ${sqlite.version} (${sqlite.library})`,
    version: sqlite.version,
    executor: bindingExecutor(db),
    close: () => {
      db.close();
      sqlite.close();
    },
  };
}

/** A script's run through netsqlite and on the reference. */
interface Runs {
  net: RunReport;
  direct: RunReport;
  /** The reference's name. */
  reference: string;
}

/**
 * Runs `script` on the reference, then through a fresh server and a client
 * of one connection, the rotation of paths starting at `offset` (over
 * `paths`, else every path or those `NETSQLITE_SLT_PATH` names).
 */
async function runBoth(
  script: Script,
  offset: number,
  paths: ClientExecutorOptions = FORCED_PATHS,
): Promise<Runs> {
  await using server = await startServer();
  const info = server.server.sqlite;
  const ref = openReference(info, `${server.dir}/direct.db`);
  let direct: RunReport;
  try {
    assert.equal(ref.version, info.version, "the reference is not the server's SQLite");
    direct = await runScript(script, ref.executor);
  } finally {
    ref.close();
  }
  const columns = new Map(direct.results.map((r) => [r.index, r.columns]));
  await using client = await connect({ ...server.connectOptions, max: 1 });
  const net = await runScript(
    script,
    clientExecutor(client, { offset, columns: (i) => columns.get(i), ...paths }),
    { pipeline: PIPELINE },
  );
  return { net, direct, reference: ref.name };
}

/** How many records ran through each path: `values 12, query 11, ...`. */
function pathCounts(report: RunReport): string {
  const counts = new Map<string, number>();
  for (const r of report.results) {
    if (r.status !== "skip") {
      counts.set(`${r.kind} ${r.path}`, (counts.get(`${r.kind} ${r.path}`) ?? 0) + 1);
    }
  }
  return [...counts].sort().map(([p, n]) => `${p} ${n}`).join(", ");
}

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
function differences({ net, direct, reference }: Runs): string[] {
  const out: string[] = [];
  for (let k = 0; k < net.results.length; k++) {
    const a = net.results[k];
    const b = direct.results[k];
    const where = `line ${a.line} (${a.kind} through ${a.path}): ${a.sql.replace(/\s+/g, " ")}`;
    if (a.status === "skip" || b.status === "skip") {
      if (a.status !== b.status) out.push(`${where}: skipped on one side only`);
      continue;
    }
    if (a.succeeded !== b.succeeded) {
      out.push(
        `${where}: netsqlite ${a.succeeded ? "succeeded" : `failed (${a.error})`}, ` +
          `${reference} ${b.succeeded ? "succeeded" : `failed (${b.error})`}`,
      );
      continue;
    }
    if (a.kind !== "query" || !a.succeeded) continue;
    if (!sameRows(a.rows!, b.rows!)) {
      out.push(`${where}: rows differ: netsqlite ${show(a)}, ${reference} ${show(b)}`);
      continue;
    }
    if (a.hash !== b.hash) out.push(`${where}: formatted values differ`);
  }
  return out;
}

/**
 * True when two results hold the same rows: the same number of rows and
 * columns, and in each place the same type and value (`Object.is` for
 * numbers, so -0 is not 0; bytes for blobs). A bigint within ±(2^53 - 1)
 * counts as its number (the client gives numbers there).
 */
function sameRows(a: readonly unknown[][], b: readonly unknown[][]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i], y = b[i];
    if (x.length !== y.length) return false;
    for (let j = 0; j < x.length; j++) {
      const u = normalizeValue(x[j]), v = normalizeValue(y[j]);
      if (u instanceof Uint8Array || v instanceof Uint8Array) {
        if (
          !(u instanceof Uint8Array && v instanceof Uint8Array) ||
          Object.getPrototypeOf(u) !== Object.getPrototypeOf(v) || u.length !== v.length
        ) {
          return false;
        }
        if (u.some((byte, k) => byte !== v[k])) return false;
      } else if (!Object.is(u, v)) {
        return false;
      }
    }
  }
  return true;
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
async function compareInline(
  name: string,
  text: string,
  offset = 0,
  paths?: ClientExecutorOptions,
): Promise<[RunReport, string[]]> {
  const runs = await runBoth(parseScript(text, name), offset, paths);
  return [runs.net, differences(runs)];
}

Deno.test("statementShape: counts statements (a trigger's body is one) and finds transaction control", () => {
  assert.deepEqual(statementShape("SELECT 1"), { statements: 1, txControl: false });
  assert.deepEqual(statementShape("  ;SELECT 1; -- done\n;"), { statements: 1, txControl: false });
  assert.deepEqual(statementShape("SELECT ';'; SELECT 2"), { statements: 2, txControl: false });
  assert.deepEqual(statementShape("/* x */ begin immediate"), { statements: 1, txControl: true });
  assert.deepEqual(statementShape("INSERT INTO t VALUES (1); COMMIT"), {
    statements: 2,
    txControl: true,
  });
  assert.deepEqual(
    statementShape(
      "CREATE TRIGGER r AFTER INSERT ON t BEGIN UPDATE t SET x = CASE WHEN 1 THEN 2 END; " +
        "DELETE FROM u; END;",
    ),
    { statements: 1, txControl: false },
  );
  assert.deepEqual(statementShape("CREATE TRIGGER r AFTER INSERT ON t BEGIN SELECT 1; END; END"), {
    statements: 2,
    txControl: true,
  });
  assert.deepEqual(statementShape("-- nothing"), { statements: 0, txControl: false });
});

Deno.test("objectsToRows: object rows read in the reference's column order; a missing or extra key shows", () => {
  const columns = ["b", "1", "a"];
  assert.deepEqual(objectsToRows([{ 1: 10, a: "x", b: null }], columns), [[null, 10, "x"]]);
  assert.deepEqual(objectsToRows([{ b: 1, a: 2 }], columns), [[1, '<no key "1">', 2]]);
  assert.deepEqual(objectsToRows([{ b: 1, 1: 2, a: 3, c: 4 }], columns), [[
    1,
    2,
    3,
    '<extra key "c">',
  ]]);
  // A column named twice: the object holds the last one's value (documented for query()).
  assert.deepEqual(objectsToRows([{ x: 2 }], ["x", "x"]), [[2, 2]]);
  assert.deepEqual(objectsToRows([{ 1: "a", b: "c" }], undefined), [["a", "c"]]);
});

Deno.test("clientExecutor: rotates queries and statements over every path; scripts and BEGIN take exec()", async () => {
  await using server = await startServer();
  await using client = await connect({ ...server.connectOptions, max: 1 });
  const records = [
    "statement ok\nCREATE TABLE t(x)",
    "statement ok\nBEGIN",
    "statement ok\nINSERT INTO t VALUES (1); INSERT INTO t VALUES (2)",
    "statement ok\nCOMMIT",
    ...Array(3).fill("statement ok\nINSERT INTO t VALUES (3)"),
    ...Array(7).fill("query I rowsort\nSELECT x FROM t\n----\n1\n2\n3\n3\n3"),
  ];
  const script = parseScript(records.join("\n\n") + "\n");
  const report = await runScript(script, clientExecutor(client, { offset: 1 }), { pipeline: 8 });
  assert.deepEqual(report.results.filter((r) => r.status !== "pass"), []);
  assert.deepEqual(report.results.map((r) => r.path), [
    "exec", // the first statement: offset 1 of run, exec, batch
    "exec", // BEGIN
    "exec", // a script
    "exec", // COMMIT
    "batch", // the rotation goes on counting: statement 4 (of 0..6), from offset 1
    "run",
    "exec",
    ...QUERY_PATHS.slice(1),
    ...QUERY_PATHS.slice(0, 2),
  ]);
});

/**
 * Values of every storage class, scripts, comments, errors and transactions:
 * outcomes and raw values must be identical through netsqlite and directly.
 * Queries without `----` are checked only against the reference.
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

Deno.test("serve+connect: values of every type, scripts, errors and transactions equal the reference's, through every path", async () => {
  // Every record meets every path: one run per starting point of the rotation.
  for (let offset = 0; offset < QUERY_PATHS.length; offset++) {
    const [net, diffs] = await compareInline("extra.test", EXTRA_SCRIPT, offset);
    assert.deepEqual(diffs, [], `rotation starting at ${offset}`);
    // Queries without "----" are checked only against the reference; the others also here.
    const failed = net.results.filter((r) => r.status !== "pass");
    assert.deepEqual(
      failed.map((r) => `line ${r.line} (${r.path}): ${r.message}`),
      [],
      `rotation starting at ${offset}`,
    );
  }
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

/**
 * TEMP objects made by a `batch()` are where later statements look (a
 * finding of the path rotation: the engine did not learn of them, so later
 * statements were prepared on a read connection: "no such table").
 */
const BATCH_TEMP_SCRIPT = `
statement ok
CREATE TEMP TABLE scratch(y)

statement ok
INSERT INTO scratch VALUES ('temp')

statement ok
CREATE TEMP VIEW tv AS SELECT y || '!' FROM scratch

${
  // One query through each read path.
  QUERY_PATHS.map((_, k) =>
    k % 2 === 0
      ? "query T nosort\nSELECT * FROM tv\n----\ntemp!\n"
      : "query T rowsort\nSELECT name FROM sqlite_temp_master\n----\nscratch\ntv\n"
  ).join("\n")}`;

Deno.test("serve+connect: TEMP tables and views created by batch() are seen by the next statements", async () => {
  const [net, diffs] = await compareInline("batch_temp.test", BATCH_TEMP_SCRIPT, 0, {
    statement: ["batch"],
  });
  assert.deepEqual(diffs, []);
  assert.deepEqual(net.results.map((r) => r.path), [
    ...Array(3).fill("batch"),
    ...QUERY_PATHS,
  ]);
  assert.equal(net.failed, 0);
});

Deno.test({
  name: "serve+connect: last_insert_rowid(), changes() and TEMP tables read the writer's state",
  fn: async () => {
    const [net, diffs] = await compareInline("writer_state.test", WRITER_STATE_SCRIPT);
    assert.deepEqual(diffs, []);
    assert.equal(net.failed, 0);
  },
});

SCRIPTS.forEach((file, position) => {
  Deno.test(
    `serve+connect: sqllogictest ${file} gives through netsqlite what the server's SQLite gives directly`,
    async () => {
      const started = performance.now();
      const script = parseScript(await Deno.readTextFile(new URL(file, CORPUS)), file);
      const runs = await runBoth(script, position);
      const { net, direct, reference } = runs;

      const ms = (performance.now() - started).toFixed(0);
      console.log(
        `conformance ${file}: ${net.records} records, ${net.passed} passed, ${net.skipped} skipped` +
          ` (${net.failed} failed; ${reference} directly: ${direct.passed} passed, ` +
          `${direct.failed} failed, ${direct.skipped} skipped; ${ms} ms; ${pathCounts(net)})`,
      );

      assert.equal(net.records, direct.records);
      assert.ok(direct.passed > 0, "the reference passed no record: is the script readable?");
      const lost: string[] = [];
      direct.results.forEach((d, k) => {
        const n = net.results[k];
        if (d.status === "pass" && n.status !== "pass") {
          lost.push(`line ${d.line} (${n.path}): ${d.sql.replace(/\s+/g, " ")}: ${n.message}`);
        }
      });
      assert.deepEqual(lost, [], "records the reference passes but netsqlite fails");
      assert.deepEqual(differences(runs), [], "netsqlite and the reference disagree");
      assert.equal(net.passed, direct.passed);
    },
  );
});
