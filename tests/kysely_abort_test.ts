/**
 * Kysely 0.29's abort signals (`execute({ signal, inflightQueryAbortStrategy })`):
 * `'cancel query'` stops the query on the server through the connection's
 * `cancelQuery`; Kysely refuses `'kill session'` (the adapter has no
 * `killSession`). The pinned Kysely is 0.28, which passes no signals: the
 * end-to-end case runs a script with an import map that maps the adapter's
 * `npm:kysely@^0.28` to 0.29.9 (fetched from npm).
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { CompiledQuery, Kysely } from "npm:kysely@^0.28";
import { connect } from "../mod.ts";
import { NetsqliteDialect } from "../adapters/kysely.ts";
import { startServer } from "./_helpers.ts";

const ffi = Deno.env.get("NETSQLITE_ENGINE") !== "node";

const SCRIPT = fileURLToPath(new URL("./fixtures/kysely029_abort.ts", import.meta.url));

const RUNAWAY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) " +
  "SELECT count(*) AS n FROM c WHERE x < 0";

Deno.test("kysely: cancelQuery() stops the connection's query in flight on the server, only when Kysely gave it a signal", async () => {
  await using srv = await startServer();
  await using client = await connect({ ...srv.connectOptions, max: 2 });
  const driver = new NetsqliteDialect({ client }).createDriver();
  await driver.init();
  // Kysely 0.29's connection interface (0.28's takes no options, and has no cancelQuery).
  const conn = await driver.acquireConnection() as
    & Awaited<
      ReturnType<typeof driver.acquireConnection>
    >
    & {
      executeQuery<R>(
        q: CompiledQuery,
        options?: { signal?: AbortSignal },
      ): Promise<{ rows: R[] }>;
      cancelQuery?(provider: unknown): Promise<void>;
    };
  try {
    const signal = new AbortController().signal; // (Kysely's own, never aborted here)
    // A statement that never ends (FFI engine; node:sqlite cannot stop one
    // step, README "SQLite engines"), else a write waiting for the writer.
    await using holder = await client.reserve();
    if (!ffi) await holder.exec("CREATE TABLE w (x INTEGER); BEGIN IMMEDIATE");
    const running = conn.executeQuery(
      CompiledQuery.raw(ffi ? RUNAWAY : "INSERT INTO w VALUES (1)"),
      { signal },
    );
    await new Promise((r) => setTimeout(r, 100));
    const cancelQuery = conn.cancelQuery;
    assert.equal(typeof cancelQuery, "function");
    await cancelQuery!.call(conn, () => Promise.reject(new Error("no control connection needed")));
    await assert.rejects(running, (err: Error) => {
      assert.equal(err.name, "AbortError");
      assert.equal((err as Error & { code?: string }).code, "ABORTED");
      return true;
    });
    if (!ffi) {
      await holder.exec("COMMIT");
      assert.deepEqual(await client.values("SELECT count(*) FROM w"), [[0]]);
    }
    // The server stopped it: the connection answers the next query at once.
    assert.deepEqual(
      (await conn.executeQuery(CompiledQuery.raw("SELECT 1 AS one"))).rows,
      [{ one: 1 }],
    );
    // A query sent without a signal is not one Kysely can cancel: it is left alone.
    const plain = conn.executeQuery(CompiledQuery.raw("SELECT 2 AS two"));
    await cancelQuery!.call(conn, () => Promise.resolve());
    assert.deepEqual((await plain).rows, [{ two: 2 }]);
  } finally {
    await driver.releaseConnection(conn);
    await driver.destroy();
  }
  // Kysely 0.28 passes no options: queries run as before.
  const db = new Kysely<any>({ dialect: new NetsqliteDialect({ client }) });
  assert.deepEqual((await db.executeQuery(CompiledQuery.raw("SELECT 3 AS x"))).rows, [{ x: 3 }]);
  await db.destroy();
});

Deno.test("kysely 0.29: execute({ signal, inflightQueryAbortStrategy: 'cancel query' }) stops a runaway query on the server; 'kill session' is refused by Kysely", async () => {
  await using srv = await startServer();
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-k29-" });
  try {
    const map = `${dir}/import_map.json`;
    await Deno.writeTextFile(
      map,
      JSON.stringify({ imports: { "npm:kysely@^0.28": "npm:kysely@0.29.9" } }),
    );
    const path = (srv.connectOptions as { path: string }).path;
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--no-lock",
        "--import-map",
        map,
        SCRIPT,
        path,
        ffi ? "runaway" : "queued",
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    const seen = JSON.parse(new TextDecoder().decode(out.stdout));
    // Kysely rejects with the signal's reason; the query itself was stopped by
    // the server (its own rejection, which Kysely prints, is the client's abort).
    assert.deepEqual(seen.cancel, { name: "Error", message: "user gave up" });
    assert.deepEqual(seen.printed, [
      "`query` failed in the background after abortion: Call was aborted by its signal",
    ]);
    assert.deepEqual(seen.after, [{ one: 1 }]);
    if (!ffi) assert.deepEqual(seen.written, [{ n: 0 }]); // the queued write was dropped
    // Runs for ever (FFI), or until the busy timeout (5 s), if not stopped.
    assert.ok(seen.cancelMs < 4_000, `took ${seen.cancelMs} ms`);
    // An aborted stream ends with the signal's reason after the chunk it was reading.
    assert.deepEqual(seen.stream, { name: "Error", message: "enough" });
    assert.equal(seen.chunks, 10);
    assert.deepEqual(seen.count, [{ n: 1000 }]);
    assert.equal(seen.kill.name, "Error");
    assert.match(seen.kill.message, /doesn't support `inflightQueryAbortStrategy` "kill session"/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
