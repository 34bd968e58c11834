/**
 * The client as a pool: transactions capture only their own statements,
 * connections open lazily up to `max`, reserved connections, raw transaction
 * control on the shared pool, array rows for duplicate column names, abort,
 * and one pooled connection lost while the others work.
 *
 * Connections are counted on the server's side of the socket by a relay
 * ({@link Relay}) that the client connects to instead of the server.
 */

import assert from "node:assert/strict";
import {
  AbortError,
  connect,
  ConnectionError,
  ProtocolError,
  type RunResult,
  SqliteError,
} from "../mod.ts";
import { startServer, statsUntil, tempDir, within } from "./_helpers.ts";
import { serve } from "../server.ts";
import type { Client } from "../client.ts";

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function track<T>(p: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
  let done = false;
  const promise = p.finally(() => done = true);
  promise.catch(() => {});
  return { promise, settled: () => done };
}

/**
 * A Unix-socket relay in front of a server: counts the connections it
 * accepts and can cut one of them, as a network failure would.
 */
class Relay implements AsyncDisposable {
  readonly path: string;
  readonly #listener: Deno.Listener;
  readonly #pairs: [Deno.Conn, Deno.Conn][] = [];
  readonly #pumps: Promise<void>[] = [];
  readonly #accepting: Promise<void>;

  constructor(path: string, target: string) {
    this.path = path;
    this.#listener = Deno.listen({ transport: "unix", path });
    this.#accepting = this.#accept(target);
  }

  /** Connections accepted so far. */
  get accepted(): number {
    return this.#pairs.length;
  }

  /** Cuts the `i`-th accepted connection (0-based) on both sides. */
  cut(i: number): void {
    for (const c of this.#pairs[i]) {
      try {
        c.close();
      } catch {
        // already closed
      }
    }
  }

  async #accept(target: string): Promise<void> {
    for await (const inbound of this.#listener) {
      const outbound = await Deno.connect({ transport: "unix", path: target });
      this.#pairs.push([inbound, outbound]);
      this.#pumps.push(pump(inbound, outbound), pump(outbound, inbound));
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    await this.#accepting.catch(() => {});
    for (let i = 0; i < this.#pairs.length; i++) this.cut(i);
    await Promise.all(this.#pumps);
  }
}

async function pump(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  try {
    for (;;) {
      const n = await from.read(buf);
      if (n === null) break;
      for (let off = 0; off < n;) off += await to.write(buf.subarray(off, n));
    }
  } catch {
    // cut or reset
  }
  for (const c of [from, to]) {
    try {
      c.close();
    } catch {
      // already closed
    }
  }
}

async function relayed(options: Parameters<typeof startServer>[0] = {}) {
  const srv = await startServer(options);
  const relay = new Relay(`${srv.dir}/relay.sock`, (srv.connectOptions as { path: string }).path);
  return {
    srv,
    relay,
    async [Symbol.asyncDispose]() {
      await relay[Symbol.asyncDispose]();
      await srv[Symbol.asyncDispose]();
    },
  };
}

Deno.test("Client.transaction() rolls back only tx statements: a concurrent plain write survives", async () => {
  await using srv = await startServer();
  await using db = await connect(srv.connectOptions);
  await db.exec("CREATE TABLE t (v TEXT)");
  let plain: Promise<RunResult> | undefined;
  let readInside: unknown;
  await assert.rejects(
    db.transaction(async (tx) => {
      await tx.run("INSERT INTO t VALUES ('tx')");
      // Other code on the same client, while the transaction is open.
      plain = db.run("INSERT INTO t VALUES ('plain')");
      await delay(50);
      readInside = await db.values("SELECT v FROM t");
      assert.deepEqual(await tx.values("SELECT v FROM t"), [["tx"]]);
      throw new Error("undo");
    }),
    /undo/,
  );
  assert.deepEqual(readInside, [], "plain reads see the committed state only");
  assert.deepEqual(await plain, { changes: 1, lastInsertRowid: 1 });
  assert.deepEqual(await db.values("SELECT v FROM t"), [["plain"]]);
});

Deno.test("Client.transaction() twice at once: two connections, each sees only its own writes", async () => {
  await using srv = await startServer();
  await using db = await connect(srv.connectOptions);
  await db.exec("CREATE TABLE t (v TEXT)");
  const events: string[] = [];
  const first = db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES ('a')");
    events.push("a wrote");
    await delay(100);
    const seen = await tx.values("SELECT v FROM t ORDER BY v");
    events.push("a commits");
    return seen;
  });
  await delay(10);
  const second = db.transaction(async (tx) => {
    events.push("b began");
    await tx.run("INSERT INTO t VALUES ('b')");
    return await tx.values("SELECT v FROM t ORDER BY v");
  });
  assert.deepEqual(await first, [["a"]], "a never sees b's row");
  assert.deepEqual(await second, [["a"], ["b"]], "b began after a committed");
  assert.deepEqual(events, ["a wrote", "a commits", "b began"]);
  assert.equal(db.connections, 2);
  assert.deepEqual(await db.values("SELECT v FROM t ORDER BY v"), [["a"], ["b"]]);
});

