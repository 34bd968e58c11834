/**
 * Reads that went to the background run on reader connections of their
 * own, at most `maxBackgroundReads` at once; more wait in line, within their
 * deadline and cancellable (FFI engine: node:sqlite runs every read inline,
 * so these tests are skipped there).
 */

import assert from "node:assert/strict";
import { AbortError, type Client, type SqliteError } from "../mod.ts";
import { startServer, type TestServer } from "./_helpers.ts";

const FFI = Deno.env.get("NETSQLITE_ENGINE") !== "node";
const ignore = !FFI || Deno.build.os !== "linux"; // (descriptors counted in /proc/self/fd)

/** Counts to `n` (about 0.4 s per million here), past the 2 ms inline budget. */
function countTo(n: number): string {
  return `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ${n}) ` +
    "SELECT count(*) FROM c";
}

/** Never ends: stopped by its deadline. */
const ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) " +
  "SELECT count(*) FROM c";

/** Descriptors this process holds open on `file` (the server runs in-process). */
function descriptorsOn(file: string): number {
  const target = Deno.realPathSync(file);
  let n = 0;
  for (const e of Deno.readDirSync("/proc/self/fd")) {
    try {
      if (Deno.readLinkSync(`/proc/self/fd/${e.name}`) === target) n++;
    } catch {
      // closed meanwhile (the directory's own descriptor)
    }
  }
  return n;
}

/** Samples {@link descriptorsOn} every few ms until `stop()`: the most seen. */
function watchDescriptors(file: string): { stop(): number } {
  let most = descriptorsOn(file);
  const timer = setInterval(() => most = Math.max(most, descriptorsOn(file)), 5);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(most, descriptorsOn(file));
    },
  };
}

async function clients(srv: TestServer, n: number): Promise<Client[]> {
  return await Promise.all(Array.from({ length: n }, () => srv.client()));
}

function expectCode(code: string, message?: RegExp): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof Error, String(err));
    assert.equal((err as SqliteError).code, code, (err as Error).message);
    if (message !== undefined) assert.match((err as Error).message, message);
    return true;
  };
}

/** Two clients each holding a reader with a read stopped by its deadline after `ms`. */
async function holdReaders(
  srv: TestServer,
  ms: number,
): Promise<{ held: Promise<unknown[]> } & AsyncDisposable> {
  const holders = await clients(srv, 2);
  const held = Promise.all(
    holders.map((c) =>
      assert.rejects(c.values(ENDLESS, [], { timeout: ms }), expectCode("STATEMENT_TIMEOUT"))
    ),
  );
  await new Promise((r) => setTimeout(r, 150)); // both in the background now
  return {
    held,
    async [Symbol.asyncDispose]() {
      await held;
      for (const c of holders) await c.close();
    },
  };
}

Deno.test({
  name: "Background reads: N concurrent slow reads all succeed, at most maxBackgroundReads " +
    "reader connections open at once",
  ignore,
  fn: async () => {
    await using srv = await startServer({ synchronous: "normal", maxBackgroundReads: 2 });
    const all = await clients(srv, 6);
    try {
      await all[0].exec("CREATE TABLE t (x)"); // the file exists, with WAL
      const before = descriptorsOn(srv.database);
      const watch = watchDescriptors(srv.database);
      const counts = await Promise.all(all.map((c, i) => c.values(countTo(300_000 + i))));
      const most = watch.stop();
      assert.deepEqual(counts, all.map((_, i) => [[300_000 + i]]));
      // Each reader holds one descriptor on the database file (and one on its WAL).
      assert.ok(most - before >= 1, `no reader seen: ${before} -> ${most}`);
      assert.ok(most - before <= 2, `${most - before} readers open at once, cap 2`);
    } finally {
      for (const c of all) await c.close();
    }
  },
});

Deno.test({
  name: "Background reads: a read waiting for a reader stops at its deadline with " +
    "STATEMENT_TIMEOUT, unrun; the line then moves on",
  ignore,
  fn: async () => {
    await using srv = await startServer({ synchronous: "normal", maxBackgroundReads: 2 });
    await using db = await srv.client();
    {
      await using hold = await holdReaders(srv, 1500);
      const t = performance.now();
      // Alone it takes some 30 ms: it fails only for having waited.
      await assert.rejects(
        db.values(countTo(100_000), [], { timeout: 300 }),
        expectCode("STATEMENT_TIMEOUT", /after 300 ms .*waited all that time for a reader/),
      );
      const took = performance.now() - t;
      assert.ok(took >= 280 && took < 1000, `took ${took} ms`);
      await hold.held;
    }
    // Readers are free again: the same read runs.
    assert.deepEqual(await db.values(countTo(100_000), [], { timeout: 5000 }), [[100_000]]);
  },
});

Deno.test({
  name: "Background reads: a read cancelled while it waits for a reader is ABORTED, unrun, " +
    "and its connection is served at once",
  ignore,
  fn: async () => {
    await using srv = await startServer({ synchronous: "normal", maxBackgroundReads: 2 });
    await using db = await srv.client();
    await using hold = await holdReaders(srv, 2000);
    const ac = new AbortController();
    const waiting = db.values(countTo(100_000), [], { signal: ac.signal, timeout: 5000 });
    setTimeout(() => ac.abort(), 300);
    await assert.rejects(waiting, (err: unknown) => err instanceof AbortError);
    // The server took it out of line: the next request on the connection is
    // answered while both readers are still held (not after them).
    const t = performance.now();
    assert.deepEqual(await db.values("SELECT 42"), [[42]]);
    assert.ok(performance.now() - t < 800, `waited ${performance.now() - t} ms`);
    await hold.held;
  },
});

Deno.test({
  name: "Background reads: a client closing while its read waits, and a shutdown with reads " +
    "waiting, leave nothing behind",
  ignore,
  fn: async () => {
    const srv = await startServer({
      synchronous: "normal",
      maxBackgroundReads: 2,
      graceMs: 100,
    });
    const [gone, next, last] = await clients(srv, 3);
    try {
      {
        await using hold = await holdReaders(srv, 1000);
        const lost = gone.values(countTo(100_000)).catch((e) => e);
        const served = next.values(countTo(100_001), [], { timeout: 5000 });
        await new Promise((r) => setTimeout(r, 100));
        await gone.close(); // its read leaves the line
        assert.ok((await lost) instanceof Error);
        await hold.held;
        // The reader freed goes to the read behind it.
        assert.deepEqual(await served, [[100_001]]);
      }
      // Shutdown while reads hold both readers and one waits: all answered, promptly.
      const other = await srv.client();
      const held = [next, other].map((c) =>
        c.values(ENDLESS, [], { timeout: 10_000 }).catch((e) => e)
      );
      await new Promise((r) => setTimeout(r, 150));
      const waiting = last.values(countTo(100_000), [], { timeout: 10_000 }).catch((e) => e);
      await new Promise((r) => setTimeout(r, 50));
      const t = performance.now();
      await srv.server.shutdown();
      assert.ok(performance.now() - t < 3000, `shutdown took ${performance.now() - t} ms`);
      for (const err of [...await Promise.all(held), await waiting]) {
        assert.ok(err instanceof Error, String(err));
      }
      await other.close();
    } finally {
      for (const c of [gone, next, last]) await c.close();
      await srv[Symbol.asyncDispose]();
    }
  },
});
