/**
 * Every name of one database file leads to its one server: the default
 * socket is worked out from the file's real path, as the server's lock is
 * (a symbolic link to the file, a name through a linked directory, a file
 * not yet created under one), for `serve()` and `connect({ database })` in
 * this process and for servers that `autostart` starts as real processes.
 * A client on the default socket whose database is served on another socket
 * (the lock names it) connects there; one given a path is told where.
 */

import assert from "node:assert/strict";
import { basename } from "node:path";
import { connect, ConnectionError } from "../client.ts";
import { DatabaseLockedError, serve } from "../server.ts";
import { defaultSocketPath } from "../transport/address.ts";
import { realPath } from "../transport/_real_path.ts";
import { lockPath } from "../server/lock.ts";
import { alive, inEnv, stopPid, tempDir } from "./_helpers.ts";

const ADDRESS = new URL("../transport/address.ts", import.meta.url).href;

/**
 * A fresh layout, as a reviewer met it: `data/a.db` (created), `other/link.db`
 * a symbolic link to `../data/a.db`, `dlink` a symbolic link to `data`; all
 * under the temp directory's real path.
 */
async function layout(): Promise<{ root: string } & AsyncDisposable> {
  const dir = await tempDir();
  const root = Deno.realPathSync(dir.path);
  Deno.mkdirSync(`${root}/data`);
  Deno.mkdirSync(`${root}/other`);
  Deno.writeFileSync(`${root}/data/a.db`, new Uint8Array(0));
  Deno.symlinkSync("../data/a.db", `${root}/other/link.db`);
  Deno.symlinkSync("data", `${root}/dlink`);
  return { root, [Symbol.asyncDispose]: () => dir[Symbol.asyncDispose]() };
}

/** The pid recorded in the lock of `database` (its real path's `.lock`), or 0. */
function ownerPid(database: string): number {
  try {
    return Number(JSON.parse(Deno.readTextFileSync(lockPath(database))).pid) || 0;
  } catch {
    return 0;
  }
}

/** Stops the server process that owns `database` (SIGTERM, then waits up to 10 s; SIGKILL). */
async function stopOwner(database: string): Promise<void> {
  const pid = ownerPid(database);
  if (pid === 0 || pid === Deno.pid || !alive(pid)) return;
  await stopPid(pid, true);
}

Deno.test("defaultSocketPath() is one socket for every name of a file, as the lock is one lock: a link to it, a linked directory, a file not yet created under one", async () => {
  await using dir = await layout();
  const { root } = dir;
  // A link to a file not yet created, a directory not yet created under a linked one.
  Deno.symlinkSync("../data/later.db", `${root}/other/later-link.db`);
  const cases: [string[], string][] = [
    [[`${root}/data/a.db`, `${root}/other/link.db`, `${root}/dlink/a.db`], `${root}/data/a.db`],
    [[`${root}/data/new.db`, `${root}/dlink/new.db`], `${root}/data/new.db`],
    [[`${root}/data/later.db`, `${root}/other/later-link.db`], `${root}/data/later.db`],
    [[`${root}/data/sub/x.db`, `${root}/dlink/sub/x.db`], `${root}/data/sub/x.db`],
  ];
  for (const [names, real] of cases) {
    const sockets = new Set(names.map((name) => defaultSocketPath(name)));
    assert.equal(sockets.size, 1, `${names.join(", ")}: ${[...sockets].join(", ")}`);
    assert.ok(basename([...sockets][0]).startsWith(`${basename(real, ".db")}-`));
    for (const name of names) assert.equal(realPath(name), real);
  }
  // The lock follows the same real path (it refuses a missing directory, which cannot be served).
  for (const name of [`${root}/other/link.db`, `${root}/dlink/a.db`, `${root}/dlink/new.db`]) {
    assert.equal(lockPath(name), `${realPath(name)}.lock`);
  }
  // Other files keep other sockets.
  assert.notEqual(defaultSocketPath(`${root}/data/a.db`), defaultSocketPath(`${root}/data/new.db`));
});