Deno.test("Client.transaction()'s tx refuses calls after its function settled", async () => {
  await using srv = await startServer();
  await using db = await connect(srv.connectOptions);
  await db.exec("CREATE TABLE t (v TEXT)");
  // deno-lint-ignore no-explicit-any
  let leaked: any;
  await db.transaction(async (tx) => {
    leaked = tx;
    await tx.run("INSERT INTO t VALUES ('in')");
  });
  await assert.rejects(leaked.run("INSERT INTO t VALUES ('late')"), (err: unknown) => {
    // A programming error with a code of its own, not a connection failure to retry.
    assert.ok(err instanceof SqliteError && !(err instanceof ConnectionError));
    assert.equal(err.code, "TX_ENDED");
    assert.match(err.message, /Transaction has ended/);
    return true;
  });
  assert.deepEqual(await db.values("SELECT v FROM t"), [["in"]]);
});

Deno.test("Client opens connections lazily and never more than max", async () => {
  await using env = await relayed();
  await using db = await connect({ path: env.relay.path, max: 3 });
  assert.equal(env.relay.accepted, 1, "connect() opens one connection");
  for (let i = 0; i < 20; i++) await db.values("SELECT ?", [i]);
  await Promise.all(Array.from({ length: 20 }, (_, i) => db.values("SELECT ?", [i])));
  assert.equal(env.relay.accepted, 1, "sequential calls and one burst reuse it");
  assert.equal(db.connections, 1);

  const r1 = await db.reserve();
  assert.equal(env.relay.accepted, 1, "reserve() takes the idle connection");
  assert.deepEqual(await db.values("SELECT 1"), [[1]]);
  assert.equal(env.relay.accepted, 2, "a plain call opens a second one");
  const r2 = await db.reserve();
  assert.equal(env.relay.accepted, 2, "reserve() takes the idle second connection");
  assert.deepEqual(await r2.values("SELECT 2"), [[2]]);
  // max - 1 = 2 reserved: reserve() leaves the last connection to plain calls.
  const r3 = track(db.reserve());
  await delay(50);
  assert.equal(r3.settled(), false, "a third reserve() waits");
  assert.deepEqual(await db.values("SELECT 'plain'"), [["plain"]], "plain calls never wait");
  assert.equal(env.relay.accepted, 3, "the plain call opened the third connection");
  const r4 = track(db.reserve());
  r1.release();
  const third = await r3.promise;
  await delay(20);
  assert.equal(r4.settled(), false, "first come, first served: the fourth still waits");
  assert.deepEqual(await db.values("SELECT 'still'"), [["still"]]);
  r2.release();
  const fourth = await r4.promise;
  assert.deepEqual(await third.values("SELECT 3"), [[3]]);
  third.release();
  fourth.release();
  assert.equal(env.relay.accepted, 3);
  assert.equal(db.connections, 3);
});

Deno.test("Client runs a read on another connection while its write waits for the writer", async () => {
  await using srv = await startServer();
  await using holder = await connect({ ...srv.connectOptions, max: 1 });
  await using db = await connect(srv.connectOptions);
  await holder.exec("CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('old')");
  await holder.exec("BEGIN IMMEDIATE");
  const write = track(db.run("INSERT INTO t VALUES ('new')"));
  await delay(20);
  const started = performance.now();
  assert.deepEqual(await db.values("SELECT v FROM t"), [["old"]]);
  assert.ok(performance.now() - started < 1000);
  assert.equal(write.settled(), false, "the write still waits");
  assert.equal(db.connections, 2);
  await holder.exec("COMMIT");
  assert.equal((await write.promise).changes, 1);
});

Deno.test("Client keeps a burst of calls issued without awaiting in order on one connection", async () => {
  await using srv = await startServer();
  await using db = await connect(srv.connectOptions);
  await db.exec("CREATE TABLE t (n INTEGER)");
  const sent: Promise<unknown>[] = [];
  for (let i = 0; i < 200; i++) {
    sent.push(db.run("INSERT INTO t VALUES (?)", [i]));
    sent.push(db.values("SELECT count(*) FROM t"));
  }
  const results = await Promise.all(sent);
  for (let i = 0; i < 200; i++) {
    assert.deepEqual(results[2 * i + 1], [[i + 1]], `read ${i} sees every earlier write`);
  }
  assert.equal(db.connections, 1);
});

Deno.test("Client refuses raw transaction control on its shared pool with TX_CONTROL", async () => {
  await using srv = await startServer();
  await using db = await connect(srv.connectOptions);
  await db.exec("CREATE TABLE t (v TEXT)");
  for (
    const sql of [
      "BEGIN",
      "  -- comment\n begin immediate",
      "COMMIT",
      "END TRANSACTION",
      "ROLLBACK",
      "SAVEPOINT s",
      "RELEASE s",
      "INSERT INTO t VALUES ('x'); BEGIN; INSERT INTO t VALUES ('y')",
    ]
  ) {
    await assert.rejects(db.exec(sql), (err: unknown) => {
      assert.ok(err instanceof SqliteError, sql);
      assert.equal(err.code, "TX_CONTROL");
      assert.match(err.message, /shared pool.*transaction\(\).*reserve\(\)/);
      return true;
    });
  }
  await assert.rejects(db.run("BEGIN"), { code: "TX_CONTROL" });
  await assert.rejects(db.prepare("COMMIT"), { code: "TX_CONTROL" });
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]], "nothing was sent");
  // Words inside strings, comments and trigger bodies are not statements.
  await db.exec(
    "INSERT INTO t VALUES ('BEGIN'); /* COMMIT */ " +
      "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT CASE WHEN 1 THEN 1 END; END; " +
      "INSERT INTO t VALUES ('after')",
  );
  assert.deepEqual(await db.values("SELECT v FROM t"), [["BEGIN"], ["after"]]);
  // A single-connection client is its caller's: raw BEGIN works there.
  await using one = await connect({ ...srv.connectOptions, max: 1 });
  await one.exec("BEGIN");
  await one.run("INSERT INTO t VALUES ('one')");
  assert.equal(one.inTransaction, true);
  await one.exec("ROLLBACK");
  assert.equal(one.inTransaction, false);
});

