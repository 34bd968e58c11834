/**
 * The server as a separate process (`deno run server.ts`): banner, clients,
 * command-line errors, a second server on a taken address, a client process
 * killed mid-request, and shutdown on SIGTERM.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { ConnectionError } from "../protocol/errors.ts";
import { connect, type ConnectOptions } from "../client.ts";
import {
  delay,
  readStdoutUntil,
  SERVE_TASK_FLAGS,
  startServerProcess,
  tempDir,
} from "./_helpers.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const SERVER_TS = fileURLToPath(new URL("../server.ts", import.meta.url));
const PIPELINE_CLIENT = fileURLToPath(new URL("./fixtures/pipeline_client.ts", import.meta.url));
const TRANSPORTS = ["unix", "tcp"] as const;

/** Runs `deno run -A server.ts ...args` to completion. */
async function runServer(
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SERVER_TS, ...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Where a server process listens, as `deno run server.ts` flags. */
function addressArgs(options: ConnectOptions): string[] {
  return options.path !== undefined
    ? ["--socket", options.path]
    : ["--tcp", `${options.hostname}:${options.port}`];
}

/** A running fixture client process, killed and awaited on dispose. */
async function spawnPipelineClient(
  options: ConnectOptions,
  mode: "tx" | "plain" | "writes",
): Promise<{ child: Deno.ChildProcess; kill(): Promise<Deno.CommandStatus> } & AsyncDisposable> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", PIPELINE_CLIENT, JSON.stringify(options), mode],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const { text: out, drained } = await readStdoutUntil(child, "ready");
  let status: Promise<Deno.CommandStatus> | null = null;
  const kill = () => {
    if (status === null) {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
      status = child.status.then(async (s) => {
        await drained;
        return s;
      });
    }
    return status;
  };
  if (!out.includes("ready")) {
    await kill();
    throw new Error(`fixture client did not start: ${JSON.stringify(out)}`);
  }
  return { child, kill, [Symbol.asyncDispose]: async () => void await kill() };
}

Deno.test({
  name: "server process says how it gives memory back: trim and gc with the serve task's flags, " +
    "neither without --allow-ffi and --expose-gc (and it never prompts)",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    assert.ok(SERVE_TASK_FLAGS.includes("--allow-ffi"), SERVE_TASK_FLAGS.join(" "));
    {
      await using sp = await startServerProcess({ denoFlags: SERVE_TASK_FLAGS });
      assert.equal(
        sp.memoryLine,
        "netsqlite: memory release: malloc_trim after disconnects; " +
          "full gc after a wave of disconnects on",
      );
    }
    const restricted = SERVE_TASK_FLAGS.filter((f) => f !== "--allow-ffi" && !/expose-gc/.test(f));
    assert.equal(restricted.length, SERVE_TASK_FLAGS.length - 2);
    await using sp = await startServerProcess({
      denoFlags: ["--no-prompt", ...restricted],
      // Without --allow-ffi only node:sqlite can run, whatever CI forces.
      args: ["--engine", "auto"],
    });
    assert.equal(
      sp.memoryLine,
      "netsqlite: memory release: no malloc_trim (no --allow-ffi); " +
        "full gc after a wave of disconnects off",
    );
    await using db = await sp.client();
    assert.deepEqual(await db.get("SELECT 1 AS x"), { x: 1 });
  },
});

