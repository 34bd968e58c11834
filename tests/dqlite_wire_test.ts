/**
 * dqlite's wire protocol, byte by byte (no node needed): the encoders of
 * engine/dqlite/wire.ts against hand-written messages, the decoders against
 * hand-built responses, and the lexical checks of engine/dqlite/_sql_scan.ts.
 */

import assert from "node:assert/strict";
import { ErrorCode, ProtocolError, SqliteError } from "../protocol/errors.ts";
import {
  decodeHeader,
  decodeResponse,
  encodeExecSql,
  encodeFinalize,
  encodeHandshake,
  encodeInterrupt,
  encodeLeader,
  encodeOpen,
  encodePrepare,
  encodeQuery,
  encodeQuerySql,
  ResponseType,
} from "../engine/dqlite/wire.ts";
import { failureError, LeaderError } from "../engine/dqlite/errors.ts";
import { positionalArgs, txEffect, writesRows } from "../engine/dqlite/_sql_scan.ts";

/** Little-endian u64 bytes. */
function u64(v: bigint | number): number[] {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt.asUintN(64, BigInt(v)), true);
  return [...out];
}

function u32(v: number): number[] {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, v, true);
  return [...out];
}

function f64(v: number): number[] {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setFloat64(0, v, true);
  return [...out];
}

/** NUL-terminated UTF-8 text padded to a word. */
function text(s: string): number[] {
  const bytes = [...new TextEncoder().encode(s), 0];
  while (bytes.length % 8 !== 0) bytes.push(0);
  return bytes;
}

function header(words: number, type: number, schema = 0): number[] {
  return [...u32(words), type, schema, 0, 0];
}

Deno.test("encodeHandshake() is protocol version 1 as one little-endian word", () => {
  assert.deepEqual([...encodeHandshake()], [1, 0, 0, 0, 0, 0, 0, 0]);
});

Deno.test("encodeLeader(), encodeInterrupt(), encodeFinalize() match the documented layout", () => {
  assert.deepEqual([...encodeLeader()], [...header(1, 0), ...u64(0)]);
  assert.deepEqual([...encodeInterrupt(0)], [...header(1, 10), ...u64(0)]);
  assert.deepEqual([...encodeFinalize(0, 7)], [...header(1, 7), ...u32(0), ...u32(7)]);
});

Deno.test("encodeOpen() and encodePrepare() pad NUL-terminated text to a word", () => {
  assert.deepEqual(
    [...encodeOpen("demo")],
    [...header(3, 3), ...text("demo"), ...u64(0), ...text("")],
  );
  // 7 bytes + NUL fill exactly one word; 8 bytes + NUL need two.
  assert.deepEqual([...encodePrepare(0, "SELECT1")], [
    ...header(2, 4),
    ...u64(0),
    ...text("SELECT1"),
  ]);
  assert.equal(encodePrepare(0, "SELECT 1").length, 8 + 8 + 16);
  assert.deepEqual([...encodePrepare(0, "é")], [
    ...header(2, 4),
    ...u64(0),
    0xc3,
    0xa9,
    0,
    0,
    0,
    0,
    0,
    0,
  ]);
});

Deno.test("encodeExecSql() writes the parameter tuple: count, 8-bit types, padding, values", () => {
  const blob = new Uint8Array([1, 2, 3]);
  const msg = encodeExecSql(0, "x", [42, 1.5, "hi", blob, null, -1n, true]);
  const body = [
    ...u64(0),
    ...text("x"),
    7,
    1,
    2,
    3,
    4,
    5,
    1,
    1, // count and types: INTEGER FLOAT TEXT BLOB NULL INTEGER INTEGER
    ...u64(42),
    ...f64(1.5),
    ...text("hi"),
    ...u64(3),
    1,
    2,
    3,
    0,
    0,
    0,
    0,
    0,
    ...u64(0),
    ...u64(-1n),
    ...u64(1),
  ];
  assert.deepEqual([...msg], [...header(body.length / 8, 8), ...body]);
});

Deno.test("encodeQuerySql() sends no tuple at all without parameters", () => {
  assert.deepEqual([...encodeQuerySql(0, "q", [])], [...header(2, 9), ...u64(0), ...text("q")]);
});

