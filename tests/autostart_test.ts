/**
 * `connect({ autostart })` when the started server exits: started again while
 * the previous server of the database shuts down (it still holds the lock),
 * and failing at once, with the server's own words, when starting again
 * cannot help. Servers run as real processes.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { connect, ConnectionError } from "../client.ts";
import { alive, inEnv, startServer, startServerProcess, stopPid, tempDir } from "./_helpers.ts";
import { refuseCompiled } from "../client/autostart.ts";

const CHILD_TS = fileURLToPath(new URL("./_autostart_child.ts", import.meta.url));

/** Pids of live `server.ts` processes whose command line holds `needle`. */
function serverPids(needle: string): number[] {
  const pids: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    let cmd: string;
    try {
      cmd = Deno.readTextFileSync(`/proc/${e.name}/cmdline`).replaceAll("\0", " ");
    } catch {
      continue;
    }
    if (cmd.includes(needle) && cmd.includes("server.ts")) pids.push(Number(e.name));
  }
  return pids;
}

/** Polls `check` every 20 ms until it holds; throws after `ms`. */
async function until(check: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = performance.now() + ms;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

Deno.test("refuseCompiled() refuses autostart in a program built with deno compile (Deno.execPath() is the program there, not deno), and allows it under deno run", () => {
  assert.throws(() => refuseCompiled(true), {
    name: "TypeError",
    message: 'Invalid option "autostart": this program was built with deno compile, where ' +
      "Deno.execPath() is the program itself, not deno, so it cannot start a server; start " +
      "the server yourself before the program connects (netsqlite serve, or deno task serve " +
      "in a checkout), or run the program with deno run",
  });
  assert.equal(Deno.build.standalone, false);
  assert.equal(refuseCompiled(Deno.build.standalone), undefined);
});

Deno.test({
  name:
    "connect({ autostart }) starts a server again when the first exits on the lock of a server shutting down",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    await using dir = await tempDir();
    const database = `${dir.path}/a.db`;
    // The old server: its shutdown waits (up to 20 s) for the open transaction below.
    await using old = await startServerProcess({
      dir: dir.path,
      database,
      args: ["--grace-ms", "20000"],
    });
    const socket = (old.connectOptions as { path: string }).path;
    const holder = await connect({ path: socket, max: 1 });
    let newPid = 0;
    try {
      await holder.exec("CREATE TABLE t (x INTEGER)");
      const tx = await holder.reserve();
      await tx.exec("BEGIN IMMEDIATE");
      await tx.run("INSERT INTO t VALUES (1)");
      old.child.kill("SIGTERM");
      // The listener closes at once (its socket file stays, refusing
      // connections); the lock stays held during the grace period.
      const deadline = performance.now() + 10000;
      for (;;) {
        const refused = await Deno.connect({ transport: "unix", path: socket }).then(
          (conn) => (conn.close(), false),
          (err) => err instanceof Deno.errors.ConnectionRefused,
        );
        if (refused) break;
        if (performance.now() > deadline) throw new Error("The old server kept accepting");
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const client = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", CHILD_TS, socket, database, "15000"],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      // Wait until the first server the client started has failed on the lock.
      let first = 0;
      await until(
        () => {
          first ||= serverPids(database).find((p) => p !== old.child.pid) ?? 0;
          return first !== 0 && !alive(first);
        },
        20000,
        "the first started server to exit",
      );
      assert.ok(alive(old.child.pid), "the old server still runs its grace period");
      await tx.exec("COMMIT");
      tx.release();
      await holder.close();
      assert.equal((await old.child.status).code, 0);
      const out = await client;
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
      assert.equal(new TextDecoder().decode(out.stdout).trim(), "ok");
      newPid = Number(JSON.parse(Deno.readTextFileSync(`${database}.lock`)).pid);
      assert.notEqual(newPid, first);
      assert.deepEqual(serverPids(database), [newPid]);
    } finally {
      await holder.close();
      if (newPid !== 0) await stopPid(newPid);
      for (const pid of serverPids(database)) {
        if (pid !== old.child.pid) Deno.kill(pid, "SIGKILL");
      }
    }
    const check = new DatabaseSync(database, { readOnly: true });
    try {
      assert.deepEqual(check.prepare("SELECT x FROM t").all().map((r) => ({ ...r })), [{ x: 1 }]);
      assert.equal(check.prepare("SELECT count(*) AS n FROM hits").get()?.n, 1);
    } finally {
      check.close();
    }
  },
});

Deno.test("connect({ autostart }) fails at once with the server's reason when its database cannot be opened", async () => {
  await using dir = await tempDir();
  const database = `${dir.path}/missing/a.db`;
  const t0 = performance.now();
  const err = await connect({ path: `${dir.path}/s.sock`, autostart: { database } }).then(
    () => assert.fail("connect succeeded"),
    (e: unknown) => e,
  );
  const ms = performance.now() - t0;
  assert.ok(err instanceof ConnectionError, String(err));
  assert.equal(err.code, "CONNECTION_CLOSED");
  assert.equal(
    err.message,
    `Cannot autostart a server for "${database}" on unix:${dir.path}/s.sock: ` +
      `the server started exited with code 1: "netsqlite: Cannot open database \\"${database}\\": ` +
      `the directory \\"${dir.path}/missing\\" does not exist; create it first"`,
  );
  // The default timeout is 15000 ms; the server exits within a second or so.
  assert.ok(ms < 8000, `took ${ms.toFixed(0)} ms`);
});

Deno.test("connect({ autostart }) fails at once with the server's error line, not its help, on a bad flag", async () => {
  await using dir = await tempDir();
  const database = `${dir.path}/a.db`;
  const t0 = performance.now();
  await assert.rejects(
    connect({
      path: `${dir.path}/s.sock`,
      autostart: { database, args: ["--no-such-flag"], timeout: 20000 },
    }),
    (err: unknown) => {
      assert.ok(err instanceof ConnectionError, String(err));
      assert.match(
        err.message,
        /: the server started exited with code 2: "netsqlite: Unknown option '--no-such-flag' \(--help lists the options\)"$/,
      );
      return true;
    },
  );
  assert.ok(performance.now() - t0 < 8000);
  assert.deepEqual(serverPids(database), []);
});

/** Stops the server that holds the lock of `database` (its pid is in `<db>.lock`), if any. */
async function stopOwner(database: string): Promise<void> {
  let pid = 0;
  try {
    pid = Number(JSON.parse(Deno.readTextFileSync(`${database}.lock`)).pid);
  } catch {
    // No lock file: no server.
  }
  if (pid > 0) await stopPid(pid);
  for (const p of serverPids(database)) Deno.kill(p, "SIGKILL");
}

/**
 * The body of the test below, run in a child whose `XDG_RUNTIME_DIR` is `dir`
 * (so default sockets live there) by {@link inEnv}: `dir` holds the database.
 */
export async function autostartOnDefaultSocket(dir: string): Promise<void> {
  const database = `${dir}/app.db`;
  try {
    const a = await connect({ autostart: { database } });
    try {
      assert.equal(a.serverInfo.database, Deno.realPathSync(database));
      await a.exec("CREATE TABLE t (x INTEGER)");
    } finally {
      await a.close();
    }
    // Another spelling of the same file is accepted, and finds the same server.
    const b = await connect({ database: `${dir}/./app.db`, autostart: { database } });
    await b.close();
    // connect({ database }) without autostart reaches it, as the README says.
    const c = await connect({ database });
    try {
      assert.deepEqual(await c.query("SELECT name FROM sqlite_master"), [{ name: "t" }]);
    } finally {
      await c.close();
    }
    // connect() alone means ./netsqlite.db: nothing serves it.
    await assert.rejects(connect({ connectTimeout: 2000 }), ConnectionError);
    assert.equal(serverPids(database).length, 1);
    // A database that is another file than autostart.database is refused before anything.
    await assert.rejects(
      connect({ database: `${dir}/other.db`, autostart: { database } }),
      new TypeError(
        `Invalid options: "database" is "${dir}/other.db" but "autostart.database" is ` +
          `"${database}", another file: give the database once, in "autostart.database"`,
      ),
    );
  } finally {
    await stopOwner(database);
  }
}

Deno.test({
  name:
    "connect({ autostart }) without an address uses the default socket of autostart.database, where connect({ database }) finds it",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    await using dir = await tempDir();
    try {
      await inEnv(
        { XDG_RUNTIME_DIR: dir.path },
        import.meta.url,
        "autostartOnDefaultSocket",
        dir.path,
      );
    } finally {
      await stopOwner(`${dir.path}/app.db`); // should the child have died before it did
    }
  },
});