Deno.test("defaultSocketPath() uses the absolute path where the real path may not be read (no --allow-read)", async () => {
  await using dir = await layout();
  const { root } = dir;
  const script = `${root}/print.ts`;
  Deno.writeTextFileSync(
    script,
    `import { defaultSocketPath } from "${ADDRESS}";
console.log(JSON.stringify(Deno.args.map((name) => defaultSocketPath(name))));`,
  );
  // The socket directory from TMPDIR and the uid: nothing of it needs reading.
  const env: Record<string, string> = { TMPDIR: root };
  for (const key of ["HOME", "PATH", "DENO_DIR"]) {
    const value = Deno.env.get(key);
    if (value !== undefined) env[key] = value;
  }
  /** The default sockets of the link and of the file, in a child that may read `readable`. */
  const sockets = async (readable: string): Promise<[string, string]> => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-prompt",
        `--allow-read=${readable}`,
        "--allow-env",
        "--allow-sys=uid",
        script,
        `${root}/other/link.db`,
        `${root}/data/a.db`,
      ],
      clearEnv: true,
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    return JSON.parse(new TextDecoder().decode(out.stdout));
  };
  // Allowed to read the files, it resolves the link: both names, one socket.
  const [link, real] = await sockets(root);
  assert.equal(link, real);
  // Not allowed, each name stands for itself: the real name still finds the file's socket.
  const [linkDenied, realDenied] = await sockets(script);
  assert.equal(realDenied, real);
  assert.notEqual(linkDenied, real);
  assert.ok(basename(linkDenied).startsWith("link-"), linkDenied);
});

Deno.test({
  name:
    "defaultSocketPath() on a terminal never asks for read access to the database: without it, the absolute path",
  ignore: !hasScript(),
  async fn() {
    await using dir = await layout();
    const { root } = dir;
    const script = `${root}/print.ts`;
    Deno.writeTextFileSync(
      script,
      `import { defaultSocketPath } from "${ADDRESS}";
console.log("sockets", JSON.stringify(Deno.args.map((name) => defaultSocketPath(name))));`,
    );
    // Prompts allowed (no --no-prompt), a terminal from `script`, read granted for the
    // script alone: Deno would ask for the database (and wait) if its path were examined.
    const deno = `'${Deno.execPath()}' run --allow-read='${script}' --allow-env --allow-sys=uid`;
    const command = `${deno} '${script}' '${root}/other/link.db' '${root}/data/a.db'`;
    const child = new Deno.Command("script", {
      args: ["-qefc", command, "/dev/null"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      // Its own environment: other test files running beside this one in the same process set
      // XDG_RUNTIME_DIR for a while, which the child would otherwise inherit.
      clearEnv: true,
      env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", TMPDIR: root, NO_COLOR: "1" },
    }).spawn();
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    // Nothing is typed: a prompt would wait until the timer kills it.
    const out = await child.output().finally(async () => {
      clearTimeout(timer);
      await child.stdin.close().catch(() => {});
    });
    const screen = new TextDecoder().decode(out.stdout);
    assert.doesNotMatch(screen, /requests read access/);
    const printed = screen.match(/sockets (\[.*\])/);
    assert.ok(printed !== null, screen);
    const [link, real] = JSON.parse(printed[1]) as string[];
    assert.ok(basename(link).startsWith("link-"), link);
    assert.ok(basename(real).startsWith("a-"), real);
  },
});

function hasScript(): boolean {
  try {
    return Deno.build.os === "linux" && Deno.statSync("/usr/bin/script").isFile;
  } catch {
    return false;
  }
}

/**
 * The body of the test below: `serve()` and `connect()` in one process on the
 * default socket of `root`'s {@link layout}.
 * Run by {@link inEnv} in a child whose `XDG_RUNTIME_DIR` is `root`, so
 * that the default sockets live there.
 */
export async function servedByAnyName(root: string): Promise<void> {
  {
    await using server = await serve({ database: `${root}/other/link.db` });
    assert.deepEqual(server.addr, {
      transport: "unix",
      path: defaultSocketPath(`${root}/data/a.db`),
    });
    for (const database of [`${root}/data/a.db`, `${root}/dlink/a.db`, `${root}/other/link.db`]) {
      await using db = await connect({ database, connectTimeout: 5000 });
      assert.equal(db.serverInfo.database, `${root}/data/a.db`);
      assert.deepEqual(await db.values("SELECT 1"), [[1]]);
    }
    // A second server of the file by another name is refused, naming the one socket.
    await assert.rejects(serve({ database: `${root}/dlink/a.db` }), (err: unknown) => {
      assert.ok(err instanceof DatabaseLockedError, String(err));
      assert.match(err.message, /which is .*\/data\/a\.db/);
      const socket = defaultSocketPath(`${root}/data/a.db`);
      assert.ok(err.message.includes(`socket unix:${socket}`), err.message);
      return true;
    });
  }
  // Not yet created: served by the linked directory's name, found by the real one.
  await using server = await serve({ database: `${root}/dlink/new.db` });
  assert.deepEqual(server.addr, {
    transport: "unix",
    path: defaultSocketPath(`${root}/data/new.db`),
  });
  await using db = await connect({ database: `${root}/data/new.db`, connectTimeout: 5000 });
  assert.equal(db.serverInfo.database, `${root}/data/new.db`);
  await db.exec("CREATE TABLE t (x)");
  assert.ok(Deno.statSync(`${root}/data/new.db`).isFile);
}

Deno.test("serve({ database }) and connect({ database }) meet on one default socket through a linked file, a linked directory, and for a file not yet created under a linked directory", async () => {
  await using dir = await layout();
  const { root } = dir;
  await inEnv({ XDG_RUNTIME_DIR: root }, import.meta.url, "servedByAnyName", root);
});

/**
 * The body of the test below: `connect({ autostart })` by each name of the
 * files of `root`'s {@link layout}.
 * Run by {@link inEnv} in a child whose `XDG_RUNTIME_DIR` is `root`, so
 * that the default sockets live there.
 */
export async function autostartedByAnyName(root: string): Promise<void> {
  const a = `${root}/data/a.db`;
  const b = `${root}/data/b.db`;
  try {
    {
      await using first = await connect({ autostart: { database: a, timeout: 30000 } });
      await first.exec("CREATE TABLE t (x); INSERT INTO t VALUES ('a')");
    }
    const pid = ownerPid(a);
    assert.ok(pid > 0 && pid !== Deno.pid && alive(pid), `owner pid ${pid}`);
    for (const database of [`${root}/other/link.db`, `${root}/dlink/a.db`]) {
      await using db = await connect({ autostart: { database, timeout: 30000 } });
      assert.deepEqual(await db.values("SELECT x FROM t"), [["a"]]);
      assert.equal(db.serverInfo.database, a);
      // The server that answered is the first one: no second server was started.
      assert.equal(ownerPid(a), pid);
    }
    // A file not yet created, named through the linked directory: started, then found by
    // its real name without autostart.
    {
      await using db = await connect({
        autostart: { database: `${root}/dlink/b.db`, timeout: 30000 },
      });
      await db.exec("CREATE TABLE u (y); INSERT INTO u VALUES ('b')");
    }
    await using found = await connect({ database: b, connectTimeout: 5000 });
    assert.deepEqual(await found.values("SELECT y FROM u"), [["b"]]);
    assert.equal(found.serverInfo.database, b);
  } finally {
    await stopOwner(a);
    await stopOwner(b);
  }
}

Deno.test({
  name:
    "connect({ autostart }) finds the server it started for a file by any name: a link to it, a linked directory, a file not yet created under one",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    await using dir = await layout();
    const { root } = dir;
    try {
      await inEnv({ XDG_RUNTIME_DIR: root }, import.meta.url, "autostartedByAnyName", root);
    } finally {
      await stopOwner(`${root}/data/a.db`); // should the child have died before it did
      await stopOwner(`${root}/data/b.db`);
    }
  },
});