for (const transport of TRANSPORTS) {
  const T = ` (${transport})`;

  Deno.test(`server process prints its banner and serves clients${T}`, async () => {
    await using sp = await startServerProcess({ transport });
    const where = transport === "unix"
      ? `unix:${sp.dir}/test.sock`
      : /tcp:127\.0\.0\.1:\d+/.exec(sp.banner)?.[0];
    assert.ok(where !== undefined, sp.banner);
    assert.equal(sp.banner, `netsqlite 0.1.0 serving ${sp.database} on ${where}`);
    if (transport === "tcp") assert.ok((sp.connectOptions.port ?? 0) > 0, "a real port, not 0");
    await using a = await sp.client();
    await using b = await sp.client();
    await a.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
    assert.deepEqual(await a.run("INSERT INTO t (v) VALUES (?)", ["from a"]), {
      changes: 1,
      lastInsertRowid: 1,
    });
    assert.deepEqual(await b.query("SELECT id, v FROM t"), [{ id: 1, v: "from a" }]);
    assert.equal(b.serverInfo.server, "netsqlite 0.1.0");
    assert.deepEqual(await b.get("PRAGMA journal_mode"), { journal_mode: "wal" });
  });

  Deno.test(`server process passes its flags to the server${T}`, async () => {
    await using sp = await startServerProcess({
      transport,
      args: [
        "--busy-timeout",
        "1234",
        "--tx-idle-timeout",
        "4321",
        "--synchronous",
        "normal",
        "--max-frame-size",
        "65536",
      ],
    });
    await using db = await sp.client();
    assert.equal(db.serverInfo.limits.busyTimeout, 1234);
    assert.equal(db.serverInfo.limits.txIdleTimeout, 4321);
    assert.equal(db.serverInfo.limits.maxFrameSize, 65536);
    assert.deepEqual(await db.get("PRAGMA synchronous"), { synchronous: 1 });
  });

  Deno.test(`server process refuses a second server on its address with a clear message${T}`, async () => {
    await using sp = await startServerProcess({ transport });
    const second = await runServer([
      "--db",
      `${sp.dir}/other.db`,
      ...addressArgs(sp.connectOptions),
    ]);
    assert.equal(second.code, 1, second.stderr);
    assert.equal(second.stdout, "");
    if (transport === "unix") {
      assert.match(
        second.stderr,
        new RegExp(
          `^netsqlite: Cannot listen on unix:${sp.dir}/test\\.sock: another server is already listening there`,
        ),
      );
    } else {
      assert.match(
        second.stderr,
        new RegExp(`^netsqlite: Cannot listen on tcp:127\\.0\\.0\\.1:${sp.connectOptions.port}: `),
      );
    }
    // The first server is unharmed.
    await using db = await sp.client();
    assert.deepEqual(await db.values("SELECT 1"), [[1]]);
  });

  Deno.test(`server process exits 0 on SIGTERM, rolling back open transactions${T}`, async () => {
    await using dir = await tempDir();
    const sp = await startServerProcess({ transport, dir: dir.path });
    try {
      const db = await connect({ ...sp.connectOptions, max: 1 });
      await db.exec("CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('committed')");
      await db.exec("BEGIN");
      await db.run("INSERT INTO t VALUES ('uncommitted')");
      sp.child.kill("SIGTERM");
      const status = await sp.child.status;
      assert.equal(status.code, 0);
      assert.equal(status.success, true);
      assert.equal(status.signal, null);
      await assert.rejects(db.values("SELECT 1"), ConnectionError);
      await db.close();
      if (transport === "unix") {
        await assert.rejects(Deno.lstat(`${dir.path}/test.sock`), Deno.errors.NotFound);
      }
    } finally {
      await sp.kill();
    }
    // A new server on the same database sees only the committed row.
    await using again = await startServerProcess({ transport, dir: dir.path });
    await using db = await again.client();
    assert.deepEqual(await db.values("SELECT v FROM t"), [["committed"]]);
  });
}

Deno.test("server process removes its socket file on SIGTERM and on SIGINT", async () => {
  await Promise.all((["SIGTERM", "SIGINT"] as const).map(async (signal) => {
    await using sp = await startServerProcess();
    const path = sp.connectOptions.path!;
    assert.ok((await Deno.lstat(path)).isSocket);
    {
      // One round trip: the server's main() has run past its setup.
      await using db = await sp.client();
      assert.deepEqual(await db.values("SELECT 1"), [[1]]);
    }
    sp.child.kill(signal);
    const status = await sp.child.status;
    assert.equal(status.code, 0, signal);
    assert.equal(status.signal, null, signal);
    await assert.rejects(Deno.lstat(path), Deno.errors.NotFound, `${signal}: socket removed`);
    await assert.rejects(connect({ path }), ConnectionError);
  }));
});

// server.ts prints its banner before it installs its SIGTERM/SIGINT
// listeners, so a supervisor that signals as soon as it sees the banner can
// kill the server outright (exit 143, socket file left behind).
Deno.test("server process handles SIGTERM sent as soon as its banner appears", async () => {
  const outcomes = await Promise.all(Array.from({ length: 6 }, async () => {
    await using sp = await startServerProcess();
    sp.child.kill("SIGTERM");
    const status = await sp.child.status;
    const left = await Deno.lstat(sp.connectOptions.path!).then(() => "socket left", () => "");
    return `exit ${status.code}${status.signal ? ` (${status.signal})` : ""} ${left}`.trim();
  }));
  assert.deepEqual(outcomes, Array(6).fill("exit 0"));
});

