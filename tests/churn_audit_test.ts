/**
 * A server that runs for weeks while clients come and go must not
 * accumulate anything. Real servers (in-process `serve()`, and a separate
 * process) churned by real clients, raw sockets and client processes
 * SIGKILLed mid-work; after each churn the server must be back to its
 * baseline: its `stats` (sessions, cursors, transactions, writer queue,
 * feeds), its file descriptors, its budgets (prepared statements,
 * connections, handshakes, background reads: set tight so that one leaked
 * per client would exhaust them), its WAL (a truncating checkpoint empties
 * it), the files beside the database, and other clients' data.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { type Client, connect, type ConnectOptions } from "../client.ts";
import { Op, type StatsReport } from "../protocol/messages.ts";
import { openLink } from "../client/connection.ts";
import { resolveConnectOptions } from "../client/options.ts";
import {
  delay,
  readStdoutUntil,
  SERVE_TASK_FLAGS,
  startServer,
  startServerProcess,
  statsUntil,
  tempDir,
} from "./_helpers.ts";
import { frame, Raw } from "./_raw.ts";
import { makeCertificate } from "./_certs.ts";

const CHILD = fileURLToPath(new URL("./_churn_child.ts", import.meta.url));
const FFI = (Deno.env.get("NETSQLITE_ENGINE") ?? "ffi") !== "node";

/**
 * Open file descriptors of process `pid` (Linux): all, and the sockets among
 * them (the others are mostly database files of reader connections, which
 * the server opens on demand, up to its limit).
 */