/**
 * The body of the test below: a server of `root`'s {@link layout} on a
 * socket of its own, found by `connect({ autostart })` on the default one.
 * Run by {@link inEnv} in a child whose `XDG_RUNTIME_DIR` is `root`, so
 * that the default sockets live there.
 */
export async function autostartFindsOwnerSocket(root: string): Promise<void> {
  const owner = `${root}/owner.sock`;
  // As a server of an earlier release serving the linked name, on that name's socket then.
  await using _server = await serve({ database: `${root}/other/link.db`, path: owner });
  {
    await using setup = await connect({ path: owner });
    await setup.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)");
  }
  for (const database of [`${root}/other/link.db`, `${root}/dlink/a.db`]) {
    await using db = await connect({ max: 2, autostart: { database, timeout: 30000 } });
    assert.equal(db.serverInfo.database, `${root}/data/a.db`);
    // Two connections at once: the pool's second one goes to the same server.
    const tx = await db.reserve();
    try {
      await tx.exec("BEGIN; INSERT INTO t VALUES (2)");
      assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[1]]);
      await tx.exec("ROLLBACK");
    } finally {
      tx.release();
    }
  }
  // An explicit path is the client's address: it is told where the server is.
  const path = `${root}/mine.sock`;
  await assert.rejects(
    connect({ path, autostart: { database: `${root}/other/link.db`, timeout: 30000 } }),
    (err: unknown) => {
      assert.ok(err instanceof ConnectionError, String(err));
      assert.equal(
        err.message,
        `Cannot autostart a server for "${root}/other/link.db" on unix:${path}: the server ` +
          `started exited with code 1: "netsqlite: another server owns ${root}/other/link.db ` +
          `(which is ${root}/data/a.db; pid ${Deno.pid}, socket unix:${owner})"; connect ` +
          `with { path: "${owner}" } to use that server`,
      );
      return true;
    },
  );
}

Deno.test({
  name:
    "connect({ autostart }) on the default socket connects to the database's server on another socket, its pool too; with a path of its own it is told where that server is",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    await using dir = await layout();
    const { root } = dir;
    await inEnv({ XDG_RUNTIME_DIR: root }, import.meta.url, "autostartFindsOwnerSocket", root);
  },
});