Deno.test("encodeQuery() binds -0, unsafe integers as FLOAT and the int64 extremes as INTEGER", () => {
  const msg = encodeQuery(0, 3, [-0, 2 ** 53, -(2n ** 63n), 2n ** 63n - 1n]);
  const body = [
    ...u32(0),
    ...u32(3),
    4,
    2,
    2,
    1,
    1,
    0,
    0,
    0,
    ...f64(-0),
    ...f64(2 ** 53),
    ...u64(-(2n ** 63n)),
    ...u64(2n ** 63n - 1n),
  ];
  assert.deepEqual([...msg], [...header(body.length / 8, 6), ...body]);
});

Deno.test("encodeExecSql() refuses values it cannot carry exactly with INVALID_PARAM, SQL with NUL with BAD_REQUEST", () => {
  const cases: unknown[][] = [
    ["a\0b"],
    ["\ud800"],
    [NaN],
    [2n ** 63n],
    [undefined],
    [new Date(0)],
    [{}],
    new Array(256).fill(0),
  ];
  for (const params of cases) {
    assert.throws(
      () => encodeExecSql(0, "x", params),
      (err: unknown) => err instanceof SqliteError && err.code === ErrorCode.InvalidParam,
      String(params[0]),
    );
  }
  // SQL dqlite would cut at a NUL: refused as the single-file engines refuse it, by every encoder.
  const nul = "SELECT '\0'";
  for (const encode of [() => encodeExecSql(0, nul, []), () => encodeQuerySql(0, nul, [])]) {
    assert.throws(
      encode,
      (err: unknown) =>
        err instanceof SqliteError && err.code === ErrorCode.BadRequest &&
        err.message === "Cannot prepare statement: SQL text contains a NUL character",
    );
  }
  assert.throws(
    () => encodePrepare(0, nul),
    (err: unknown) =>
      err instanceof SqliteError && err.code === ErrorCode.BadRequest &&
      err.message === "Cannot prepare statement: SQL text contains a NUL character",
  );
  assert.throws(
    () => encodePrepare(0, "SELECT '\ud800'"),
    (err: unknown) => err instanceof SqliteError && err.code === ErrorCode.InvalidParam,
  );
});

Deno.test("decodeHeader() reads words, type and schema", () => {
  assert.deepEqual(decodeHeader(new Uint8Array([3, 1, 0, 0, 7, 1, 0, 0])), {
    words: 259,
    type: 7,
    schema: 1,
  });
  assert.throws(() => decodeHeader(new Uint8Array(4)), ProtocolError);
});

Deno.test("decodeResponse() reads FAILURE, SERVER, DB, STMT, RESULT and EMPTY", () => {
  const body = (...parts: number[][]): Uint8Array => new Uint8Array(parts.flat());
  assert.deepEqual(decodeResponse(ResponseType.Failure, body(u64(2067), text("UNIQUE"))), {
    type: "failure",
    code: 2067,
    message: "UNIQUE",
  });
  assert.deepEqual(decodeResponse(ResponseType.Server, body(u64(2n ** 64n - 1n), text("h:1"))), {
    type: "server",
    id: 2n ** 64n - 1n,
    address: "h:1",
  });
  assert.deepEqual(decodeResponse(ResponseType.Db, body(u32(0), u32(0))), { type: "db", id: 0 });
  assert.deepEqual(decodeResponse(ResponseType.Stmt, body(u32(0), u32(9), u64(2))), {
    type: "stmt",
    db: 0,
    id: 9,
    params: 2,
  });
  assert.deepEqual(decodeResponse(ResponseType.Result, body(u64(-5n), u64(1))), {
    type: "result",
    lastInsertId: -5,
    rowsAffected: 1,
  });
  assert.deepEqual(decodeResponse(ResponseType.Result, body(u64(2n ** 62n), u64(0))), {
    type: "result",
    lastInsertId: 2n ** 62n,
    rowsAffected: 0,
  });
  assert.deepEqual(decodeResponse(ResponseType.Empty, body(u64(0))), { type: "empty" });
});

