/**
 * A Unix socket is never reachable by another user before its mode is set,
 * whatever the umask: `listen` creates the socket file with the umask's
 * permissions, and a connection made before the `chmod` would outlive it.
 * The server binds inside a private `0700` directory and renames the socket
 * into place; for a directory too long for that, it narrows the umask for
 * the `listen` (allowed with `--allow-sys`).
 *
 * The window is made observable, not raced for: a child server process,
 * started under `umask 000`, wraps its own `Deno.listen` so that right after
 * each Unix `listen` (before anything else of the server runs) it notes the
 * socket's mode and its directory's, and has `nobody` (through `setpriv`,
 * where the tests run as root) try to connect to it then and there.
 */

import assert from "node:assert/strict";
import { dirname } from "node:path";
import { serve } from "../server.ts";
import { MAX_SOCKET_PATH_BYTES } from "../transport/listen.ts";
import { asNobody, canRunAsNobody, tempDir } from "./_helpers.ts";
import { ENGINE } from "./_logged_server.ts";

const SERVER_TS = new URL("../server.ts", import.meta.url).href;

/** What the child saw right after a Unix `listen`. */
interface Bound {
  path: string;
  socketMode: number;
  dirMode: number;
  /** Whether `nobody` connected then; `null` when it cannot be tried here. */
  nobodyConnected: boolean | null;
}

/** The child: serve on `sock` under `umask 000`, reporting each Unix listen. */
function childCode(sock: string): string {
  return `
    const nobody = ${JSON.stringify(canRunAsNobody ? asNobody : null)};
    const bound = [];
    const listen = Deno.listen;
    Deno.listen = (options) => {
      const listener = listen(options);
      if (options.transport === "unix") {
        const path = options.path;
        let nobodyConnected = null;
        if (nobody !== null) {
          const code = "await Deno.connect({ transport: 'unix', path: " + JSON.stringify(path) +
            " }).then((c) => { c.close(); Deno.exit(0); }, () => Deno.exit(3));";
          const out = new Deno.Command(nobody[0], {
            args: [...nobody.slice(1), Deno.execPath(), "eval", "--no-config", code],
            env: { HOME: "/tmp" },
            stdout: "null",
            stderr: "null",
          }).outputSync();
          nobodyConnected = out.code === 0;
        }
        bound.push({
          path,
          socketMode: Deno.lstatSync(path).mode & 0o777,
          dirMode: Deno.statSync(path.slice(0, path.lastIndexOf("/"))).mode & 0o777,
          nobodyConnected,
        });
      }
      return listener;
    };
    const { serve } = await import(${JSON.stringify(SERVER_TS)});
    const server = await serve({ database: ":memory:", path: ${JSON.stringify(sock)},
      engine: ${JSON.stringify(ENGINE)} });
    const mode = Deno.lstatSync(${JSON.stringify(sock)}).mode & 0o777;
    await server.shutdown();
    console.log(JSON.stringify({ bound, mode }));
  `;
}

/** Runs {@link childCode} under `umask 000` with `-A`. */
async function serveUnderUmask000(sock: string): Promise<{ bound: Bound[]; mode: number }> {
  const out = await new Deno.Command("sh", {
    args: ["-c", 'umask 000; exec "$0" eval --no-config "$1"', Deno.execPath(), childCode(sock)],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  return JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
}

/** A socket directory others may enter (`0755`), as the probe's. */
async function openDir(parent: string, name: string): Promise<string> {
  await Deno.chmod(parent, 0o755);
  const dir = `${parent}/${name}`;
  await Deno.mkdir(dir);
  await Deno.chmod(dir, 0o755);
  return dir;
}

Deno.test({
  name:
    "serve() under umask 000 binds its socket in a private 0700 directory, out of others' reach",
  ignore: Deno.build.os === "windows",
  async fn() {
    await using tmp = await tempDir();
    const dir = await openDir(tmp.path, "run");
    const sock = `${dir}/s.sock`;
    const { bound, mode } = await serveUnderUmask000(sock);
    assert.equal(bound.length, 1);
    const [b] = bound;
    assert.equal(
      b.nobodyConnected,
      canRunAsNobody ? false : null,
      "nobody connected before the chmod",
    );
    assert.notEqual(dirname(b.path), dir, `bound in the socket's own directory: ${b.path}`);
    assert.equal(dirname(dirname(b.path)), dir, "the private directory is beside the socket");
    assert.equal(b.dirMode, 0o700, "the private directory is 0700");
    assert.equal(mode, 0o600);
    // Nothing left behind: the private directory went, and the socket with the shutdown.
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), []);
  },
});

