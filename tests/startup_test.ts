/**
 * Server start-up: the one-server lock follows the database's real path
 * (symbolic and hard links), a start that fails leaves no file behind, a
 * stopping server leaves alone the socket of the server that replaced it, and
 * start-up errors name the database or socket and what to do. In-process
 * servers on temp directories.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { connect } from "../client.ts";
import { serve } from "../server.ts";
import { MAX_SOCKET_PATH_BYTES } from "../transport/listen.ts";
import { loadSqlite } from "../engine/binding/load.ts";
import { exists, readStdoutUntil, startServerProcess, tempDir } from "./_helpers.ts";

Deno.test("serve() refuses a second server on the database reached through a symbolic link", async () => {
  await using dir = await tempDir();
  const database = `${dir.path}/a.db`;
  await using _first = await serve({ database, path: `${dir.path}/a.sock` });
  Deno.mkdirSync(`${dir.path}/other`);
  const link = `${dir.path}/other/link.db`;
  Deno.symlinkSync(database, link);
  await assert.rejects(
    serve({ database: link, path: `${dir.path}/b.sock` }),
    (err: Error & { code?: string }) => {
      assert.equal(err.code, "DATABASE_LOCKED");
      assert.equal(
        err.message,
        `another server owns ${link} (which is ${Deno.realPathSync(database)}; ` +
          `pid ${Deno.pid}, socket unix:${dir.path}/a.sock)`,
      );
      return true;
    },
  );
  assert.ok(!exists(`${dir.path}/b.sock`));
  assert.ok(!exists(`${link}.lock`));
});

Deno.test("serve() refuses a second server reached through a symbolic link to a directory above the database, naming its real path", async () => {
  await using dir = await tempDir();
  Deno.mkdirSync(`${dir.path}/data`);
  Deno.mkdirSync(`${dir.path}/other`);
  const database = `${dir.path}/data/app.db`;
  Deno.symlinkSync(`${dir.path}/data`, `${dir.path}/other/linkdir`);
  const viaLink = `${dir.path}/other/linkdir/app.db`;
  const real = `${Deno.realPathSync(`${dir.path}/data`)}/app.db`;
  // A server of this process (refused from its list of files served) ...
  await using first = await serve({ database, path: `${dir.path}/a.sock` });
  await assert.rejects(
    serve({ database: viaLink, path: `${dir.path}/b.sock` }),
    (err: Error & { code?: string }) => {
      assert.equal(err.code, "DATABASE_LOCKED");
      assert.equal(
        err.message,
        `another server owns ${viaLink} (which is ${real}; pid ${Deno.pid}, socket ` +
          `unix:${dir.path}/a.sock)`,
      );
      return true;
    },
  );
  await first.shutdown();
  // ... and one of another process (refused by its lock).
  await using other = await startServerProcess({ dir: dir.path, database });
  await assert.rejects(
    serve({ database: viaLink, path: `${dir.path}/b.sock` }),
    (err: Error & { code?: string }) => {
      assert.equal(err.code, "DATABASE_LOCKED");
      assert.equal(
        err.message,
        `another server owns ${viaLink} (which is ${real}; pid ${other.child.pid}, socket ` +
          `unix:${dir.path}/test.sock)`,
      );
      return true;
    },
  );
  // A path that names the file without a link says nothing more.
  await assert.rejects(
    serve({ database: `${dir.path}/data/../data/app.db`, path: `${dir.path}/b.sock` }),
    (err: Error) => {
      assert.match(
        err.message,
        new RegExp(`^another server owns \\S+/app\\.db \\(pid ${other.child.pid}, socket `),
      );
      return true;
    },
  );
});

Deno.test("serve() refuses a second server through a symbolic link to a database not yet created", async () => {
  await using dir = await tempDir();
  const link = `${dir.path}/link.db`;
  Deno.symlinkSync(`${dir.path}/real.db`, link); // dangling until the first server creates it
  await using _first = await serve({ database: link, path: `${dir.path}/a.sock` });
  assert.ok(exists(`${dir.path}/real.db.lock`));
  await assert.rejects(
    serve({ database: `${dir.path}/real.db`, path: `${dir.path}/b.sock` }),
    (err: Error & { code?: string }) => err.code === "DATABASE_LOCKED",
  );
});

Deno.test({
  name: "serve() refuses a second server on the database reached through a hard link (Linux)",
  ignore: Deno.build.os !== "linux",
  async fn() {
    // The first server in another process: its flock on the file tells (in this process, the
    // list of files served does: see the next test).
    await using first = await startServerProcess();
    Deno.mkdirSync(`${first.dir}/other`);
    const hard = `${first.dir}/other/hard.db`;
    Deno.linkSync(first.database, hard);
    await assert.rejects(
      serve({ database: hard, path: `${first.dir}/b.sock` }),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, "DATABASE_LOCKED");
        assert.match(
          err.message,
          /^another server owns .*hard\.db \(through another name of the same file, a hard link;/,
        );
        return true;
      },
    );
    // The failed start removed what it created, and the first server still serves.
    assert.ok(!exists(`${first.dir}/b.sock`));
    assert.ok(!exists(`${hard}.lock`));
    await using db = await first.client();
    assert.deepEqual(await db.values("SELECT 1"), [[1]]);
  },
});

const LOAD_TS = new URL("../engine/binding/load.ts", import.meta.url).href;

/**
 * What another process gets of `PRAGMA journal_mode = DELETE` on `database`
 * (no busy wait), through the FFI binding (the system's SQLite; newer ones
 * may refuse it anyway): `database is locked` while a server holds its
 * SQLite locks on the file; `changed` once nothing does (it then also
 * deletes the `-wal` and `-shm`).
 */