Deno.test("decodeResponse() reads a query's FAILURE after the partial row set dqlite encoded first", () => {
  const body = (...parts: number[][]): Uint8Array => new Uint8Array(parts.flat());
  const failure = (code: number, message: string, partial?: unknown) =>
    partial === undefined
      ? { type: "failure", code, message }
      : { type: "failure", code, message, partial };
  // As dqlite 1.11 sends `SELECT 1 AS a, abs(-9223372036854775808) AS b`: names, then the failure.
  const twoCols = [...u64(2), ...text("a"), ...text("b")];
  assert.deepEqual(
    decodeResponse(ResponseType.Failure, body(twoCols, u64(1), text("integer overflow"))),
    failure(1, "integer overflow", { columns: ["a", "b"], rows: [] }),
  );
  // Rows already encoded come before the failure: the rows before the error.
  const row = [0x11, 0, 0, 0, 0, 0, 0, 0, ...u64(1), ...u64(1)];
  assert.deepEqual(
    decodeResponse(ResponseType.Failure, body(twoCols, row, row, u64(18), text("too big"))),
    failure(18, "too big", { columns: ["a", "b"], rows: [[1, 1], [1, 1]] }),
  );
  // One column: a row (type word 0x01, value) looks like a failure word; the tail decides.
  const oneCol = [...u64(1), ...text("x")];
  const intRow = [0x01, 0, 0, 0, 0, 0, 0, 0, ...u64(7)];
  assert.deepEqual(
    decodeResponse(ResponseType.Failure, body(oneCol, intRow, u64(1), text("integer overflow"))),
    failure(1, "integer overflow", { columns: ["x"], rows: [[7]] }),
  );
  const textRow = [0x03, 0, 0, 0, 0, 0, 0, 0, ...text("abcdefgh")];
  assert.deepEqual(
    decodeResponse(ResponseType.Failure, body(oneCol, textRow, u64(1), text(""))),
    failure(1, "", { columns: ["x"], rows: [["abcdefgh"]] }),
  );
  // A row holding text that is not UTF-8: the rows before it, and its error (it came first).
  const badRow = [0x03, 0, 0, 0, 0, 0, 0, 0, 0xff, 0, 0, 0, 0, 0, 0, 0];
  const cut = decodeResponse(
    ResponseType.Failure,
    body(oneCol, intRow, badRow, intRow, u64(1), text("integer overflow")),
  );
  assert.ok(cut.type === "failure" && cut.partial !== undefined);
  assert.deepEqual([cut.code, cut.partial.columns, cut.partial.rows], [1, ["x"], [[7]]]);
  assert.equal(cut.partial.error?.code, "INVALID_UTF8");
  assert.match(cut.partial.error.message, /^Cannot read column "x": /);
  // The plain form, an empty message, a message of exactly one word.
  assert.deepEqual(decodeResponse(ResponseType.Failure, body(u64(5), text(""))), failure(5, ""));
  assert.deepEqual(
    decodeResponse(ResponseType.Failure, body(u64(1), text("12345678"))),
    failure(1, "12345678"),
  );
  // A partial row set without a failure after it, or a truncated row, is a protocol error.
  for (const bad of [body(twoCols), body(twoCols, row), body(twoCols, row.slice(0, 12))]) {
    assert.throws(
      () => decodeResponse(ResponseType.Failure, bad),
      (err: unknown) => err instanceof ProtocolError && err.code === "DQLITE_PROTOCOL",
    );
  }
});

Deno.test("decodeResponse() refuses bytes after the end of a fixed-layout response", () => {
  const trailing: [number, number[]][] = [
    [ResponseType.Server, [...u64(1), ...text("h:1"), ...u64(0)]],
    [ResponseType.Welcome, [...u64(15000), ...u64(0)]],
    [ResponseType.Db, [...u32(0), ...u32(0), ...u64(0)]],
    [ResponseType.Stmt, [...u32(0), ...u32(1), ...u64(0), ...u64(0)]],
    [ResponseType.Result, [...u64(1), ...u64(1), ...u64(0)]],
    [ResponseType.Empty, [...u64(0), ...u64(0)]],
    [ResponseType.Servers, [...u64(0), ...u64(0)]],
  ];
  for (const [type, bytes] of trailing) {
    assert.throws(
      () => decodeResponse(type, new Uint8Array(bytes)),
      (err: unknown) =>
        err instanceof ProtocolError && err.code === "DQLITE_PROTOCOL" &&
        /bytes after its end/.test(err.message),
      `type ${type}`,
    );
  }
});

