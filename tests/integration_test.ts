/**
 * The client against real in-process servers, over a Unix socket and over
 * TCP: every API, every value type, error codes, concurrency, pipelining,
 * batches, the handshake, and protocol violations from raw sockets.
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import {
  type BindValue,
  type Client,
  connect,
  type ConnectOptions,
  type SqlValue,
} from "../client.ts";
import { ListenError, serve, VERSION } from "../server.ts";
import { ConnectionError, ProtocolError, SqliteError } from "../protocol/errors.ts";
import { Op, PROTOCOL_VERSION } from "../protocol/messages.ts";
import { MessageDecoder, MessageEncoder } from "../protocol/codec.ts";
import { FrameReader } from "../transport/frame_reader.ts";
import { runWithGc, startServer, startServerProcess, tempDir } from "./_helpers.ts";
import { spawnClientProcess } from "./_client_process.ts";
import { defaultSocketPath } from "../transport/address.ts";
import { relative } from "node:path";

const TRANSPORTS = ["unix", "tcp"] as const;

/** Asserts that `promise` rejects with a SqliteError of `code` whose message matches. */
async function rejectsWith(
  promise: Promise<unknown>,
  code: string,
  message?: RegExp,
): Promise<SqliteError> {
  let caught: unknown;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught !== undefined, `expected a rejection with ${code}`);
  assert.ok(caught instanceof SqliteError, `expected SqliteError, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  if (message) assert.match(caught.message, message);
  return caught;
}

/** Waits `ms` milliseconds. */
function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A connection speaking raw frames, to send what the client never would. */
class RawConn {
  readonly conn: Deno.Conn;
  readonly #frames = new FrameReader(1 << 24);
  readonly #decoder = new MessageDecoder();
  #eof = false;

  constructor(conn: Deno.Conn) {
    this.conn = conn;
  }

  static async open(options: ConnectOptions): Promise<RawConn> {
    const conn = options.path !== undefined
      ? await Deno.connect({ transport: "unix", path: options.path })
      : await Deno.connect({ hostname: options.hostname!, port: options.port! });
    return new RawConn(conn);
  }

  /** Sends each message as one frame. */
  async send(...messages: unknown[]): Promise<void> {
    const enc = new MessageEncoder(1 << 24);
    for (const m of messages) enc.append(m);
    await this.sendBytes(enc.take());
  }

  async sendBytes(bytes: Uint8Array): Promise<void> {
    for (let off = 0; off < bytes.length;) off += await this.conn.write(bytes.subarray(off));
  }

  /** The next decoded frame, or `null` once the server closed the connection. */
  async read(timeoutMs = 5000): Promise<unknown> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const f = this.#frames.next();
      if (f !== undefined) return this.#decoder.decode(f);
      if (this.#eof) return null;
      const buf = new Uint8Array(65536);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<"timeout">((resolve) =>
        timer = setTimeout(() => resolve("timeout"), Math.max(0, deadline - Date.now()))
      );
      const n = await Promise.race([this.conn.read(buf).catch(() => null), timeout]);
      clearTimeout(timer);
      if (n === "timeout") throw new Error(`no frame from the server within ${timeoutMs} ms`);
      if (n === null) this.#eof = true;
      else this.#frames.push(buf.slice(0, n));
    }
  }

  /** Sends the hello request and checks the answer. */
  async hello(id = 1): Promise<void> {
    await this.send([Op.Hello, id, { version: PROTOCOL_VERSION }]);
    const reply = await this.read() as [number, number, { version: number }];
    assert.equal(reply[0], id);
    assert.equal(reply[1], 0);
    assert.equal(reply[2].version, PROTOCOL_VERSION);
  }

  close(): void {
    try {
      this.conn.close();
    } catch { /* already closed */ }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Reads a table straight from the database file with node:sqlite. */
function readDirect(database: string, sql: string): Record<string, unknown>[] {
  const db = new DatabaseSync(database, { readOnly: true });
  try {
    const stmt = db.prepare(sql);
    (stmt as unknown as { setReadBigInts(on: boolean): void }).setReadBigInts(true);
    return (stmt.all() as Record<string, unknown>[]).map((row) => ({ ...row }));
  } finally {
    db.close();
  }
}

/** What the client should return for a value read back from SQLite. */
function fromDirect(v: unknown): unknown {
  if (typeof v === "bigint" && v >= -(2n ** 53n - 1n) && v <= 2n ** 53n - 1n) return Number(v);
  return v;
}

interface ValueCase {
  label: string;
  value: BindValue;
  type: "null" | "integer" | "real" | "text" | "blob";
  /** What comes back, when not `value` itself. */
  expected?: SqlValue;
}

const VALUE_CASES: ValueCase[] = [
  { label: "null", value: null, type: "null" },
  { label: "zero", value: 0, type: "integer" },
  { label: "integer", value: 42, type: "integer" },
  { label: "negative integer", value: -7, type: "integer" },
  { label: "MAX_SAFE_INTEGER", value: Number.MAX_SAFE_INTEGER, type: "integer" },
  { label: "MIN_SAFE_INTEGER", value: Number.MIN_SAFE_INTEGER, type: "integer" },
  { label: "2^53+1 as bigint", value: 2n ** 53n + 1n, type: "integer" },
  { label: "-2^63", value: -(2n ** 63n), type: "integer" },
  { label: "2^63-1", value: 2n ** 63n - 1n, type: "integer" },
  { label: "small bigint", value: 5n, type: "integer", expected: 5 },
  { label: "real", value: 1.5, type: "real" },
  { label: "negative real", value: -2.75, type: "real" },
  { label: "tiny real", value: Number.MIN_VALUE, type: "real" },
  { label: "huge real", value: 1e300, type: "real" },
  { label: "2^53 as number", value: 2 ** 53, type: "real" },
  { label: "-0", value: -0, type: "real" },
  { label: "Infinity", value: Infinity, type: "real" },
  { label: "-Infinity", value: -Infinity, type: "real" },
  { label: "ascii text", value: "hello", type: "text" },
  { label: "unicode text with emoji", value: "héllo wörld — 日本語 🎉👩‍👩‍👧", type: "text" },
  { label: "empty string", value: "", type: "text" },
  { label: "long text", value: "x".repeat(100_000), type: "text" },
  { label: "blob with zero bytes", value: new Uint8Array([0, 1, 0, 255, 0]), type: "blob" },
  { label: "empty blob", value: new Uint8Array(0), type: "blob" },
  {
    label: "blob view into a larger buffer",
    value: new Uint8Array(new Uint8Array([9, 8, 7, 6, 5]).buffer, 1, 3),
    type: "blob",
    expected: new Uint8Array([8, 7, 6]),
  },
  { label: "true", value: true, type: "integer", expected: 1 },
  { label: "false", value: false, type: "integer", expected: 0 },
];

function assertSameValue(actual: unknown, expected: unknown, label: string): void {
  if (typeof expected === "number") {
    assert.equal(typeof actual, "number", `${label}: expected a number, got ${typeof actual}`);
    assert.ok(Object.is(actual, expected), `${label}: expected ${expected}, got ${actual}`);
  } else if (typeof expected === "bigint") {
    assert.equal(typeof actual, "bigint", `${label}: expected a bigint, got ${typeof actual}`);
    assert.equal(actual, expected, label);
  } else if (expected instanceof Uint8Array) {
    assert.ok(actual instanceof Uint8Array, `${label}: expected a Uint8Array`);
    assert.deepEqual(Array.from(actual), Array.from(expected), label);
  } else {
    assert.equal(actual, expected, label);
  }
}

for (const transport of TRANSPORTS) {
  const T = ` (${transport})`;

  Deno.test(`Client.exec() runs a script of several statements${T}`, async () => {
    await using s = await startServer({ transport });
    await using db = await s.client();
    await db.exec(`
      CREATE TABLE a (x INTEGER);
      -- a comment between statements
      INSERT INTO a VALUES (1); INSERT INTO a VALUES (2);
      /* block comment */ INSERT INTO a VALUES (3);
    `);
    assert.deepEqual(await db.values("SELECT x FROM a ORDER BY x"), [[1], [2], [3]]);
    assert.equal(await db.exec(""), undefined, "an empty script does nothing");
  });

  Deno.test(`Client.exec() keeps statements before a failing one applied${T}`, async () => {
    await using s = await startServer({ transport });
    await using db = await s.client();
    await db.exec("CREATE TABLE u (x INTEGER UNIQUE)");
    await rejectsWith(
      db.exec("INSERT INTO u VALUES (1); INSERT INTO u VALUES (1); INSERT INTO u VALUES (3)"),
      "SQLITE_CONSTRAINT_UNIQUE",
    );
    assert.deepEqual(await db.values("SELECT x FROM u"), [[1]]);
  });

  Deno.test(`Client.run() reports changes and lastInsertRowid${T}`, async () => {
    await using s = await startServer({ transport });
    await using db = await s.client();
    assert.deepEqual(await db.run("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)"), {
      changes: 0,
      lastInsertRowid: 0,
    });
    assert.deepEqual(await db.run("INSERT INTO t (name) VALUES (?)", ["ada"]), {
      changes: 1,
      lastInsertRowid: 1,
    });
    assert.deepEqual(await db.run("INSERT INTO t (id, name) VALUES (?, ?)", [41, "bob"]), {
      changes: 1,
      lastInsertRowid: 41,
    });
    // A statement that inserts nothing reports lastInsertRowid 0: SQLite's
    // connection-wide value may belong to another client's insert.
    assert.deepEqual(await db.run("UPDATE t SET name = upper(name)"), {
      changes: 2,
      lastInsertRowid: 0,
    });
    const big = await db.run("INSERT INTO t (id, name) VALUES (?, 'max')", [2n ** 63n - 1n]);
    assert.equal(big.lastInsertRowid, 2n ** 63n - 1n, "a rowid beyond 2^53 comes back as bigint");
    assert.equal((await db.run("DELETE FROM t")).changes, 3);
  });

  Deno.test(`Client.query(), values() and get() return rows as objects, arrays and the first row${T}`, async () => {
    await using s = await startServer({ transport });
    await using db = await s.client();
    await db.exec("CREATE TABLE p (id INTEGER PRIMARY KEY, name TEXT, score REAL)");
    await db.run("INSERT INTO p VALUES (1, 'ada', 9.5), (2, 'bob', NULL)");
    assert.deepEqual(await db.query("SELECT id, name, score FROM p ORDER BY id"), [
      { id: 1, name: "ada", score: 9.5 },
      { id: 2, name: "bob", score: null },
    ]);
    assert.deepEqual(await db.values("SELECT id, name, score FROM p ORDER BY id"), [
      [1, "ada", 9.5],
      [2, "bob", null],
    ]);
    assert.deepEqual(await db.get("SELECT name FROM p WHERE id = ?", [2]), { name: "bob" });
    assert.equal(await db.get("SELECT name FROM p WHERE id = ?", [3]), undefined);
    assert.deepEqual(await db.query("SELECT * FROM p WHERE id > 10"), []);
    // Duplicate column names: the last one wins in objects, arrays keep both.
    assert.deepEqual(await db.values("SELECT 1 AS a, 2 AS a"), [[1, 2]]);
    assert.deepEqual(await db.query("SELECT 1 AS a, 2 AS a"), [{ a: 2 }]);
  });

  Deno.test(`Client.prepare() runs a statement many times until finalize()${T}`, async () => {
    await using s = await startServer({ transport });
    await using db = await s.client();
    await db.exec("CREATE TABLE k (id INTEGER PRIMARY KEY, v TEXT)");
    const insert = await db.prepare("INSERT INTO k (id, v) VALUES (?, ?)");
    assert.deepEqual(insert.columns, []);
    assert.equal(insert.sql, "INSERT INTO k (id, v) VALUES (?, ?)");
    for (let i = 1; i <= 5; i++) {
      assert.deepEqual(await insert.run([i, `v${i}`]), { changes: 1, lastInsertRowid: i });
    }
    const select = await db.prepare("SELECT id, v FROM k WHERE id >= $min ORDER BY id");
    assert.deepEqual(select.columns, ["id", "v"]);
    assert.deepEqual(await select.all({ min: 4 }), [{ id: 4, v: "v4" }, { id: 5, v: "v5" }]);
    assert.deepEqual(await select.get({ min: 2 }), { id: 2, v: "v2" });
    assert.equal(await select.get({ min: 99 }), undefined);
    assert.deepEqual(await select.values({ min: 5 }), [[5, "v5"]]);
    await insert.finalize();
    await select.finalize();
    await rejectsWith(insert.run([6, "v6"]), "UNKNOWN_STATEMENT", /Unknown statement handle/);
    await rejectsWith(select.all({ min: 0 }), "UNKNOWN_STATEMENT");
    // finalize() is idempotent, as @db/sqlite's (tests/call_options_test.ts).
    assert.equal(await select.finalize(), undefined);
    assert.equal((await db.get<{ n: number }>("SELECT count(*) AS n FROM k"))?.n, 5);
  });

  Deno.test(`Statement.columns follows the latest result after ALTER TABLE${T}`, async () => {
    await using s = await startServer({ transport });
    await using db = await s.client();
    await db.exec("CREATE TABLE k (a, b); INSERT INTO k VALUES (1, 2)");
    const all = await db.prepare("SELECT * FROM k");
    assert.deepEqual(all.columns, ["a", "b"]);
    await db.exec("ALTER TABLE k ADD COLUMN c");
    assert.deepEqual(await all.all(), [{ a: 1, b: 2, c: null }]);
    assert.deepEqual(all.columns, ["a", "b", "c"]);
    await all.finalize();
  });

  Deno.test(`Client.prepare() refuses SQL that does not compile${T}`, async () => {
    await using s = await startServer({ transport });
    await using db = await s.client();
    await rejectsWith(db.prepare("SELEC 1"), "SQLITE_ERROR", /syntax error/);
    await rejectsWith(
      db.prepare("SELECT * FROM missing"),
      "SQLITE_ERROR",
      /no such table: missing/,
    );
    await rejectsWith(db.prepare(""), "BAD_REQUEST");
    const ok = await db.prepare("SELECT 1 AS one");
    assert.deepEqual(await ok.all(), [{ one: 1 }]);
    await ok.finalize();
  });

  Deno.test(`Client.run() stores every value type as node:sqlite reads it back${T}`, async () => {
    await using s = await startServer({ transport });
    await using db = await s.client();
    await db.exec("CREATE TABLE vals (id INTEGER PRIMARY KEY, v)"); // no affinity: stored as bound
    for (let i = 0; i < VALUE_CASES.length; i++) {
      const r = await db.run("INSERT INTO vals (id, v) VALUES (?, ?)", [i, VALUE_CASES[i].value]);
      assert.equal(r.changes, 1);
    }
    const viaServer = await db.values<[SqlValue, string]>(
      "SELECT v, typeof(v) FROM vals ORDER BY id",
    );
    const direct = readDirect(s.database, "SELECT v, typeof(v) AS t FROM vals ORDER BY id");
    assert.equal(viaServer.length, VALUE_CASES.length);
    assert.equal(direct.length, VALUE_CASES.length);
    for (let i = 0; i < VALUE_CASES.length; i++) {
      const c = VALUE_CASES[i];
      const [value, type] = viaServer[i];
      assert.equal(type, c.type, `${c.label}: typeof() through the server`);
      assert.equal(direct[i].t, c.type, `${c.label}: typeof() read directly`);
      assertSameValue(value, "expected" in c ? c.expected : c.value, `${c.label}: value`);
      assertSameValue(value, fromDirect(direct[i].v), `${c.label}: same as node:sqlite`);
    }
  });

  Deno.test(`Client.values() returns each value type from SQL expressions exactly${T}`, async () => {
    await using s = await startServer({ transport });
    await using db = await s.client();
    const [row] = await db.values(
      "SELECT 9223372036854775807, -9223372036854775808, 9007199254740993, 9007199254740991, " +
        "-0.0, 1e999, -1e999, 0.1, '', x'', x'00ff00', NULL, 'ünï🎉'",
    );
    const expected: SqlValue[] = [
      2n ** 63n - 1n,
      -(2n ** 63n),
      2n ** 53n + 1n,
      Number.MAX_SAFE_INTEGER,
      -0,
      Infinity,
      -Infinity,
      0.1,
      "",
      new Uint8Array(0),
      new Uint8Array([0, 255, 0]),
      null,
      "ünï🎉",
    ];
    assert.equal(row.length, expected.length);
    for (let i = 0; i < expected.length; i++) assertSameValue(row[i], expected[i], `column ${i}`);
  });

  Deno.test(`Client.values() binds integer-valued numbers as INTEGER and others as REAL${T}`, async () => {
    await using s = await startServer({ transport });
    await using db = await s.client();
    const params: BindValue[] = [1, 1.5, 2.0, -3, 0, -0, 2 ** 53, 1e20, 10n, true, Infinity];
    const [types] = await db.values(
      `SELECT ${params.map(() => "typeof(?)").join(", ")}`,
      params,
    );
    assert.deepEqual(types, [
      "integer",
      "real",
      "integer",
      "integer",
      "integer",
      "real",
      "real",
      "real",
      "integer",
      "integer",
      "real",
    ]);
    // Integer arithmetic stays integer; REAL arithmetic stays REAL.
    assert.deepEqual(await db.values("SELECT ? / 2, ? / 2, ? + 1", [7, 7.5, 2 ** 40]), [[
      3,
      3.75,
      2 ** 40 + 1,
    ]]);
    // Values kept in an INTEGER-affinity column and a REAL-affinity column.
    await db.exec("CREATE TABLE ir (i INTEGER, r REAL)");
    await db.run("INSERT INTO ir VALUES (?, ?)", [5, 5]);
    await db.run("INSERT INTO ir VALUES (?, ?)", [1.5, 1.5]);
    assert.deepEqual(await db.values("SELECT i, typeof(i), r, typeof(r) FROM ir ORDER BY rowid"), [
      [5, "integer", 5, "real"],
      [1.5, "real", 1.5, "real"],
    ]);
  });

  Deno.test(`Client.run() refuses invalid parameters with INVALID_PARAM naming the parameter${T}`, async () => {
    await using s = await startServer({ transport });
    await using db = await s.client();
    await db.exec("CREATE TABLE t (a, b)");
    const insert = "INSERT INTO t VALUES (?, ?)";
    const cases: [BindValue[] | Record<string, unknown>, RegExp][] = [
      [[1, NaN], /^Cannot bind parameter 2: NaN cannot be stored/],
      [
        [undefined as unknown as BindValue, 1],
        /^Cannot bind parameter 1: undefined is not a value/,
      ],
      [[1, "a\0b"], /^Cannot bind parameter 2: string contains a NUL character/],
      [
        [1, new Date() as unknown as BindValue],
        /^Cannot bind parameter 2: Date is not a SQLite type/,
      ],
      [
        [1, new ArrayBuffer(2) as unknown as BindValue],
        /parameter 2: ArrayBuffer is not supported/,
      ],
      [[1, new Int8Array(2) as unknown as BindValue], /parameter 2: Int8Array is not supported/],
      [[1, { x: 1 } as unknown as BindValue], /parameter 2: object is not a SQLite value/],
      [[1, [1] as unknown as BindValue], /parameter 2: array is not a SQLite value/],
      [[1, Symbol("s") as unknown as BindValue], /parameter 2: symbol is not a SQLite value/],
      [[1, (() => 1) as unknown as BindValue], /parameter 2: function is not a SQLite value/],
      [[1, 2n ** 63n], /parameter 2: bigint 9223372036854775808 is outside/],
    ];
    for (const [params, message] of cases) {
      await rejectsWith(db.run(insert, params as BindValue[]), "INVALID_PARAM", message);
    }
    const named = "INSERT INTO t VALUES ($a, $b)";
    await rejectsWith(
      db.run(named, { a: 1, b: NaN }),
      "INVALID_PARAM",
      /^Cannot bind parameter "b": NaN/,
    );
    await rejectsWith(
      db.get("SELECT :when", { when: new Date() as unknown as BindValue }),
      "INVALID_PARAM",
      /^Cannot bind parameter "when": Date/,
    );
    await rejectsWith(
      db.query("SELECT ?", 5 as unknown as BindValue[]),
      "INVALID_PARAM",
      /pass an array \(positional\) or a plain object \(named\), got a number$/,
    );
    // Nothing was inserted, and the connection keeps working.
    assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]]);
    assert.deepEqual(await db.run(insert, [1, 2]), { changes: 1, lastInsertRowid: 1 });
  });

  Deno.test(`Client.values() binds named parameters written $a, :a and @a${T}`, async () => {
    await using s = await startServer({ transport });
    await using db = await s.client();
    assert.deepEqual(await db.values("SELECT $a, :b, @c", { a: 1, b: "two", c: null }), [
      [1, "two", null],
    ]);
    assert.deepEqual(
      await db.values("SELECT $a, :b, @c", { $a: 1, ":b": "two", "@c": 3.5 }),
      [[1, "two", 3.5]],
      "keys may carry the prefix too",
    );
    // The same name used twice binds the same value.
    assert.deepEqual(await db.values("SELECT :x + :x, :x || 'y'", { x: 2 }), [[4, "2y"]]);
    // Positional ?NNN.
    assert.deepEqual(await db.values("SELECT ?2, ?1", ["first", "second"]), [["second", "first"]]);
    // A named parameter the statement does not have is refused, not ignored.
    const err = await rejectsWith(db.values("SELECT $a", { a: 1, zz: 2 }), "INVALID_PARAM");
    assert.match(err.message, /zz/);
    assert.deepEqual(await db.values("SELECT 1"), [[1]]);
  });

  Deno.test(`Client.run() reports constraint failures with their SQLite codes and keeps working${T}`, async () => {
    await using s = await startServer({ transport });
    await using db = await s.client();
    await db.exec(`
      CREATE TABLE parent (id INTEGER PRIMARY KEY);
      CREATE TABLE child (
        id INTEGER PRIMARY KEY,
        parent INTEGER NOT NULL REFERENCES parent(id),
        name TEXT UNIQUE,
        n INTEGER CHECK (n >= 0)
      );
      INSERT INTO parent VALUES (1);
      INSERT INTO child VALUES (1, 1, 'a', 0);
    `);
    const insert = "INSERT INTO child VALUES (?, ?, ?, ?)";
    const cases: [BindValue[], string, number, RegExp][] = [
      [[2, 1, "a", 0], "SQLITE_CONSTRAINT_UNIQUE", 2067, /UNIQUE constraint failed: child\.name/],
      [
        [3, null, "b", 0],
        "SQLITE_CONSTRAINT_NOTNULL",
        1299,
        /NOT NULL constraint failed: child\.parent/,
      ],
      [[4, 99, "c", 0], "SQLITE_CONSTRAINT_FOREIGNKEY", 787, /FOREIGN KEY constraint failed/],
      [[1, 1, "d", 0], "SQLITE_CONSTRAINT_PRIMARYKEY", 1555, /UNIQUE constraint failed: child\.id/],
      [[5, 1, "e", -1], "SQLITE_CONSTRAINT_CHECK", 275, /CHECK constraint failed/],
    ];
    for (const [params, code, sqliteCode, message] of cases) {
      const err = await rejectsWith(db.run(insert, params), code, message);
      assert.equal(err.sqliteCode, sqliteCode, code);
      assert.equal(err.name, "SqliteError");
      // The connection keeps working after each error.
      assert.deepEqual(await db.values("SELECT count(*) FROM child"), [[1]]);
    }
    await rejectsWith(db.run("DELETE FROM parent"), "SQLITE_CONSTRAINT_FOREIGNKEY");
    assert.deepEqual(await db.run(insert, [6, 1, "f", 1]), { changes: 1, lastInsertRowid: 6 });
  });

  Deno.test(`Client.query() reports SQLITE_ERROR for syntax errors and missing tables${T}`, async () => {
    await using s = await startServer({ transport });
    await using db = await s.client();
    const syntax = await rejectsWith(
      db.query("SELEC 1"),
      "SQLITE_ERROR",
      /near "SELEC": syntax error/,
    );
    assert.equal(syntax.sqliteCode, 1);
    assert.deepEqual(await db.values("SELECT 1"), [[1]]);
    await rejectsWith(db.query("SELECT * FROM nope"), "SQLITE_ERROR", /no such table: nope/);
    assert.deepEqual(await db.values("SELECT 2"), [[2]]);
    await rejectsWith(db.run("INSERT INTO nope VALUES (1)"), "SQLITE_ERROR", /no such table: nope/);
    await rejectsWith(
      db.query("SELECT nocol FROM (SELECT 1 AS a)"),
      "SQLITE_ERROR",
      /no such column: nocol/,
    );
    await rejectsWith(
      db.exec("CREATE TABLE x (a); CREATE TABLE x (a)"),
      "SQLITE_ERROR",
      /already exists/,
    );
    assert.deepEqual(await db.values("SELECT 3"), [[3]]);
  });

  Deno.test(`Client.query() refuses empty SQL and two statements with BAD_REQUEST${T}`, async () => {
    await using s = await startServer({ transport });
    await using db = await s.client();
    await rejectsWith(
      db.query(""),
      "BAD_REQUEST",
      /SQL text holds no statement \(it is empty, or only whitespace/,
    );
    await rejectsWith(
      db.query("   -- only a comment\n ;"),
      "BAD_REQUEST",
      /SQL text holds no statement \(it is empty, or only whitespace/,
    );
    assert.deepEqual(await db.values("SELECT 1"), [[1]]);
    await rejectsWith(db.query("SELECT 1; SELECT 2"), "BAD_REQUEST", /more than one statement/);
    await rejectsWith(
      db.run("CREATE TABLE a (x); CREATE TABLE b (x)"),
      "BAD_REQUEST",
      /more than one statement/,
    );
    // Neither table was created.
    assert.deepEqual(await db.values("SELECT count(*) FROM sqlite_schema"), [[0]]);
    // A trailing semicolon or comment is still one statement.
    assert.deepEqual(await db.values("SELECT 4; -- done"), [[4]]);
  });

  Deno.test(`Client.batch() returns one result per statement, with rows for SELECT and RETURNING${T}`, async () => {
    await using s = await startServer({ transport });
    await using db = await s.client();
    await db.exec("CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT)");
    const results = await db.batch([
      { sql: "INSERT INTO b (v) VALUES (?)", params: ["one"] },
      { sql: "INSERT INTO b (v) VALUES (:v) RETURNING id, v", params: { v: "two" } },
      { sql: "UPDATE b SET v = upper(v)" },
      { sql: "SELECT id, v FROM b ORDER BY id" },
    ]);
    assert.equal(results.length, 4);
    assert.deepEqual(results[0], { changes: 1, lastInsertRowid: 1, rows: [] });
    assert.deepEqual(results[1], { changes: 1, lastInsertRowid: 2, rows: [{ id: 2, v: "two" }] });
    assert.equal(results[2].changes, 2);
    assert.deepEqual(results[2].rows, []);
    assert.deepEqual(results[3].rows, [{ id: 1, v: "ONE" }, { id: 2, v: "TWO" }]);
    assert.deepEqual(await db.batch([]), []);
    assert.equal(db.inTransaction, false);
  });

  Deno.test(`Client.batch() applies nothing when a statement in the middle fails${T}`, async () => {
    await using s = await startServer({ transport });
    await using db = await s.client();
    await db.exec("CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT UNIQUE)");
    await db.run("INSERT INTO b (v) VALUES ('existing')");
    const err = await rejectsWith(
      db.batch([
        { sql: "INSERT INTO b (v) VALUES (?)", params: ["x"] },
        { sql: "UPDATE b SET v = 'changed' WHERE v = 'existing'" },
        { sql: "INSERT INTO b (v) VALUES (?)", params: ["x"] }, // duplicate
        { sql: "INSERT INTO b (v) VALUES (?)", params: ["y"] },
      ]),
      "SQLITE_CONSTRAINT_UNIQUE",
      /^Batch statement 3 of 4 failed, nothing was applied: UNIQUE constraint failed: b\.v/,
    );
    assert.equal(err.sqliteCode, 2067);
    assert.deepEqual(await db.values("SELECT v FROM b ORDER BY id"), [["existing"]]);
    assert.equal(db.inTransaction, false);
    // A syntax error in the last statement also undoes the earlier ones.
    await rejectsWith(
      db.batch([{ sql: "INSERT INTO b (v) VALUES ('z')" }, { sql: "SELEC 1" }]),
      "SQLITE_ERROR",
      /^Batch statement 2 of 2 failed/,
    );
    assert.deepEqual(await db.values("SELECT count(*) FROM b"), [[1]]);
    // Transaction control inside a batch is refused.
    await rejectsWith(
      db.batch([{ sql: "INSERT INTO b (v) VALUES ('z')" }, { sql: "COMMIT" }]),
      "BAD_REQUEST",
      /cannot control transactions/,
    );
    assert.deepEqual(await db.values("SELECT count(*) FROM b"), [[1]]);
    // A refused parameter is reported before anything is sent.
    await rejectsWith(
      db.batch([{ sql: "SELECT 1" }, { sql: "SELECT ?", params: [NaN] }]),
      "INVALID_PARAM",
      /^Batch statement 2: Cannot bind parameter 1: NaN/,
    );
    // The connection keeps working.
    const ok = await db.batch([{ sql: "INSERT INTO b (v) VALUES ('w')" }]);
    assert.equal(ok[0].changes, 1);
  });

  Deno.test(`Client.batch() inside an open transaction undoes only its own statements${T}`, async () => {
    await using s = await startServer({ transport });
    await using db = await connect({ ...s.connectOptions, max: 1 });
    await db.exec("CREATE TABLE b (v TEXT UNIQUE)");
    await db.exec("BEGIN");
    await db.run("INSERT INTO b VALUES ('before')");
    await rejectsWith(
      db.batch([{ sql: "INSERT INTO b VALUES ('in')" }, {
        sql: "INSERT INTO b VALUES ('before')",
      }]),
      "SQLITE_CONSTRAINT_UNIQUE",
    );
    assert.equal(db.inTransaction, true);
    assert.deepEqual(await db.values("SELECT v FROM b"), [["before"]]);
    await db.exec("COMMIT");
    assert.equal(db.inTransaction, false);
    assert.deepEqual(await db.values("SELECT v FROM b"), [["before"]]);
  });

  Deno.test(`Client sees other clients' committed writes${T}`, async () => {
    await using s = await startServer({ transport });
    await using a = await s.client();
    await using b = await s.client();
    await using c = await s.client();
    await a.exec("CREATE TABLE shared (who TEXT, n INTEGER)");
    await b.run("INSERT INTO shared VALUES ('b', 1)");
    assert.deepEqual(await a.values("SELECT who, n FROM shared"), [["b", 1]]);
    assert.deepEqual(await c.values("SELECT who, n FROM shared"), [["b", 1]]);
    await Promise.all([
      a.run("INSERT INTO shared VALUES ('a', 2)"),
      c.run("INSERT INTO shared VALUES ('c', 3)"),
    ]);
    for (const db of [a, b, c]) {
      assert.deepEqual(await db.values("SELECT who FROM shared ORDER BY n"), [["b"], ["a"], ["c"]]);
    }
  });

  Deno.test(`Client does not see another client's transaction until COMMIT${T}`, async () => {
    await using s = await startServer({ transport });
    await using a = await connect({ ...s.connectOptions, max: 1 });
    await using b = await s.client();
    await a.exec("CREATE TABLE t (x INTEGER)");
    await a.exec("BEGIN");
    assert.equal(a.inTransaction, true);
    assert.equal(b.inTransaction, false);
    await a.run("INSERT INTO t VALUES (1)");
    assert.deepEqual(await a.values("SELECT x FROM t"), [[1]], "a sees its own write");
    assert.deepEqual(await b.values("SELECT x FROM t"), [], "b reads the committed state");
    // b's write waits for a's transaction to end, then runs.
    let bDone = false;
    const bWrite = b.run("INSERT INTO t VALUES (2)").then((r) => {
      bDone = true;
      return r;
    });
    await sleep(50);
    assert.equal(bDone, false, "b's write must wait for a's transaction");
    await a.exec("COMMIT");
    assert.equal(a.inTransaction, false);
    assert.equal((await bWrite).changes, 1);
    assert.deepEqual(await b.values("SELECT x FROM t ORDER BY x"), [[1], [2]]);
    assert.deepEqual(await a.values("SELECT x FROM t ORDER BY x"), [[1], [2]]);
  });

  Deno.test(`Client.close() inside a transaction makes the server roll it back${T}`, async () => {
    await using s = await startServer({ transport });
    await using b = await s.client();
    await b.exec("CREATE TABLE t (x INTEGER)");
    const a = await connect({ ...s.connectOptions, max: 1 });
    await a.exec("BEGIN");
    await a.run("INSERT INTO t VALUES (1)");
    await a.close();
    // b can write at once (the writer was released) and a's row is gone.
    assert.equal((await b.run("INSERT INTO t VALUES (2)")).changes, 1);
    assert.deepEqual(await b.values("SELECT x FROM t"), [[2]]);
  });

  Deno.test(`Client answers 1000 pipelined requests each with its own result${T}`, async () => {
    await using s = await startServer({ transport });
    await using db = await s.client();
    await db.exec("CREATE TABLE pipe (id INTEGER PRIMARY KEY, label TEXT)");
    const N = 1000;
    const requests: Promise<unknown>[] = [];
    for (let i = 0; i < N; i++) {
      if (i % 100 === 50) requests.push(db.query(`SELECT * FROM missing_${i}`));
      else if (i % 3 === 0) {
        requests.push(db.run("INSERT INTO pipe (id, label) VALUES (?, ?)", [i + 1, `row ${i}`]));
      } else requests.push(db.get("SELECT ? AS i, ? || '!' AS s", [i, `r${i}`]));
    }
    const settled = await Promise.allSettled(requests);
    for (let i = 0; i < N; i++) {
      const r = settled[i];
      if (i % 100 === 50) {
        assert.equal(r.status, "rejected", `request ${i}`);
        const err = (r as PromiseRejectedResult).reason;
        assert.ok(err instanceof SqliteError);
        assert.match(err.message, new RegExp(`no such table: missing_${i}$`), `request ${i}`);
      } else if (i % 3 === 0) {
        assert.equal(r.status, "fulfilled", `request ${i}`);
        assert.deepEqual((r as PromiseFulfilledResult<unknown>).value, {
          changes: 1,
          lastInsertRowid: i + 1,
        });
      } else {
        assert.equal(r.status, "fulfilled", `request ${i}`);
        assert.deepEqual((r as PromiseFulfilledResult<unknown>).value, { i, s: `r${i}!` });
      }
    }
    const expectedRows = Array.from({ length: N }, (_, i) => i).filter((i) =>
      i % 3 === 0 && i % 100 !== 50
    );
    assert.deepEqual(
      await db.values("SELECT id FROM pipe ORDER BY id"),
      expectedRows.map((i) => [i + 1]),
    );
  });

  Deno.test(`Client pipelines from several clients at once without mixing replies${T}`, async () => {
    await using s = await startServer({ transport });
    const clients = await Promise.all([s.client(), s.client(), s.client(), s.client()]);
    try {
      const all = clients.map((db, c) =>
        Promise.all(
          Array.from({ length: 250 }, (_, i) => db.values("SELECT ?, ?", [c, i])),
        )
      );
      const results = await Promise.all(all);
      for (let c = 0; c < clients.length; c++) {
        for (let i = 0; i < 250; i++) assert.deepEqual(results[c][i], [[c, i]]);
      }
    } finally {
      await Promise.all(clients.map((db) => db.close()));
    }
  });

  Deno.test(`Client.get() shows WAL journal mode, foreign keys on and synchronous FULL${T}`, async () => {
    await using s = await startServer({ transport });
    await using db = await s.client();
    assert.deepEqual(await db.get("PRAGMA journal_mode"), { journal_mode: "wal" });
    assert.deepEqual(await db.get("PRAGMA foreign_keys"), { foreign_keys: 1 });
    assert.deepEqual(await db.get("PRAGMA synchronous"), { synchronous: 2 });
    // The file itself is in WAL mode.
    assert.deepEqual(readDirect(s.database, "PRAGMA journal_mode"), [{ journal_mode: "wal" }]);
  });

  Deno.test(`Client.serverInfo reports the protocol and SQLite versions and the limits${T}`, async () => {
    await using s = await startServer({
      transport,
      busyTimeout: 1234,
      txIdleTimeout: 4321,
      maxFrameSize: 1 << 20,
    });
    await using db = await s.client();
    const info = db.serverInfo;
    assert.equal(info.version, PROTOCOL_VERSION);
    assert.equal(info.version, 1);
    assert.equal(info.server, `netsqlite ${VERSION}`);
    assert.match(info.sqliteVersion, /^3\.\d+\.\d+$/);
    // The version of the library the server runs (FFI or node:sqlite), not ours.
    assert.deepEqual(await db.values("SELECT sqlite_version()"), [[info.sqliteVersion]]);
    assert.equal(info.limits.maxFrameSize, 1 << 20);
    assert.equal(info.limits.busyTimeout, 1234);
    assert.equal(info.limits.txIdleTimeout, 4321);
    // The database it serves, by its real path: a reconnect to another one is refused.
    assert.equal(info.database, await Deno.realPath(s.database));
  });

  Deno.test(`Client.serverInfo reports the default limits${T}`, async () => {
    await using s = await startServer({ transport });
    await using db = await s.client();
    assert.equal(db.serverInfo.limits.maxFrameSize, 64 * 1024 * 1024);
    assert.equal(db.serverInfo.limits.busyTimeout, 5000);
    assert.equal(db.serverInfo.limits.txIdleTimeout, 10000);
  });

  Deno.test(`Client.close() rejects pending requests with ConnectionError${T}`, async () => {
    await using s = await startServer({ transport });
    const db = await s.client();
    const pending = Array.from({ length: 50 }, (_, i) => db.get("SELECT ? AS i", [i]));
    const closing = db.close();
    const settled = await Promise.allSettled(pending);
    await closing;
    for (const r of settled) {
      assert.equal(r.status, "rejected");
      const err = (r as PromiseRejectedResult).reason;
      assert.ok(err instanceof ConnectionError, String(err));
      assert.equal(err.code, "CONNECTION_CLOSED");
      assert.match(err.message, /closed by the client/);
    }
    assert.equal(db.closed, true);
    await assert.rejects(db.get("SELECT 1"), ConnectionError);
    await db.close(); // idempotent
    // The server is unaffected.
    await using other = await s.client();
    assert.deepEqual(await other.values("SELECT 1"), [[1]]);
  });

  Deno.test(`Client requests fail with ConnectionError once the server has shut down${T}`, async () => {
    await using s = await startServer({ transport });
    await using db = await s.client();
    assert.deepEqual(await db.values("SELECT 1"), [[1]]);
    await s.server.shutdown();
    await assert.rejects(db.values("SELECT 1"), ConnectionError);
    await assert.rejects(db.values("SELECT 1"), ConnectionError);
  });

  Deno.test(`Session refuses parameters that bypass the client's check with INVALID_PARAM${T}`, async () => {
    await using s = await startServer({ transport });
    using raw = await RawConn.open(s.connectOptions);
    await raw.hello();
    await raw.send(
      [Op.Query, 2, "SELECT ?, ?", [1, "a\0b"]],
      [Op.Query, 3, "SELECT :a", { a: "x\0" }],
      [Op.Run, 4, "SELECT ?", [1, 2]],
      [Op.Query, 5, "SELECT ?", [2n ** 53n + 1n]],
      [Op.Query, 6, "SELECT ?", "not params"],
    );
    const replies = [];
    for (let i = 0; i < 5; i++) replies.push(await raw.read() as [number, number, any]);
    assert.deepEqual(replies.map((r) => [r[0], r[1]]), [[2, 1], [3, 1], [4, 1], [5, 0], [6, 1]]);
    assert.equal(replies[0][2].code, "INVALID_PARAM");
    assert.match(replies[0][2].message, /^Cannot bind parameter 2: string contains a NUL/);
    assert.equal(replies[1][2].code, "INVALID_PARAM");
    assert.match(replies[1][2].message, /^Cannot bind parameter "a": string contains a NUL/);
    assert.equal(replies[2][2].code, "INVALID_PARAM", "more parameters than the statement has");
    assert.equal(
      replies[2][2].message,
      "Too many parameter values: the statement has 1 parameter, 2 were given",
    );
    assert.deepEqual(replies[3][2], [["?"], [[2n ** 53n + 1n]]]);
    assert.equal(replies[4][2].code, "BAD_REQUEST");
    // Still usable.
    await raw.send([Op.Query, 7, "SELECT 7", null]);
    assert.deepEqual(await raw.read(), [7, 0, [["7"], [[7]]]]);
  });

  Deno.test(`Session answers a wrong protocol version with an error frame and closes${T}`, async () => {
    await using s = await startServer({ transport });
    await using other = await s.client();
    assert.deepEqual(await other.values("SELECT 1"), [[1]]);
    using raw = await RawConn.open(s.connectOptions);
    await raw.send([Op.Hello, 1, { version: 99 }]);
    const reply = await raw.read() as [number, number, { code: string; message: string }];
    assert.equal(reply[0], 0, "a connection-level error has id 0");
    assert.equal(reply[1] & 1, 1, "error status");
    assert.equal(reply[2].code, "PROTOCOL_VERSION");
    assert.match(reply[2].message, /client speaks protocol 99, server speaks 1/);
    assert.equal(await raw.read(), null, "the server closed the connection");
    // Other clients keep working, and new ones can connect.
    assert.deepEqual(await other.values("SELECT 2"), [[2]]);
    await using fresh = await s.client();
    assert.deepEqual(await fresh.values("SELECT 3"), [[3]]);
  });

  Deno.test(`Session closes a connection whose first request is not hello${T}`, async () => {
    await using s = await startServer({ transport });
    using raw = await RawConn.open(s.connectOptions);
    await raw.send([Op.Query, 1, "SELECT 1", null]);
    const reply = await raw.read() as [number, number, { code: string; message: string }];
    assert.equal(reply[0], 0);
    assert.equal(reply[2].code, "BAD_REQUEST");
    assert.match(reply[2].message, /first request must be hello/);
    assert.equal(await raw.read(), null);
  });

  Deno.test(`Session closes a connection that sends an undecodable or malformed frame${T}`, async () => {
    await using s = await startServer({ transport });
    await using other = await s.client();
    {
      using raw = await RawConn.open(s.connectOptions);
      await raw.hello();
      await raw.sendBytes(new Uint8Array([0, 0, 0, 1, 0xc1]));
      const reply = await raw.read() as [number, number, { code: string; message: string }];
      assert.equal(reply[0], 0);
      assert.equal(reply[2].code, "BAD_REQUEST");
      assert.match(reply[2].message, /Cannot decode frame/);
      assert.equal(await raw.read(), null);
    }
    {
      using raw = await RawConn.open(s.connectOptions);
      await raw.hello();
      await raw.send([Op.Query, 0, "SELECT 1"]); // id 0 is reserved
      const reply = await raw.read() as [number, number, { code: string }];
      assert.deepEqual([reply[0], reply[2].code], [0, "BAD_REQUEST"]);
      assert.equal(await raw.read(), null);
    }
    assert.deepEqual(await other.values("SELECT 1"), [[1]]);
  });

  Deno.test(`Session answers an unknown op with BAD_REQUEST and keeps the connection${T}`, async () => {
    await using s = await startServer({ transport });
    using raw = await RawConn.open(s.connectOptions);
    await raw.hello();
    await raw.send([99, 2, "x"], [Op.Exec, 3, 42], [Op.Query, 4, "SELECT 'ok'", null]);
    const r1 = await raw.read() as [number, number, { code: string; message: string }];
    assert.deepEqual([r1[0], r1[1], r1[2].code], [2, 1, "BAD_REQUEST"]);
    assert.match(r1[2].message, /Unknown op 99/);
    const r2 = await raw.read() as [number, number, { code: string; message: string }];
    assert.deepEqual([r2[0], r2[1], r2[2].code], [3, 1, "BAD_REQUEST"]);
    assert.match(r2[2].message, /Expected SQL text, got number/);
    assert.deepEqual(await raw.read(), [4, 0, [["'ok'"], [["ok"]]]]);
  });

  Deno.test(`Session closes a connection announcing a frame above maxFrameSize${T}`, async () => {
    await using s = await startServer({ transport, maxFrameSize: 64 * 1024 });
    await using other = await s.client();
    using raw = await RawConn.open(s.connectOptions);
    await raw.hello();
    await raw.sendBytes(new Uint8Array([0x80, 0, 0, 0])); // announces 2 GiB
    const reply = await raw.read() as [number, number, { code: string; message: string }];
    assert.equal(reply[0], 0);
    assert.equal(reply[2].code, "FRAME_TOO_LARGE");
    assert.match(reply[2].message, /length 2147483648 exceeds maxFrameSize 65536/);
    assert.equal(await raw.read(), null);
    assert.deepEqual(await other.values("SELECT 1"), [[1]]);
  });

  Deno.test(`Client refuses a request above its own maxFrameSize and keeps working${T}`, async () => {
    await using s = await startServer({ transport });
    await using db = await connect({ ...s.connectOptions, maxFrameSize: 1024 });
    await assert.rejects(db.values("SELECT ?", ["x".repeat(2000)]), {
      name: "ProtocolError",
      code: "FRAME_TOO_LARGE",
    });
    assert.deepEqual(await db.values("SELECT ?", ["x".repeat(500)]), [["x".repeat(500)]]);
  });

  Deno.test(`Client gets RESULT_TOO_LARGE for a result above the server's maxFrameSize${T}`, async () => {
    await using s = await startServer({ transport, maxFrameSize: 64 * 1024 });
    await using db = await s.client();
    await rejectsWith(db.values("SELECT zeroblob(100000)"), "RESULT_TOO_LARGE");
    assert.deepEqual(await db.values("SELECT length(zeroblob(100000))"), [[100000]]);
  });

  Deno.test(`connect() fails with ProtocolError when the server speaks another version${T}`, async () => {
    await using dir = await tempDir();
    const listener = transport === "unix"
      ? Deno.listen({ transport: "unix", path: `${dir.path}/fake.sock` })
      : Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const addr = listener.addr;
    const fake = (async () => {
      const conn = await listener.accept();
      const raw = new RawConn(conn);
      const hello = await raw.read() as [number, number, { version: number }];
      await raw.send([0, 1, { code: "PROTOCOL_VERSION", message: "server speaks protocol 2" }]);
      raw.close();
      return hello;
    })();
    const options: ConnectOptions = addr.transport === "unix"
      ? { path: (addr as Deno.UnixAddr).path }
      : { hostname: "127.0.0.1", port: (addr as Deno.NetAddr).port };
    try {
      await assert.rejects(connect(options), (err: unknown) => {
        assert.ok(err instanceof ProtocolError, String(err));
        assert.equal(err.code, "PROTOCOL_VERSION");
        assert.match(err.message, /server speaks protocol 2/);
        return true;
      });
      const hello = await fake;
      assert.deepEqual(hello, [Op.Hello, 1, { version: PROTOCOL_VERSION }]);
    } finally {
      listener.close();
    }
  });
}

