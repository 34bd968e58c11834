/**
 * The typed request schema (`protocol/messages.ts`, `protocol/requests.ts`),
 * the `cancel` op, per-call options reaching the engine, and one error class
 * per code.
 */

import assert from "node:assert/strict";
import { connect, ConnectionError, ProtocolError, SqliteError } from "../mod.ts";
import { MessageDecoder, MessageEncoder } from "../protocol/codec.ts";
import {
  AbortError,
  createError,
  errorClassOf,
  ErrorCode,
  errorFromWire,
} from "../protocol/errors.ts";
import { Op, PROTOCOL_VERSION, type Request, Status } from "../protocol/messages.ts";
import {
  asEnvelope,
  type DecodedRequest,
  decodeRequest,
  type Envelope,
} from "../protocol/requests.ts";
import { FrameReader } from "../transport/frame_reader.ts";
import { startServer } from "./_helpers.ts";

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Encodes a typed request into a frame and decodes it as the server does. */
function roundTrip(req: Request): DecodedRequest {
  const enc = new MessageEncoder(1 << 20);
  enc.append(req);
  const reader = new FrameReader(1 << 20);
  reader.push(enc.take());
  const msg = asEnvelope(new MessageDecoder().decode(reader.next()!));
  assert.ok(msg !== null);
  return decodeRequest(msg);
}

Deno.test("decodeRequest() returns every element the client encodes, for every op", () => {
  const p = [1, "two"];
  assert.deepEqual(roundTrip([Op.Exec, 1, "CREATE TABLE t (x)"]), {
    op: Op.Exec,
    id: 1,
    args: ["CREATE TABLE t (x)", undefined],
  });
  assert.deepEqual(roundTrip([Op.Exec, 2, "CREATE TABLE t (x)", null, { timeout: 50 }]), {
    op: Op.Exec,
    id: 2,
    args: ["CREATE TABLE t (x)", 50],
  }, "exec keeps its timeout");
  for (const op of [Op.Query, Op.Run, Op.Iterate] as const) {
    // query's options also carry `first` (get()): false unless sent.
    const more = op === Op.Query ? [false] : [];
    assert.deepEqual(roundTrip([op, 7, "SELECT ?", p, { timeout: 50 }]), {
      op,
      id: 7,
      args: ["SELECT ?", p, 50, ...more],
    }, `op ${op} keeps its timeout`);
    assert.deepEqual(roundTrip([op, 8, 3, { a: 1 }, null]), {
      op,
      id: 8,
      args: [3, { a: 1 }, undefined, ...more],
    });
  }
  assert.deepEqual(roundTrip([Op.Query, 9, "SELECT 1", null, { timeout: 5, first: true }]).args, [
    "SELECT 1",
    null,
    5,
    true,
  ]);
  assert.deepEqual(roundTrip([Op.Batch, 2, [["INSERT INTO t VALUES (?)", [1]]]]).args, [
    [["INSERT INTO t VALUES (?)", [1]]],
    null,
    undefined,
  ]);
  assert.deepEqual(
    roundTrip([Op.Batch, 2, [["INSERT INTO t VALUES (?)", [1]]], { foreignKeys: false }]).args,
    [[["INSERT INTO t VALUES (?)", [1]]], { foreignKeys: false }, undefined],
  );
  assert.deepEqual(
    roundTrip([Op.Batch, 2, [["SELECT 1", null]], { foreignKeys: false, timeout: 70 }]).args,
    [[["SELECT 1", null]], { foreignKeys: false }, 70],
    "batch keeps its timeout",
  );
  assert.deepEqual(roundTrip([Op.Prepare, 3, "SELECT 1"]).args, ["SELECT 1"]);
  assert.deepEqual(roundTrip([Op.Finalize, 4, 9]).args, [9]);
  assert.deepEqual(roundTrip([Op.Next, 5, 2]).args, [2]);
  assert.deepEqual(roundTrip([Op.CloseCursor, 6, 2]).args, [2]);
  assert.deepEqual(roundTrip([Op.Cancel, 9, 8]), { op: Op.Cancel, id: 9, args: [8, null] });
  // A request aborted before it was sent travels inside its cancel, under its own id.
  assert.deepEqual(roundTrip([Op.Cancel, 9, 8, [Op.Run, "INSERT INTO t VALUES (1)"]]), {
    op: Op.Cancel,
    id: 9,
    args: [8, [Op.Run, 8, "INSERT INTO t VALUES (1)"]],
  });
});