function fds(pid: number | "self"): { all: number; sockets: number } {
  let all = 0;
  let sockets = 0;
  for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
    all++;
    try {
      if (Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`).startsWith("socket:")) sockets++;
    } catch { /* closed meanwhile */ }
  }
  return { all, sockets };
}

/** Asserts that `after` holds at most 2 sockets and 8 descriptors more than `before`. */
function assertFds(after: { all: number; sockets: number }, before: typeof after): void {
  const what = `fds ${JSON.stringify(after)} after, ${JSON.stringify(before)} before`;
  assert.ok(after.sockets <= before.sockets + 2, what);
  assert.ok(after.all <= before.all + 8, what);
}

/** {@link assertFds} for this process, within 5 s (sockets being closed may take a moment). */
async function settledFds(before: { all: number; sockets: number }): Promise<void> {
  for (const deadline = performance.now() + 5000;;) {
    try {
      return assertFds(fds("self"), before);
    } catch (err) {
      if (performance.now() > deadline) throw err;
      await delay(50);
    }
  }
}

/** Table `t` (1,000 rows of ~100 bytes), `log`, and 3 key-value entries. */
async function seed(db: Client): Promise<void> {
  await db.exec(
    "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE log (x);" +
      "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 1000) " +
      "INSERT INTO t SELECT n, hex(randomblob(50)) FROM s",
  );
  for (let k = 0; k < 3; k++) await db.kv("c").put(["k", k], { k });
}

/** Waits until the server holds nothing for any client but the `stats` session itself. */
function baseline(options: ConnectOptions, open = 1): Promise<StatsReport> {
  return statsUntil(
    options,
    (s) =>
      s.connections.open === open && s.connections.handshaking === 0 && s.cursors === 0 &&
      s.transactions.length === 0 && s.writer.waiting === 0 &&
      (s.feeds === undefined || s.feeds.queuedChanges === 0),
    "the server holds nothing for clients gone",
  );
}

Deno.test({
  name: "serve(): hundreds of clients that leave statements, cursors, transactions, " +
    "reservations, key-value lists, feeds, cancelled and timed-out calls and hellos behind " +
    "leave the server at its baseline: stats, budgets, file descriptors",
  async fn() {
    // Tight budgets: one handle, connection, handshake or background read
    // leaked per client would exhaust them within the churn.
    await using srv = await startServer({
      maxPrepared: 40,
      maxConnections: 6,
      maxHandshakes: 4,
      maxBackgroundReads: 1,
      logLevel: "error",
    });
    const options = { ...srv.connectOptions, max: 1 };
    {
      await using db = await connect(options);
      await seed(db);
    }
    const path = srv.connectOptions.path!;
    const churn: [string, () => Promise<void>][] = [
      ["open and close", async () => {
        await using db = await connect(options);
        assert.equal((await db.get<{ n: number }>("SELECT 1 AS n"))?.n, 1);
      }],
      ["prepared, never finalized", async () => {
        await using db = await connect(options);
        for (let i = 0; i < 8; i++) await (await db.prepare(`SELECT ${i} AS n`)).get();
      }],
      ["cursor read part way", async () => {
        await using db = await connect(options);
        await db.iterate("SELECT * FROM t")[Symbol.asyncIterator]().next();
      }],
      ["transaction left open", async () => {
        await using db = await connect({ ...options, max: 2 });
        const r = await db.reserve();
        await r.exec("BEGIN IMMEDIATE");
        await r.run("INSERT INTO log (x) VALUES ('doomed')");
        await r.iterate("SELECT * FROM t")[Symbol.asyncIterator]().next();
      }],
      ["key-value list read part way", async () => {
        await using db = await connect(options);
        await db.kv("c").list({ prefix: ["k"] })[Symbol.asyncIterator]().next();
      }],
      ["call aborted by its signal", async () => {
        await using db = await connect(options);
        const ac = new AbortController();
        const p = db.get("SELECT count(*) FROM t a, t b", [], { signal: ac.signal });
        setTimeout(() => ac.abort(), 1);
        await p.catch(() => {});
      }],
      ["call past its timeout", async () => {
        await using db = await connect(options);
        // (node:sqlite cannot stop it: it runs to its end, ~1M rows.)
        await db.get("SELECT count(*) FROM t a, t b", [], { timeout: 2 }).catch(() => {});
      }],
      ["no hello", async () => {
        const c = await Deno.connect({ transport: "unix", path });
        c.close();
      }],
      ["half a hello", async () => {
        const c = await Deno.connect({ transport: "unix", path });
        await c.write(frame([Op.Hello, 1, { version: 1 }]).subarray(0, 5));
        c.close();
      }],
      ["requests pipelined, then dropped", async () => {
        await using raw = await Raw.open(path);
        await raw.write(frame([Op.Prepare, 1, "SELECT 1"]));
        await raw.write(frame([Op.Iterate, 2, "SELECT * FROM t", [], null]));
        await raw.write(frame([Op.Exec, 3, "BEGIN"]));
        await raw.write(frame([Op.Run, 4, "INSERT INTO log (x) VALUES ('doomed')", [], null]));
        await raw.read();
      }],
    ];
    if (FFI) {
      churn.push(["feed left open", async () => {
        await using db = await connect(options);
        await db.subscribe({ tables: ["log"] });
      }]);
    }
    const round = async (times: number) => {
      for (const [what, fn] of churn) {
        for (let i = 0; i < times; i++) {
          // (Closes are noticed asynchronously: within the connection limit.)
          if (i % 4 === 3) await baseline(srv.connectOptions, 1);
          await fn().catch((err) => {
            throw new Error(`${what}, round ${i}: ${err}`, { cause: err });
          });
        }
      }
      return await baseline(srv.connectOptions);
    };
    // SQLite's own memory (FFI: the same library, loaded once per process):
    // statements, connections and their caches of the server.
    const lib = FFI
      ? Deno.dlopen(srv.server.sqlite.library, {
        sqlite3_memory_used: { parameters: [], result: "i64" },
      })
      : null;
    try {
      const sqliteMemory = () => Number(lib?.symbols.sqlite3_memory_used() ?? 0);
      await round(2); // warm-up: reader connections, statement caches
      const fdsBefore = fds("self");
      const memoryBefore = sqliteMemory();
      await round(20);
      await settledFds(fdsBefore);
      assert.ok(
        sqliteMemory() <= memoryBefore + 2 * 1024 * 1024,
        `SQLite holds ${sqliteMemory()} bytes after, ${memoryBefore} before`,
      );
    } finally {
      lib?.close();
    }
    // Every budget is whole again.
    await using db = await connect(options);
    const kept = [];
    for (let i = 0; i < 38; i++) kept.push(await db.prepare(`SELECT ${i}`));
    for (const s of kept) await s.finalize();
    assert.equal((await db.get<{ n: number }>("SELECT count(*) AS n FROM t"))?.n, 1000);
    assert.equal((await db.get<{ n: number }>("SELECT count(*) AS n FROM log"))?.n, 0);
    const conns = await Promise.all(Array.from({ length: 4 }, () => connect(options)));
    await Promise.all(conns.map((c) => c.get("SELECT count(*) FROM t a, t b WHERE a.id < 50")));
    await Promise.all(conns.map((c) => c.close()));
  },
});

Deno.test({
  name: "server process: client processes SIGKILLed mid-work (transaction with writes, " +
    "cursor, prepared statements, key-value list, feed, writes queued) leave it at its " +
    "baseline: stats, file descriptors, files, WAL emptied by a checkpoint, data intact",
  async fn() {
    await using srv = await startServerProcess({
      denoFlags: SERVE_TASK_FLAGS,
      args: ["--log-level", "error"],
    });
    const options = { ...srv.connectOptions, max: 1 };
    await using db = await connect(options);
    await seed(db);
    const pid = (await baseline(srv.connectOptions, 2)).pid!;
    const files = () => [...Deno.readDirSync(srv.dir)].map((e) => e.name).sort();
    const filesBefore = files();
    const kill = async (tag: number) => {
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", CHILD, JSON.stringify(options), String(tag), FFI ? "1" : "0"],
        stdin: "null",
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      const { text, drained } = await readStdoutUntil(child, "ready");
      try {
        assert.match(text, /ready/);
        await statsUntil(srv.connectOptions, (s) => s.transactions.length === 1, "its transaction");
        await delay(20 * (tag % 3)); // mid-work: its reads and queued writes
      } finally {
        child.kill("SIGKILL");
        await child.status;
        await drained;
      }
    };
    await kill(1); // warm-up
    const afterWarmUp = await baseline(srv.connectOptions, 2);
    const fdsBefore = fds(pid);
    for (let tag = 2; tag <= 6; tag++) {
      await kill(tag);
      // The writer is free at once for another client.
      await db.run("INSERT INTO log (x) VALUES ('kept')");
    }
    const after = await baseline(srv.connectOptions, 2);
    assertFds(fds(pid), fdsBefore);
    assert.ok(
      after.memory.rss < afterWarmUp.memory.rss + 64 * 1024 * 1024,
      `RSS ${after.memory.rss} after, ${afterWarmUp.memory.rss} before`,
    );
    assert.deepEqual(files(), filesBefore);
    // Nothing of the killed clients' transactions (their autocommit writes,
    // sent before they died, may have run), every write of the survivor.
    assert.deepEqual(
      await db.values("SELECT x FROM log WHERE typeof(x) = 'integer' AND x > 0"),
      [],
    );
    assert.deepEqual(await db.values("SELECT count(*) FROM log WHERE x = 'kept'"), [[5]]);
    assert.equal((await db.get<{ n: number }>("SELECT count(*) AS n FROM t"))?.n, 1000);
    // No snapshot is left pinned: a truncating checkpoint empties the WAL.
    const [link] = await openLink(await resolveConnectOptions(options), { admin: true });
    try {
      const cp = await link.request(Op.Checkpoint, ["truncate"]);
      assert.equal(cp.busy, false, JSON.stringify(cp));
      assert.equal(cp.walBytesAfter, 0, JSON.stringify(cp));
    } finally {
      link.fail(new Error("done"));
      await link.ended;
    }
  },
});

Deno.test({
  name: "Session: a client that sends a malformed frame behind a long request and is gone " +
    "has that request stopped and the ones after it dropped unrun, as at its end of stream",
  async fn() {
    // Before, after a protocol violation the server ran every request the
    // client had sent before the bad frame, for a client gone altogether:
    // the running one to its end (up to its deadline) and then each queued
    // one, the connection counted open meanwhile.
    await using srv = await startServer({ logLevel: "error" });
    {
      await using db = await connect({ ...srv.connectOptions, max: 1 });
      await seed(db);
    }
    await using raw = await Raw.open(srv.connectOptions.path!);
    // FFI: runs for seconds, in the background, where it can be stopped.
    // node:sqlite runs a statement to its end (shorter here): only the
    // requests after it are checked there.
    const slow = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c " +
      `WHERE n < ${FFI ? 30_000_000 : 1_000_000}) SELECT count(*) FROM c`;
    await raw.write(frame([Op.Query, 1, slow, [], null]));
    await raw.write(frame([Op.Run, 2, "INSERT INTO log (x) VALUES ('unrun')", [], null]));
    await raw.write(frame([Op.Run, 3, "INSERT INTO log (x) VALUES ('unrun')", [], null]));
    await raw.write(frame([Op.Query, 0, "SELECT 1", [], null])); // id 0: a protocol violation
    raw.conn.close();
    const t0 = performance.now();
    await baseline(srv.connectOptions);
    const ms = performance.now() - t0;
    await using db = await connect({ ...srv.connectOptions, max: 1 });
    assert.deepEqual(await db.values("SELECT x FROM log"), []);
    if (FFI) assert.ok(ms < 5000, `session ended after ${ms.toFixed(0)} ms`);
  },
});

const HAS_OPENSSL = await new Deno.Command("openssl", { args: ["version"], stdout: "null" })
  .output().then((o) => o.success, () => false);

Deno.test({
  name: "serve() over TLS: clients that close, drop before or after the handshake, send " +
    "bytes that are not TLS, or say hello and vanish leave the server at its baseline",
  ignore: !HAS_OPENSSL,
  async fn() {
    await using dir = await tempDir();
    const pem = await makeCertificate(dir.path);
    await using srv = await startServer({
      transport: "tcp",
      tls: { cert: pem.cert, key: pem.key },
      maxHandshakes: 4,
      maxConnections: 4,
      logLevel: "error",
    });
    const options: ConnectOptions = { ...srv.connectOptions, max: 1, tls: { caCerts: [pem.ca] } };
    const { hostname, port } = srv.connectOptions as { hostname: string; port: number };
    const tls = () => Deno.connectTls({ hostname, port, caCerts: [pem.ca] });
    const churn: [string, () => Promise<void>][] = [
      ["open and close", async () => {
        await using db = await connect(options);
        assert.equal((await db.get<{ n: number }>("SELECT 1 AS n"))?.n, 1);
      }],
      ["no TLS at all", async () => (await Deno.connect({ hostname, port })).close()],
      ["not TLS", async () => {
        const c = await Deno.connect({ hostname, port });
        await c.write(new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n")).catch(() => {});
        c.close();
      }],
      ["handshake, no hello", async () => {
        const c = await tls();
        await c.handshake();
        c.close();
      }],
      ["hello and a request, then gone", async () => {
        const c = await tls();
        await c.write(frame([Op.Hello, 1, { version: 1 }]));
        await c.write(frame([Op.Query, 2, "SELECT 1", [], null]));
        c.close();
      }],
    ];
    const round = async (times: number) => {
      for (const [what, fn] of churn) {
        for (let i = 0; i < times; i++) {
          if (i % 3 === 2) await baseline(options);
          await fn().catch((err) => {
            throw new Error(`${what}, round ${i}: ${err}`, { cause: err });
          });
        }
      }
      await baseline(options);
    };
    await round(2);
    const before = fds("self");
    await round(15);
    // (TLS sockets close a moment after their sessions end: both ends are here.)
    await settledFds(before);
    await using db = await connect(options);
    assert.equal((await db.get<{ n: number }>("SELECT 2 AS n"))?.n, 2);
  },
});
