/**
 * The lock file of a database two users share: it is writable by whoever
 * may write the database file (much as SQLite's `-wal` and `-shm` take the
 * database's mode), so one user's server,
 * running or stopped, no longer keeps the other from starting; and a lock
 * file this user may not write (another user's, `0600` as earlier versions
 * made it) gets a message that says whose it is and whether a server holds
 * it, never "make the directory writable". The second user is `nobody`,
 * through `setpriv` (tests run as root here and in CI; skipped where that is
 * not possible), running `server.ts` as a child process.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { connect, serve } from "../mod.ts";
import { asNobody, canRunAsNobody, tempDir } from "./_helpers.ts";
import { connectWhenUp, ENGINE, spawnServer, stop } from "./_logged_server.ts";

const SERVER_TS = fileURLToPath(new URL("../server.ts", import.meta.url));

/** The Deno permissions of `deno task serve` (not `-A`: `/proc/locks` is then out of reach). */
const TASK_FLAGS = [
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-net",
  "--allow-sys=uid",
  "--allow-ffi",
  "--no-prompt",
];

/** Permission bits of `path`. */
function mode(path: string): number {
  return Deno.statSync(path).mode! & 0o777;
}

/** A database file (rollback journal) with mode `bits`. */
function database(path: string, bits: number): string {
  const db = new DatabaseSync(path);
  db.exec("CREATE TABLE IF NOT EXISTS t (x)");
  db.close();
  Deno.chmodSync(path, bits);
  return path;
}