async function journalModeDelete(database: string): Promise<string> {
  const code = `import { loadSqlite } from "${LOAD_TS}";
    const sqlite = loadSqlite({ engine: "ffi" });
    const db = sqlite.open(Deno.args[0], { readOnly: false, busyTimeout: 0 });
    try { db.exec("PRAGMA journal_mode = DELETE"); console.log("changed"); }
    catch (e) { console.log(e.message); }
    db.close();
    sqlite.close();`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code, database],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  return new TextDecoder().decode(out.stdout).trim();
}

/** True where the FFI binding loads (the system's SQLite library is there). */
const ffiLoads = (() => {
  try {
    loadSqlite({ engine: "ffi" }).close();
    return true;
  } catch {
    return false;
  }
})();

for (const engine of ["ffi", "node"] as const) {
  Deno.test({
    name:
      `serve({ engine: "${engine}" }) of a hard link of a database this process serves is refused before opening it, and leaves the first server's SQLite locks held`,
    ignore: Deno.build.os === "windows" || !ffiLoads,
    async fn() {
      await using dir = await tempDir();
      const database = `${dir.path}/a.db`;
      await using _first = await serve({ database, path: `${dir.path}/a.sock`, engine });
      await using db = await connect({ path: `${dir.path}/a.sock` });
      await db.exec("CREATE TABLE t (x)");
      await db.run("INSERT INTO t VALUES (1)");
      assert.equal(await journalModeDelete(database), "database is locked");
      Deno.mkdirSync(`${dir.path}/other`);
      const hard = `${dir.path}/other/hard.db`;
      Deno.linkSync(database, hard);
      await assert.rejects(
        serve({ database: hard, path: `${dir.path}/b.sock` }),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, "DATABASE_LOCKED");
          assert.equal(
            err.message,
            `another server owns ${hard} (pid ${Deno.pid}, socket unix:${dir.path}/a.sock; ` +
              "through another name of the same file, a hard link: this process serves it as " +
              `${Deno.realPathSync(database)})`,
          );
          return true;
        },
      );
      // Closing a descriptor of the file would have dropped every fcntl lock of this process on it.
      assert.equal(await journalModeDelete(database), "database is locked");
      assert.ok(exists(`${database}-wal`) && exists(`${database}-shm`));
      assert.ok(!exists(`${dir.path}/b.sock`));
      assert.ok(!exists(`${hard}.lock`));
      await db.run("INSERT INTO t VALUES (2)");
      assert.deepEqual(await db.values("SELECT x FROM t ORDER BY x"), [[1], [2]]);
    },
  });
}