Deno.test("Client.reserve() gives raw BEGIN/COMMIT a connection of its own", async () => {
  await using srv = await startServer();
  await using db = await connect(srv.connectOptions);
  await db.exec("CREATE TABLE t (v TEXT)");
  {
    await using conn = await db.reserve();
    await conn.exec("BEGIN");
    await conn.run("INSERT INTO t VALUES ('reserved')");
    assert.equal(conn.inTransaction, true);
    assert.deepEqual(await db.values("SELECT v FROM t"), [], "outside, nothing yet");
    await conn.exec("COMMIT");
  }
  assert.deepEqual(await db.values("SELECT v FROM t"), [["reserved"]]);
  // Released inside a transaction: the connection is closed, the transaction rolled back.
  const conn = await db.reserve();
  await conn.exec("BEGIN IMMEDIATE");
  await conn.run("INSERT INTO t VALUES ('abandoned')");
  conn.release();
  await assert.rejects(conn.values("SELECT 1"), (err: unknown) => {
    assert.ok(err instanceof SqliteError && !(err instanceof ConnectionError));
    assert.equal(err.code, "RELEASED");
    assert.match(err.message, /Reserved connection was released/);
    return true;
  });
  assert.equal((await db.run("INSERT INTO t VALUES ('next')")).changes, 1);
  assert.deepEqual(await db.values("SELECT v FROM t ORDER BY rowid"), [["reserved"], ["next"]]);
});

Deno.test("Client rows with duplicate column names: objects keep the last, arrays keep all", async () => {
  await using srv = await startServer();
  await using db = await connect(srv.connectOptions);
  await db.exec(
    "CREATE TABLE a (id INTEGER PRIMARY KEY, name TEXT);" +
      "CREATE TABLE b (id INTEGER PRIMARY KEY, a_id INTEGER, name TEXT);" +
      "INSERT INTO a VALUES (1, 'ada'); INSERT INTO b VALUES (10, 1, 'book')",
  );
  const join = "SELECT a.id, a.name, b.id, b.name FROM a JOIN b ON b.a_id = a.id";
  assert.deepEqual(await db.values(join), [[1, "ada", 10, "book"]]);
  assert.deepEqual(await db.query(join), [{ id: 10, name: "book" }], "last wins");
  const [objects] = await db.batch([{ sql: join }]);
  assert.deepEqual(objects.rows, [{ id: 10, name: "book" }]);
  const [arrays] = await db.batch([{ sql: join }, { sql: "SELECT 1 AS id, 2 AS id" }], {
    arrays: true,
  }).then((r) => [r[0], r[1]]);
  assert.deepEqual(arrays.rows, [[1, "ada", 10, "book"]]);
  const stmt = await db.prepare(join);
  assert.deepEqual(stmt.columns, ["id", "name", "id", "name"]);
  assert.deepEqual(await stmt.all(), [{ id: 10, name: "book" }]);
  stmt.raw();
  assert.equal(stmt.isRaw, true);
  assert.deepEqual(await stmt.all(), [[1, "ada", 10, "book"]]);
  assert.deepEqual(await stmt.get(), [1, "ada", 10, "book"]);
  const streamed: unknown[] = [];
  for await (const row of stmt.iterate()) streamed.push(row);
  assert.deepEqual(streamed, [[1, "ada", 10, "book"]]);
  const iterated: unknown[] = [];
  for await (const row of db.iterate(join, [], { arrays: true })) iterated.push(row);
  assert.deepEqual(iterated, [[1, "ada", 10, "book"]]);
  await stmt.finalize();
});

Deno.test("Statement runs on every connection of the pool, preparing lazily on each", async () => {
  await using env = await relayed();
  await using db = await connect({ path: env.relay.path, max: 3 });
  await db.exec("CREATE TABLE t (n INTEGER)");
  const insert = await db.prepare("INSERT INTO t VALUES (?)");
  const r = await db.reserve(); // the first connection is taken: the statement must move
  const results = [];
  for (let i = 0; i < 5; i++) results.push(await insert.run([i]));
  assert.deepEqual(results.map((x) => x.changes), [1, 1, 1, 1, 1]);
  r.release();
  assert.ok(env.relay.accepted >= 2);
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[5]]);
  await insert.finalize();
  await assert.rejects(insert.run([9]), { code: "UNKNOWN_STATEMENT" });
});

Deno.test("Client loses one pooled connection while the others keep working", async () => {
  await using env = await relayed();
  await using db = await connect({ path: env.relay.path, max: 2 });
  await db.exec("CREATE TABLE t (v TEXT)");
  const reserved = await db.reserve(); // connection 0
  await db.run("INSERT INTO t VALUES ('shared')"); // opens connection 1
  assert.equal(env.relay.accepted, 2);
  const stmt = await db.prepare("SELECT count(*) FROM t");
  env.relay.cut(1);
  await delay(20);
  // The reserved connection is unaffected.
  assert.deepEqual(await reserved.values("SELECT v FROM t"), [["shared"]]);
  // The shared one reopens on its next call; the statement prepares again there.
  assert.deepEqual(await db.values("SELECT v FROM t"), [["shared"]]);
  assert.deepEqual(await stmt.values(), [[1]]);
  assert.equal(env.relay.accepted, 3);
  assert.deepEqual(await reserved.values("SELECT count(*) FROM t"), [[1]]);
  reserved.release();
  await stmt.finalize();
});