Deno.test("server process leaves its socket behind on SIGKILL and a new server takes it over", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/test.sock`;
  {
    await using sp = await startServerProcess({ dir: dir.path });
    await using db = await sp.client();
    await db.exec("CREATE TABLE t (v); INSERT INTO t VALUES ('kept')");
    await sp.kill();
  }
  assert.ok((await Deno.lstat(path)).isSocket, "stale socket file");
  await using sp = await startServerProcess({ dir: dir.path });
  assert.equal(sp.connectOptions.path, path);
  await using db = await sp.client();
  assert.deepEqual(await db.values("SELECT v FROM t"), [["kept"]]);
});

Deno.test("server.ts --help exits 0 and prints usage", async () => {
  const [{ code, stdout, stderr }, short] = await Promise.all([
    runServer(["--help"]),
    runServer(["-h"]),
  ]);
  assert.equal(code, 0);
  assert.equal(stderr, "");
  assert.match(stdout, /^netsqlite server 0\.1\.0: share one SQLite database between processes/);
  assert.match(stdout, /Usage: deno run -A server\.ts \[options\]/);
  for (
    const flag of [
      "--db PATH",
      "--socket PATH",
      "--tcp HOST:PORT",
      "--synchronous MODE",
      "--busy-timeout MS",
      "--tx-idle-timeout MS",
      "--max-frame-size BYTES",
      "--help",
    ]
  ) {
    assert.ok(stdout.includes(flag), `usage mentions ${flag}`);
  }
  assert.equal(short.code, 0);
  assert.equal(short.stdout, stdout);
});

Deno.test("server.ts exits 2 with one line on a bad command line, not the usage", async () => {
  await using dir = await tempDir();
  const db = `${dir.path}/x.db`;
  const [bad, unknown, tcp] = await Promise.all([
    runServer(["--db", db, "--busy-timeout", "abc"]),
    runServer(["--db", db, "--no-such-flag"]),
    runServer(["--db", db, "--tcp", "nohostport"]),
  ]);
  assert.equal(bad.code, 2);
  assert.equal(bad.stdout, "");
  assert.equal(
    bad.stderr,
    'netsqlite: Invalid --busy-timeout "abc": expected a whole number in decimal digits\n',
  );
  assert.equal(unknown.code, 2);
  assert.equal(
    unknown.stderr,
    "netsqlite: Unknown option '--no-such-flag' (--help lists the options)\n",
  );
  assert.equal(tcp.code, 2);
  assert.match(tcp.stderr, /^netsqlite: Cannot parse address "nohostport"/);
  // Nothing was created.
  await assert.rejects(Deno.lstat(db), Deno.errors.NotFound);
});

Deno.test("server.ts exits 2 with a clear message on invalid option values, naming flags", async () => {
  await using dir = await tempDir();
  const sock = ["--db", `${dir.path}/x.db`, "--socket", `${dir.path}/x.sock`];
  const [sync, range, both] = await Promise.all([
    runServer([...sock, "--synchronous", "off"]),
    runServer([...sock, "--busy-timeout=-5"]),
    runServer([...sock, "--tcp", "127.0.0.1:0"]),
  ]);
  assert.equal(sync.code, 2);
  assert.match(
    sync.stderr,
    /^netsqlite: Invalid --synchronous: expected "full" or "normal", got "off"/,
  );
  assert.equal(range.code, 2);
  assert.match(
    range.stderr,
    /^netsqlite: Invalid --busy-timeout: -5 is outside 0\.\.2147483647/,
  );
  assert.equal(both.code, 2);
  assert.match(both.stderr, /either --socket \(Unix socket\) or --tcp \(TCP\)/);
});

for (const transport of TRANSPORTS) {
  const T = ` (${transport})`;

  Deno.test(`client process killed with SIGKILL mid-request does not disturb another client${T}`, async () => {
    await using sp = await startServerProcess({ transport });
    await using db = await sp.client();
    await using watch = await sp.client();
    await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT); CREATE TABLE v (n)");
    // db holds the writer, so the victim's 300 pipelined writes certainly wait
    // on the server when it is killed (its 1500 reads may or may not be done).
    await db.exec("BEGIN IMMEDIATE");
    await using victim = await spawnPipelineClient(sp.connectOptions, "writes");
    // The other client works while the victim's requests are queued on the server...
    const during = await Promise.all(
      Array.from({ length: 100 }, (_, i) => db.values("SELECT ?, ? * 2", [i, i])),
    );
    during.forEach((rows, i) => assert.deepEqual(rows, [[i, i * 2]]));
    assert.deepEqual(await watch.values("SELECT count(*) FROM v"), [[0]], "victim writes ran");
    // ...while it is killed with requests still pending...
    const killing = victim.kill();
    const across = await Promise.all(
      Array.from(
        { length: 200 },
        (_, i) => db.run("INSERT INTO t (id, who) VALUES (?, ?)", [i + 1, `other ${i}`]),
      ),
    );
    across.forEach((r, i) => assert.deepEqual(r, { changes: 1, lastInsertRowid: i + 1 }));
    const status = await killing;
    assert.equal(status.signal, "SIGKILL");
    await db.exec("COMMIT");
    // ...and afterwards.
    assert.deepEqual(await db.values("SELECT count(*), min(id), max(id) FROM t"), [[200, 1, 200]]);
    await using fresh = await sp.client();
    assert.deepEqual(await fresh.values("SELECT count(*) FROM t"), [[200]]);
    // The killed client's waiting writes are dropped once the server sees the
    // connection end; those it ran before noticing (the COMMIT above can free
    // the writer first, on a loaded machine) ran whole and in order.
    const [[ran, last]] = await fresh.values<[number, number]>(
      "SELECT count(*), coalesce(max(n), -1) FROM v",
    );
    assert.equal(last, ran - 1, `${ran} of the killed client's writes ran, up to n = ${last}`);
    await fresh.run("INSERT INTO v VALUES (1000)");
    assert.deepEqual(await watch.values("SELECT count(*) FROM v"), [[ran + 1]]);
    assert.deepEqual(await watch.values("PRAGMA integrity_check"), [["ok"]]);
  });

  Deno.test(`client process killed with SIGKILL inside a transaction has its writes rolled back${T}`, async () => {
    await using sp = await startServerProcess({ transport });
    await using db = await sp.client();
    await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)");
    await using victim = await spawnPipelineClient(sp.connectOptions, "tx");
    // The victim holds the writer: reads go on, and the uncommitted row is invisible.
    assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]]);
    let settled = false;
    const write = db.run("INSERT INTO t (who) VALUES ('survivor')").finally(() => settled = true);
    // 200 ms: a local write takes about a millisecond when the writer is free.
    await delay(200);
    assert.equal(settled, false, "the write did not wait for the victim's transaction");
    const status = await victim.kill();
    assert.equal(status.signal, "SIGKILL");
    // The server noticed the dead connection and released the writer.
    assert.deepEqual(await write, { changes: 1, lastInsertRowid: 1 });
    assert.deepEqual(await db.values("SELECT who FROM t"), [["survivor"]]);
  });
}