/** `server.ts --db db --socket sock` as `nobody`, expected to exit: its code and stderr. */
async function startAsNobody(
  db: string,
  sock: string,
  denoFlags: string[] = TASK_FLAGS,
): Promise<{ code: number; stderr: string }> {
  const child = new Deno.Command(asNobody[0], {
    args: [
      ...asNobody.slice(1),
      Deno.execPath(),
      "run",
      ...denoFlags,
      SERVER_TS,
      "--db",
      db,
      "--socket",
      sock,
      "--engine",
      ENGINE,
    ],
    env: { HOME: "/tmp" },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  // A server that (wrongly) starts serves until stopped.
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  const out = await child.output().finally(() => clearTimeout(timer));
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

/** `s` with the characters a regular expression gives a meaning escaped. */
function literal(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

Deno.test({
  name: "serve() makes the lock file readable and writable by whoever may write the database " +
    "file: its owner, and its group or others when the database lets them write",
  ignore: Deno.build.os === "windows",
  async fn() {
    await using dir = await tempDir();
    const path = `${dir.path}/s.sock`;
    const cases: [number, number][] = [
      [0o660, 0o660],
      [0o664, 0o660],
      [0o666, 0o666],
      [0o602, 0o606],
      [0o644, 0o600], // the single-user default: those who may only read need no lock
      [0o640, 0o600],
      [0o600, 0o600],
    ];
    for (const [bits, want] of cases) {
      const db = database(`${dir.path}/m${bits.toString(8)}.db`, bits);
      await (await serve({ database: db, path })).shutdown();
      assert.equal(mode(`${db}.lock`).toString(8), want.toString(8), db);
    }
    // A lock file more open than its database allows is narrowed to it.
    const narrow = `${dir.path}/m600.db`;
    Deno.chmodSync(`${narrow}.lock`, 0o666);
    await (await serve({ database: narrow, path })).shutdown();
    assert.equal(mode(`${narrow}.lock`).toString(8), "600");
    // A new database (0644 with the usual umask): as the single-user default.
    const fresh = `${dir.path}/new.db`;
    await (await serve({ database: fresh, path })).shutdown();
    const expected = 0o600 | (mode(fresh) & 0o020 ? 0o060 : 0) | (mode(fresh) & 0o002 ? 0o006 : 0);
    assert.equal(mode(`${fresh}.lock`).toString(8), expected.toString(8));
  },
});

Deno.test({
  name: "serve() as root gives the lock file it makes beside another user's database that user, " +
    "as SQLite gives its -wal and -shm",
  ignore: Deno.build.os !== "linux" || Deno.uid() !== 0,
  async fn() {
    await using dir = await tempDir();
    const db = database(`${dir.path}/a.db`, 0o660);
    Deno.chownSync(db, 65534, 65534);
    await using server = await serve({ database: db, path: `${dir.path}/s.sock` });
    const lock = Deno.statSync(`${db}.lock`);
    const wal = Deno.statSync(`${db}-wal`);
    assert.deepEqual([lock.uid, lock.gid, lock.mode! & 0o777], [65534, 65534, 0o660]);
    assert.deepEqual([wal.uid, wal.gid], [65534, 65534], "SQLite's own files, for comparison");
    await server.shutdown();
  },
});

Deno.test({
  name: "a database shared by two users: the second serves it after the first's server stopped",
  ignore: !canRunAsNobody,
  async fn() {
    await using dir = await tempDir();
    Deno.chmodSync(dir.path, 0o777); // a directory both may write (a group's, in real life)
    const db = database(`${dir.path}/app.db`, 0o666);
    const sock = `${dir.path}/b.sock`;
    await (await serve({ database: db, path: `${dir.path}/a.sock` })).shutdown();
    const second = spawnServer(db, sock, [], asNobody);
    const client = await connectWhenUp(sock, second.child);
    try {
      await client.run("INSERT INTO t VALUES (1)");
      assert.deepEqual(await client.get("SELECT count(*) AS n FROM t"), { n: 1 });
    } finally {
      await client.close();
    }
    assert.equal(await stop(second), 0, second.log());
    assert.equal(Deno.statSync(`${db}.lock`).uid, 0, "the lock file stays the first user's");
  },
});

Deno.test({
  name: "a lock file another user left that this user may not write, no server holding it: the " +
    "start says whose it is and what to do (not 'make the directory writable'); --readonly " +
    "serves without the lock",
  ignore: !canRunAsNobody,
  async fn() {
    await using dir = await tempDir();
    Deno.chmodSync(dir.path, 0o777);
    const db = database(`${dir.path}/app.db`, 0o666);
    const lock = `${db}.lock`;
    const sock = `${dir.path}/b.sock`;
    await (await serve({ database: db, path: `${dir.path}/a.sock` })).shutdown();
    const advice = (bits: string) =>
      new RegExp(
        "^netsqlite: " + literal(
          `Cannot serve "${db}": its lock file "${lock}" cannot be used: it belongs to uid 0 ` +
            `and group 0, mode ${bits}, and this user, uid 65534, may not write it; no server ` +
            "holds it: remove it (the next start makes it again, writable by those who may write " +
            `the database), or have its owner make it writable for its group (chmod g+w "${lock}")`,
        ) + "\n$",
      );
    // As an earlier version made it: unreadable too (judged by the flock on the database file);
    // then readable (judged by locking it through a read-only descriptor).
    for (const bits of [0o600, 0o644]) {
      Deno.chmodSync(lock, bits);
      const start = await startAsNobody(db, sock);
      assert.equal(start.code, 1, start.stderr);
      assert.match(start.stderr, advice(`0${bits.toString(8)}`));
    }
    assert.deepEqual([...Deno.readDirSync(dir.path)].map((e) => e.name).sort(), [
      "app.db",
      "app.db.lock",
    ]);
    Deno.chmodSync(lock, 0o600);
    const ro = spawnServer(db, sock, ["--readonly"], asNobody);
    const client = await connectWhenUp(sock, ro.child);
    try {
      assert.deepEqual(await client.get("SELECT count(*) AS n FROM t"), { n: 0 });
    } finally {
      await client.close();
    }
    assert.equal(await stop(ro), 0, ro.log());
    assert.match(
      ro.log(),
      new RegExp(
        literal(
          `netsqlite: cannot use the lock file "${lock}" (it belongs to uid 0 and group 0, mode ` +
            "0600, and this user, uid 65534, may not write it; no server holds it): serving " +
            "read-only without the one-server lock",
        ),
      ),
    );
  },
});

Deno.test({
  name: "a lock file this user may not write, held by another user's running server: 'another " +
    "server owns' it, with its pid and socket (its pid alone, or neither, when unreadable)",
  ignore: !canRunAsNobody,
  async fn() {
    await using dir = await tempDir();
    Deno.chmodSync(dir.path, 0o777);
    const db = database(`${dir.path}/app.db`, 0o666);
    const lock = `${db}.lock`;
    const first = `${dir.path}/a.sock`;
    const sock = `${dir.path}/b.sock`;
    await using _server = await serve({ database: db, path: first });
    Deno.chmodSync(lock, 0o644);
    const readable = await startAsNobody(db, sock);
    assert.equal(readable.code, 1, readable.stderr);
    assert.equal(
      readable.stderr,
      `netsqlite: another server owns ${db} (pid ${Deno.pid}, socket unix:${first})\n`,
    );
    Deno.chmodSync(lock, 0o600);
    const unreadable = `socket unknown: this user may not read its lock file "${lock}")\n`;
    // The task's permissions: told by the flock on the database file, which names no pid.
    const task = await startAsNobody(db, sock);
    assert.equal(task.code, 1, task.stderr);
    assert.equal(task.stderr, `netsqlite: another server owns ${db} (pid unknown, ${unreadable}`);
    // -A: /proc/locks names the pid.
    const all = await startAsNobody(db, sock, ["-A"]);
    assert.equal(all.code, 1, all.stderr);
    assert.equal(
      all.stderr,
      `netsqlite: another server owns ${db} (pid ${Deno.pid}, ${unreadable}`,
    );
    assert.ok(!(await Deno.lstat(sock).then(() => true, () => false)), "nothing left behind");
    // The running server is untouched.
    await using c = await connect({ path: first });
    assert.deepEqual(await c.get("SELECT count(*) AS n FROM t"), { n: 0 });
  },
});

Deno.test({
  name: "no lock file yet, in a directory this user may not write: the message still says to " +
    "make the directory writable",
  ignore: !canRunAsNobody,
  async fn() {
    await using dir = await tempDir();
    Deno.chmodSync(dir.path, 0o755);
    const db = database(`${dir.path}/app.db`, 0o666);
    const start = await startAsNobody(db, `${dir.path}/b.sock`);
    assert.equal(start.code, 1, start.stderr);
    assert.match(
      start.stderr,
      new RegExp(
        literal(
          `netsqlite: Cannot serve "${db}": cannot create its lock file "${db}.lock" ` +
            "(Permission denied (os error 13)): make the directory writable by this user",
        ),
      ),
    );
  },
});