Deno.test("Client call aborted by its signal rejects at once; the server drops the queued request", async () => {
  await using srv = await startServer({ busyTimeout: 5000 });
  await using holder = await connect({ ...srv.connectOptions, max: 1 });
  await using db = await connect(srv.connectOptions);
  await holder.exec("CREATE TABLE t (v TEXT)");
  await holder.exec("BEGIN IMMEDIATE");
  await using conn = await db.reserve();
  const ac = new AbortController();
  // Both wait on the server: the first for the writer, the second behind it.
  const first = track(conn.run("INSERT INTO t VALUES ('first')"));
  const second = conn.run("INSERT INTO t VALUES ('second')", [], { signal: ac.signal });
  await delay(30);
  const started = performance.now();
  ac.abort(new Error("user gave up"));
  const err = await second.catch((e) => e);
  assert.ok(performance.now() - started < 100, "rejected at once");
  assert.ok(err instanceof AbortError);
  assert.equal(err.name, "AbortError");
  assert.equal(err.code, "ABORTED");
  assert.match(String((err.cause as Error).message), /user gave up/);
  assert.equal(first.settled(), false);
  await holder.exec("COMMIT");
  assert.equal((await first.promise).changes, 1);
  // The connection still works, and the cancelled insert never ran.
  assert.deepEqual(await conn.values("SELECT v FROM t"), [["first"]]);
  // An already aborted signal sends nothing.
  await assert.rejects(db.values("SELECT 1", [], { signal: AbortSignal.abort() }), AbortError);
});

Deno.test("Client with max: 1: transaction() inside its own raw BEGIN nests as a savepoint; reserve() is refused instead of waiting forever", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 1 });
  await db.exec("CREATE TABLE t (v TEXT)");
  await db.exec("BEGIN");
  await db.run("INSERT INTO t VALUES ('raw')");
  assert.equal(
    await db.transaction(async (tx) => {
      await tx.run("INSERT INTO t VALUES ('kept')");
      return 7;
    }),
    7,
  );
  await assert.rejects(
    db.transaction(async (tx) => {
      await tx.run("INSERT INTO t VALUES ('undone')");
      throw new Error("inner");
    }),
    /inner/,
  );
  assert.equal(db.inTransaction, true, "the raw transaction is still open");
  await assert.rejects(db.reserve(), { code: "TX_CONTROL" });
  await db.exec("COMMIT");
  assert.deepEqual(await db.values("SELECT v FROM t"), [["raw"], ["kept"]]);
  assert.equal(await db.transaction(() => Promise.resolve(8)), 8);
});

Deno.test("Client closes a shared connection a missed BEGIN left in a transaction, so nothing falls into it", async () => {
  await using srv = await startServer();
  await using db = await connect(srv.connectOptions);
  await using other = await connect(srv.connectOptions);
  // A column named "begin" hides the BEGIN statement from the client's scan
  // (it reads the column as a trigger body); the server's reply gives it away.
  const sql = "CREATE TABLE t (trigger INTEGER, begin INTEGER); BEGIN";
  const burst = [db.exec(sql), db.run("INSERT INTO t VALUES (1, 1)")];
  const [opened, queued] = await Promise.allSettled(burst);
  assert.equal(opened.status, "rejected");
  const err = (opened as PromiseRejectedResult).reason;
  assert.ok(err instanceof SqliteError, String(err));
  assert.equal(err.code, "TX_CONTROL");
  assert.match(err.message, /connection was closed and the transaction rolled back/);
  assert.equal(queued.status, "rejected", "the write sent behind it was not acknowledged");
  assert.ok((queued as PromiseRejectedResult).reason instanceof ConnectionError);
  // Its writes were rolled back with the transaction; the client goes on.
  assert.deepEqual(await other.values("SELECT count(*) FROM t"), [[0]]);
  assert.equal((await db.run("INSERT INTO t VALUES (2, 2)")).changes, 1);
  assert.deepEqual(await other.values("SELECT trigger FROM t"), [[2]]);
  assert.equal(db.inTransaction, false);
});

Deno.test("Client with max: 1: plain calls from inside transaction() join it; calls from elsewhere wait for it", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 1 });
  await db.exec("CREATE TABLE t (v TEXT)");
  let outside: Promise<RunResult> | undefined;
  let outsideDone = false;
  // Other code on the same client, started outside the transaction's function.
  setTimeout(() => {
    outside = db.run("INSERT INTO t VALUES ('outside')");
    outside.then(() => outsideDone = true, () => {});
  }, 20);
  await assert.rejects(
    db.transaction(async (tx) => {
      await db.run("INSERT INTO t VALUES ('inside via db')");
      await db.transaction(async (inner) => {
        await inner.run("INSERT INTO t VALUES ('nested')");
      });
      await assert.rejects(db.reserve(), { code: "TX_CONTROL" });
      await delay(50);
      assert.equal(outsideDone, false, "the outside call waits for the transaction");
      assert.deepEqual(await tx.values("SELECT v FROM t ORDER BY rowid"), [["inside via db"], [
        "nested",
      ]]);
      throw new Error("undo");
    }),
    /undo/,
  );
  assert.equal((await outside)!.changes, 1);
  assert.deepEqual(await db.values("SELECT v FROM t"), [["outside"]]);
});

Deno.test("Client call waiting for a free connection rejects at once when aborted, and never runs", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 1 });
  await db.exec("CREATE TABLE t (v TEXT)");
  const conn = await db.reserve();
  const ac = new AbortController();
  const waiting = db.run("INSERT INTO t VALUES ('never')", [], { signal: ac.signal });
  await delay(20);
  ac.abort();
  await assert.rejects(waiting, { name: "AbortError", code: "ABORTED" });
  conn.release();
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]]);
});