Deno.test("a server finishing its shutdown leaves the socket of the server that replaced it", async () => {
  await using dir = await tempDir();
  const sock = `${dir.path}/s.sock`;
  const a = await serve({ database: `${dir.path}/a.db`, path: sock });
  const client = await connect({ path: sock, max: 1 });
  await client.exec("BEGIN; CREATE TABLE t (x)"); // keeps A in its grace period
  const stopping = a.shutdown({ graceMs: 400 });
  await new Promise((resolve) => setTimeout(resolve, 50)); // the listener's close completes
  // A's listener is closed: its socket looks stale, and B replaces it.
  await using b = await serve({ database: `${dir.path}/b.db`, path: sock });
  await stopping;
  await client.close().catch(() => {});
  assert.ok(exists(sock), "A removed B's socket file");
  await using db = await connect({ path: sock });
  const [[file]] = await db.values<[string]>("SELECT file FROM pragma_database_list");
  assert.equal(file, Deno.realPathSync(`${dir.path}/b.db`));
  assert.equal(b.addr.transport, "unix");
});

Deno.test("serve() on a socket a live server holds creates no database and no lock file", async () => {
  await using dir = await tempDir();
  const sock = `${dir.path}/s.sock`;
  await using _first = await serve({ database: `${dir.path}/a.db`, path: sock });
  await assert.rejects(
    serve({ database: `${dir.path}/b.db`, path: sock }),
    /Cannot listen on unix:.*: another server is already listening there/,
  );
  assert.deepEqual(
    [...Deno.readDirSync(dir.path)].map((e) => e.name).filter((n) => n.startsWith("b.db")),
    [],
  );
});

Deno.test("serve() on a path that is not a socket creates no database and no lock file", async () => {
  await using dir = await tempDir();
  Deno.writeTextFileSync(`${dir.path}/plain`, "");
  await assert.rejects(
    serve({ database: `${dir.path}/b.db`, path: `${dir.path}/plain` }),
    /the path exists and is not a socket/,
  );
  assert.ok(!exists(`${dir.path}/b.db`));
  assert.ok(!exists(`${dir.path}/b.db.lock`));
});

Deno.test("serve() on a socket path too long says the limit and creates nothing", async () => {
  await using dir = await tempDir();
  const sock = `${dir.path}/${"s".repeat(MAX_SOCKET_PATH_BYTES)}.sock`;
  const bytes = new TextEncoder().encode(sock).length;
  await assert.rejects(
    serve({ database: `${dir.path}/b.db`, path: sock }),
    (err: Error) => {
      assert.equal(err.name, "ListenError");
      assert.ok(
        err.message.startsWith(
          `Cannot listen on unix:${sock}: the path is ${bytes} bytes long, and a Unix socket ` +
            `path may have at most ${MAX_SOCKET_PATH_BYTES} on ${Deno.build.os}; `,
        ),
        err.message,
      );
      return true;
    },
  );
  assert.equal(MAX_SOCKET_PATH_BYTES, Deno.build.os === "linux" ? 107 : MAX_SOCKET_PATH_BYTES);
  assert.deepEqual([...Deno.readDirSync(dir.path)], []);
});

Deno.test("serve() on a database in a directory that does not exist names that directory", async () => {
  await using dir = await tempDir();
  const database = `${dir.path}/nope/a.db`;
  await assert.rejects(
    serve({ database, path: `${dir.path}/s.sock` }),
    (err: Error & { code?: string }) => {
      assert.equal(err.code, "SQLITE_CANTOPEN");
      assert.equal(
        err.message,
        `Cannot open database "${database}": the directory "${dir.path}/nope" does not exist; ` +
          "create it first",
      );
      return true;
    },
  );
  assert.deepEqual([...Deno.readDirSync(dir.path)], []);
});

for (const engine of ["ffi", "node"] as const) {
  Deno.test(`serve({ engine: "${engine}" }) on a file that is not SQLite names it, and leaves no socket or lock`, async () => {
    await using dir = await tempDir();
    const database = `${dir.path}/junk.db`;
    Deno.writeTextFileSync(database, "not an SQLite file\n".repeat(20));
    await assert.rejects(
      serve({ database, path: `${dir.path}/s.sock`, engine }),
      (err: Error & { code?: string }) => {
        assert.equal(err.name, "SqliteError");
        assert.equal(err.code, "SQLITE_NOTADB");
        assert.equal(
          err.message,
          `Cannot open database "${database}": file is not a database: it is not an SQLite ` +
            "database (or it is encrypted); check the path",
        );
        return true;
      },
    );
    assert.deepEqual([...Deno.readDirSync(dir.path)].map((e) => e.name), ["junk.db"]);
  });
}

