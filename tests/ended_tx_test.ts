/**
 * A transaction the server ended (idle lease, SQLite rolling it back, or a
 * connection lost inside it) is ended by the client with `ROLLBACK`,
 * whichever way it sends it: `run("ROLLBACK")`, `exec("ROLLBACK")`,
 * `query`, `get`, `values` or `iterate`, or a prepared `ROLLBACK` run with
 * `run()` (as better-sqlite3 users write it and as the shell runs every
 * statement), `all()`, `get()`, `values()` or `iterate()`.
 */

import assert from "node:assert/strict";
import { type Client, connect, ConnectionError, serve, type Statement } from "../mod.ts";
import type { Server } from "../server.ts";
import { Shell, type ShellIO } from "../cli/shell.ts";
import { delay, serverStats, tempDir } from "./_helpers.ts";

const ENGINES = ["ffi", "node"] as const;

/** Output of a {@link Shell}, kept. */
function capture(): ShellIO & { text: string } {
  const io = {
    text: "",
    out: (t: string) => {
      io.text += t;
      return Promise.resolve();
    },
    err: (t: string) => {
      io.text += t;
      return Promise.resolve();
    },
  };
  return io;
}

/**
 * A client whose transaction the server ended; `again()` begins another
 * and has it ended the same way (a transaction ended by then).
 */
interface Ended {
  server: Server;
  db: Client;
  again(): Promise<void>;
}

/** A client of a server that ended its transaction after 100 ms idle. */
async function leaseExpired(dir: string, engine: "ffi" | "node"): Promise<Ended> {
  const server = await serve({
    database: `${dir}/l.db`,
    path: `${dir}/l.sock`,
    engine,
    txIdleTimeout: 100,
  });
  const db = await connect({ path: `${dir}/l.sock`, max: 1 });
  await db.exec("CREATE TABLE t (x)");
  const again = async () => {
    await db.exec("BEGIN");
    await db.run("INSERT INTO t VALUES ('in the transaction')");
    // (Past 100 ms and, should the lease's timer fire late on a loaded
    // machine, its grace of 100 ms more: deadline_timer.ts.)
    await delay(700);
    await assert.rejects(db.run("INSERT INTO t VALUES ('after')"), { code: "TX_TIMEOUT" });
  };
  await again();
  return { server, db, again };
}