Deno.test("Client pool at a full server (TOO_MANY_CONNECTIONS): calls and reserve() go on over the connections it has", async () => {
  await using srv = await startServer({ maxConnections: 2 });
  await using other = await srv.client(); // the server's second connection
  await using db = await connect({ ...srv.connectOptions, max: 4 });
  await db.exec("CREATE TABLE t (x)");
  const slow = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 200000) " +
    "SELECT count(*) FROM c";
  // The first connection is busy: the next calls would open a second one,
  // which the server refuses; they wait for the first instead of failing.
  const busy = db.values(slow);
  await delay(1);
  const later = await Promise.all([db.values("SELECT 1"), db.run("INSERT INTO t VALUES (1)")]);
  assert.deepEqual(later[0], [[1]]);
  assert.equal(later[1].changes, 1);
  assert.deepEqual(await busy, [[200000]]);
  assert.equal(db.connections, 1, "the refused connection is not kept");
  // reserve() while the only connection is busy: refused too, so it waits for it.
  const busyAgain = db.values(slow);
  await delay(1);
  const tx = await db.reserve();
  assert.deepEqual(await busyAgain, [[200000]]);
  assert.deepEqual(await tx.values("SELECT count(*) FROM t"), [[1]]);
  tx.release();
  // The other client connecting anew is refused with a clear error.
  await assert.rejects(
    connect({ ...srv.connectOptions, max: 1 }),
    (err: unknown) => {
      assert.ok(err instanceof ProtocolError, String(err));
      assert.equal(err.code, "TOO_MANY_CONNECTIONS");
      assert.match(err.message, /already serves 2 connections \(--max-connections\)/);
      return true;
    },
  );
  assert.deepEqual(await other.values("SELECT 2"), [[2]], "the connections open go on");
});

Deno.test("Client pool: a call made while a new connection opens runs on it once it is up", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  await db.exec("CREATE TABLE t (x)");
  // The transaction holds the first connection; the first plain call opens
  // the second, and another, a few microtasks later, must not wait for the
  // transaction (which waits for both).
  const got = await db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES (1)");
    const a = db.values("SELECT 1");
    await Promise.resolve();
    await Promise.resolve();
    await Promise.resolve();
    const b = db.values("SELECT 2");
    return await Promise.all([a, b]);
  });
  assert.deepEqual(got, [[[1]], [[2]]]);
  assert.equal(db.connections, 2);
});

Deno.test("Client pool at a full server: with no free connection of its own, opening is retried a moment; the server's room is used once it has some", async () => {
  await using srv = await startServer({ maxConnections: 2 });
  const other = await srv.client();
  {
    await using db = await connect({ ...srv.connectOptions, max: 4 });
    await db.exec("CREATE TABLE t (x)");
    const refused = (await statsUntil(srv.connectOptions, () => true, "stats")).connections.refused;
    // Inside the transaction the plain call needs a second connection.
    const tx = db.transaction(async (tx) => {
      await tx.run("INSERT INTO t VALUES (1)");
      return await db.values("SELECT 42");
    }).then((got) => ({ got }), (error) => ({ error }));
    // A slot is freed while db retries: once the server refused it (a pause
    // instead could end before the first try, or after the last, on a loaded machine).
    await statsUntil(srv.connectOptions, (s) => s.connections.refused > refused, "db was refused");
    await other.close();
    assert.deepEqual(await tx, { got: [[42]] });
  }
  // Full again, and nothing frees up: after the retries the call fails, clearly.
  // The server notices db's closed connections (it takes a moment, longer on a loaded machine).
  await statsUntil(
    srv.connectOptions,
    (s) => s.connections.open - (s.connections.admin ?? 0) === 0,
    "db's connections are closed",
  );
  await using hog = await srv.client();
  await using db = await connect({ ...srv.connectOptions, max: 4 });
  await assert.rejects(
    db.transaction(async () => await db.values("SELECT 1")),
    (err: unknown) => err instanceof ProtocolError && err.code === "TOO_MANY_CONNECTIONS",
  );
  assert.deepEqual(await hog.values("SELECT 1"), [[1]]);
  assert.deepEqual(await db.values("SELECT 2"), [[2]]);
});

Deno.test("Client pool at a full server: a connection released inside a transaction is replaced for the waiter, whose first call works", async () => {
  await using srv = await startServer({ maxConnections: 3 });
  await using db = await connect({ ...srv.connectOptions, max: 3 });
  await db.exec("CREATE TABLE t (x)");
  const a = await db.reserve();
  const b = await db.reserve();
  await db.values("SELECT 1"); // the third connection, kept for plain calls: the server is full
  const waiting = db.reserve();
  await a.exec("BEGIN");
  await a.run("INSERT INTO t VALUES (1)");
  a.release(); // inside a transaction: closed (rolled back), replaced
  const c = await waiting;
  assert.deepEqual(await c.values("SELECT count(*) FROM t"), [[0]]);
  c.release();
  b.release();
});