Deno.test("decodeRequest() refuses malformed arguments with BAD_REQUEST naming the problem", () => {
  const cases: [Envelope, RegExp][] = [
    [[42, 1], /Unknown op 42/],
    [[Op.Exec, 1, 5], /Expected SQL text, got number/],
    [[Op.Run, 1, "SELECT 1", "x"], /parameters as an array or a map, got string/],
    [[Op.Run, 1, "SELECT 1", null, { timeout: -1 }], /timeout\?: positive number/],
    [[Op.Query, 1, "SELECT 1", null, 5], /call options/],
    [[Op.Query, 1, "SELECT 1", null, { first: 1 }], /first\?: boolean/],
    [[Op.Batch, 1, [["ok", null], [1]]], /Batch statement 2: expected \[sql, params\]/],
    [[Op.Finalize, 1, "h"], /statement handle, got string/],
    [[Op.Cancel, 1, 0], /id of the request to cancel/],
  ];
  for (const [msg, message] of cases) {
    assert.throws(() => decodeRequest(msg), (err: unknown) => {
      assert.ok(err instanceof SqliteError, String(err));
      assert.equal(err.code, "BAD_REQUEST");
      assert.match(err.message, message);
      return true;
    });
  }
});

Deno.test("Client.run() honours { timeout }: a long recursive write fails with STATEMENT_TIMEOUT and is undone", async () => {
  await using srv = await startServer(); // statementTimeout: 30000 ms
  await using db = await srv.client();
  assert.equal(db.serverInfo.limits.statementTimeout, 30000);
  await db.exec("CREATE TABLE t (x INTEGER)");
  const sql = "INSERT INTO t WITH RECURSIVE c(x) AS " +
    "(SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT ?) SELECT x FROM c";
  const started = performance.now();
  const err = await db.run(sql, [1_000_000], { timeout: 50 }).catch((e) => e);
  const took = performance.now() - started;
  assert.ok(err instanceof SqliteError, String(err));
  assert.equal(err.code, "STATEMENT_TIMEOUT");
  assert.match(err.message, /(stopped after|exceeded its) 50 ms/);
  assert.ok(took < 25_000, `took ${took} ms`);
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]], "nothing of it stayed");
  // The same statement within its deadline runs; a prepared statement passes it too.
  assert.equal((await db.run(sql, [1000], { timeout: 60_000 })).changes, 1000);
  const stmt = await db.prepare(sql);
  assert.equal((await stmt.run([10], { timeout: 60_000 })).changes, 10);
  await assert.rejects(stmt.run([1_000_000], { timeout: 50 }), { code: "STATEMENT_TIMEOUT" });
  await stmt.finalize();
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[1010]]);
});

/** A raw protocol connection: typed requests out, replies in. */
class Wire implements AsyncDisposable {
  readonly #conn: Deno.Conn;
  readonly #enc = new MessageEncoder(1 << 20);
  readonly #dec = new MessageDecoder();
  readonly #reader = new FrameReader(1 << 20);
  readonly #buf = new Uint8Array(64 * 1024);

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  async send(...reqs: Request[]): Promise<void> {
    for (const r of reqs) this.#enc.append(r);
    await this.#conn.write(this.#enc.take());
  }