/** A client whose transaction SQLite rolled back (`INSERT OR ROLLBACK`). */
async function rolledBack(dir: string, engine: "ffi" | "node"): Promise<Ended> {
  const server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock`, engine });
  const db = await connect({ path: `${dir}/a.sock`, max: 1 });
  await db.exec("CREATE TABLE t (x UNIQUE)");
  const again = async () => {
    await db.exec("BEGIN");
    await db.run("INSERT INTO t VALUES ('in the transaction')");
    await assert.rejects(db.run("INSERT OR ROLLBACK INTO t VALUES ('in the transaction')"), {
      code: "SQLITE_CONSTRAINT_UNIQUE",
    });
    await assert.rejects(db.run("INSERT INTO t VALUES ('after')"), { code: "TX_ABORTED" });
  };
  await again();
  return { server, db, again };
}

/** A client whose server was restarted while it was inside a transaction. */
async function connectionLost(dir: string, engine: "ffi" | "node"): Promise<Ended> {
  const options = { database: `${dir}/r.db`, path: `${dir}/r.sock`, engine };
  const ended: Ended = {
    server: await serve(options),
    db: await connect({ path: options.path, max: 1 }),
    again: async () => {
      const db = ended.db;
      await db.exec("BEGIN");
      await db.run("INSERT INTO t VALUES ('in the transaction')");
      await ended.server.shutdown();
      ended.server = await serve(options);
      // The client sees its connection end: the server's last frame waits
      // in its socket (the shutdown closed it), and is read in the event
      // loop's next poll of the sockets, which a round trip to the new
      // server waits for (a pause could end first on a loaded machine).
      await serverStats({ path: options.path });
      await assert.rejects(db.run("INSERT INTO t VALUES ('after')"), /lost inside a transaction/);
    },
  };
  await ended.db.exec("CREATE TABLE t (x)");
  await ended.again();
  return ended;
}

const ROUTES = [
  ["idle lease", leaseExpired, "TX_TIMEOUT"],
  ["rolled back by SQLite", rolledBack, "TX_ABORTED"],
  ["lost connection", connectionLost, "CONNECTION_CLOSED"],
] as const;

/** Runs `sql` prepared, with `f`, then finalizes it. */
function prepared(
  f: (s: Statement) => Promise<unknown>,
): (db: Client, sql: string) => Promise<unknown> {
  return async (db, sql) => {
    const s = await db.prepare(sql);
    try {
      return await f(s);
    } finally {
      await s.finalize();
    }
  };
}

/**
 * The ways to send a statement for its rows, and what they return for the
 * ROLLBACK of a transaction the server ended (no rows). (`run`, `exec` and
 * a prepared statement's `run` are tested above.)
 */
const FOR_ROWS: readonly [string, (db: Client, sql: string) => Promise<unknown>, unknown][] = [
  ["query", (db, sql) => db.query(sql), []],
  ["get", (db, sql) => db.get(sql), undefined],
  ["values", (db, sql) => db.values(sql), []],
  ["iterate", (db, sql) => Array.fromAsync(db.iterate(sql)), []],
  ["prepared all", prepared((s) => s.all()), []],
  ["prepared get", prepared((s) => s.get()), undefined],
  ["prepared values", prepared((s) => s.values()), []],
  ["prepared iterate", prepared((s) => Array.fromAsync(s.iterate())), []],
];

for (const engine of ENGINES) {
  for (const [route, setUp, code] of ROUTES) {
    Deno.test(`prepare("ROLLBACK").run() ends a transaction the server ended (${route}, ${engine})`, async () => {
      await using dir = await tempDir();
      const { server, db } = await setUp(dir.path, engine);
      try {
        // Other statements are still refused, prepared or not.
        await assert.rejects(db.prepare("SELECT 1"), { code });
        await assert.rejects(db.prepare("ROLLBACK TO s"), { code });
        const rollback = await db.prepare("ROLLBACK");
        assert.deepEqual(rollback.columns, []);
        // Preparing it ended nothing: running it does.
        await assert.rejects(db.values("SELECT 1"), { code });
        assert.deepEqual(await rollback.run(), { changes: 0, lastInsertRowid: 0 });
        await rollback.finalize();
        assert.deepEqual(await db.values("SELECT x FROM t"), []);
        assert.equal(db.inTransaction, false);
        // The client goes on as usual: a new transaction, and a prepared ROLLBACK of it.
        await db.exec("BEGIN");
        await db.run("INSERT INTO t VALUES (1)");
        const again = await db.prepare("rollback transaction; -- undo");
        await again.run();
        await again.finalize();
        assert.deepEqual(await db.values("SELECT x FROM t"), []);
      } finally {
        await db.close();
        await server.shutdown();
      }
    });

    Deno.test(`prepare("COMMIT").run() fails but ends a transaction the server ended (${route}, ${engine})`, async () => {
      await using dir = await tempDir();
      const { server, db } = await setUp(dir.path, engine);
      try {
        const commit = await db.prepare("END");
        await assert.rejects(commit.run(), { code });
        await commit.finalize();
        // As after run("COMMIT"): a ROLLBACK right after it succeeds (ORMs send one).
        const rollback = await db.prepare("ROLLBACK;");
        assert.deepEqual(await rollback.run(), { changes: 0, lastInsertRowid: 0 });
        await rollback.finalize();
        assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]]);
        assert.equal(db.inTransaction, false);
      } finally {
        await db.close();
        await server.shutdown();
      }
    });

    Deno.test(`run("COMMIT") fails, then run("ROLLBACK") succeeds as a no-op, as ORMs send them (${route}, ${engine})`, async () => {
      await using dir = await tempDir();
      const { server, db } = await setUp(dir.path, engine);
      try {
        await assert.rejects(db.run("COMMIT"), { code });
        assert.deepEqual(await db.run("ROLLBACK"), { changes: 0, lastInsertRowid: 0 });
        // Only right after the COMMIT: a later ROLLBACK meets no transaction.
        await db.run("INSERT INTO t VALUES ('next')");
        await assert.rejects(db.run("ROLLBACK"), /no transaction is active/);
        assert.deepEqual(await db.values("SELECT x FROM t"), [["next"]]);
        assert.equal(db.inTransaction, false);
      } finally {
        await db.close();
        await server.shutdown();
      }
    });

    Deno.test(`the shell ends a transaction the server ended with the ROLLBACK the error asks for (${route}, ${engine})`, async () => {
      await using dir = await tempDir();
      const { server, db } = await setUp(dir.path, engine);
      try {
        const io = capture();
        const shell = new Shell(db, io, "csv");
        await assert.rejects(shell.execute("INSERT INTO t VALUES ('meant for it');"), { code });
        await shell.execute("ROLLBACK;");
        await shell.execute("SELECT count(*) AS n FROM t;");
        assert.equal(io.text, "n\r\n0\r\n");
        assert.equal(db.inTransaction, false);
      } finally {
        await db.close();
        await server.shutdown();
      }
    });
  }
}

for (const engine of ENGINES) {
  for (const [route, setUp, code] of ROUTES) {
    Deno.test(`query, get, values, iterate and a prepared statement's all, get, values and iterate of ROLLBACK end a transaction the server ended (${route}, ${engine})`, async () => {
      await using dir = await tempDir();
      const ended = await setUp(dir.path, engine);
      const db = ended.db;
      try {
        for (const [i, [how, send, none]] of FOR_ROWS.entries()) {
          if (i > 0) await ended.again();
          assert.deepEqual(await send(db, "ROLLBACK"), none, how);
          assert.equal(db.inTransaction, false, how);
          // The state ended: the next statement runs, in autocommit.
          await db.run("INSERT INTO t VALUES (?)", [how]);
        }
        assert.deepEqual(await db.values("SELECT x FROM t"), FOR_ROWS.map(([how]) => [how]));
      } finally {
        await db.close();
        await ended.server.shutdown();
      }
    });

    Deno.test(`COMMIT through query, get, values, iterate or a prepared statement's all fails, and a ROLLBACK the same way after it is a no-op (${route}, ${engine})`, async () => {
      await using dir = await tempDir();
      const ended = await setUp(dir.path, engine);
      const db = ended.db;
      try {
        for (const [i, [how, send, none]] of FOR_ROWS.entries()) {
          if (i > 0) await ended.again();
          await assert.rejects(send(db, "COMMIT"), { code }, how);
          assert.deepEqual(await send(db, "ROLLBACK"), none, how);
          assert.equal(db.inTransaction, false, how);
          await db.run("INSERT INTO t VALUES (?)", [how]);
        }
        assert.deepEqual(await db.values("SELECT x FROM t"), FOR_ROWS.map(([how]) => [how]));
      } finally {
        await db.close();
        await ended.server.shutdown();
      }
    });
  }
}