// ---- errors while another client holds the writer -----------------------

// A statement the reader connection cannot prepare is retried on the writer,
// so while another client holds a transaction, a typo, a missing table or
// empty SQL waits for the whole busy timeout and is then reported as
// BUSY_TIMEOUT ("Write waited ... for the writer") instead of its own error.
Deno.test("Client.query() reports SQL errors at once while another client holds a transaction", async () => {
  await using s = await startServer({ busyTimeout: 300 });
  await using a = await connect({ ...s.connectOptions, max: 1 });
  await using b = await s.client();
  await a.exec("CREATE TABLE t (x)");
  await a.exec("BEGIN");
  await a.run("INSERT INTO t VALUES (1)");
  try {
    const started = performance.now();
    await rejectsWith(b.query("SELEC 1"), "SQLITE_ERROR", /syntax error/);
    await rejectsWith(b.query("SELECT * FROM nope"), "SQLITE_ERROR", /no such table: nope/);
    await rejectsWith(
      b.query(""),
      "BAD_REQUEST",
      /SQL text holds no statement \(it is empty, or only whitespace/,
    );
    await rejectsWith(b.query("SELECT 1; SELECT 2"), "BAD_REQUEST", /more than one statement/);
    assert.ok(performance.now() - started < 250, "errors must not wait for the writer");
    assert.deepEqual(await b.values("SELECT count(*) FROM t"), [[0]]);
  } finally {
    await a.exec("ROLLBACK");
  }
});

// ---- transport-specific ---------------------------------------------------

// A lone UTF-16 surrogate cannot be encoded as UTF-8: sent as is it would
// travel as U+FFFD and SQLite would store "\ufffd", a changed value without an
// error. The client refuses it before sending (protocol/values.ts).
Deno.test("Client.values() refuses a bound string with a lone surrogate: INVALID_PARAM, nothing stored", async () => {
  await using s = await startServer();
  await using db = await s.client();
  await db.exec("CREATE TABLE t (s TEXT)");
  for (const bad of ["a\ud800b", "\udc00", "x\ud83d"]) {
    for (
      const call of [
        () => db.values("SELECT ?", [bad]),
        () => db.run("INSERT INTO t VALUES (?)", [bad]),
        () => db.run("INSERT INTO t VALUES (:s)", { s: bad }),
      ]
    ) {
      await assert.rejects(call(), (err: unknown) => {
        assert.ok(err instanceof SqliteError, String(err));
        assert.equal(err.code, "INVALID_PARAM");
        assert.match(
          err.message,
          /^Cannot bind parameter (1|":?s"): string contains a lone UTF-16 surrogate/,
        );
        return true;
      });
    }
  }
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]]);
  // A well-formed surrogate pair is kept exactly.
  assert.deepEqual(await db.values("SELECT ?", ["a\ud83d\ude00b"]), [["a\ud83d\ude00b"]]);
});