Deno.test("decodeResponse() reads rows with 4-bit types and the PART and DONE markers", () => {
  const columns = [...u64(3), ...text("a"), ...text("b"), ...text("c")];
  const row1 = [
    0x21,
    0x03,
    0,
    0,
    0,
    0,
    0,
    0, // INTEGER | FLOAT << 4, TEXT
    ...u64(2n ** 63n - 1n),
    ...f64(0.5),
    ...text("\ufeffx"),
  ];
  // Row 2: BLOB | NULL << 4, ISO8601 (10) holding "" (dqlite's NULL in a DATETIME column).
  const row2 = [
    0x54,
    0x0a,
    0,
    0,
    0,
    0,
    0,
    0,
    ...u64(2),
    7,
    8,
    0,
    0,
    0,
    0,
    0,
    0,
    ...u64(0),
    ...text(""),
  ];
  const row3 = [0xb9, 0x01, 0, 0, 0, 0, 0, 0, ...u64(1700000000), ...u64(3), ...u64(-7n)];
  const done = new Uint8Array([...columns, ...row1, ...row2, ...row3, ...u64(2n ** 64n - 1n)]);
  const r = decodeResponse(ResponseType.Rows, done);
  assert.deepEqual(r, {
    type: "rows",
    columns: ["a", "b", "c"],
    rows: [
      [2n ** 63n - 1n, 0.5, "\ufeffx"], // a leading U+FEFF is text, not a byte order mark
      [new Uint8Array([7, 8]), null, null],
      // UNIXTIME (9) and BOOLEAN (11) are returned as the stored integers.
      [1700000000, 3, -7],
    ],
    more: false,
  });
  const part = new Uint8Array([...columns, ...row1, ...u64(0xeeeeeeeeeeeeeeeen)]);
  const p = decodeResponse(ResponseType.Rows, part);
  assert.equal(p.type === "rows" && p.more, true);
  const empty = new Uint8Array([...u64(1), ...text("n"), ...u64(2n ** 64n - 1n)]);
  assert.deepEqual(decodeResponse(ResponseType.Rows, empty), {
    type: "rows",
    columns: ["n"],
    rows: [],
    more: false,
  });
});

Deno.test("decodeResponse() refuses malformed bodies with ProtocolError and bad UTF-8 with INVALID_UTF8", () => {
  const bad: [number, number[]][] = [
    [ResponseType.Failure, u64(1)],
    [ResponseType.Server, [...u64(1), 0x61, 0x62]],
    [ResponseType.Rows, [...u64(1), ...text("a")]],
    [ResponseType.Rows, [...u64(1), ...text("a"), 0x06, 0, 0, 0, 0, 0, 0, 0, ...u64(0)]],
    [ResponseType.Rows, [...u64(1), ...text("a"), 0x04, 0, 0, 0, 0, 0, 0, 0, ...u64(99)]],
    [ResponseType.Rows, [...u64(1), ...text("a"), ...u64(0xeeeeeeeeeeeeeeffn)]],
    [ResponseType.Rows, [...u64(0), ...u64(2n ** 64n - 1n)]],
    [42, u64(0)],
  ];
  for (const [type, body] of bad) {
    assert.throws(
      () => decodeResponse(type, new Uint8Array(body)),
      (err: unknown) => err instanceof ProtocolError && err.code === "DQLITE_PROTOCOL",
      `type ${type}: ${body}`,
    );
  }
  // After a good row: the bad one's index is errorAt (the rows before it are the query's).
  const invalid = [...u64(1), ...text("a"), 0x01, 0, 0, 0, 0, 0, 0, 0, ...u64(5)];
  invalid.push(0x03, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe, 0, 0, 0, 0, 0, 0, ...u64(2n ** 64n - 1n));
  const r = decodeResponse(ResponseType.Rows, new Uint8Array(invalid));
  assert.equal(r.type, "rows");
  if (r.type === "rows") {
    assert.equal(r.error?.code, "INVALID_UTF8");
    assert.match(r.error?.message ?? "", /^Cannot read column "a": its TEXT value is not valid/);
    assert.equal(r.more, false);
    assert.deepEqual(r.rows, [[5], [null]]);
    assert.equal(r.errorAt, 1);
  }
});