Deno.test({
  name: "serve() on a database file this user cannot write suggests --readonly",
  ignore: Deno.build.os === "windows" || Deno.uid() === 0, // root writes whatever the mode
  async fn() {
    await using dir = await tempDir();
    const database = `${dir.path}/ro.db`;
    const setup = new DatabaseSync(database); // rollback journal: turning WAL on must write
    setup.exec("CREATE TABLE t (x)");
    setup.close();
    Deno.chmodSync(database, 0o444);
    await assert.rejects(
      serve({ database, path: `${dir.path}/s.sock` }),
      /Cannot open database ".*ro\.db": .*readonly database: make the file and its directory writable by this user, or serve it with --readonly/,
    );
  },
});

Deno.test({
  name: "serve() in a directory this user cannot write names the lock file and suggests --readonly",
  ignore: Deno.build.os === "windows" || Deno.uid() === 0, // root writes whatever the mode
  async fn() {
    await using dir = await tempDir();
    Deno.mkdirSync(`${dir.path}/ro`, { mode: 0o555 });
    Deno.chmodSync(`${dir.path}/ro`, 0o555);
    const database = `${dir.path}/ro/new.db`;
    try {
      await assert.rejects(
        serve({ database, path: `${dir.path}/s.sock` }),
        (err: Error) => {
          assert.ok(err instanceof Deno.errors.PermissionDenied);
          assert.match(
            err.message,
            /^Cannot serve ".*\/ro\/new\.db": cannot create its lock file ".*\/ro\/new\.db\.lock" \(Permission denied \(os error 13\)\): make the directory writable by this user, or serve the database with --readonly$/,
          );
          return true;
        },
      );
      assert.ok(!exists(`${dir.path}/s.sock`));
    } finally {
      Deno.chmodSync(`${dir.path}/ro`, 0o755);
    }
  },
});

Deno.test("serve() right after a shutdown starts while the process spawns children (their copies of the lock's descriptor are let go)", async () => {
  await using dir = await tempDir();
  const options = { database: `${dir.path}/a.db`, path: `${dir.path}/a.sock` };
  let spawning = true;
  // Each child holds copies of the parent's descriptors between its fork and its exec.
  const spawner = (async () => {
    while (spawning) {
      await Promise.all(
        Array.from(
          { length: 4 },
          () => new Deno.Command(Deno.execPath(), { args: ["--version"] }).output(),
        ),
      );
    }
  })();
  try {
    for (let i = 0; i < 150; i++) {
      const server = await serve(options);
      await server.shutdown();
    }
  } finally {
    spawning = false;
    await spawner;
  }
  // A live owner is still refused at once, naming its pid.
  await using _owner = await serve(options);
  const start = performance.now();
  await assert.rejects(
    serve({ ...options, path: `${dir.path}/b.sock` }),
    new RegExp(`pid ${Deno.pid}`),
  );
  assert.ok(performance.now() - start < 500, "refused without waiting");
});

Deno.test("the start-up line gives a relative database path with its absolute path", async () => {
  await using dir = await tempDir();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      fileURLToPath(new URL("../server.ts", import.meta.url)),
      "--db",
      "app.db",
      "--socket",
      `${dir.path}/s.sock`,
      "--engine",
      "node",
    ],
    cwd: dir.path,
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const { text, drained } = await readStdoutUntil(child, "\n");
  child.kill("SIGTERM");
  await child.status;
  await drained;
  const real = Deno.realPathSync(dir.path);
  assert.match(text, /^netsqlite \S+ serving app\.db \((.+)\) on unix:/);
  assert.equal(/serving app\.db \((.+)\) on/.exec(text)![1], `${real}/app.db`);
  assert.ok(text.split("\n")[0].endsWith(` on unix:${dir.path}/s.sock`), text);
});