Deno.test("connect({ database }) finds the default socket of a server started with only { database }, from this and another process", async () => {
  await using dir = await tempDir();
  const database = `${dir.path}/default.db`;
  await using server = await serve({ database });
  const expected = defaultSocketPath(database);
  assert.deepEqual(server.addr, { transport: "unix", path: expected });
  assert.ok((await Deno.stat(expected)).isSocket, `no socket at ${expected}`);
  await using db = await connect({ database });
  await db.exec("CREATE TABLE t (x); INSERT INTO t VALUES ('found')");
  // The same database named another way (relative path) reaches the same server.
  await using again = await connect({ database: relative(Deno.cwd(), database) });
  assert.deepEqual(await again.values("SELECT x FROM t"), [["found"]]);
  // A client in another process computes the same path.
  await using child = await spawnClientProcess({ database });
  assert.deepEqual(await child.values("SELECT x FROM t"), [["found"]]);
  // Another database has another default socket, where nobody listens.
  await assert.rejects(connect({ database: `${dir.path}/other.db` }), ConnectionError);
});

Deno.test("connect() to a missing socket throws ConnectionError naming it", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/nobody.sock`;
  await assert.rejects(connect({ path }), (err: unknown) => {
    assert.ok(err instanceof ConnectionError, String(err));
    assert.equal(err.code, "CONNECTION_CLOSED");
    assert.ok(err.message.includes(`unix:${path}`), err.message);
    // An explicit path is not a default socket: the question alone.
    assert.match(err.message, /\(is the server running\?\)$/);
    return true;
  });
});

Deno.test("connect() to a TCP port nobody listens on throws ConnectionError", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  await assert.rejects(connect({ port }), (err: unknown) => {
    assert.ok(err instanceof ConnectionError, String(err));
    assert.ok(err.message.includes(`tcp:127.0.0.1:${port}`), err.message);
    return true;
  });
});

Deno.test("serve() replaces a stale socket file left by a killed server", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/test.sock`;
  {
    await using proc = await startServerProcess({ dir: dir.path });
    await using db = await proc.client();
    await db.exec("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1)");
    await db.close();
    await proc.kill(); // SIGKILL: no cleanup
  }
  const info = await Deno.lstat(path);
  assert.ok(info.isSocket, "the killed server left its socket file behind");
  await assert.rejects(connect({ path }), ConnectionError, "nobody answers on the stale socket");
  await using s = await startServer({ database: `${dir.path}/test.db`, path });
  assert.deepEqual(s.server.addr, { transport: "unix", path });
  await using db = await s.client();
  assert.deepEqual(await db.values("SELECT x FROM t"), [[1]], "the committed row survived");
});

