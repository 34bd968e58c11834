/**
 * The server under faults of its process's limits: few file descriptors
 * (connections, cursors and background reads fitted to the open-file
 * limit, and an open that fails for want of one says so), refusals logged
 * in full, and values bound to cached statements not kept resident.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { type Client, connect } from "../client.ts";
import { ProtocolError } from "../protocol/errors.ts";
import { Connection } from "../engine/connection.ts";
import { release } from "../engine/connection.ts";
import { LARGE_BOUND_BYTES } from "../engine/binding/binding.ts";
import { loadSqlite } from "../engine/binding/load.ts";
import { fdBudget } from "../server/connection_limit.ts";
import { tempDir } from "./_helpers.ts";

const SERVER_TS = fileURLToPath(new URL("../server.ts", import.meta.url));
const CHILD_TS = fileURLToPath(new URL("./_fd_exhaust_child.ts", import.meta.url));
const ffi = (Deno.env.get("NETSQLITE_ENGINE") ?? "ffi") !== "node";
const unix = Deno.build.os === "linux" || Deno.build.os === "darwin";

/** `deno run -A server.ts args` under `ulimit -n limit`, its standard error collected. */
function spawnServer(limit: number, args: string[]) {
  const script = `ulimit -n ${limit} && exec "$0" run -A "$@"`;
  const child = new Deno.Command("sh", {
    args: ["-c", script, Deno.execPath(), SERVER_TS, ...args],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let err = "";
  const drained = (async () => {
    for await (const s of child.stderr.pipeThrough(new TextDecoderStream())) err += s;
  })();
  let ended = false;
  child.status.then(() => ended = true);
  return {
    err: () => err,
    /** Waits until `test` holds (the server wrote what it looks for), or fails after 30 s. */
    until: async (test: () => boolean, what: string) => {
      for (const deadline = Date.now() + 30_000; !test();) {
        if (ended || Date.now() > deadline) {
          throw new Error(`Server process: ${what} not seen; stderr: ${err}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    },
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      await child.status;
      await drained;
    },
  };
}

/** The descriptors the server counted in use at start, from its warning. */
function inUseAtStart(err: string): number {
  const inUse = Number(/, (\d+) of them in use at start[:\n]/.exec(err)?.[1]);
  assert.ok(inUse > 3 && inUse < 60, err);
  return inUse;
}

Deno.test({
  name: "fault limits: under `ulimit -n 64` the server fits connections, handshakes, cursors " +
    "and background reads inside the limit, counting the descriptors in use at start: each " +
    "cursor of its share opens (no SQLITE_CANTOPEN), the next is refused with BAD_REQUEST",
  ignore: !unix,
  async fn() {
    await using dir = await tempDir();
    const sock = `${dir.path}/f.sock`;
    const engine = ffi ? "ffi" : "node";
    await using server = spawnServer(64, [
      "--db",
      `${dir.path}/f.db`,
      "--socket",
      sock,
      "--engine",
      engine,
    ]);
    await server.until(() => server.err().includes("in use at start\n"), "the fd warning");
    const inUse = inUseAtStart(server.err());
    const budget = fdBudget(10000, 64, 1024, { inUse });
    assert.ok(server.err().includes(`warn  netsqlite: ${budget.warning}\n`), server.err());
    const clients: Client[] = [];
    try {
      for (let i = 0; i < budget.connections; i++) {
        const c = await connect({ path: sock, max: 1 });
        clients.push(c);
        assert.deepEqual(await c.values("SELECT ?", [i]), [[i]]);
      }
      await clients[0].exec(
        "CREATE TABLE t (x); WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c " +
          "WHERE n < 20000) INSERT INTO t SELECT n FROM c",
      );
      const cursors: AsyncIterator<Record<string, unknown>>[] = [];
      let refused: unknown = null;
      for (let i = 0; refused === null && i <= budget.cursors; i++) {
        const it = clients[i % clients.length].iterate("SELECT x FROM t")[Symbol.asyncIterator]();
        try {
          await it.next();
          cursors.push(it);
        } catch (err) {
          refused = err;
        }
      }
      assert.equal(cursors.length, budget.cursors, String(refused));
      assert.equal((refused as { code?: string })?.code, "BAD_REQUEST", String(refused));
      // With every connection and cursor of the share open, reads and writes still run.
      assert.deepEqual(await clients[0].values("SELECT count(*) FROM t"), [[20000]]);
      await clients[0].run("INSERT INTO t VALUES (0)");
      for (const it of cursors) await it.return!(undefined);
      await assert.rejects(connect({ path: sock, max: 1 }), (err: unknown) => {
        assert.ok(err instanceof ProtocolError, String(err));
        assert.equal(err.code, "TOO_MANY_CONNECTIONS");
        return true;
      });
    } finally {
      for (const c of clients) await c.close();
    }
    assert.doesNotMatch(server.err(), /cannot accept a connection|CANTOPEN/);
  },
});

Deno.test({
  name: "fault limits: under an open-file limit too low to serve, the server says so plainly " +
    "at start, naming ulimit -n",
  ignore: !unix,
  async fn() {
    await using dir = await tempDir();
    await using server = spawnServer(44, [
      "--db",
      `${dir.path}/l.db`,
      "--socket",
      `${dir.path}/l.sock`,
      "--engine",
      ffi ? "ffi" : "node",
    ]);
    await server.until(() => server.err().includes("at the very least\n"), "the warning");
    const inUse = inUseAtStart(server.err());
    const { warning } = fdBudget(10000, 44, 1024, { inUse });
    assert.ok(server.err().includes(`warn  netsqlite: ${warning}\n`), server.err());
    assert.match(
      warning!,
      /^the open-file limit is 44 \(ulimit -n\), \d+ of them in use at start: too low to serve clients .*raise it to 1024 or more \(ulimit -n 1024\), \d+ at the very least$/,
    );
  },
});

Deno.test({
  name: "fault limits: opening a database when the process is out of descriptors fails with " +
    "SQLITE_CANTOPEN saying so",
  ignore: !unix,
  async fn() {
    await using dir = await tempDir();
    const path = `${dir.path}/e.db`;
    const db = new (await import("node:sqlite")).DatabaseSync(path);
    db.exec("CREATE TABLE t (x)");
    db.close();
    const out = await new Deno.Command("sh", {
      args: ["-c", 'ulimit -n 64 && exec "$0" run -A "$1" "$2"', Deno.execPath(), CHILD_TS, path],
      stdin: "null",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const answer = JSON.parse(text);
    assert.equal(answer.engine, ffi ? "ffi" : "node");
    assert.equal(answer.code, "SQLITE_CANTOPEN", text);
    assert.ok(answer.held > 10, text);
    assert.ok(
      answer.message.endsWith(
        "(out of file descriptors: the server reached its open-file limit, ulimit -n)",
      ),
      text,
    );
  },
});

Deno.test({
  name: "fault limits: every refused connection is logged, the last of a burst a second after " +
    "the line before it, without waiting for another refusal",
  async fn() {
    await using dir = await tempDir();
    const sock = `${dir.path}/r.sock`;
    await using server = spawnServer(4096, [
      "--db",
      `${dir.path}/r.db`,
      "--socket",
      sock,
      "--max-connections",
      "1",
    ]);
    await using _first = await (async () => {
      for (;;) {
        try {
          return await connect({ path: sock, max: 1 });
        } catch {
          await new Promise((resolve) => setTimeout(resolve, 20)); // not listening yet
        }
      }
    })();
    const burst = 7;
    for (let i = 0; i < burst; i++) {
      await assert.rejects(connect({ path: sock, max: 1 }), { code: "TOO_MANY_CONNECTIONS" });
    }
    const logged = () =>
      [...server.err().matchAll(/refused (\d+) connections?: 1 connection open/g)]
        .reduce((n, m) => n + Number(m[1]), 0);
    await server.until(() => logged() === burst, `${burst} refusals logged`);
    assert.equal(logged(), burst);
  },
});

Deno.test("fault limits: --help says that connections past --max-handshakes wait in the listen backlog", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SERVER_TS, "--help"],
    stdin: "null",
  }).output();
  const help = new TextDecoder().decode(out.stdout);
  const entry = /\n {2}--max-handshakes N .*\n(?: {20,}.*\n)*/.exec(help)?.[0] ?? "";
  assert.match(entry.replace(/\s+/g, " "), /new ones wait in the listen backlog/);
  assert.doesNotMatch(entry, /closed at once/);
  const perAddress = /\n {2}--max-handshakes-per-address N\n(?: {20,}.*\n)*/.exec(help)?.[0] ?? "";
  assert.match(perAddress.replace(/\s+/g, " "), /one more from that address is closed at once/);
});

Deno.test({
  name: "fault limits: a cached statement's large bound values are unbound once its run ends " +
    "(SQLite's copy of a BLOB is not kept resident); small ones stay bound",
  async fn() {
    await using dir = await tempDir();
    const sqlite = loadSqlite({ engine: ffi ? "ffi" : "node" });
    const conn = new Connection(sqlite, `${dir.path}/b.db`, {
      readOnly: false,
      timeout: 1000,
      cacheSize: 16,
    });
    try {
      const big = new Uint8Array(LARGE_BOUND_BYTES).fill(7);
      const text = "x".repeat(LARGE_BOUND_BYTES);
      for (const [value, kept] of [[big, false], [text, false], ["small", true]] as const) {
        const p = conn.prepare("SELECT length(?) AS n");
        p.busy++;
        p.stmt.bind([value]);
        assert.deepEqual(p.stmt.all(), [[value.length]]);
        release(p);
        assert.equal(conn.peek("SELECT length(?) AS n"), p, "kept in the cache");
        // Stepped again without binding: what it still has bound.
        assert.deepEqual(p.stmt.all(), [[kept ? value.length : null]], String(value.length));
      }
    } finally {
      conn.close();
      sqlite.close();
    }
  },
});
