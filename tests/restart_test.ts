/**
 * What a client's calls report, and what runs, when the server stops,
 * stalls or is replaced: request timeouts cancel what was sent,
 * `ConnectionError.mayHaveRun` says whether a failed call may have run, and
 * a reconnect to a server serving another database is refused. Servers run
 * as separate processes where a test stops (SIGSTOP) or kills them.
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { AbortError, connect, ConnectionError } from "../client.ts";
import { serve } from "../server.ts";
import { delay, startServerProcess, statsUntil, tempDir } from "./_helpers.ts";
import { openLink } from "../client/connection.ts";
import { resolveConnectOptions } from "../client/options.ts";
import { Op } from "../protocol/messages.ts";

/** Ends a server process with SIGTERM (a clean shutdown) and waits for it. */
async function terminate(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGCONT");
    child.kill("SIGTERM");
  } catch { /* already gone */ }
  await child.status;
}

/** Rows of `sql` read from the database file directly. */
function readFile(database: string, sql: string): unknown[] {
  const db = new DatabaseSync(database, { readOnly: true });
  try {
    return db.prepare(sql).all().map((r) => ({ ...r }));
  } finally {
    db.close();
  }
}

Deno.test("Client requestTimeout: a write that timed out on a stopped server does not run when it resumes, so its retry runs once", async () => {
  await using srv = await startServerProcess();
  await using db = await connect({ ...srv.connectOptions, requestTimeout: 300 });
  await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
  srv.child.kill("SIGSTOP");
  let resumed = false;
  try {
    const err = await db.run("INSERT INTO t (v) VALUES ('order-42')").catch((e) => e);
    assert.ok(err instanceof ConnectionError, String(err));
    assert.equal(err.code, "REQUEST_TIMEOUT");
    assert.equal(err.mayHaveRun, true);
    assert.match(
      err.message,
      /^No reply from unix:\S+ within 300 ms \(requestTimeout\): the connection was closed, and any transaction open on it will be rolled back by the server \(the call was cancelled, but if the server had already started it, it may have run\)$/,
    );
    srv.child.kill("SIGCONT");
    resumed = true;
    // The retry README advises: it runs once, and the timed-out call never does.
    assert.equal((await db.run("INSERT INTO t (v) VALUES ('order-42')")).changes, 1);
  } finally {
    if (!resumed) srv.child.kill("SIGCONT");
  }
  await db.close();
  await terminate(srv.child);
  assert.deepEqual(readFile(srv.database, "SELECT v FROM t"), [{ v: "order-42" }]);
});

Deno.test("ConnectionError.mayHaveRun: true for a call in flight when the server dies, false for one never sent", async () => {
  await using dir = await tempDir();
  const err = await connect({ path: `${dir.path}/nobody.sock` }).catch((e) => e);
  assert.ok(err instanceof ConnectionError, String(err));
  assert.equal(err.code, "CONNECTION_CLOSED");
  assert.equal(err.mayHaveRun, false);
  assert.match(err.message, /^Cannot connect to unix:\S+nobody\.sock: .*is the server running\?/);

  await using srv = await startServerProcess();
  await using db = await connect({ ...srv.connectOptions, reconnect: false, max: 2 });
  await db.exec("CREATE TABLE t (x)");
  srv.child.kill("SIGSTOP");
  const inFlight = db.run("INSERT INTO t VALUES (1)").catch((e) => e);
  await delay(50);
  await srv.kill(); // SIGKILL reaches a stopped process
  const sent = await inFlight;
  assert.ok(sent instanceof ConnectionError, String(sent));
  assert.equal(sent.code, "CONNECTION_CLOSED");
  assert.equal(sent.mayHaveRun, true);
  assert.match(
    sent.message,
    /^Connection to unix:\S+ was closed \(the call was sent: it may or may not have run\)$/,
  );
  // reconnect: false: later calls fail unsent, on the lost connection as on a new one.
  for (let i = 0; i < 2; i++) {
    const later = await db.run("INSERT INTO t VALUES (2)").catch((e) => e);
    assert.ok(later instanceof ConnectionError, String(later));
    assert.equal(later.code, "CONNECTION_CLOSED");
    assert.equal(later.mayHaveRun, false);
    assert.match(later.message, /^Connection to unix:\S+ was closed \(the call was not sent\)$/);
  }
});