/**
 * A database in rollback-journal mode with an exclusive lock held by this
 * process until disposed (the first time).
 */
function lockedDatabase(database: string): Disposable {
  const holder = new DatabaseSync(database);
  holder.exec("CREATE TABLE t (x INTEGER)");
  holder.exec("BEGIN EXCLUSIVE");
  holder.exec("INSERT INTO t VALUES (1)");
  let held = true;
  return {
    [Symbol.dispose]() {
      if (!held) return;
      held = false;
      holder.exec("ROLLBACK");
      holder.close();
    },
  };
}

Deno.test({
  name:
    "connect({ autostart }) gives up on a server stuck opening a locked database within autostart.timeout, and stops it",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    await using dir = await tempDir();
    const database = `${dir.path}/a.db`;
    using _locked = lockedDatabase(database);
    const t0 = performance.now();
    try {
      // The server waits up to its busy timeout (5 s by default) to open the database.
      const err = await connect({
        path: `${dir.path}/s.sock`,
        autostart: { database, timeout: 1500 },
      })
        .then(() => assert.fail("connect succeeded"), (e: unknown) => e);
      const ms = performance.now() - t0;
      assert.ok(err instanceof ConnectionError, String(err));
      assert.equal(
        err.message,
        `Cannot autostart a server for "${database}" on unix:${dir.path}/s.sock: none answered ` +
          "within 1500 ms (the server started listened but did not answer, and was stopped: is " +
          "the database locked by another process? The server waits for it up to " +
          "--busy-timeout); start it by hand to see why: deno task serve",
      );
      assert.ok(ms < 4000, `took ${ms.toFixed(0)} ms`);
      // No server is left behind.
      await until(() => serverPids(database).length === 0, 2000, "the started server to stop");
    } finally {
      for (const pid of serverPids(database)) Deno.kill(pid, "SIGKILL");
    }
  },
});