Deno.test("Client pool after a server restart into a full server: calls go over the connection it gets back", async () => {
  await using dir = await tempDir();
  const opts = { database: `${dir.path}/d.db`, path: `${dir.path}/s.sock`, maxConnections: 3 };
  let server = await serve(opts);
  const db = await connect({ path: opts.path, max: 3 });
  let other: Client | null = null;
  try {
    const slow =
      "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 100000) " +
      "SELECT count(*) FROM c";
    await Promise.all([db.values(slow), db.values(slow), db.values(slow)]);
    const burst = [];
    for (let i = 0; i < 3; i++) {
      burst.push(db.values(slow));
      await delay(0);
    }
    await Promise.all(burst);
    // (With node:sqlite the server is busy during the slow reads: fewer may open.)
    assert.ok(db.connections >= 2, `${db.connections} connections`);
    await server.shutdown();
    server = await serve(opts);
    other = await connect({ path: opts.path, max: 3 });
    const [r1, r2] = [await other.reserve(), await other.reserve()];
    await Promise.all([r1.values("SELECT 1"), r2.values("SELECT 1")]); // 2 of 3 slots taken
    for (let round = 0; round < 3; round++) {
      const calls = [];
      for (let i = 0; i < 3; i++) {
        calls.push(db.values(i === 0 ? slow : "SELECT 1"));
        await delay(0);
      }
      await Promise.all(calls); // none fails with TOO_MANY_CONNECTIONS
    }
    assert.equal(db.connections, 1, "the refused connections left the pool");
    r1.release();
    r2.release();
  } finally {
    await db.close();
    await other?.close();
    await server.shutdown();
  }
});

Deno.test("Client with acquireTimeout: a call, reserve() and transaction() waiting for a connection reject with ACQUIRE_TIMEOUT, and nothing runs", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 2, acquireTimeout: 100 });
  await db.exec("CREATE TABLE t (v TEXT)");
  // One connection reserved (reserve() holds at most max - 1), holding the
  // writer; the other carries a write waiting for it: a read has none to use.
  const a = await db.reserve();
  await a.exec("BEGIN IMMEDIATE");
  const blocked = db.run("INSERT INTO t VALUES ('waited')");
  await statsUntil(srv.connectOptions, (s) => s.writer.waiting === 1, "the write waits");
  let ran = false;
  const started = performance.now();
  const results = await within(
    Promise.allSettled([
      db.values("SELECT 'never'", [], { timeout: 50 }),
      db.reserve(),
      db.transaction(() => {
        ran = true;
        return Promise.resolve();
      }),
    ]),
    3000,
  );
  const took = performance.now() - started;
  assert.notEqual(results, "timeout", "still waiting after 3 s");
  if (results === "timeout") return;
  for (const [i, r] of results.entries()) {
    assert.equal(r.status, "rejected");
    const err = (r as PromiseRejectedResult).reason;
    assert.ok(err instanceof ConnectionError, String(err));
    assert.equal(err.code, "ACQUIRE_TIMEOUT");
    // The read found both busy; reserve() and transaction() may hold only max - 1.
    assert.match(
      err.message,
      i === 0
        ? /within acquireTimeout \(100 ms\): all 2 are reserved or busy$/
        : /within acquireTimeout \(100 ms\): reserve\(\) and transaction\(\) hold at most 1 of its 2 \(max − 1: one is left for plain calls\), and those are reserved or busy$/,
    );
  }
  assert.ok(took >= 90 && took < 2000, `gave up after ${took} ms`);
  assert.equal(ran, false);
  // The callers that gave up hold nothing: the connections serve the next callers.
  await a.exec("ROLLBACK");
  a.release();
  assert.equal((await blocked).changes, 1);
  const again = await db.reserve();
  assert.deepEqual(await again.values("SELECT count(*) FROM t"), [[1]]);
  again.release();
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[1]]);
  assert.ok(db.connections <= 2);
});

Deno.test("Client with max: 1 and acquireTimeout: a call waiting for the one connection says so in the singular", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 1, acquireTimeout: 100 });
  const held = await db.reserve();
  const err = await db.values("SELECT 1").then(() => null, (e) => e);
  assert.ok(err instanceof ConnectionError, String(err));
  assert.equal(err.code, "ACQUIRE_TIMEOUT");
  assert.match(
    err.message,
    /within acquireTimeout \(100 ms\): its one connection \(max: 1\) is reserved or busy$/,
  );
  held.release();
  assert.deepEqual(await db.values("SELECT 1"), [[1]]);
});

Deno.test("Client.reserve() and transaction() waiting for a connection reject at once with AbortError when their signal aborts", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  await db.exec("CREATE TABLE t (v TEXT)");
  const a = await db.reserve(); // max - 1: the next reserve() waits
  const ac = new AbortController();
  let ran = false;
  const reserving = track(db.reserve({ signal: ac.signal }));
  const transacting = track(db.transaction(async (tx) => {
    ran = true;
    await tx.run("INSERT INTO t VALUES ('never')");
  }, { signal: ac.signal }));
  await delay(20);
  assert.equal(reserving.settled() || transacting.settled(), false, "both wait");
  ac.abort(new Error("user left"));
  await within(Promise.allSettled([reserving.promise, transacting.promise]), 1000);
  assert.ok(reserving.settled() && transacting.settled(), "both gave up at once");
  for (const p of [reserving.promise, transacting.promise]) {
    await assert.rejects(p, (err: unknown) => {
      assert.ok(err instanceof AbortError);
      assert.equal(err.code, "ABORTED");
      assert.equal((err.cause as Error).message, "user left");
      return true;
    });
  }
  // An aborted signal refuses at once, even with a connection free.
  a.release();
  await assert.rejects(db.reserve({ signal: ac.signal }), AbortError);
  await assert.rejects(db.transaction(() => Promise.resolve(), { signal: ac.signal }), AbortError);
  // The released connection went to nobody who gave up: the next reserve() gets one.
  const c1 = await db.reserve();
  c1.release();
  assert.equal(ran, false);
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]]);
});