Deno.test("failureError() maps dqlite's leadership codes to LeaderError and the rest to SQLite names", () => {
  const notLeader = failureError(10 | (40 << 8), "not leader", "n:1");
  assert.ok(notLeader instanceof LeaderError);
  assert.equal(notLeader.code, "NOT_LEADER");
  assert.equal(notLeader.maybeApplied, false);
  const lost = failureError(10 | (41 << 8), "disk I/O error", "n:1");
  assert.ok(lost instanceof LeaderError);
  assert.equal(lost.code, "LEADER_LOST");
  assert.equal(lost.maybeApplied, true);
  const unique = failureError(2067, "UNIQUE constraint failed: t.a", "n:1");
  assert.equal(unique.code, "SQLITE_CONSTRAINT_UNIQUE");
  assert.equal(unique.sqliteCode, 2067);
  assert.equal(failureError(5, "database is locked", "n:1").code, "SQLITE_BUSY");
  assert.equal(failureError(100, "another row available", "n:1").code, ErrorCode.BadRequest);
  assert.equal(failureError(0, "empty statement", "n:1").code, ErrorCode.BadRequest);
});

Deno.test("txEffect() follows BEGIN, COMMIT and ROLLBACK through a script; writesRows() finds RETURNING", () => {
  const last = (sql: string): string => txEffect(sql).last;
  const le = (sql: string): { last: string; ends: boolean } => {
    const e = txEffect(sql);
    return { last: e.last, ends: e.ends };
  };
  assert.equal(last("BEGIN"), "begin");
  assert.equal(last("  -- c\n/* d */ begin immediate transaction"), "begin");
  assert.equal(last("SAVEPOINT a"), "begin");
  assert.equal(last("commit"), "end");
  assert.equal(last("END TRANSACTION"), "end");
  assert.equal(last("ROLLBACK"), "end");
  assert.equal(last("ROLLBACK TRANSACTION TO SAVEPOINT a"), "none");
  assert.equal(last("rollback to a"), "none");
  assert.equal(last("RELEASE a"), "none");
  assert.equal(last("INSERT INTO begin VALUES (1)"), "none");
  assert.equal(last(""), "none");
  assert.deepEqual(le("INSERT INTO t VALUES (1); COMMIT"), { last: "end", ends: true });
  assert.deepEqual(le("COMMIT; BEGIN; INSERT INTO t VALUES (1)"), {
    last: "begin",
    ends: true,
  });
  assert.deepEqual(le("BEGIN; SELECT 'commit'; -- end\n"), { last: "begin", ends: false });
  // A trigger body's statements and its END are not transaction control.
  assert.deepEqual(
    le(
      "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET a = CASE WHEN 1 THEN 2 END; " +
        "DELETE FROM u; END; INSERT INTO t VALUES (1)",
    ),
    { last: "none", ends: false },
  );
  assert.deepEqual(
    le("BEGIN; CREATE TEMP TRIGGER tr AFTER DELETE ON t BEGIN SELECT 1; END"),
    { last: "begin", ends: false },
  );
  assert.equal(writesRows("DELETE FROM t RETURNING *"), true);
  assert.equal(writesRows("insert into t values (1) returning\tid"), true);
  assert.equal(writesRows("SELECT 'returning', \"returning\", [returning], `returning`"), false);
  assert.equal(writesRows("SELECT 1 -- returning\n"), false);
  assert.equal(writesRows("SELECT returning_x FROM t /* returning */"), false);
  // Only a write carries RETURNING: elsewhere SQLite's own syntax error is the answer.
  assert.equal(writesRows("SELECT 7 AS returning"), false);
  assert.equal(writesRows("CREATE TABLE r2(returning TEXT)"), false);
  assert.equal(writesRows("SELECT 1; UPDATE t SET a = 1 RETURNING a"), true);
  assert.equal(writesRows("DELETE FROM t; SELECT returning FROM m"), false);
  assert.equal(writesRows("WITH c AS (SELECT 1) REPLACE INTO t SELECT * FROM c RETURNING *"), true);
  // RELEASE is reported apart: it ends a transaction only when SAVEPOINT opened it.
  assert.deepEqual(txEffect("SAVEPOINT a; INSERT INTO t VALUES (1); RELEASE a"), {
    last: "begin",
    ends: false,
    releases: true,
    opener: "savepoint",
    savepoint: "a",
    released: ["a"],
  });
  assert.equal(txEffect("BEGIN IMMEDIATE").opener, "begin");
  assert.equal(txEffect("INSERT INTO t VALUES ('release')").releases, false);
});