Deno.test("ConnectionError.mayHaveRun: false for a call close() cancelled before it ran", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/s.sock`;
  await using server = await serve({ database: `${dir.path}/a.db`, path });
  await using holder = await connect({ path, max: 1 });
  await holder.exec("CREATE TABLE t (x)");
  await holder.exec("BEGIN IMMEDIATE");
  const db = await connect({ path });
  const waiting = db.run("INSERT INTO t VALUES (1)").catch((e) => e);
  await statsUntil({ path }, (s) => s.writer.waiting === 1, "it waits for the writer");
  await db.close();
  const err = await waiting;
  assert.ok(err instanceof ConnectionError, String(err));
  assert.equal(err.mayHaveRun, false);
  assert.match(err.message, /the call was cancelled and did not run$/);
  await holder.exec("COMMIT");
  assert.deepEqual(await holder.values("SELECT count(*) FROM t"), [[0]]);
  void server;
});

Deno.test("transaction() says the outcome is unknown when its COMMIT was in flight as the connection was lost", async () => {
  await using srv = await startServerProcess();
  await using db = await connect(srv.connectOptions);
  await db.exec("CREATE TABLE t (x)");
  const { promise: stopped, resolve: stop } = Promise.withResolvers<void>();
  const committing = db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES (1)");
    srv.child.kill("SIGSTOP"); // the COMMIT sent next is not answered
    stop();
  }).catch((e) => e);
  // (A fixed pause from the call lost the race under load: the server was killed while the
  // INSERT was still in flight.) The COMMIT is sent as fn returns, in this process.
  await stopped;
  await delay(100);
  await srv.kill();
  const err = await committing;
  assert.ok(err instanceof ConnectionError, String(err));
  assert.equal(err.mayHaveRun, true);
  assert.match(
    err.message,
    /^Cannot tell whether the transaction was committed: its COMMIT was in flight when the connection ended \(Connection to unix:\S+ was closed \(the call was sent: it may or may not have run\)\)$/,
  );
});

Deno.test("transaction() whose connection was lost before its COMMIT was sent says it was rolled back (mayHaveRun false)", async () => {
  await using srv = await startServerProcess();
  await using db = await connect(srv.connectOptions);
  await db.exec("CREATE TABLE t (x)");
  const err = await db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES (1)");
    await srv.kill();
    // The client sees the end of the connection (a fixed pause lost the race
    // on a loaded machine: the COMMIT was then sent on the dying link).
    for (let i = 0; i < 1000 && tx.inTransaction; i++) await delay(10);
    assert.equal(tx.inTransaction, false, "the client saw its connection end");
  }).catch((e) => e);
  assert.ok(err instanceof ConnectionError, String(err));
  assert.equal(err.mayHaveRun, false);
  assert.match(
    err.message,
    /^Connection was lost inside a transaction \(Connection to unix:\S+ (was closed|failed: .*)\), which the server rolled back: retry the whole transaction$/,
  );
});

Deno.test("Client refuses to reconnect to a server that now serves another database, and reconnects to one serving the same", async () => {
  await using dir = await tempDir();
  const a = `${dir.path}/a.db`;
  const b = `${dir.path}/b.db`;
  const first = await startServerProcess({ dir: dir.path, database: a });
  await using db = await connect({ ...first.connectOptions, max: 2 });
  assert.equal(db.serverInfo.database, await Deno.realPath(a));
  await db.exec("CREATE TABLE orders (v TEXT)");
  const insert = await db.prepare("INSERT INTO orders VALUES (?)");
  await insert.run(["into a"]);
  await first.kill();

  const other = await startServerProcess({ dir: dir.path, database: b });
  try {
    for (const attempt of [() => insert.run(["after switch"]), () => db.values("SELECT 1")]) {
      const err = await attempt().catch((e) => e);
      assert.ok(err instanceof ConnectionError, String(err));
      assert.equal(err.code, "CONNECTION_CLOSED");
      assert.equal(err.mayHaveRun, false);
      assert.equal(
        err.message,
        `Cannot reconnect to unix:${dir.path}/test.sock: the server there now serves ` +
          `"${await Deno.realPath(b)}", not "${await Deno.realPath(a)}" as when this client ` +
          "connected; connect a new client to use that database",
      );
    }
    const sub = await db.subscribe({ tables: ["orders"] }).catch((e) => e);
    assert.ok(sub instanceof ConnectionError, String(sub));
    assert.match(sub.message, /^Cannot reconnect to unix:/);
  } finally {
    await other.kill();
  }
  assert.deepEqual(readFile(b, "SELECT name FROM sqlite_master"), []);

  // The same database again, reached through a symbolic link: the client goes on.
  await Deno.symlink(a, `${dir.path}/link.db`);
  await using again = await startServerProcess({ dir: dir.path, database: `${dir.path}/link.db` });
  assert.equal((await insert.run(["after restart"])).changes, 1);
  assert.deepEqual(await db.values("SELECT v FROM orders"), [["into a"], ["after restart"]]);
  await insert.finalize();
  void again;
});

Deno.test("ConnectionError.mayHaveRun: false for a call the server, shutting down, said it did not run", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/s.sock`;
  const server = await serve({ database: `${dir.path}/a.db`, path });
  await using holder = await connect({ path, max: 1 });
  await using db = await connect({ path });
  await holder.exec("CREATE TABLE t (x)");
  await holder.exec("BEGIN IMMEDIATE");
  const waiting = db.run("INSERT INTO t VALUES (1)").catch((e) => e);
  await statsUntil({ path }, (s) => s.writer.waiting === 1, "it waits for the writer");
  await server.shutdown();
  const err = await waiting;
  assert.ok(err instanceof ConnectionError, String(err));
  assert.equal(err.code, "CONNECTION_CLOSED");
  assert.equal(err.mayHaveRun, false);
  assert.equal(
    err.message,
    "Server closed the connection: Server is shutting down: requests without a reply were not " +
      "run, or were stopped and undone",
  );
  assert.deepEqual(readFile(`${dir.path}/a.db`, "SELECT count(*) AS n FROM t"), [{ n: 0 }]);
});