Deno.test("connect() checks acquireTimeout", async () => {
  await using srv = await startServer();
  await assert.rejects(
    connect({ ...srv.connectOptions, acquireTimeout: -1 }),
    RangeError,
  );
  await assert.rejects(
    connect({ ...srv.connectOptions, acquireTimeout: "100" as unknown as number }),
    /Invalid option "acquireTimeout": expected an integer, got "100"/,
  );
});

Deno.test("Client pool sends a read to a connection whose calls do not wait for the writer, not behind a write that does", async () => {
  await using srv = await startServer();
  await using holder = await connect({ ...srv.connectOptions, max: 1 });
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  await holder.exec("CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('old'), ('older')");
  await holder.exec("BEGIN IMMEDIATE");
  const write = track(db.run("INSERT INTO t VALUES ('new')")); // first connection: waits
  await statsUntil(srv.connectOptions, (s) => s.writer.waiting === 1, "the write waits");
  // A cursor left open keeps the second connection busy, with no write on it.
  const rows = db.iterate<{ v: string }>("SELECT v FROM t");
  assert.deepEqual((await rows.next()).value, { v: "old" });
  assert.equal(db.connections, 2);
  // No bound on the read's time (a loaded machine can stall for seconds):
  // had it gone behind the write, it would have been answered only once the
  // write failed with BUSY_TIMEOUT, which the next line tells.
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[2]]);
  assert.equal(write.settled(), false, "the write still waits");
  await rows.return(undefined);
  await holder.exec("COMMIT");
  assert.equal((await write.promise).changes, 1);
});

Deno.test("Client pool: writes waiting for the writer leave a connection for reads, which are answered at once", async () => {
  await using srv = await startServer();
  await using holder = await connect({ ...srv.connectOptions, max: 1 });
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  await holder.exec("CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('old')");
  await holder.exec("BEGIN IMMEDIATE");
  const first = track(db.run("INSERT INTO t VALUES ('a')"));
  await statsUntil(srv.connectOptions, (s) => s.writer.waiting === 1, "the first write waits");
  const abort = new AbortController();
  const second = track(db.run("INSERT INTO t VALUES ('b')", [], { signal: abort.signal }));
  // A moment in which the pool could open another connection for it, which
  // it must not (a pause before a check that something did not happen: any
  // length passes a right pool).
  await delay(20);
  assert.equal(db.connections, 1, "the second write went behind the first, which waits");
  // No bound on the read's time: had it gone behind the writes, it would
  // have been answered only once they failed with BUSY_TIMEOUT (the checks
  // of the connections and of the first write tell).
  assert.deepEqual(await db.values("SELECT v FROM t"), [["old"]]);
  assert.equal(db.connections, 2, "the read took the connection kept free of writes");
  abort.abort();
  await assert.rejects(second.promise, AbortError);
  assert.equal(first.settled(), false, "the first write still waits");
  await holder.exec("COMMIT");
  assert.equal((await first.promise).changes, 1);
  assert.deepEqual(await db.values("SELECT v FROM t ORDER BY v"), [["a"], ["old"]]);
});

Deno.test("Client pool: a plain read inside transaction(fn) is answered while the client's other writes wait for that transaction", async () => {
  await using srv = await startServer({ busyTimeout: 3000 });
  await using db = await connect(srv.connectOptions); // max 4
  await db.exec(
    "CREATE TABLE t (v TEXT); CREATE TABLE cfg (v INTEGER); INSERT INTO cfg VALUES (1)",
  );
  let writes: Promise<unknown>[] = [];
  await db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES ('tx')");
    // Three handlers write meanwhile, each from a tick of its own: they wait for this transaction.
    writes = ["a", "b", "c"].map((v, i) =>
      delay(i).then(() => db.run("INSERT INTO t VALUES (?)", [v]))
    );
    await delay(30);
    assert.deepEqual(await db.values("SELECT v FROM cfg"), [[1]]);
  });
  // Had the read gone behind one of the writes, which wait for this
  // transaction, that write would have failed with BUSY_TIMEOUT (3 s) before
  // the read was answered (no bound on the read's time: a loaded machine can
  // stall for seconds).
  await Promise.all(writes);
  assert.deepEqual(await db.values("SELECT v FROM t ORDER BY v"), [["a"], ["b"], ["c"], ["tx"]]);
});

Deno.test("ReservedConnection disposed while its COMMIT is in flight (returned, not awaited): the COMMIT succeeds and the connection goes back to the pool", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  await db.exec("CREATE TABLE t (v TEXT)");
  async function save(v: string): Promise<void> {
    await using conn = await db.reserve();
    await conn.exec("BEGIN");
    await conn.run("INSERT INTO t VALUES (?)", [v]);
    return conn.exec("COMMIT");
  }
  await save("a");
  await save("b");
  assert.deepEqual(await db.values("SELECT v FROM t ORDER BY v"), [["a"], ["b"]]);
  assert.equal(db.connections, 1, "the connection was pooled, not closed");
});

Deno.test("ReservedConnection released with a write in flight inside BEGIN: the write is answered, then the transaction is rolled back", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  await db.exec("CREATE TABLE t (v TEXT)");
  const conn = await db.reserve();
  await conn.exec("BEGIN");
  const write = conn.run("INSERT INTO t VALUES ('gone')");
  conn.release();
  assert.equal((await write).changes, 1);
  await delay(20);
  assert.deepEqual(await db.values("SELECT v FROM t"), []);
  assert.equal((await db.run("INSERT INTO t VALUES ('next')")).changes, 1);
  assert.deepEqual(await db.values("SELECT v FROM t"), [["next"]]);
});

