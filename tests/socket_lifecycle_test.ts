/**
 * The Unix socket file's life: a server claims it atomically (a stale one is
 * replaced, a live one refused, also when two start together), keeps it in
 * place through its shutdown's grace period, and removes it at exit only
 * while it is still its own, so another server's socket on the same path
 * survives. In-process servers on temp directories, and a child process of
 * another user for a socket that refuses this one.
 */

import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { ListenError, serve, type Server } from "../server.ts";
import { MAX_SOCKET_PATH_BYTES } from "../transport/listen.ts";
import { delay, tempDir } from "./_helpers.ts";

function inode(path: string): number | null {
  try {
    return Deno.lstatSync(path).ino;
  } catch {
    return null;
  }
}

/** Leaves a stale socket at `path`: bound, then closed without unlinking `path`. */
function staleSocket(path: string): number {
  const aside = `${path}.aside`;
  const l = Deno.listen({ transport: "unix", path: aside });
  Deno.renameSync(aside, path);
  l.close(); // Deno unlinks the name it bound, which is gone
  const info = Deno.lstatSync(path);
  assert.ok(info.isSocket);
  return info.ino!;
}

/** The database file the server at `path` serves. */
async function servedFile(path: string): Promise<string> {
  await using db = await connect({ path });
  const [[file]] = await db.values<[string]>("SELECT file FROM pragma_database_list");
  return file;
}

/** Names in `dir`, sorted. */
function names(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}

Deno.test("Server.shutdown() leaves the socket of a server started on its path after its file was deleted", async () => {
  await using dir = await tempDir();
  const sock = `${dir.path}/s.sock`;
  const a = await serve({ database: `${dir.path}/a.db`, path: sock });
  Deno.removeSync(sock); // by hand, or a cleaner of /tmp
  await using _b = await serve({ database: `${dir.path}/b.db`, path: sock });
  const ofB = inode(sock);
  assert.notEqual(ofB, null);
  await a.shutdown();
  assert.equal(inode(sock), ofB, "A's shutdown removed B's socket file");
  assert.equal(await servedFile(sock), Deno.realPathSync(`${dir.path}/b.db`));
});

Deno.test("serve() replaces a stale socket file in place and leaves no temporary name behind", async () => {
  await using dir = await tempDir();
  const sock = `${dir.path}/s.sock`;
  const stale = staleSocket(sock);
  await assert.rejects(
    Deno.connect({ transport: "unix", path: sock }),
    Deno.errors.ConnectionRefused,
  );
  const server = await serve({ database: `${dir.path}/a.db`, path: sock });
  try {
    assert.deepEqual(server.addr, { transport: "unix", path: sock });
    const info = Deno.lstatSync(sock);
    assert.ok(info.isSocket);
    assert.notEqual(info.ino, stale);
    assert.equal(info.mode! & 0o777, 0o600);
    assert.equal(await servedFile(sock), Deno.realPathSync(`${dir.path}/a.db`));
    // Beside it, while it listens, only its own empty private directory.
    const [own, ...rest] = names(dir.path).filter((n) => n.startsWith(`.s.sock.${Deno.pid}.`));
    assert.deepEqual(rest, []);
    assert.deepEqual(names(`${dir.path}/${own}`), []);
    assert.deepEqual(names(dir.path).filter((n) => n !== own), [
      "a.db",
      "a.db-shm",
      "a.db-wal",
      "a.db.lock",
      "s.sock",
    ]);
  } finally {
    await server.shutdown();
  }
  assert.deepEqual(names(dir.path), ["a.db", "a.db.lock"]);
});

Deno.test("serve() twice at once on a stale socket: one serves, the other says a server is listening there", async () => {
  await using dir = await tempDir();
  const sock = `${dir.path}/m.sock`;
  for (let round = 0; round < 6; round++) {
    staleSocket(sock);
    const results = await Promise.allSettled([
      serve({ database: ":memory:", path: sock }),
      serve({ database: ":memory:", path: sock }),
    ]);
    const started = results.flatMap((r) => r.status === "fulfilled" ? [r.value] : []);
    try {
      const refused = results.flatMap((r) => r.status === "rejected" ? [r.reason] : []);
      assert.equal(started.length, 1, `round ${round}: ${started.length} servers started`);
      assert.ok(refused[0] instanceof ListenError, String(refused[0]));
      assert.equal(
        refused[0].message,
        `Cannot listen on unix:${sock}: another server is already listening there`,
      );
      // The one that started is the one reachable there.
      await using db = await connect({ path: sock });
      assert.equal(db.serverInfo?.database, ":memory:");
      assert.deepEqual(await db.values("SELECT 1"), [[1]]);
    } finally {
      for (const s of started) await s.shutdown();
    }
    assert.deepEqual(names(dir.path), [], `round ${round}: files left behind`);
  }
});

Deno.test("serve() on a live server's socket is refused with a clear error and leaves it serving", async () => {
  await using dir = await tempDir();
  const sock = `${dir.path}/s.sock`;
  await using _a = await serve({ database: `${dir.path}/a.db`, path: sock });
  const before = inode(sock);
  await assert.rejects(
    serve({ database: `${dir.path}/b.db`, path: sock }),
    (err: Error) => {
      assert.ok(err instanceof ListenError);
      assert.equal(
        err.message,
        `Cannot listen on unix:${sock}: another server is already listening there`,
      );
      return true;
    },
  );
  assert.equal(inode(sock), before);
  assert.equal(await servedFile(sock), Deno.realPathSync(`${dir.path}/a.db`));
});