  async reply(): Promise<[number, number, unknown]> {
    for (;;) {
      const frame = this.#reader.next();
      if (frame !== undefined) return this.#dec.decode(frame) as [number, number, unknown];
      const n = await this.#conn.read(this.#buf);
      if (n === null) throw new Error("connection closed");
      this.#reader.push(this.#buf.slice(0, n));
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.#conn.close();
    return Promise.resolve();
  }
}

Deno.test("Session answers a cancelled queued request ABORTED at once, unrun, without its own reply", async () => {
  await using srv = await startServer();
  await using holder = await connect({ ...srv.connectOptions, max: 1 });
  await holder.exec("CREATE TABLE t (v TEXT)");
  await holder.exec("BEGIN IMMEDIATE");
  const path = (srv.connectOptions as { path: string }).path;
  await using wire = new Wire(await Deno.connect({ transport: "unix", path }));
  await wire.send([Op.Hello, 1, { version: PROTOCOL_VERSION }]);
  assert.equal((await wire.reply())[0], 1);
  // 2 waits for the writer; 3 queues behind it; 4 cancels 3; 5 cancels nothing known.
  await wire.send(
    [Op.Run, 2, "INSERT INTO t VALUES ('slow')", null, null],
    [Op.Run, 3, "INSERT INTO t VALUES ('cancelled')", null, null],
  );
  await delay(30);
  await wire.send([Op.Cancel, 4, 3], [Op.Cancel, 5, 999]);
  const [id, status, body] = await wire.reply();
  assert.equal(id, 3, "the cancelled request is answered first");
  assert.equal(status & Status.Error, Status.Error);
  assert.equal((body as { code: string }).code, "ABORTED");
  await holder.exec("COMMIT");
  const [id2, status2, body2] = await wire.reply();
  assert.deepEqual([id2, status2, body2], [2, Status.Ok, [1, 1]]);
  await wire.send([Op.Query, 6, "SELECT v FROM t", null, null]);
  assert.deepEqual(await wire.reply(), [6, Status.Ok, [["v"], [["slow"]]]], "no reply for 4, 5");
});

Deno.test("errorClassOf() gives every code exactly one class, and createError() builds it", () => {
  const expected: Record<string, unknown> = {
    CONNECTION_CLOSED: ConnectionError,
    REQUEST_TIMEOUT: ConnectionError,
    ACQUIRE_TIMEOUT: ConnectionError,
    FRAME_TOO_LARGE: ProtocolError,
    FRAME_TIMEOUT: ProtocolError,
    PROTOCOL_VERSION: ProtocolError,
    AUTH: ProtocolError,
    TOO_MANY_CONNECTIONS: ProtocolError,
    ABORTED: AbortError,
  };
  for (const code of [...Object.values(ErrorCode), "SQLITE_CONSTRAINT_UNIQUE", "SQLITE_BUSY"]) {
    const cls = expected[code] ?? SqliteError;
    assert.equal(errorClassOf(code), cls, code);
    const err = createError(code, "message");
    assert.ok(err instanceof (cls as typeof Error), code);
    assert.equal(err.code, code);
    const wired = errorFromWire({ code, message: "m", sqliteCode: 19 });
    assert.ok(wired instanceof (cls as typeof Error), code);
  }
  const sqlite = errorFromWire({
    code: "SQLITE_CONSTRAINT_UNIQUE",
    message: "m",
    sqliteCode: 2067,
  });
  assert.ok(sqlite instanceof SqliteError && sqlite.sqliteCode === 2067);
});

Deno.test("Client raises FRAME_TOO_LARGE and REQUEST_TIMEOUT each as one class whatever the path", async () => {
  await using srv = await startServer({ maxFrameSize: 64 * 1024 });
  // Refused before sending (the client's own limit): ProtocolError, connection usable.
  await using small = await connect({ ...srv.connectOptions, maxFrameSize: 1024 });
  await assert.rejects(small.values("SELECT ?", ["x".repeat(2000)]), (err: unknown) => {
    assert.ok(err instanceof ProtocolError);
    assert.equal(err.code, "FRAME_TOO_LARGE");
    return true;
  });
  assert.deepEqual(await small.values("SELECT 1"), [[1]]);
  // The server's limit: the frame reader's ProtocolError ends that connection.
  const reader = new FrameReader(16);
  reader.push(new Uint8Array([0, 0, 1, 0]));
  assert.throws(() => reader.next(), (e: unknown) => e instanceof ProtocolError);
  // REQUEST_TIMEOUT: every request pending on the closed connection, same class.
  await using holder = await connect({ ...srv.connectOptions, max: 1 });
  await holder.exec("CREATE TABLE t (x); BEGIN IMMEDIATE");
  await using db = await connect({ ...srv.connectOptions, requestTimeout: 100, max: 1 });
  const results = await Promise.allSettled([
    db.run("INSERT INTO t VALUES (1)"),
    db.run("INSERT INTO t VALUES (2)"),
  ]);
  for (const r of results) {
    assert.equal(r.status, "rejected");
    const err = (r as PromiseRejectedResult).reason;
    assert.ok(err instanceof ConnectionError, String(err));
    assert.equal(err.code, "REQUEST_TIMEOUT");
  }
  await holder.exec("ROLLBACK");
});

Deno.test("Client.batch() results are held to maxResultBytes like query()", async () => {
  await using srv = await startServer({ maxResultBytes: 10_000 });
  await using db = await srv.client();
  const big = "SELECT zeroblob(20000)";
  await assert.rejects(db.batch([{ sql: big }]), { code: "RESULT_TOO_LARGE" });
  await assert.rejects(db.values(big), { code: "RESULT_TOO_LARGE" });
  assert.equal((await db.batch([{ sql: "SELECT zeroblob(100)" }]))[0].rows.length, 1);
});