Deno.test("Client.close() cancels a plain write waiting for the writer: it fails as not run, and never runs", async () => {
  await using srv = await startServer();
  await using holder = await connect({ ...srv.connectOptions, max: 1 });
  const db = await connect({ ...srv.connectOptions, max: 2 });
  await holder.exec("CREATE TABLE t (v TEXT)");
  await holder.exec("BEGIN IMMEDIATE");
  const write = track(db.run("INSERT INTO t VALUES ('late')"));
  await delay(20);
  const started = performance.now();
  await db.close();
  assert.ok(performance.now() - started < 500, "close() stays fast");
  await assert.rejects(write.promise, (err: Error) => {
    assert.ok(err instanceof ConnectionError);
    assert.match(err.message, /did not run/);
    return true;
  });
  await holder.exec("COMMIT");
  await delay(20);
  assert.deepEqual(await holder.values("SELECT v FROM t"), []);
});

Deno.test("Client pool: a write that waited in the pool for a connection keeps to the max − 1 rule; a plain read inside transaction(fn) is answered at once", async () => {
  await using srv = await startServer({ busyTimeout: 3000 });
  await using db = await connect({ ...srv.connectOptions, max: 4 });
  await db.exec("CREATE TABLE t (x)");
  const bg: Promise<unknown>[] = [];
  await db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES (0)");
    for (let i = 1; i <= 2; i++) {
      await delay(5);
      bg.push(db.run("INSERT INTO t VALUES (?)", [i])); // wait for this transaction
    }
    await delay(5);
    bg.push(db.get("SELECT 1 AS a")); // opens the 4th connection
    await null;
    bg.push(db.get("SELECT 2 AS b")); // waits in the pool while it opens
    await null;
    bg.push(db.run("INSERT INTO t VALUES (3)")); // waits in the pool behind it
    await delay(5);
    assert.deepEqual(await db.get("SELECT count(*) AS n FROM t"), { n: 0 });
  });
  // Had the read gone behind a queued write, which waits for this
  // transaction, that write would have failed with BUSY_TIMEOUT (3 s) first.
  assert.equal((await Promise.all(bg)).length, 5);
  assert.deepEqual(await db.values("SELECT x FROM t ORDER BY x"), [[0], [1], [2], [3]]);
});

Deno.test("Client pool: a burst [read, write] does not take the last connection free of writes; the burst keeps its order", async () => {
  await using srv = await startServer({ busyTimeout: 3000 });
  await using db = await connect({ ...srv.connectOptions, max: 4 });
  await db.exec("CREATE TABLE t (x)");
  const bg: Promise<unknown>[] = [];
  let burst: Promise<unknown[]> = Promise.resolve([]);
  await db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES (0)");
    for (let i = 1; i <= 3; i++) {
      await delay(5);
      bg.push(db.run("INSERT INTO t VALUES (?)", [i]));
    }
    await delay(5);
    // A handler reading and writing together, then reading its own write.
    burst = Promise.all([
      db.values("SELECT count(*) FROM t"),
      db.run("INSERT INTO t VALUES (9)"),
      db.values("SELECT count(*) FROM t WHERE x = 9"),
    ]);
    await delay(5);
    assert.deepEqual(await db.get("SELECT count(*) AS n FROM t"), { n: 0 });
  });
  // Had the read gone behind the burst's write, which waits for this
  // transaction, that write would have failed with BUSY_TIMEOUT (3 s) first.
  await Promise.all(bg);
  const [before, , after] = await burst;
  assert.deepEqual(before, [[0]], "the burst's first read ran before its write");
  assert.deepEqual(after, [[1]], "the burst's last read saw its write");
});

Deno.test("Client with max: 1: transaction() and reserve() issued right after a raw BEGIN not awaited nest in it and are refused with TX_CONTROL, instead of waiting forever", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 1 });
  await db.exec("CREATE TABLE t (v TEXT)");
  const begun = db.exec("BEGIN"); // not awaited (a better-sqlite3 habit)
  const reserving = db.reserve().catch((e) => e);
  const nested = db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES ('nested')");
    return 1;
  });
  await begun;
  assert.equal(await within(nested, 2000), 1);
  const refused = await within(reserving, 2000);
  assert.ok(refused instanceof SqliteError, String(refused));
  assert.equal(refused.code, "TX_CONTROL");
  assert.equal(db.inTransaction, true, "the raw transaction is still open");
  await db.exec("ROLLBACK");
  assert.deepEqual(await db.values("SELECT v FROM t"), [], "the savepoint was inside the BEGIN");
});

Deno.test("Client with max: 1: a transaction() already waiting when another caller sends a raw BEGIN waits for that transaction to end, not nests in it", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 1 });
  await db.exec("CREATE TABLE t (who TEXT)");
  // The one connection is busy a moment; B's transaction() waits for it.
  const slow = db.get(
    "SELECT count(*) FROM (WITH RECURSIVE c(n) AS (VALUES(1) UNION ALL SELECT n+1 FROM c " +
      "WHERE n < 300000) SELECT n FROM c)",
  );
  const b = db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES ('B')");
  });
  await delay(1);
  // A, later: a raw transaction it then rolls back.
  await db.exec("BEGIN");
  await db.run("INSERT INTO t VALUES ('A')");
  await db.exec("ROLLBACK");
  await slow;
  await b;
  // Before, B nested in A's transaction: acknowledged, then rolled back with it.
  assert.deepEqual(await db.values("SELECT who FROM t"), [["B"]]);
});
