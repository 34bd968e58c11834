/**
 * The server run the way README says, `deno task serve`: with exactly that
 * task's permissions (not `-A`), as a separate process. Deno reads
 * `/proc/self/*` only under `--allow-all` (while `Deno.permissions` answers
 * "granted"), so what the server learns about its process must come another
 * way: the open-file limit and the loaded library's path. And `deno task serve`
 * itself, on a machine that has never fetched an npm package and cannot.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { type Client, connect } from "../client.ts";
import { ProtocolError } from "../protocol/errors.ts";
import { fdBudget } from "../server/connection_limit.ts";
import { SERVE_TASK_FLAGS, tempDir } from "./_helpers.ts";

const ROOT = new URL("../", import.meta.url);
const SERVER_TS = fileURLToPath(new URL("server.ts", ROOT));
const ffiEngine = (Deno.env.get("NETSQLITE_ENGINE") ?? "ffi") !== "node";
const unix = Deno.build.os === "linux" || Deno.build.os === "darwin";

/**
 * The descriptors the server counted in use at start, from its warning
 * (counted without `/proc` too: `fcntl` through FFI).
 */
function inUseAtStart(err: string): number {
  const inUse = Number(/, (\d+) of them in use at start\n/.exec(err)?.[1]);
  assert.ok(inUse > 3 && inUse < 100, err);
  return inUse;
}