Deno.test({
  name:
    "connect({ autostart }) reports why a server that listened could not open the database, not just a closed connection",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    await using dir = await tempDir();
    const database = `${dir.path}/a.db`;
    using _locked = lockedDatabase(database);
    const t0 = performance.now();
    try {
      await assert.rejects(
        connect({
          path: `${dir.path}/s.sock`,
          autostart: { database, timeout: 10000, args: ["--busy-timeout", "1500"] },
        }),
        (err: unknown) => {
          assert.ok(err instanceof ConnectionError, String(err));
          assert.equal(err.code, "CONNECTION_CLOSED");
          assert.equal(
            err.message,
            `Cannot autostart a server for "${database}" on unix:${dir.path}/s.sock: the server ` +
              `started exited with code 1: "netsqlite: Cannot open database \\"${database}\\": ` +
              "database is locked: another process holds a lock on the database file (a program " +
              "that has it open in a transaction, such as the sqlite3 shell or a migration tool); " +
              "the server waited --busy-timeout 1500 ms for it: end that transaction or close that " +
              'program and start again, or raise --busy-timeout"',
          );
          return true;
        },
      );
      const ms = performance.now() - t0;
      assert.ok(ms < 6000, `took ${ms.toFixed(0)} ms`);
      assert.deepEqual(serverPids(database), []);
    } finally {
      for (const pid of serverPids(database)) Deno.kill(pid, "SIGKILL");
    }
  },
});

