/**
 * Server lifecycle: one server per database (the lock beside it), restart
 * after `kill -9`, clean shutdown on SIGTERM/SIGINT with a grace period,
 * named channels and concurrent autostart. Servers run as real processes.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { connect } from "../client.ts";
import { serve } from "../server.ts";
import { channelSocketPath } from "../transport/address.ts";
import { exists, inEnv, startServerProcess, tempDir } from "./_helpers.ts";

const SERVER_TS = fileURLToPath(new URL("../server.ts", import.meta.url));
const CHILD_TS = fileURLToPath(new URL("./_autostart_child.ts", import.meta.url));

/** Runs `deno run -A server.ts args` to its end. */
async function runServer(args: string[]): Promise<{ code: number; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SERVER_TS, ...args],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

/** Resolves with the exit status, or rejects after `ms`. */
async function statusWithin(child: Deno.ChildProcess, ms: number): Promise<Deno.CommandStatus> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      child.status,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`process did not exit within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("server.ts refuses a second server on the same database, whatever its socket", async () => {
  await using first = await startServerProcess();
  const r = await runServer(["--db", first.database, "--socket", `${first.dir}/other.sock`]);
  assert.equal(r.code, 1);
  const sock = first.connectOptions.path;
  assert.equal(
    r.stderr.trim(),
    `netsqlite: another server owns ${first.database} (pid ${first.child.pid}, socket unix:${sock})`,
  );
  assert.ok(!exists(`${first.dir}/other.sock`));
  // The first server is untouched.
  await using db = await first.client();
  assert.deepEqual(await db.values("SELECT 1"), [[1]]);
});

Deno.test("serve() refuses a second in-process server on the same database", async () => {
  await using dir = await tempDir();
  const database = `${dir.path}/a.db`;
  await using _first = await serve({ database, path: `${dir.path}/a.sock` });
  await assert.rejects(
    serve({ database, hostname: "127.0.0.1", port: 0 }),
    (err: Error & { code?: string }) => {
      assert.equal(err.code, "DATABASE_LOCKED");
      assert.equal(
        err.message,
        `another server owns ${database} (pid ${Deno.pid}, socket unix:${dir.path}/a.sock)`,
      );
      return true;
    },
  );
});

Deno.test("server.ts restarts on a database whose server was killed with SIGKILL", async () => {
  await using dir = await tempDir();
  const database = `${dir.path}/a.db`;
  const first = await startServerProcess({ dir: dir.path, database });
  {
    await using db = await first.client();
    await db.exec("CREATE TABLE t (v); INSERT INTO t VALUES ('kept')");
  }
  await first.kill();
  assert.ok(exists(`${database}.lock`), "the lock file stays; only the OS lock is gone");
  await using second = await startServerProcess({ dir: dir.path, database });
  await using db = await second.client();
  assert.deepEqual(await db.values("SELECT v FROM t"), [["kept"]]);
});

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.test(`server.ts on ${signal} exits 0, removes its socket and leaves an empty WAL`, async () => {
    await using sp = await startServerProcess();
    {
      await using db = await sp.client();
      await db.exec("CREATE TABLE t (v)");
      for (let i = 0; i < 20; i++) await db.run("INSERT INTO t VALUES (?)", [i]);
    }
    assert.ok(Deno.statSync(`${sp.database}-wal`).size > 0, "the WAL holds the writes");
    sp.child.kill(signal);
    const status = await statusWithin(sp.child, 10000);
    assert.equal(status.code, 0);
    assert.ok(!exists(sp.connectOptions.path!), "socket file removed");
    const wal = exists(`${sp.database}-wal`) ? Deno.statSync(`${sp.database}-wal`).size : 0;
    assert.equal(wal, 0);
    const check = new DatabaseSync(sp.database, { readOnly: true });
    assert.deepEqual({ ...check.prepare("SELECT count(*) AS n FROM t").get() }, { n: 20 });
    check.close();
    // The lock is free again.
    await using again = await startServerProcess({ dir: sp.dir, database: sp.database });
    assert.match(again.banner, /serving/);
  });
}

Deno.test("server.ts on SIGTERM lets an open transaction commit within --grace-ms, refusing new connections", async () => {
  await using sp = await startServerProcess({ args: ["--grace-ms", "5000"] });
  await using db = await sp.client();
  await db.exec("CREATE TABLE t (v)");
  await db.exec("BEGIN");
  await db.run("INSERT INTO t VALUES ('in flight')");
  sp.child.kill("SIGTERM");
  await new Promise((resolve) => setTimeout(resolve, 300));
  await assert.rejects(connect({ ...sp.connectOptions, reconnect: false }));
  await db.run("INSERT INTO t VALUES ('second')");
  await db.exec("COMMIT");
  const status = await statusWithin(sp.child, 10000);
  assert.equal(status.code, 0);
  const check = new DatabaseSync(sp.database, { readOnly: true });
  assert.deepEqual({ ...check.prepare("SELECT count(*) AS n FROM t").get() }, { n: 2 });
  check.close();
});

Deno.test("server.ts on SIGTERM rolls back a transaction still open after --grace-ms", async () => {
  await using sp = await startServerProcess({ args: ["--grace-ms", "300"] });
  await using db = await sp.client();
  await db.exec("CREATE TABLE t (v)");
  await db.exec("BEGIN");
  await db.run("INSERT INTO t VALUES ('abandoned')");
  const t0 = performance.now();
  sp.child.kill("SIGTERM");
  const status = await statusWithin(sp.child, 10000);
  const took = performance.now() - t0;
  assert.equal(status.code, 0);
  assert.ok(took >= 250, `waited the grace period (${took.toFixed(0)} ms)`);
  const check = new DatabaseSync(sp.database, { readOnly: true });
  assert.deepEqual({ ...check.prepare("SELECT count(*) AS n FROM t").get() }, { n: 0 });
  check.close();
});

Deno.test("server.ts on SIGHUP shuts down gracefully like SIGTERM (the transaction commits within --grace-ms), and exits 129 on a second one", async () => {
  {
    await using sp = await startServerProcess({ args: ["--grace-ms", "5000"] });
    await using db = await sp.client();
    await db.exec("CREATE TABLE t (v)");
    await db.exec("BEGIN");
    await db.run("INSERT INTO t VALUES ('in flight')");
    sp.child.kill("SIGHUP");
    await new Promise((resolve) => setTimeout(resolve, 300));
    await db.run("INSERT INTO t VALUES ('second')");
    await db.exec("COMMIT");
    const status = await statusWithin(sp.child, 10000);
    assert.equal(status.code, 0);
    const check = new DatabaseSync(sp.database, { readOnly: true });
    assert.deepEqual({ ...check.prepare("SELECT count(*) AS n FROM t").get() }, { n: 2 });
    check.close();
  }
  await using sp = await startServerProcess({ args: ["--grace-ms", "60000"] });
  await using db = await sp.client();
  await db.exec("BEGIN");
  sp.child.kill("SIGHUP");
  await new Promise((resolve) => setTimeout(resolve, 1000)); // past the same-signal window
  sp.child.kill("SIGHUP");
  const status = await statusWithin(sp.child, 5000);
  assert.equal(status.code, 129);
});

Deno.test("server.ts exits at once on a second signal", async () => {
  await using sp = await startServerProcess({ args: ["--grace-ms", "60000"] });
  await using db = await sp.client();
  await db.exec("CREATE TABLE t (v)");
  await db.exec("BEGIN");
  await db.run("INSERT INTO t VALUES (1)");
  sp.child.kill("SIGTERM");
  await new Promise((resolve) => setTimeout(resolve, 1000)); // past the same-signal window
  sp.child.kill("SIGTERM");
  const status = await statusWithin(sp.child, 5000);
  assert.equal(status.code, 143);
});

Deno.test("server.ts treats one signal delivered twice at once (Ctrl-C under deno task) as one: graceful exit 0", async () => {
  await using sp = await startServerProcess({ args: ["--grace-ms", "1000"] });
  await using db = await sp.client();
  await db.exec("CREATE TABLE t (v); INSERT INTO t VALUES (1)");
  // An open transaction keeps the shutdown waiting (up to --grace-ms) for the second delivery.
  await db.exec("BEGIN");
  await db.run("INSERT INTO t VALUES (2)");
  // The terminal's Ctrl-C reaches the process group, and deno task forwards it too.
  // (30 ms apart: two signals sent back to back are merged by the kernel.)
  sp.child.kill("SIGINT");
  await new Promise((resolve) => setTimeout(resolve, 30));
  sp.child.kill("SIGINT");
  const status = await statusWithin(sp.child, 5000);
  assert.equal(status.code, 0);
});

/**
 * The body of the test below, run by {@link inEnv} in a child whose
 * `XDG_RUNTIME_DIR` is `dir` (so the channel sockets live there).
 */
export async function channelMeeting(dir: string): Promise<void> {
  const path = channelSocketPath("my-app");
  assert.equal(path, `${dir}/netsqlite/channel-my-app.sock`);
  await using server = await serve({ channel: "my-app", database: `${dir}/a.db` });
  assert.deepEqual(server.addr, { transport: "unix", path });
  await using db = await connect({ channel: "my-app" });
  assert.deepEqual(await db.values("SELECT 7"), [[7]]);
  assert.throws(() => channelSocketPath("../escape"), /Invalid channel "\.\.\/escape"/);
}

Deno.test("serve({ channel }) and connect({ channel }) meet on the per-user channel socket", async () => {
  await using dir = await tempDir();
  await inEnv({ XDG_RUNTIME_DIR: dir.path }, import.meta.url, "channelMeeting", dir.path);
});

/** Pids of live processes whose command line holds `needle` and `server.ts`. */
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

Deno.test({
  name: "connect({ channel, autostart }) from 10 processes at once yields exactly one server",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    await using dir = await tempDir();
    const database = `${dir.path}/auto.db`;
    const env = { XDG_RUNTIME_DIR: dir.path };
    const children = Array.from({ length: 10 }, () =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", CHILD_TS, "auto", database],
        env,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output());
    const results = await Promise.all(children);
    let serverPid = 0;
    try {
      for (const r of results) {
        assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
        assert.equal(new TextDecoder().decode(r.stdout).trim(), "ok");
      }
      serverPid = Number(JSON.parse(Deno.readTextFileSync(`${database}.lock`)).pid);
      // Losers exit once they find the lock taken; the winner stays.
      const deadline = performance.now() + 20000;
      let pids = serverPids(database);
      while (pids.length !== 1 && performance.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        pids = serverPids(database);
      }
      assert.deepEqual(pids, [serverPid]);
      const check = new DatabaseSync(database, { readOnly: true });
      assert.deepEqual({ ...check.prepare("SELECT count(DISTINCT pid) AS n FROM hits").get() }, {
        n: 10,
      });
      check.close();
    } finally {
      if (serverPid === 0) {
        for (const pid of serverPids(database)) Deno.kill(pid, "SIGKILL");
      } else {
        Deno.kill(serverPid, "SIGTERM");
        const deadline = performance.now() + 10000;
        while (exists(`/proc/${serverPid}`) && performance.now() < deadline) {
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
    }
    assert.ok(!exists(channelSocketPathIn(dir.path, "auto")), "the server removed its socket");
  },
});

function channelSocketPathIn(runtimeDir: string, name: string): string {
  return `${runtimeDir}/netsqlite/channel-${name}.sock`;
}

Deno.test("server.ts on SIGTERM under a steady write load answers every write that committed; every write that failed is absent", async () => {
  // --grace-ms 0: the engine is never idle under this load, so the shutdown
  // comes while writes run and wait for their group commit.
  await using sp = await startServerProcess({ args: ["--grace-ms", "0"] });
  {
    await using setup = await sp.client();
    await setup.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)");
  }
  const ok = new Set<number>();
  const failed = new Map<number, string>();
  let next = 1;
  let stop = false;
  const writer = async () => {
    const db = await connect({ ...sp.connectOptions, max: 1, reconnect: false });
    try {
      while (!stop) {
        const ids = Array.from({ length: 8 }, () => next++);
        await Promise.all(ids.map((id) =>
          db.run("INSERT INTO t VALUES (?)", [id]).then(
            () => void ok.add(id),
            (err) => void failed.set(id, String((err as Error).message)),
          )
        ));
        if (ids.some((id) => failed.has(id))) break;
      }
    } finally {
      await db.close();
    }
  };
  const writers = Array.from({ length: 4 }, writer);
  await new Promise((resolve) => setTimeout(resolve, 400));
  sp.child.kill("SIGTERM");
  const status = await statusWithin(sp.child, 15000);
  // Each writer goes on until a write fails: the last replies before the exit
  // may be read after it is seen, and writes sent then are refused too.
  const fallback = setTimeout(() => stop = true, 10_000);
  await Promise.all(writers).finally(() => clearTimeout(fallback));
  assert.equal(status.code, 0);
  assert.ok(ok.size > 50, `only ${ok.size} writes before the signal`);
  assert.ok(failed.size > 0, "no write was refused by the shutdown");
  const check = new DatabaseSync(sp.database, { readOnly: true });
  const stored = new Set(check.prepare("SELECT id FROM t").all().map((r) => Number(r.id)));
  check.close();
  const lost = [...ok].filter((id) => !stored.has(id));
  const failedButStored = [...failed].filter(([id]) => stored.has(id));
  assert.deepEqual(lost, [], "acknowledged writes missing");
  assert.deepEqual(failedButStored, [], "writes reported failed but committed");
  // The writes cut off were told why.
  assert.ok(
    [...failed.values()].some((message) => /Server is shutting down/.test(message)),
    `messages: ${[...new Set(failed.values())]}`,
  );
});

/** Runs server.ts on `database` with `env`; its exit code and stderr (killed after 10 s). */
async function serverRefusal(
  database: string,
  env: Record<string, string>,
): Promise<{ code: number; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", fileURLToPath(new URL("../server.ts", import.meta.url)), "--db", database],
    env,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  try {
    const { code } = await statusWithin(child, 10_000);
    return { code, stderr: await stderr };
  } catch (err) {
    child.kill("SIGKILL");
    await child.status;
    await stderr;
    throw err;
  }
}

Deno.test({
  name:
    "a per-user socket directory writable by others (made by another user first) is refused by server and client",
  ignore: Deno.build.os === "windows",
  fn: async () => {
    await using dir = await tempDir();
    const socketDir = `${dir.path}/netsqlite`;
    Deno.mkdirSync(socketDir);
    Deno.chmodSync(socketDir, 0o777); // as a squatter would leave it
    const env = { XDG_RUNTIME_DIR: dir.path };
    const server = await serverRefusal(`${dir.path}/a.db`, env);
    assert.equal(server.code, 1, server.stderr);
    assert.match(
      server.stderr,
      /the socket directory .*netsqlite is writable by other users \(mode 0777\); another user may have made it/,
    );
    assert.deepEqual([...Deno.readDirSync(socketDir)], [], "no socket was made there");
    // A client does not send its hello (and token) through it either.
    const client = await new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `import { connect } from "${new URL("../mod.ts", import.meta.url).href}";
         try { await connect({ database: "${dir.path}/a.db", token: "secret" }); }
         catch (err) { console.log(err.name, err.message); }`,
      ],
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.match(
      new TextDecoder().decode(client.stdout),
      /^ConnectionError Cannot connect to unix:.*: the socket directory .* is writable by other users/,
      new TextDecoder().decode(client.stderr),
    );
    if (Deno.uid() === 0) {
      // Closed to others but owned by someone else: refused too.
      Deno.chmodSync(socketDir, 0o700);
      Deno.chownSync(socketDir, 65534, 65534);
      const again = await serverRefusal(`${dir.path}/a.db`, env);
      assert.equal(again.code, 1, again.stderr);
      assert.match(again.stderr, /belongs to uid 65534, not to this user \(uid 0\)/);
    }
  },
});

for (const opens of [true, false]) {
  Deno.test({
    name: `server.ts on SIGTERM while starting (the database then ${
      opens ? "opens" : "fails to open"
    }) stops cleanly: exit 143, no socket or temporary file left${opens ? "" : ", no lock file"}`,
    ignore: Deno.build.os !== "linux",
    fn: async () => {
      await using dir = await tempDir();
      const database = `${dir.path}/a.db`;
      const socket = `${dir.path}/s.sock`;
      if (!opens) Deno.writeTextFileSync(database, "not a database, but long enough to be read");
      // Holding the socket directory's lock keeps the start claiming its socket (up to 2 s).
      const dirLock = Deno.openSync(dir.path, { read: true });
      dirLock.lockSync(true);
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", SERVER_TS, "--db", database, "--socket", socket],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const output = child.output();
      try {
        const deadline = performance.now() + 10000;
        const locked = (): boolean => {
          try {
            return Deno.readTextFileSync(`${database}.lock`).includes(`"pid":${child.pid}`);
          } catch {
            return false;
          }
        };
        while (!locked()) {
          if (performance.now() > deadline) throw new Error("the server did not take its lock");
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        child.kill("SIGTERM");
        await new Promise((resolve) => setTimeout(resolve, 200));
        dirLock.unlockSync();
        const out = await output;
        const stdout = new TextDecoder().decode(out.stdout);
        const stderr = new TextDecoder().decode(out.stderr);
        assert.equal(out.signal, null, "died of the signal");
        assert.equal(out.code, 143, stderr);
        assert.match(stdout, /^netsqlite: SIGTERM while starting: stopping once the start is done/);
        if (opens) assert.match(stdout, /\nnetsqlite: stopped\n$/);
        else {assert.match(
            stderr,
            /^netsqlite: Cannot open database ".*a\.db": file is not a database/,
          );}
      } finally {
        dirLock.close();
        try {
          child.kill("SIGKILL");
        } catch {
          // Exited.
        }
        await output;
      }
      // A start that failed removes its lock file; a server that started keeps it (emptied).
      const left = [...Deno.readDirSync(dir.path)].map((e) => e.name).sort();
      assert.deepEqual(left, opens ? ["a.db", "a.db.lock"] : ["a.db"]);
      if (opens) assert.equal(Deno.readTextFileSync(`${database}.lock`), "");
    },
  });
}
