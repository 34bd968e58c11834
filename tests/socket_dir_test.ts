/**
 * The per-user default socket directory as a new user meets it: a client or
 * server run without `--allow-sys=uid` (and no terminal to ask) is told so,
 * rather than looking in another directory than its server; an explicit
 * socket path needs no uid. Child processes with narrow permissions.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { serve } from "../server.ts";
import { connect } from "../client.ts";
import { defaultSocketDir, defaultSocketPath } from "../transport/address.ts";
import { unreachableSocketWarning } from "../transport/listen.ts";
import {
  asNobody,
  canRunAsNobody,
  canUseTerminal,
  inEnv,
  onTerminal,
  tempDir,
  TERMINAL_LIMIT_MS,
} from "./_helpers.ts";

const CLIENT = new URL("../client.ts", import.meta.url).href;
const SERVER = fileURLToPath(new URL("../server.ts", import.meta.url));
const NO_SYS = [
  "run",
  "--no-prompt",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-net",
];

/**
 * Runs `deno <args>` with stdin closed, `TMPDIR=dir` and no XDG_RUNTIME_DIR;
 * through `wrap` (as {@link asNobody}) when given.
 */
async function run(
  args: string[],
  dir: string,
  wrap: string[] = [],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const env: Record<string, string> = { TMPDIR: dir };
  for (const key of ["HOME", "PATH", "DENO_DIR"]) {
    const value = Deno.env.get(key);
    if (value !== undefined) env[key] = value;
  }
  const [command, ...pre] = [...wrap, Deno.execPath()];
  const child = new Deno.Command(command, {
    args: [...pre, ...args],
    clearEnv: true,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // A server that (wrongly) starts would serve until stopped.
  const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  const out = await child.output().finally(() => clearTimeout(timer));
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

/** Writes a client script connecting with `options` that prints `ok <one>` or the error. */
async function clientScript(dir: string, options: string): Promise<string> {
  const file = `${dir}/client.ts`;
  await Deno.writeTextFile(
    file,
    `import { connect } from "${CLIENT}";
try {
  await using db = await connect(${options});
  console.log("ok", (await db.get("SELECT 1 AS one")).one);
} catch (err) {
  console.log(err.constructor.name, err.message);
}
`,
  );
  return file;
}

Deno.test({
  name:
    "connect() without --allow-sys=uid and no XDG_RUNTIME_DIR names the permission, not a server that is not running",
  ignore: Deno.build.os === "windows",
  async fn() {
    await using dir = await tempDir();
    const database = `${dir.path}/app.db`;
    const script = await clientScript(dir.path, JSON.stringify({ database }));
    const { stdout } = await run([...NO_SYS, script], dir.path);
    assert.match(stdout, /^NotCapable Cannot work out the default socket of "/);
    assert.ok(stdout.includes(`the default socket of "${database}"`), stdout);
    assert.match(stdout, /needs --allow-sys=uid/);
    assert.match(stdout, /run with --allow-sys=uid, set XDG_RUNTIME_DIR, or give the socket path/);
    assert.doesNotMatch(stdout, /is the server running/);
  },
});

Deno.test({
  name: "the server without --allow-sys=uid on its default socket exits 1 naming the permission",
  ignore: Deno.build.os === "windows",
  async fn() {
    await using dir = await tempDir();
    const database = `${dir.path}/app.db`;
    const { code, stdout, stderr } = await run(
      [...NO_SYS, SERVER, "--db", database, "--engine", "node"],
      dir.path,
    );
    assert.equal(code, 1, stderr);
    assert.equal(stdout, "");
    assert.match(stderr, /^netsqlite: Cannot work out the default socket of "/);
    assert.match(stderr, /needs --allow-sys=uid/);
    // Nothing was created in the temp directory: no socket directory, no database.
    const names = [...Deno.readDirSync(dir.path)].map((e) => e.name);
    assert.deepEqual(names, []);
  },
});

Deno.test({
  name: "connect({ path }) without --allow-sys=uid needs no uid",
  ignore: Deno.build.os === "windows",
  async fn() {
    await using dir = await tempDir();
    const path = `${dir.path}/app.sock`;
    await using _server = await serve({ database: `${dir.path}/app.db`, path, engine: "node" });
    const script = await clientScript(dir.path, JSON.stringify({ path }));
    const { stdout } = await run([...NO_SYS, script], dir.path);
    assert.equal(stdout, "ok 1\n");
  },
});

Deno.test({
  name:
    "connect({ path }) with only the permissions README names (--allow-net, read and write of the socket) reaches the server",
  ignore: Deno.build.os === "windows",
  async fn() {
    await using dir = await tempDir();
    const path = `${dir.path}/app.sock`;
    await using _server = await serve({ database: `${dir.path}/app.db`, path, engine: "node" });
    const script = await clientScript(dir.path, JSON.stringify({ path }));
    // No --allow-env nor --allow-sys: the socket directory check must not
    // need them (it read the temp directory's name from TMPDIR: NotCapable).
    const narrow = [
      "run",
      "--no-prompt",
      "--allow-net",
      `--allow-read=${path},${dir.path}/client.ts`,
    ];
    const { stdout, stderr } = await run([...narrow, `--allow-write=${path}`, script], dir.path);
    assert.equal(stdout, "ok 1\n", stderr);
    // In a directory named like a per-user socket directory it is still judged (by its mode).
    const open = `${dir.path}/netsqlite-4242`;
    await Deno.mkdir(open);
    await Deno.chmod(open, 0o777);
    const inOpen = `${open}/app.sock`;
    await using _other = await serve({
      database: `${dir.path}/b.db`,
      path: inOpen,
      engine: "node",
    });
    const script2 = await clientScript(dir.path, JSON.stringify({ path: inOpen }));
    const second = await run(
      [
        "run",
        "--no-prompt",
        "--allow-net",
        `--allow-read=${inOpen},${open},${dir.path}/client.ts`,
        `--allow-write=${inOpen}`,
        script2,
      ],
      dir.path,
    );
    assert.match(
      second.stdout,
      /^ConnectionError .*is writable by other users \(mode 0777\)/,
      second.stderr,
    );
  },
});

/**
 * The first half of the test below, run by {@link inEnv} in a child whose
 * `TMPDIR` is `dir` and whose `XDG_RUNTIME_DIR` is `<dir>/run/user/missing`,
 * a directory that does not exist.
 */
export async function missingRuntimeDir(dir: string): Promise<void> {
  assert.equal(defaultSocketDir(), `${dir}/netsqlite-${Deno.uid()}`);
  const database = `${dir}/app.db`;
  await using server = await serve({ database, engine: "node" });
  assert.equal(server.addr.transport, "unix");
  const path = (server.addr as { path: string }).path;
  assert.equal(path, defaultSocketPath(database));
  assert.ok(path.startsWith(`${dir}/netsqlite-${Deno.uid()}/`), path);
  await using db = await connect({ database });
  assert.deepEqual(await db.get("SELECT 1 AS one"), { one: 1 });
  assert.throws(() => Deno.statSync(`${dir}/run`), Deno.errors.NotFound);
}

/**
 * The second half of the test below, run by {@link inEnv} in a child whose
 * `XDG_RUNTIME_DIR` is `runtime`, an existing directory.
 */
export async function existingRuntimeDir(dir: string, runtime: string): Promise<void> {
  assert.equal(defaultSocketDir(), `${runtime}/netsqlite`);
  await using server = await serve({ database: `${dir}/b.db`, engine: "node" });
  assert.ok((server.addr as { path: string }).path.startsWith(`${runtime}/netsqlite/`));
}

Deno.test({
  name:
    "an XDG_RUNTIME_DIR that does not exist is ignored by server and client alike, and not created",
  ignore: Deno.build.os === "windows",
  async fn() {
    await using dir = await tempDir();
    const missing = `${dir.path}/run/user/missing`;
    await inEnv(
      { XDG_RUNTIME_DIR: missing, TMPDIR: dir.path },
      import.meta.url,
      "missingRuntimeDir",
      dir.path,
    );
    // An existing one is used: only its netsqlite subdirectory is made.
    const runtime = `${dir.path}/xdg`;
    Deno.mkdirSync(runtime, { mode: 0o700 });
    await inEnv(
      { XDG_RUNTIME_DIR: runtime },
      import.meta.url,
      "existingRuntimeDir",
      dir.path,
      runtime,
    );
  },
});

Deno.test({
  name:
    "connect() that may not examine XDG_RUNTIME_DIR (read scoped elsewhere) names the permission instead of guessing",
  ignore: Deno.build.os === "windows",
  async fn() {
    await using dir = await tempDir();
    const runtime = `${dir.path}/missing-runtime`; // the server would ignore it: it does not exist
    const database = `${dir.path}/app.db`;
    const script = await clientScript(dir.path, JSON.stringify({ database }));
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-prompt",
        `--allow-read=${script},${dir.path}/netsqlite-${Deno.uid()}`,
        "--allow-env",
        "--allow-sys=uid",
        "--allow-net",
        script,
      ],
      env: { XDG_RUNTIME_DIR: runtime, TMPDIR: dir.path },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    assert.match(stdout, /^NotCapable Cannot work out the default socket of "/, stdout);
    assert.ok(
      stdout.includes(`XDG_RUNTIME_DIR is "${runtime}", which may not be examined`),
      stdout,
    );
    assert.ok(stdout.includes(`run with --allow-read=${runtime}`), stdout);
  },
});

Deno.test({
  name:
    "connect({ path }) in a per-user-like socket directory never asks for a permission on a terminal, with the permissions README names or more",
  ignore: !canUseTerminal,
  async fn() {
    await using dir = await tempDir();
    const root = Deno.realPathSync(dir.path);
    // Named as the per-user directory in TMPDIR would be: it is judged.
    const sockets = `${root}/netsqlite-${Deno.uid()}`;
    Deno.mkdirSync(sockets, { mode: 0o700 });
    const path = `${sockets}/app.sock`;
    await using _server = await serve({ database: `${root}/app.db`, path, engine: "node" });
    const script = await clientScript(root, JSON.stringify({ path }));
    const readme = ["--allow-net", `--allow-read=${path},${script}`, `--allow-write=${path}`];
    // Each of these asked: for env access to XDG_RUNTIME_DIR; for sys access to the uid; for
    // read access to the socket's directory.
    for (const more of [[], ["--allow-env"], ["--allow-env", "--allow-sys=uid"]]) {
      const { screen, killed } = await onTerminal(
        [Deno.execPath(), "run", ...readme, ...more, script],
        { TMPDIR: root },
      );
      const flags = more.join(" ") || "(none)";
      assert.doesNotMatch(screen, /Deno requests|Allow\?/, `${flags}: ${screen}`);
      assert.ok(!killed, `${flags}: not ended after ${TERMINAL_LIMIT_MS} ms: ${screen}`);
      assert.equal(screen, "ok 1\r\n", flags);
    }
    // A socket in a directory of another name (not judged) asked for env access likewise.
    const plain = `${root}/plain.sock`;
    await using _other = await serve({ database: `${root}/b.db`, path: plain, engine: "node" });
    const script2 = await clientScript(root, JSON.stringify({ path: plain }));
    const { screen, killed } = await onTerminal(
      [
        Deno.execPath(),
        "run",
        "--allow-net",
        `--allow-read=${plain},${script2}`,
        `--allow-write=${plain}`,
        script2,
      ],
      { TMPDIR: root },
    );
    assert.doesNotMatch(screen, /Deno requests|Allow\?/, screen);
    assert.ok(!killed, `not ended after ${TERMINAL_LIMIT_MS} ms: ${screen}`);
    assert.equal(screen, "ok 1\r\n");
  },
});

Deno.test({
  name:
    "connect({ path }) in this user's socket directory that it may not examine refuses another user's socket there",
  ignore: Deno.build.os !== "linux" || Deno.uid() !== 0, // chown
  async fn() {
    await using dir = await tempDir();
    const root = Deno.realPathSync(dir.path);
    const sockets = `${root}/netsqlite-${Deno.uid()}`;
    Deno.mkdirSync(sockets, { mode: 0o700 });
    const path = `${sockets}/app.sock`;
    await using _server = await serve({ database: `${root}/app.db`, path, engine: "node" });
    const script = await clientScript(root, JSON.stringify({ path }));
    const flags = [
      "run",
      "--no-prompt",
      "--allow-net",
      `--allow-read=${path},${script}`,
      `--allow-write=${path}`,
      "--allow-sys=uid",
      script,
    ];
    // This user's socket: connected to.
    assert.equal((await run(flags, root)).stdout, "ok 1\n");
    // Another user's socket, as one who made the directory first would leave: refused, though
    // the directory cannot be examined (no read access to it granted).
    Deno.chownSync(path, 65534, 65534);
    const other = await run(flags, root);
    assert.equal(
      other.stdout,
      `ConnectionError Cannot connect to unix:${path}: the socket ${path} belongs to uid 65534, ` +
        `not to this user (uid ${Deno.uid()}); another user may have made it to intercept ` +
        "connections: remove it, or use a socket outside its directory (give another path " +
        "explicitly, or set XDG_RUNTIME_DIR to move the default)\n",
      other.stderr,
    );
    // Where it may be examined, the directory is judged, as before.
    Deno.chownSync(sockets, 65534, 65534);
    const examined = await run([
      ...flags.slice(0, 3),
      `--allow-read=${path},${script},${sockets}`,
      ...flags.slice(4),
    ], root);
    assert.match(
      examined.stdout,
      /^ConnectionError .*: the socket directory .* belongs to uid 65534, not to this user/,
    );
  },
});

Deno.test({
  name:
    "connect({ path }) as a user to root's server in that user's socket directory (as sudo -E places it) connects whatever was granted; another user's socket there is refused whenever the owners can be compared",
  ignore: !canRunAsNobody,
  async fn() {
    await using dir = await tempDir();
    const root = Deno.realPathSync(dir.path);
    Deno.chmodSync(root, 0o755);
    // nobody's own socket directory, closed to others: only nobody and root can make a socket there.
    const sockets = `${root}/netsqlite-65534`;
    Deno.mkdirSync(sockets, { mode: 0o700 });
    Deno.chownSync(sockets, 65534, 65534);
    const path = `${sockets}/app.sock`;
    await using _server = await serve({
      database: `${root}/app.db`,
      path,
      socketMode: 0o666,
      engine: "node",
      logLevel: "error", // its warnings (no token; a directory closed to others) are expected
    });
    const script = await clientScript(root, JSON.stringify({ path }));
    Deno.chmodSync(script, 0o644);
    const base = ["run", "--no-prompt", `--allow-write=${path}`, "--allow-net"];
    const scoped = `--allow-read=${path},${script}`;
    const grants: string[][] = [
      [scoped], // the directory may not be examined, nor the uid read
      [scoped, "--allow-sys=uid"], // the socket's owner is compared instead
      ["--allow-read", "--allow-sys=uid"], // the directory is examined, and the socket
      ["--allow-read", "--allow-sys=uid", "--allow-env"], // the default directory is known
    ];
    for (const more of grants) {
      const out = await run([...base, ...more, script], root, asNobody);
      assert.equal(out.stdout, "ok 1\n", `${more.join(" ")}: ${out.stderr}`);
    }
    // Another (not root) user's socket: refused wherever its owner can be compared, the
    // directory examined or not; without the uid it cannot be, and the directory is fine.
    Deno.chownSync(path, 4242, 4242);
    const refused = `ConnectionError Cannot connect to unix:${path}: the socket ${path} belongs ` +
      "to uid 4242, not to this user (uid 65534); another user may have made it to intercept " +
      "connections: remove it, or use a socket outside its directory (give another path " +
      "explicitly, or set XDG_RUNTIME_DIR to move the default)\n";
    for (const more of grants) {
      const out = await run([...base, ...more, script], root, asNobody);
      const uid = more.includes("--allow-sys=uid");
      assert.equal(out.stdout, uid ? refused : "ok 1\n", `${more.join(" ")}: ${out.stderr}`);
    }
  },
});

Deno.test({
  name:
    "connect({ database }) and connect({ channel }) on a terminal never ask for env or uid access to work out the default socket: without it, the error names the flags",
  ignore: !canUseTerminal,
  async fn() {
    await using dir = await tempDir();
    const root = Deno.realPathSync(dir.path);
    const database = `${root}/app.db`;
    const net = ["--allow-net", "--allow-read", "--allow-write"];
    const env = "XDG_RUNTIME_DIR,TMPDIR,TMP,TEMP";
    /** The message README quotes when reading `refused` was not allowed (as --no-prompt words it). */
    const noEnv = (what: string, refused: string): string =>
      `NotCapable Cannot work out ${what}: its directory depends on the environment variables ` +
      `XDG_RUNTIME_DIR, TMPDIR, TMP, TEMP, and reading ${refused} was not allowed (Requires ` +
      `env access to "${refused}", run again with the --allow-env flag); run with ` +
      `--allow-env=${env} (or --allow-env), or give the socket path explicitly\r\n`;
    const noUid = (what: string): string =>
      `NotCapable Cannot work out ${what}: its directory ${root}/netsqlite-<uid> needs the user ` +
      `id, and reading it needs --allow-sys=uid (Requires sys access to "uid", run again with ` +
      "the --allow-sys flag); run with --allow-sys=uid, set XDG_RUNTIME_DIR, or give the socket " +
      "path explicitly\r\n";
    const targets: [unknown, string][] = [
      [{ database }, `the default socket of "${database}"`],
      [{ channel: "my-app" }, `the socket of channel "my-app"`],
    ];
    for (const [options, what] of targets) {
      const script = await clientScript(root, JSON.stringify(options));
      const cases: [string[], string][] = [
        [[], noEnv(what, "XDG_RUNTIME_DIR")], // the first variable read
        [["--allow-env=XDG_RUNTIME_DIR"], noEnv(what, "TMPDIR")],
        [[`--allow-env=${env}`], noUid(what)],
        [["--allow-env"], noUid(what)],
      ];
      for (const [more, expected] of cases) {
        // TMPDIR set (the temp directory is read from it), XDG_RUNTIME_DIR not.
        const { screen, killed } = await onTerminal(
          [Deno.execPath(), "run", ...net, ...more, script],
          { TMPDIR: root },
        );
        const flags = `${JSON.stringify(options)} ${more.join(" ") || "(no env)"}`;
        assert.doesNotMatch(screen, /Deno requests|Allow\?/, `${flags}: ${screen}`);
        assert.ok(!killed, `${flags}: not ended after ${TERMINAL_LIMIT_MS} ms: ${screen}`);
        assert.equal(screen, expected, flags);
      }
      // With the flags README names it works the socket out (and finds no server there).
      const { screen, killed } = await onTerminal(
        [Deno.execPath(), "run", ...net, `--allow-env=${env}`, "--allow-sys=uid", script],
        { TMPDIR: root },
      );
      assert.ok(!killed, `not ended after ${TERMINAL_LIMIT_MS} ms: ${screen}`);
      assert.match(
        screen,
        new RegExp(`^ConnectionError Cannot connect to unix:${root}/netsqlite-${Deno.uid()}/`),
      );
    }
  },
});

Deno.test({
  name:
    "serve() in a set-group-ID socket directory gives the socket the directory's group, and the warning names it",
  ignore: Deno.build.os !== "linux" || Deno.uid() !== 0, // chgrp to a group not the server's own
  async fn() {
    await using tmp = await tempDir();
    const gid = 65534; // nogroup: not root's primary group
    assert.notEqual(Deno.gid(), gid);
    const dir = `${tmp.path}/devs`;
    await Deno.mkdir(dir);
    await Deno.chown(dir, null, gid);
    await Deno.chmod(dir, 0o2770);
    await Deno.chmod(tmp.path, 0o700); // keeps the group out: the start warns
    const sock = `${dir}/app.sock`;
    const server = await serve({ database: ":memory:", path: sock, socketMode: 0o660 });
    try {
      const info = Deno.lstatSync(sock);
      assert.equal(info.gid, gid, "the socket has the directory's group");
      assert.equal(info.mode! & 0o777, 0o660);
      const warning = unreachableSocketWarning(sock, 0o660);
      assert.ok(warning?.includes(`the socket's group (gid ${gid})`), String(warning));
    } finally {
      await server.shutdown();
    }
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), []);
  },
});