Deno.test("Server.shutdown() keeps the socket file through the grace period (connections refused) and removes it at exit", async () => {
  await using dir = await tempDir();
  const sock = `${dir.path}/s.sock`;
  const server: Server = await serve({ database: `${dir.path}/a.db`, path: sock });
  const ino = inode(sock);
  const client = await connect({ path: sock, max: 1 });
  await client.exec("BEGIN; CREATE TABLE t (x)"); // keeps the server in its grace period
  const stopping = server.shutdown({ graceMs: 400 });
  await delay(50);
  assert.equal(inode(sock), ino, "the socket file is gone during the grace period");
  await assert.rejects(
    Deno.connect({ transport: "unix", path: sock }),
    Deno.errors.ConnectionRefused,
  );
  await client.exec("COMMIT"); // the open connection still works
  await stopping;
  await client.close().catch(() => {});
  assert.equal(inode(sock), null, "the socket file stays after exit");
});

Deno.test("serve() on a path that leaves no room for a temporary name beside it listens there directly", async () => {
  await using dir = await tempDir();
  // The socket name is short and the directory long: `.nsq<pid>.<8 hex>` would not fit.
  const room = MAX_SOCKET_PATH_BYTES - dir.path.length - "/s".length - "/".length;
  const sub = `${dir.path}/${"d".repeat(room)}`;
  Deno.mkdirSync(sub);
  const sock = `${sub}/s`;
  assert.equal(new TextEncoder().encode(sock).length, MAX_SOCKET_PATH_BYTES);
  staleSocket(`${dir.path}/x`); // (a stale socket made elsewhere, moved in)
  Deno.renameSync(`${dir.path}/x`, sock);
  const server = await serve({ database: ":memory:", path: sock });
  try {
    assert.deepEqual(server.addr, { transport: "unix", path: sock });
    await using db = await connect({ path: sock });
    assert.deepEqual(await db.values("SELECT 2"), [[2]]);
    assert.deepEqual(names(sub), ["s"]);
  } finally {
    await server.shutdown();
  }
  assert.deepEqual(names(sub), []);
});

const setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].find((p) => inode(p) !== null);

Deno.test({
  name: "serve() on another user's socket says so, live or stale (as root, with setpriv)",
  ignore: Deno.build.os === "windows" || Deno.uid() !== 0 || setpriv === undefined,
  async fn() {
    await using dir = await tempDir();
    Deno.chmodSync(dir.path, 0o755);
    const home = `${dir.path}/home`;
    Deno.mkdirSync(home);
    Deno.chmodSync(home, 0o777);
    const sock = `${dir.path}/s.sock`;
    const listenModule = new URL("../transport/listen.ts", import.meta.url).href;
    const asNobody = async (): Promise<string> => {
      const code = `import { listen } from ${JSON.stringify(listenModule)};
        try { (await listen({ transport: "unix", path: ${
        JSON.stringify(sock)
      } })).close(); console.log("listened"); }
        catch (e) { console.log(e.name + ": " + e.message); }`;
      const out = await new Deno.Command(setpriv!, {
        args: [
          "--reuid=65534",
          "--regid=65534",
          "--clear-groups",
          Deno.execPath(),
          "eval",
          "--no-config",
          code,
        ],
        env: { HOME: home, DENO_DIR: home },
        stdout: "piped",
        stderr: "piped",
      }).output();
      return new TextDecoder().decode(out.stdout).trim() ||
        new TextDecoder().decode(out.stderr).trim();
    };
    const expected = `ListenError: Cannot listen on unix:${sock}: a socket of another user ` +
      "(uid 0) is there (permission denied): choose another path";
    {
      await using _live = await serve({ database: ":memory:", path: sock });
      assert.equal(await asNobody(), expected);
    }
    staleSocket(sock);
    Deno.chmodSync(sock, 0o600);
    assert.equal(await asNobody(), expected);
    assert.ok(Deno.lstatSync(sock).isSocket, "the other user's socket stays");
  },
});

Deno.test("serve() where the socket's directory cannot be created says where it meant to listen, and leaves nothing", async () => {
  await using dir = await tempDir();
  Deno.writeTextFileSync(`${dir.path}/file`, "");
  const paths = [`${dir.path}/file/sub/s.sock`]; // a regular file where a directory must be
  if (Deno.build.os === "linux") paths.push("/proc/netsqlite-no-such/sub/s.sock"); // even root
  if (Deno.uid() !== 0 && Deno.build.os !== "windows") {
    Deno.mkdirSync(`${dir.path}/ro`, { mode: 0o500 });
    Deno.chmodSync(`${dir.path}/ro`, 0o500);
    paths.push(`${dir.path}/ro/sub/s.sock`);
  }
  for (const path of paths) {
    const err = await serve({ database: `${dir.path}/a.db`, path }).then(
      (s) => (s.shutdown(), assert.fail(`served on ${path}`)),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ListenError, String(err));
    assert.match(
      err.message,
      new RegExp(`^Cannot listen on unix:${path}: \\S.*\\(os error \\d+\\): (stat|mkdir) '`),
    );
    assert.ok(err.cause instanceof Error);
  }
  assert.deepEqual(names(dir.path), ["file"]);
});