Deno.test("connect({ autostart }) refuses a running server that serves another database than autostart.database", async () => {
  await using running = await startServer();
  const path = (running.connectOptions as { path: string }).path;
  const other = `${running.dir}/other.db`;
  await assert.rejects(
    connect({ path, autostart: { database: other } }),
    (err: unknown) => {
      assert.ok(err instanceof ConnectionError, String(err));
      assert.equal(err.code, "CONNECTION_CLOSED");
      assert.equal(
        err.message,
        `Cannot autostart a server for "${other}" on unix:${path}: the server there serves ` +
          `"${Deno.realPathSync(running.database)}", not "${other}": give this database its own ` +
          "path or channel",
      );
      return true;
    },
  );
  // Nothing was started for the other database.
  assert.deepEqual(serverPids(other), []);
  // Another name of the served file (a symbolic link) is the same database.
  Deno.symlinkSync(running.database, `${running.dir}/alias.db`);
  await using db = await connect({ path, autostart: { database: `${running.dir}/alias.db` } });
  assert.equal(db.serverInfo.database, Deno.realPathSync(running.database));
});

Deno.test("connect({ autostart }) fails at once when a live server owns the database on another socket", async () => {
  await using running = await startServer();
  const owner = (running.connectOptions as { path: string }).path;
  const path = `${running.dir}/other.sock`;
  const t0 = performance.now();
  await assert.rejects(
    connect({ path, autostart: { database: running.database, timeout: 15000 } }),
    (err: unknown) => {
      assert.ok(err instanceof ConnectionError, String(err));
      assert.equal(err.code, "CONNECTION_CLOSED");
      assert.equal(
        err.message,
        `Cannot autostart a server for "${running.database}" on unix:${path}: the server started ` +
          `exited with code 1: "netsqlite: another server owns ${running.database} (pid ` +
          `${Deno.pid}, socket unix:${owner})"; connect with { path: "${owner}" } to use that server`,
      );
      return true;
    },
  );
  // One server was started (it exited on the lock), not one after another until the timeout.
  const ms = performance.now() - t0;
  assert.ok(ms < 5000, `took ${ms.toFixed(0)} ms`);
  assert.deepEqual(serverPids(running.database), []);
});

Deno.test({
  name:
    'connect({ autostart: { database: ":memory:" } }) starts one in-memory server that later clients share',
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    await using dir = await tempDir();
    const path = `${dir.path}/mem.sock`;
    try {
      const a = await connect({ path, autostart: { database: ":memory:", timeout: 10000 } });
      try {
        assert.equal(a.serverInfo.database, ":memory:");
        await a.exec("CREATE TABLE t (x INTEGER)");
        await a.run("INSERT INTO t VALUES (7)");
      } finally {
        await a.close();
      }
      // The second client finds the server running, with the first one's data.
      const b = await connect({ path, database: ":memory:", autostart: { database: ":memory:" } });
      try {
        assert.deepEqual(await b.values("SELECT x FROM t"), [[7]]);
      } finally {
        await b.close();
      }
      assert.equal(serverPids(`--socket ${path}`).length, 1);
      // A file named ":memory:" is another database than the in-memory one.
      await assert.rejects(
        connect({ path, database: "./:memory:", autostart: { database: ":memory:" } }),
        new TypeError(
          'Invalid options: "database" is "./:memory:" but "autostart.database" is ":memory:", ' +
            'another file: give the database once, in "autostart.database"',
        ),
      );
    } finally {
      for (const pid of serverPids(`--socket ${path}`)) await stopPid(pid);
    }
  },
});