Deno.test("positionalArgs() numbers parameters as SQLite does and maps named arguments", () => {
  assert.deepEqual(positionalArgs("SELECT ?", [1]), [1]);
  assert.deepEqual(positionalArgs("SELECT :a, :b, :a", { b: 2, a: 1 }), [1, 2]);
  assert.deepEqual(
    positionalArgs("SELECT :a, ?3, @b, $c", { c: 5, ":a": 2, "@b": 4, "?3": 3 }),
    [2, null, 3, 4, 5],
  );
  assert.deepEqual(positionalArgs("SELECT ?, :a, ?3, @b", [1, 2, 3, 4]), [1, 2, 3, 4]);
  assert.deepEqual(positionalArgs("SELECT ?2, :x", { x: "v", "?2": 1 }), [null, 1, "v"]);
  assert.deepEqual(positionalArgs("SELECT $b, ?1, ?3", { "?1": 5, "?3": 7 }), [5, null, 7]);
  // Literals, quoted names and comments hold no parameters; only the first statement counts.
  assert.deepEqual(
    positionalArgs("SELECT ':no', \"@no\", [$no] /* :no */, :yes -- :no\n; SELECT :later", {
      yes: 1,
    }),
    [1],
  );
  assert.deepEqual(positionalArgs(";; SELECT :a; SELECT :b", { a: 1 }), [1]);
  assert.deepEqual(positionalArgs("SELECT :émoji_1", { "émoji_1": 7 }), [7]);
  const refused = (f: () => unknown, code: string, message: RegExp): void => {
    assert.throws(f, (err: unknown) => {
      assert.ok(err instanceof SqliteError);
      assert.equal(err.code, code);
      assert.match(err.message, message);
      return true;
    });
  };
  refused(() => positionalArgs("SELECT :a", { a: 1, b: 1 }), "INVALID_PARAM", /"b": the statement/);
  refused(() => positionalArgs("SELECT :a; SELECT :b", { a: 1, b: 1 }), "INVALID_PARAM", /"b"/);
  // No key names a `?` (nor a `?NNN` left out): refused rather than bound NULL.
  refused(() => positionalArgs("SELECT :a, ?", { a: 1 }), "INVALID_PARAM", /pass an array$/);
  refused(() => positionalArgs("SELECT ?, ?2", { "?2": 1 }), "INVALID_PARAM", /pass an array$/);
  refused(() => positionalArgs("SELECT ?2, :x", { x: 1 }), "INVALID_PARAM", /"\?2"/);
  // A bare key binds every parameter of that name; none is left NULL silently.
  assert.deepEqual(positionalArgs("SELECT $a, @a, :a", { a: 1 }), [1, 1, 1]);
  assert.deepEqual(positionalArgs("SELECT :a, ?1", { a: 1 }), [1]);
  refused(
    () => positionalArgs("SELECT :a, :b", { a: 1 }),
    "INVALID_PARAM",
    /^Missing value for parameter ":b": the parameters object has no "b" \(or ":b"\)$/,
  );
  refused(
    () => positionalArgs("SELECT ?, ?", [1]),
    "INVALID_PARAM",
    /^Missing parameter values: the statement has 2 parameters, 1 was given$/,
  );
  refused(
    () => positionalArgs("SELECT ?", [1, 2]),
    "INVALID_PARAM",
    /^Too many parameter values: the statement has 1 parameter, 2 were given$/,
  );
});