Deno.test({
  name: "serve() under umask 000 in a directory too long for a private one: born 0600 with -A",
  ignore: Deno.build.os === "windows",
  async fn() {
    await using tmp = await tempDir();
    const base = await openDir(tmp.path, "run");
    // Room for the socket `s` but not for `.nsq<pid>.<8 hex>/s` beside it.
    const dir = `${base}/${"d".repeat(MAX_SOCKET_PATH_BYTES - base.length - 2 - 4)}`;
    await Deno.mkdir(dir);
    await Deno.chmod(dir, 0o755);
    const sock = `${dir}/s`;
    const { bound, mode } = await serveUnderUmask000(sock);
    assert.equal(bound.length, 1);
    const [b] = bound;
    assert.equal(b.path, sock);
    assert.equal(b.socketMode, 0o600, "the socket was born 0600");
    assert.equal(
      b.nobodyConnected,
      canRunAsNobody ? false : null,
      "nobody connected before the chmod",
    );
    assert.equal(mode, 0o600);
  },
});

Deno.test({
  name:
    "serve() in a sticky shared directory: another user cannot put a symlink at the private directory's name for the listener's close to follow",
  ignore: !canRunAsNobody,
  async fn() {
    await using tmp = await tempDir();
    await Deno.chmod(tmp.path, 0o755);
    // Like /tmp: anyone may make names there, only the owner remove or replace them.
    const shared = `${tmp.path}/shared`;
    await Deno.mkdir(shared);
    await Deno.chmod(shared, 0o1777);
    // A file named like the socket inside the private directory, where nobody may not go.
    const victim = `${tmp.path}/victim`;
    await Deno.mkdir(victim, { mode: 0o700 });
    await Deno.writeTextFile(`${victim}/s`, "precious");
    // The private directory's name, as another user watching the directory learns it.
    const watcher = Deno.watchFs(shared, { recursive: false });
    const seen: string[] = [];
    const watching = (async () => {
      for await (const event of watcher) {
        for (const p of event.paths) if (p.endsWith(".tmp")) seen.push(p.slice(shared.length + 1));
      }
    })();
    const server = await serve({ database: ":memory:", path: `${shared}/s.sock` });
    let kept: Deno.FileInfo | null = null;
    let planted: boolean;
    try {
      const end = performance.now() + 10_000;
      while (seen.length === 0 && performance.now() < end) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      const name = seen[0];
      assert.ok(name, "no private directory seen");
      try {
        kept = Deno.lstatSync(`${shared}/${name}`);
      } catch {
        // Removed at startup: free for anyone to take.
      }
      const ln = await new Deno.Command(asNobody[0], {
        args: [...asNobody.slice(1), "ln", "-sT", victim, `${shared}/${name}`],
        stdout: "null",
        stderr: "null",
      }).output();
      planted = ln.success;
    } finally {
      watcher.close();
      await watching;
      await server.shutdown();
    }
    assert.equal(
      await Deno.readTextFile(`${victim}/s`),
      "precious",
      "the shutdown removed victim/s",
    );
    assert.equal(planted, false, "nobody planted a symlink at the private directory's name");
    assert.ok(kept?.isDirectory, "the private directory is kept while the server listens");
    assert.equal(kept.uid, Deno.uid());
    assert.equal(kept.mode! & 0o7777, 0o700);
    assert.deepEqual([...Deno.readDirSync(shared)].map((e) => e.name), []);
  },
});