Deno.test("serve() on a live server's socket fails with ListenError and leaves it working", async () => {
  await using s = await startServer();
  await using db = await s.client();
  const path = (s.server.addr as { path: string }).path;
  await assert.rejects(
    serve({ database: `${s.dir}/other.db`, path }),
    (err: unknown) => {
      assert.ok(err instanceof ListenError, String(err));
      assert.equal(err.name, "ListenError");
      assert.match(err.message, /another server is already listening there/);
      assert.ok(err.message.includes(path));
      return true;
    },
  );
  assert.ok((await Deno.lstat(path)).isSocket, "the live socket was not removed");
  assert.deepEqual(await db.values("SELECT 1"), [[1]]);
  await using again = await s.client();
  assert.deepEqual(await again.values("SELECT 2"), [[2]]);
});

Deno.test("serve() on a path that is not a socket fails with ListenError", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/plain-file`;
  await Deno.writeTextFile(path, "keep me");
  await assert.rejects(
    serve({ database: `${dir.path}/x.db`, path }),
    (err: unknown) => err instanceof ListenError && /exists and is not a socket/.test(err.message),
  );
  assert.equal(await Deno.readTextFile(path), "keep me", "the file was left alone");
});

Deno.test("serve() on a TCP port in use fails with ListenError", async () => {
  await using s = await startServer({ transport: "tcp" });
  const addr = s.server.addr as { hostname: string; port: number };
  assert.ok(addr.port > 0, "port 0 resolves to the real port");
  await assert.rejects(
    serve({ database: `${s.dir}/other.db`, hostname: addr.hostname, port: addr.port }),
    (err: unknown) =>
      err instanceof ListenError && err.message.includes(`tcp:${addr.hostname}:${addr.port}`),
  );
  await using db = await s.client();
  assert.deepEqual(await db.values("SELECT 1"), [[1]]);
});

Deno.test("Server.shutdown() removes the socket file and is idempotent", async () => {
  await using s = await startServer();
  const path = (s.server.addr as { path: string }).path;
  assert.ok((await Deno.lstat(path)).isSocket);
  const db: Client = await s.client();
  await Promise.all([s.server.shutdown(), s.server.shutdown()]);
  await s.server.finished;
  await assert.rejects(Deno.lstat(path), Deno.errors.NotFound);
  await db.close();
});

Deno.test("A connection holds at most maxStatements prepared statements (and 16 Mi characters of their SQL); finalize() makes room", async () => {
  await using srv = await startServer({ maxStatements: 5 });
  await using db = await srv.client();
  const kept = [];
  for (let i = 0; i < 5; i++) kept.push(await db.prepare(`SELECT ${i}`));
  const tooMany = (err: unknown) => {
    assert.ok(err instanceof SqliteError, String(err));
    assert.equal(err.code, "BAD_REQUEST");
    assert.match(err.message, /^Too many prepared statements: 5 on this connection, holding 40 /);
    assert.match(err.message, /\(at most 5, 16777216\); finalize\(\) the ones no longer needed$/);
    return true;
  };
  await assert.rejects(db.prepare("SELECT 5"), tooMany);
  await kept[0].finalize();
  const more = await db.prepare("SELECT 5");
  assert.deepEqual(await more.raw().all(), [[5]]);
  assert.deepEqual(await kept[4].raw().all(), [[4]], "the others still work");
  for (const s of [...kept.slice(1), more]) await s.finalize();
  // The SQL kept for handles is bounded too: 4 Mi characters each.
  const big = (n: number) => `SELECT ${n} /*${"x".repeat(4 * 1024 * 1024)}*/`;
  const large = [];
  for (let i = 0; i < 3; i++) large.push(await db.prepare(big(i)));
  await assert.rejects(db.prepare(big(3)), (err: unknown) => {
    assert.ok(err instanceof SqliteError && err.code === "BAD_REQUEST", String(err));
    assert.match(
      err.message,
      /^Too many prepared statements: 3 on this connection, holding 1258\d{4} characters/,
    );
    return true;
  });
  await large[0].finalize();
  large[0] = await db.prepare(big(3));
  assert.deepEqual(await large[0].raw().all(), [[3]]);
  for (const s of large) await s.finalize();
  // One statement longer than the whole allowance is told so.
  const huge = `SELECT 1 /*${"x".repeat(16 * 1024 * 1024)}*/`;
  await assert.rejects(db.prepare(huge), (err: unknown) => {
    assert.ok(err instanceof SqliteError && err.code === "BAD_REQUEST", String(err));
    assert.match(
      err.message,
      /^Statement too long to prepare: 16777229 characters \(at most 16777216\)/,
    );
    return true;
  });
  assert.deepEqual(await db.values(huge), [[1]], "it still runs by its SQL text");
});

Deno.test("Statements dropped without finalize() are freed on the server once collected", async () => {
  const out = await runWithGc(new URL("./fixtures/dropped_statements.ts", import.meta.url));
  assert.equal(out.trim(), "ok 200");
});