Deno.test({
  name:
    "connect({ autostart }) never stops a server that began serving other clients as its wait ended",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    await using dir = await tempDir();
    const database = `${dir.path}/a.db`;
    const path = `${dir.path}/s.sock`;
    const moved = `${dir.path}/moved.sock`;
    const locked = lockedDatabase(database);
    let b: Awaited<ReturnType<typeof connect>> | null = null;
    try {
      // The server waits for the lock (up to 20 s) while A waits up to 6 s for an answer.
      const a = connect({
        path,
        connectTimeout: 100,
        autostart: { database, timeout: 6000, args: ["--busy-timeout", "20000"] },
      }).then(() => assert.fail("A connected"), (e: unknown) => e);
      await until(() => existsPath(path), 5000, "the started server to listen");
      const [pid] = serverPids(database);
      // A finds no server at its path from now on; its tries still waiting time out (100 ms).
      // A directory takes the socket's place: the server would make a deleted socket again.
      Deno.renameSync(path, moved);
      Deno.mkdirSync(path);
      await new Promise((resolve) => setTimeout(resolve, 400));
      // B waits at the other name; the database opens, and the server answers B.
      const connecting = connect({ path: moved, connectTimeout: 10000 });
      locked[Symbol.dispose]();
      b = await connecting;
      assert.deepEqual(await b.values("SELECT count(*) FROM t"), [[0]]);
      // A's wait ends: the server serves B, so it is left running, and says why.
      const err = await a;
      // B's session goes on: the server was not stopped.
      await b.run("INSERT INTO t VALUES (2)");
      assert.deepEqual(await b.values("SELECT x FROM t"), [[2]]);
      assert.ok(alive(pid), "the server was stopped");
      assert.ok(err instanceof ConnectionError, String(err));
      assert.equal(
        err.message,
        `Cannot autostart a server for "${database}" on unix:${path}: none answered within ` +
          "6000 ms (the server started began serving as the wait ended, and is left running " +
          "for the clients it may serve; it did not answer a last try within 1000 ms)",
      );
    } finally {
      await b?.close().catch(() => {});
      locked[Symbol.dispose]();
      for (const pid of serverPids(database)) await stopPid(pid);
    }
  },
});

function existsPath(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name:
    "connect({ autostart }) waits out the grace period of a server started with a relative --socket, its lock naming the absolute path",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    await using dir = await tempDir();
    const database = `${dir.path}/a.db`;
    const socket = `${dir.path}/s.sock`;
    // Started by hand in the database's directory, with relative paths.
    const old = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        fileURLToPath(new URL("../server.ts", import.meta.url)),
        "--db",
        "a.db",
        "--socket",
        "s.sock",
        "--grace-ms",
        "20000",
      ],
      cwd: dir.path,
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const { line: banner, drained } = await firstLine(old.stdout);
    let newPid = 0;
    let holder: Awaited<ReturnType<typeof connect>> | null = null;
    try {
      assert.match(banner, new RegExp(` on unix:${socket}$`));
      assert.deepEqual(JSON.parse(Deno.readTextFileSync(`${database}.lock`)), {
        pid: old.pid,
        socket: `unix:${socket}`,
      });
      holder = await connect({ path: socket, max: 1 });
      const tx = await holder.reserve();
      await tx.exec("BEGIN IMMEDIATE");
      await tx.exec("CREATE TABLE t (x INTEGER)");
      old.kill("SIGTERM");
      await untilRefused(socket);
      const t0 = performance.now();
      const client = connect({ path: socket, autostart: { database, timeout: 15000 } });
      const outcome = client.then(() => "connected", (e: unknown) => e);
      // The first server started exits on the lock; the client must not give up on it.
      let first = 0;
      await until(
        () => {
          first ||= serverPids(database)[0] ?? 0;
          return first !== 0 && !alive(first);
        },
        10000,
        "the first started server to exit",
      );
      await new Promise((resolve) => setTimeout(resolve, 100));
      const early = await Promise.race([outcome, Promise.resolve("waiting")]);
      assert.equal(early, "waiting", `gave up after ${performance.now() - t0} ms: ${early}`);
      await tx.exec("INSERT INTO t VALUES (1)");
      await tx.exec("COMMIT");
      tx.release();
      await holder.close();
      assert.equal((await old.status).code, 0);
      await using db = await client;
      assert.deepEqual(await db.values("SELECT x FROM t"), [[1]]);
      newPid = Number(JSON.parse(Deno.readTextFileSync(`${database}.lock`)).pid);
      assert.notEqual(newPid, old.pid);
    } finally {
      await holder?.close().catch(() => {});
      try {
        old.kill("SIGKILL");
      } catch {
        // Exited.
      }
      await old.status;
      await drained;
      if (newPid !== 0) await stopPid(newPid);
      for (const pid of serverPids(database)) Deno.kill(pid, "SIGKILL");
    }
  },
});