Deno.test("deno task serve: the task's permissions suffice to serve on the default socket", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  const words = (config.tasks.serve as string).split(/\s+/);
  assert.equal(words[0], "deno");
  assert.equal(words.at(-1), "server.ts");
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-task-" });
  // No XDG_RUNTIME_DIR: the default socket goes to <TMPDIR>/netsqlite-<uid>/.
  const env: Record<string, string> = { TMPDIR: dir };
  for (const key of ["HOME", "PATH", "DENO_DIR"]) {
    const value = Deno.env.get(key);
    if (value !== undefined) env[key] = value;
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      ...words.slice(1, -1),
      fileURLToPath(new URL("../server.ts", import.meta.url)),
      "--db",
      `${dir}/task.db`,
    ],
    clearEnv: true,
    env,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const { text: banner, drained } = await readStdoutUntil(child, "\n");
  try {
    const m = /serving (\S+) on unix:(\S+)/.exec(banner);
    assert.ok(m, `banner: ${JSON.stringify(banner)}`);
    assert.equal(m[1], `${dir}/task.db`);
    assert.match(m[2], new RegExp(`^${dir}/netsqlite-\\d+/task-[0-9a-f]{8}\\.sock$`));
    assert.equal((await Deno.stat(m[2])).mode! & 0o777, 0o600);
    assert.equal((await Deno.stat(`${dir}/${m[2].split("/").at(-2)}`)).mode! & 0o777, 0o700);
    await using db = await connect({ path: m[2] });
    assert.deepEqual(await db.values("SELECT 6 * 7"), [[42]]);
  } finally {
    child.kill("SIGTERM");
    const status = await child.status;
    await drained;
    await child.stderr.cancel();
    await Deno.remove(dir, { recursive: true });
    assert.equal(status.code, 0);
  }
});