Deno.test("a ROLLBACK prepared after a lost connection, run right after a failed COMMIT, is a no-op", async () => {
  await using dir = await tempDir();
  const { server, db } = await connectionLost(dir.path, "ffi");
  try {
    const rollback = await db.prepare("ROLLBACK");
    await assert.rejects(db.run("COMMIT"), ConnectionError);
    assert.deepEqual(await rollback.run(), { changes: 0, lastInsertRowid: 0 });
    await rollback.finalize();
    await db.run("INSERT INTO t VALUES (2)");
    assert.deepEqual(await db.values("SELECT x FROM t"), [[2]]);
  } finally {
    await db.close();
    await server.shutdown();
  }
});

Deno.test("a ROLLBACK prepared after a lost connection and never run leaves the loss unacknowledged", async () => {
  await using dir = await tempDir();
  const { server, db } = await connectionLost(dir.path, "ffi");
  try {
    const rollback = await db.prepare("ROLLBACK");
    await assert.rejects(db.run("INSERT INTO t VALUES (2)"), ConnectionError);
    await db.exec("ROLLBACK");
    await rollback.finalize();
    // The prepared ROLLBACK now runs on the server, where no transaction is open.
    await db.run("INSERT INTO t VALUES (3)");
    assert.deepEqual(await db.values("SELECT x FROM t"), [[3]]);
  } finally {
    await db.close();
    await server.shutdown();
  }
});