Deno.test({
  name:
    "connect({ autostart }) treats a lock naming a relative socket, or its own socket through a symbolic link, as its own address: it waits",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    await using dir = await tempDir();
    const database = `${dir.path}/a.db`;
    const socket = `${dir.path}/s.sock`;
    Deno.symlinkSync(dir.path, `${dir.path}/link`);
    // As a server of an earlier version (relative --socket), and as one given the linked name.
    for (const recorded of ["unix:s.sock", `unix:${dir.path}/link/s.sock`]) {
      const lock = Deno.openSync(`${database}.lock`, { read: true, write: true, create: true });
      try {
        lock.truncateSync(0);
        lock.writeSync(new TextEncoder().encode(JSON.stringify({ pid: 1, socket: recorded })));
        lock.lockSync(true);
        const t0 = performance.now();
        const err = await connect({ path: socket, autostart: { database, timeout: 1200 } })
          .then(() => assert.fail("connect succeeded"), (e: unknown) => e);
        const ms = performance.now() - t0;
        assert.ok(err instanceof ConnectionError, String(err));
        // Not "connect with { path: ... } to use that server" at once: it waited, starting again.
        assert.ok(
          err.message.startsWith(
            `Cannot autostart a server for "${database}" on unix:${socket}: none answered ` +
              "within 1200 ms (",
          ),
          err.message,
        );
        assert.ok(ms >= 1100, `gave up after ${ms.toFixed(0)} ms`);
      } finally {
        lock.close();
      }
      assert.deepEqual(serverPids(database), []);
    }
  },
});

/** The first line a process prints on `stream`, and the rest read to its end (then resolved). */
async function firstLine(
  stream: ReadableStream<Uint8Array>,
): Promise<{ line: string; drained: Promise<void> }> {
  let text = "";
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  while (!text.includes("\n")) {
    const { done, value } = await reader.read();
    if (done) break;
    text += value;
  }
  const drained = (async () => {
    while (!(await reader.read()).done);
  })().catch(() => {});
  return { line: text.split("\n")[0], drained };
}

/** Waits (at most 10 s) until connections to the Unix socket `path` are refused. */
async function untilRefused(path: string): Promise<void> {
  const deadline = performance.now() + 10000;
  for (;;) {
    const refused = await Deno.connect({ transport: "unix", path }).then(
      (conn) => (conn.close(), false),
      (err) => err instanceof Deno.errors.ConnectionRefused,
    );
    if (refused) return;
    if (performance.now() > deadline) throw new Error("The old server kept accepting");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

Deno.test("connect({ autostart }) without a token starts a server without one, whatever NETSQLITE_TOKEN the environment holds", async () => {
  await using dir = await tempDir();
  const database = `${dir.path}/t.db`;
  const socket = `${dir.path}/t.sock`;
  try {
    // The started server inherits the client's environment: without --no-token it
    // would require this token, which the client never sends (AUTH).
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", CHILD_TS, socket, database, "20000"],
      env: { NETSQLITE_TOKEN: "inherited-secret" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.equal(new TextDecoder().decode(out.stdout).trim(), "ok");
    await using db = await connect({ path: socket });
    assert.deepEqual(await db.values("SELECT count(*) FROM hits"), [[1]]);
  } finally {
    await stopOwner(database);
  }
  // Flags that give the server a token are its own: no --no-token is added to them.
  const other = `${dir.path}/u.sock`;
  const refused = await connect({
    path: other,
    autostart: { database: `${dir.path}/u.db`, args: ["--token", "from-args"] },
  }).then(() => null, (e: Error) => e);
  try {
    assert.ok(refused instanceof Error);
    assert.doesNotMatch(refused.message, /--no-token/);
    assert.match(refused.message, /AUTH|token/);
    await using db = await connect({ path: other, token: "from-args" });
    assert.deepEqual(await db.values("SELECT 1"), [[1]]);
  } finally {
    await stopOwner(`${dir.path}/u.db`);
  }
});

Deno.test("autostart without --allow-run fails saying what autostart needs, naming the real path of deno", async () => {
  await using dir = await tempDir();
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-prompt",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-net",
      "--allow-sys",
      CHILD_TS,
      `${dir.path}/s.sock`,
      `${dir.path}/a.db`,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.notEqual(out.code, 0);
  assert.ok(
    stderr.includes(
      `NotCapable: Cannot autostart a server: running "${Deno.execPath()}" needs --allow-run ` +
        `(plain, or --allow-run=${Deno.execPath()}, the real path Deno checks;`,
    ),
    stderr,
  );
});