/** A server process under `ulimit -n limit`, its output collected as it comes. */
function spawnLimited(
  flags: string[],
  limit: number,
  args: string[],
):
  & { out: () => string; err: () => string; until: (test: () => boolean) => Promise<void> }
  & AsyncDisposable {
  const script = `ulimit -n ${limit} && exec "$0" run --no-prompt "$@"`;
  const child = new Deno.Command("sh", {
    args: ["-c", script, Deno.execPath(), ...flags, SERVER_TS, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let out = "", err = "";
  const drain = async (stream: ReadableStream<Uint8Array>, add: (s: string) => void) => {
    for await (const s of stream.pipeThrough(new TextDecoderStream())) add(s);
  };
  const drained = Promise.all([
    drain(child.stdout, (s) => out += s),
    drain(child.stderr, (s) => err += s),
  ]);
  let ended = false;
  child.status.then(() => ended = true);
  return {
    out: () => out,
    err: () => err,
    until: async (test) => {
      for (const deadline = Date.now() + 60_000; !test();) {
        if (ended || Date.now() > deadline) {
          throw new Error(`Server process: condition not met; stdout: ${out}; stderr: ${err}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    },
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
      await child.status;
      await drained;
    },
  };
}

Deno.test({
  name: "server.ts with the serve task's permissions under `ulimit -n 160` fits connections to " +
    "the limit, says so, refuses the next with TOO_MANY_CONNECTIONS (a cursor past its share " +
    "with BAD_REQUEST), and names its library file",
  ignore: !unix,
  fn: async () => {
    assert.ok(!SERVE_TASK_FLAGS.includes("-A"), SERVE_TASK_FLAGS.join(" "));
    await using dir = await tempDir();
    const sock = `${dir.path}/t.sock`;
    await using server = spawnLimited(SERVE_TASK_FLAGS, 160, [
      "--db",
      `${dir.path}/t.db`,
      "--socket",
      sock,
    ]);
    await server.until(() => /netsqlite: engine .*\n/.test(server.out()));
    await server.until(() => server.err().includes("in use at start\n"));
    const budget = fdBudget(10000, 160, 1024, { inUse: inUseAtStart(server.err()) });
    assert.ok(budget.connections < 10000 && budget.warning !== null, JSON.stringify(budget));
    assert.ok(server.err().includes(`warn  netsqlite: ${budget.warning}\n`), server.err());
    const engineLine = /netsqlite: engine .*/.exec(server.out())![0];
    if (ffiEngine) {
      const m = /^netsqlite: engine ffi \((\/\S+), SQLite \d/.exec(engineLine);
      assert.ok(m !== null, engineLine);
      assert.ok(Deno.statSync(m[1]).isFile, m[1]);
    }

    const clients: Client[] = [];
    try {
      // Cursors: the limit's share, then a clear refusal (not SQLITE_CANTOPEN).
      for (let i = 0; i < 3; i++) clients.push(await connect({ path: sock, max: 1 }));
      await clients[0].exec(
        "CREATE TABLE t (x); WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c " +
          "WHERE n < 50000) INSERT INTO t SELECT n FROM c",
      );
      const cursors: AsyncIterator<Record<string, unknown>>[] = [];
      let refused: unknown = null;
      for (let i = 0; refused === null && i < 100; i++) {
        const it = clients[i % 3].iterate("SELECT x FROM t")[Symbol.asyncIterator]();
        try {
          await it.next();
          cursors.push(it);
        } catch (err) {
          refused = err;
        }
      }
      assert.equal(cursors.length, budget.cursors);
      assert.equal((refused as { code?: string })?.code, "BAD_REQUEST", String(refused));
      assert.match(
        (refused as Error).message,
        new RegExp(`^Too many open cursors on the server: ${budget.cursors},`),
      );
      for (const it of cursors) await it.return!(undefined);
      // Connections: as many as the limit's share, then TOO_MANY_CONNECTIONS.
      while (clients.length < budget.connections) {
        const c = await connect({ path: sock, max: 1 });
        clients.push(c);
        assert.deepEqual(await c.values("SELECT 1"), [[1]]);
      }
      await assert.rejects(connect({ path: sock, max: 1 }), (err: unknown) => {
        assert.ok(err instanceof ProtocolError, String(err));
        assert.equal(err.code, "TOO_MANY_CONNECTIONS");
        assert.equal(
          err.message,
          `Cannot start session on unix:${sock}: the server already serves ` +
            `${budget.connections} connections ` +
            "(--max-connections); close some, or raise the limit",
        );
        return true;
      });
      assert.deepEqual(await clients[0].values("SELECT 2"), [[2]], "the open connections go on");
    } finally {
      for (const c of clients) await c.close();
    }
  },
});

Deno.test({
  name: "server.ts with the serve task's permissions but no --allow-ffi warns at start that the " +
    "open-file limit is unknown",
  ignore: !unix,
  fn: async () => {
    const flags = SERVE_TASK_FLAGS.filter((f) => f !== "--allow-ffi");
    assert.equal(flags.length, SERVE_TASK_FLAGS.length - 1);
    await using dir = await tempDir();
    await using server = spawnLimited(flags, 160, [
      "--db",
      `${dir.path}/u.db`,
      "--socket",
      `${dir.path}/u.sock`,
      "--engine",
      "auto", // without --allow-ffi only node:sqlite runs, whatever CI forces
    ]);
    await server.until(() => server.err().includes("is unknown"));
    assert.match(
      server.err(),
      /warn {2}netsqlite: the open-file limit \(ulimit -n\) is unknown \(getrlimit\(\) needs --allow-ffi, and \/proc\/self\/limits --allow-all\): connections and cursors are not fitted to it/,
    );
    assert.doesNotMatch(server.err(), /serving at most/);
  },
});

Deno.test({
  name: "server.ts with the serve task's permissions but --allow-ffi scoped to libc (README) " +
    "trims memory and reads the open-file limit",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const libc = /\s(\/\S*\/libc\.so\.6)$/m.exec(Deno.readTextFileSync("/proc/self/maps"));
    assert.ok(libc !== null, "glibc");
    const flags = SERVE_TASK_FLAGS.map((f) => f === "--allow-ffi" ? `--allow-ffi=${libc[1]}` : f);
    assert.ok(flags.includes(`--allow-ffi=${libc[1]}`), flags.join(" "));
    await using dir = await tempDir();
    await using server = spawnLimited(flags, 160, [
      "--db",
      `${dir.path}/s.db`,
      "--socket",
      `${dir.path}/s.sock`,
      "--engine",
      "auto", // FFI on libc only: node:sqlite runs
    ]);
    await server.until(() => /netsqlite: engine .*\n/.test(server.out()));
    assert.match(server.out(), /^netsqlite: memory release: malloc_trim after disconnects;/m);
    await server.until(() => server.err().includes("in use at start\n"));
    const inUse = inUseAtStart(server.err());
    assert.ok(server.err().includes(`${fdBudget(10000, 160, 1024, { inUse }).warning}\n`));
  },
});

Deno.test({
  name: "server.ts with --allow-ffi scoped to libc (README) checks the database's files through " +
    "libc: stat of the paths, and the WAL-index header mapped; without --allow-ffi it says it " +
    "cannot",
  ignore: Deno.build.os !== "linux" || !["x86_64", "aarch64"].includes(Deno.build.arch),
  fn: async () => {
    const libc = /\s(\/\S*\/libc\.so\.6)$/m.exec(Deno.readTextFileSync("/proc/self/maps"));
    assert.ok(libc !== null, "glibc");
    const scoped = SERVE_TASK_FLAGS.map((f) => f === "--allow-ffi" ? `--allow-ffi=${libc[1]}` : f);
    const none = SERVE_TASK_FLAGS.filter((f) => f !== "--allow-ffi");
    await using dir = await tempDir();
    for (
      const [flags, expected] of [
        [scoped, "file checks: paths checked with stat through libc, WAL-index header mapped"],
        [
          none,
          "file checks: paths checked with Deno.statSync (no FFI on libc), WAL-index header read " +
          "from the file at every check (no FFI on libc)",
        ],
      ] as const
    ) {
      await using server = spawnLimited([...flags], 1024, [
        "--db",
        `${dir.path}/f.db`,
        "--socket",
        `${dir.path}/f.sock`,
        "--engine",
        "auto", // FFI on libc only (or none): node:sqlite runs
        "--log-level",
        "info",
      ]);
      await server.until(() => /netsqlite: engine .*\n/.test(server.out()));
      assert.match(
        server.err(),
        new RegExp(` info {2}netsqlite: ${expected.replace(/[()]/g, "\\$&")}\n`),
      );
    }
  },
});

Deno.test({
  name: "deno task serve needs no npm package: with an empty DENO_DIR and an npm registry that " +
    "answers nothing, --help prints the server's usage, no request reaches the registry, and " +
    "deno.lock stays as it was",
  fn: async () => {
    // `deno task` first caches every npm package deno.json's imports and deno.lock name
    // (denoland/deno#30887), whatever the task runs: server.ts imports none.
    await using dir = await tempDir();
    const registry = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    let connections = 0;
    const accepting = (async () => {
      try {
        for await (const conn of registry) {
          connections++;
          conn.close(); // refused at once: an old deno.json fails fast, not after a timeout
        }
      } catch { /* the listener closed */ }
    })();
    const lock = await Deno.readFile(new URL("deno.lock", ROOT));
    let out: Deno.CommandOutput;
    try {
      out = await new Deno.Command(Deno.execPath(), {
        args: ["task", "serve", "--help"],
        cwd: ROOT,
        clearEnv: true,
        env: {
          PATH: Deno.env.get("PATH") ?? "",
          HOME: dir.path, // no ~/.npmrc naming another registry
          DENO_DIR: `${dir.path}/deno`,
          NPM_CONFIG_REGISTRY: `http://127.0.0.1:${registry.addr.port}/`,
          NO_COLOR: "1",
        },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
    } finally {
      registry.close();
      await accepting;
    }
    const stdout = new TextDecoder().decode(out.stdout);
    const text = stdout + new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, text);
    assert.match(stdout, /^netsqlite server \S+: share one SQLite database between processes\n/);
    assert.match(stdout, /\nUsage: deno run -A server\.ts \[options\]/);
    assert.equal(connections, 0, text);
    assert.deepEqual(await Deno.readFile(new URL("deno.lock", ROOT)), lock);
  },
});