Deno.test("Client calls while the server is down fail at once, unsent; the first call after it is back reconnects", async () => {
  await using dir = await tempDir();
  const first = await startServerProcess({ dir: dir.path });
  await using db = await connect(first.connectOptions);
  await db.exec("CREATE TABLE t (x)");
  await first.kill();
  for (let i = 0; i < 3; i++) {
    const started = performance.now();
    const err = await db.run("INSERT INTO t VALUES (1)").catch((e) => e);
    const ms = performance.now() - started;
    assert.ok(err instanceof ConnectionError, String(err));
    assert.equal(err.code, "CONNECTION_CLOSED");
    assert.equal(err.mayHaveRun, false);
    assert.match(err.message, /^Cannot connect to unix:\S+: .*\(is the server running\?/);
    assert.ok(ms < 1000, `took ${ms} ms`);
  }
  await using again = await startServerProcess({ dir: dir.path });
  assert.equal((await db.run("INSERT INTO t VALUES (2)")).changes, 1);
  assert.deepEqual(await db.values("SELECT x FROM t"), [[2]]);
  void again;
});

Deno.test("Server shutdown grace period: open connections keep working, new ones are refused", async () => {
  await using srv = await startServerProcess({ args: ["--grace-ms", "5000"] });
  await using a = await connect({ ...srv.connectOptions, max: 1 });
  await a.exec("CREATE TABLE t (x)");
  await a.exec("BEGIN IMMEDIATE");
  await a.run("INSERT INTO t VALUES (1)");
  srv.child.kill("SIGTERM");
  // Once the server has the signal, it has closed its listener and waits for
  // the transaction: new connections are refused from then on (a fixed pause
  // could end before the server had the signal, on a loaded machine).
  let err: unknown = null;
  for (let i = 0; i < 1000; i++) {
    err = await connect(srv.connectOptions).then(async (c) => {
      await c.close();
      return null;
    }, (e) => e);
    // Not yet when accepted before the signal: served, or closed by the
    // shutdown before the handshake's reply ("was closed (no request was sent)").
    if (err instanceof ConnectionError && err.message.startsWith("Cannot connect")) break;
    await delay(10);
  }
  assert.ok(err instanceof ConnectionError, String(err));
  assert.equal(err.code, "CONNECTION_CLOSED");
  assert.equal(err.mayHaveRun, false);
  assert.match(err.message, /^Cannot connect to unix:\S+: .*\(is the server running\?/);
  await a.exec("COMMIT"); // the open connection still works
  assert.equal((await srv.child.status).code, 0);
  assert.deepEqual(readFile(srv.database, "SELECT x FROM t"), [{ x: 1 }]);
});

/** Waits (up to 10 s) until `rows()`, the rows a running script inserted, is more than 0. */
async function ranSome(rows: () => number | Promise<number>): Promise<void> {
  for (let i = 0; i < 1000 && await rows() === 0; i++) await delay(10);
  assert.ok(await rows() > 0, "the script's first statements ran");
}

/**
 * A script of `n` slow inserts (one row each, counting `size` rows) after one
 * fast one: it runs for a while.
 */
function slowScript(n: number, size = 200_000): string {
  const slow = "INSERT INTO t SELECT count(*) FROM (WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL " +
    `SELECT i + 1 FROM c LIMIT ${size}) SELECT i FROM c);`;
  return "INSERT INTO t VALUES (-1);\n" + slow.repeat(n);
}

Deno.test("ConnectionError.mayHaveRun: true for a script close() stopped after some of its statements ran", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/s.sock`;
  await using server = await serve({ database: `${dir.path}/a.db`, path });
  await using setup = await connect({ path });
  await setup.exec("CREATE TABLE t (x)");
  const db = await connect({ path });
  // Short statements: the node engine cannot stop one that runs, and close()
  // waits 100 ms (CLOSE_CANCEL_MS) for the server's answer to its cancel; one
  // of 200,000 rows took 220-280 ms there on a loaded machine (it then failed
  // unanswered, without the AbortError saying how many ran).
  const running = db.exec(slowScript(20_000, 2_000)).catch((e) => e);
  // Some of its statements ran (a fixed pause could end before the first did, on a loaded machine).
  await ranSome(() => setup.values<[number]>("SELECT count(*) FROM t").then(([[n]]) => n));
  await db.close();
  const err = await running;
  assert.ok(err instanceof ConnectionError, String(err));
  assert.equal(err.mayHaveRun, true);
  const [[rows]] = await setup.values<[number]>("SELECT count(*) FROM t");
  assert.ok(rows > 0 && rows < 20_001, `rows ${rows}`);
  if (!(err.cause instanceof AbortError)) {
    // close() waits CLOSE_CANCEL_MS (100 ms) for the answer to its cancel; on a loaded machine
    // (this server shares the test's event loop) it may come later: the call then fails
    // unanswered, its outcome unknown, as close() says (seen once in CI).
    assert.equal(err.cause, undefined, String(err.cause));
    assert.equal(
      err.message,
      "Connection was closed by the client (the call was sent: it may or may not have run)",
    );
    return;
  }
  assert.equal(err.cause.ran, rows);
  assert.match(
    err.message,
    new RegExp(
      `: the call was stopped after ${rows} statement\\(s\\) of its script ran, which stay applied$`,
    ),
  );
  void server;
});

Deno.test("Server shutdown stops a running script and answers it with AbortError.ran: the statements that stay applied", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/s.sock`;
  const server = await serve({ database: `${dir.path}/a.db`, path });
  await using db = await connect({ path, reconnect: false });
  await db.exec("CREATE TABLE t (x)");
  const running = db.exec(slowScript(200)).catch((e) => e);
  // (Read through the server: the file opened directly from this process would
  // lose the server's POSIX locks when closed.)
  await using watch = await connect({ path });
  await ranSome(() => watch.values<[number]>("SELECT count(*) FROM t").then(([[n]]) => n));
  await server.shutdown({ graceMs: 50 });
  const err = await running;
  assert.ok(err instanceof AbortError, String(err));
  const [{ n }] = readFile(`${dir.path}/a.db`, "SELECT count(*) AS n FROM t") as [{ n: number }];
  assert.ok(n > 0 && n < 201, `rows ${n}`);
  assert.equal(err.ran, n);
  assert.match(err.message, /^Server is shutting down: request \d+ was stopped while it ran /);
  assert.match(err.message, new RegExp(`; the ${n} before it ran\\)$`));
});

for (const kind of ["script in a transaction", "batch"]) {
  Deno.test(`Server shutdown during a running ${kind}: AbortError.ran is 0, nothing stays`, async () => {
    await using dir = await tempDir();
    const path = `${dir.path}/s.sock`;
    const server = await serve({ database: `${dir.path}/a.db`, path });
    await using db = await connect({ path, reconnect: false, max: 1 });
    await db.exec("CREATE TABLE t (x)");
    // The script's short statements: it is stopped between two of them.
    const script = `BEGIN; ${"INSERT INTO t VALUES (1);".repeat(300_000)}`;
    const batch = Array.from({ length: 200 }, () => ({ sql: slowScript(1).split("\n")[1] }));
    // Shut down once the server has the whole request (its byte count says so) and ran it for a
    // while, however loaded the machine: before that, the shutdown would only close the connection.
    const [watch] = await openLink(await resolveConnectOptions({ path }));
    const bytesIn = async () => (await watch.request(Op.Stats, [])).bytes.in;
    const sent = (await bytesIn()) +
      (kind === "batch" ? batch.reduce((n, b) => n + b.sql.length, 0) : script.length);
    const running = (kind === "batch" ? db.batch(batch) : db.exec(script)).catch((e) => e);
    try {
      while (await bytesIn() < sent) await delay(10);
    } finally {
      watch.fail(new Error("test done"));
      await watch.ended;
    }
    await delay(50);
    await server.shutdown({ graceMs: 50 });
    const err = await running;
    // (Before: a batch failed as INTERNAL; a script reported its statements as applied.)
    assert.ok(err instanceof AbortError, String(err));
    assert.equal(err.ran, 0);
    assert.deepEqual(readFile(`${dir.path}/a.db`, "SELECT count(*) AS n FROM t"), [{ n: 0 }]);
  });
}

Deno.test("AbortError from the call's own signal leaves ran unknown (undefined): the client rejected at once", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/s.sock`;
  await using _server = await serve({ database: `${dir.path}/a.db`, path });
  await using db = await connect({ path });
  await db.exec("CREATE TABLE t (x)");
  const abort = new AbortController();
  const running = db.exec(slowScript(50), { signal: abort.signal }).catch((e) => e);
  await delay(100);
  abort.abort();
  const err = await running;
  assert.ok(err instanceof AbortError, String(err));
  assert.equal(err.ran, undefined);
});
