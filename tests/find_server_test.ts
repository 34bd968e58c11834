/**
 * A client on a database's default socket finds the database's server when
 * it listens elsewhere: under another `XDG_RUNTIME_DIR` (a server started
 * from an ssh login, `/tmp/netsqlite-<uid>/`, and a desktop client with
 * `/run/user/<uid>`), as the lock file beside the database records it. The
 * client reads that file only where it may without asking for a permission
 * and only when it is this user's; otherwise its error names the file. Also:
 * a scoped `--allow-env` missing one of the variables the socket directory
 * comes from is reported inside "Cannot work out the default socket",
 * naming the whole list.
 */

import assert from "node:assert/strict";
import { cli } from "./_cli.ts";
import { readStdoutUntil, tempDir } from "./_helpers.ts";
import { ENGINE } from "./_logged_server.ts";

const CLIENT = new URL("../client.ts", import.meta.url).href;
const SERVER = new URL("../server.ts", import.meta.url).pathname;

/**
 * A layout: `server/` and `client/`, two runtime directories (0700), and
 * `app.db` served by a server process started with `XDG_RUNTIME_DIR` set to
 * `server/`, on its default socket there (this process's environment is
 * left alone: test files running beside this one share it).
 */
async function layout(): Promise<
  { root: string; database: string; listening: string; clientDir: string } & AsyncDisposable
> {
  const dir = await tempDir();
  const root = Deno.realPathSync(dir.path);
  Deno.mkdirSync(`${root}/server`, { mode: 0o700 });
  Deno.mkdirSync(`${root}/client`, { mode: 0o700 });
  const database = `${root}/app.db`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SERVER, "--db", database, "--engine", ENGINE],
    env: { XDG_RUNTIME_DIR: `${root}/server` },
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const { text, drained } = await readStdoutUntil(child, /\n/);
  const stop = async (): Promise<void> => {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    await child.status;
    await drained;
  };
  const m = / on unix:(\S+)/.exec(text);
  if (m === null) {
    await stop();
    await dir[Symbol.asyncDispose]();
    throw new Error(`The server did not start: ${JSON.stringify(text)}`);
  }
  return {
    root,
    database,
    listening: m[1],
    clientDir: `${root}/client`,
    async [Symbol.asyncDispose]() {
      await stop();
      await dir[Symbol.asyncDispose]();
    },
  };
}

/** What the client program printed: its result, or its error. */
interface Outcome {
  ok: boolean;
  database?: string;
  rows?: unknown[][];
  name?: string;
  code?: string;
  message?: string;
}

/**
 * Runs a client process (`connect({ ...options, max: 2 })`, then a
 * statement on one connection while another is reserved: two connections of
 * the pool) with `XDG_RUNTIME_DIR` set to `runtimeDir` (unset when `null`), no
 * other variable but HOME, PATH and DENO_DIR, and the permission flags
 * `flags`; returns what it printed.
 */
async function runClient(
  root: string,
  options: { database: string } | { path: string },
  runtimeDir: string | null,
  flags: string[],
): Promise<Outcome> {
  const script = `${root}/client.ts`;
  Deno.writeTextFileSync(
    script,
    `import { connect } from "${CLIENT}";
try {
  const options = { ...JSON.parse(Deno.args[0]), max: 2, connectTimeout: 10000 };
  await using db = await connect(options);
  const reserved = await db.reserve();
  try {
    await db.exec("CREATE TABLE IF NOT EXISTS t (x); INSERT INTO t VALUES ('from the client')");
    const rows = await reserved.values("SELECT x FROM t");
    console.log(JSON.stringify({ ok: true, database: db.serverInfo.database, rows }));
  } finally {
    reserved.release();
  }
} catch (err) {
  const { name, code, message } = err as Error & { code?: string };
  console.log(JSON.stringify({ ok: false, name, code, message }));
}
`,
  );
  const env: Record<string, string> = runtimeDir === null ? {} : { XDG_RUNTIME_DIR: runtimeDir };
  for (const key of ["HOME", "PATH", "DENO_DIR"]) {
    const value = Deno.env.get(key);
    if (value !== undefined) env[key] = value;
  }
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", ...flags, script, JSON.stringify(options)],
    clearEnv: true,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, stdout + new TextDecoder().decode(out.stderr));
  return JSON.parse(stdout) as Outcome;
}

/** The permissions README lists for a client finding the default socket. */
const DEFAULT_CASE = [
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-sys=uid",
];

/** `text` as a regular expression matching it literally. */
function literal(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** The default socket of `app.db` under the runtime directory `dir`, as a pattern. */
function defaultSocketIn(dir: string): string {
  return `unix:${literal(dir)}/netsqlite/app-[0-9a-f]{8}\\.sock`;
}

Deno.test("connect({ database }) with another XDG_RUNTIME_DIR than its server's connects to the socket the lock file names, its pool too", async () => {
  await using l = await layout();
  assert.match(`unix:${l.listening}`, new RegExp(`^${defaultSocketIn(`${l.root}/server`)}$`));
  const found = await runClient(l.root, { database: l.database }, l.clientDir, DEFAULT_CASE);
  assert.deepEqual(found, { ok: true, database: l.database, rows: [["from the client"]] });
  // Without XDG_RUNTIME_DIR (the per-user directory in /tmp) likewise.
  const again = await runClient(l.root, { database: l.database }, null, DEFAULT_CASE);
  assert.deepEqual(again.rows, [["from the client"], ["from the client"]]);
  // The CLI's shell and admin commands, whose --db is the same option.
  const shell = await cli(["shell", "--db", l.database], "SELECT count(*) FROM t;\n", {
    XDG_RUNTIME_DIR: l.clientDir,
  });
  assert.equal(shell.code, 0, shell.stderr);
  assert.match(shell.stdout, /\|\s+2 \|/);
  const stats = await cli(["stats", "--json", "--db", l.database], undefined, {
    XDG_RUNTIME_DIR: l.clientDir,
  });
  assert.equal(stats.code, 0, stats.stderr);
  assert.equal(JSON.parse(stats.stdout).database, l.database);
});

Deno.test("connect({ database }) names both sockets when the one its lock file names does not answer either; a path given is not looked up", async () => {
  await using dir = await tempDir();
  const root = Deno.realPathSync(dir.path);
  Deno.mkdirSync(`${root}/client`, { mode: 0o700 });
  const database = `${root}/app.db`;
  // As a server killed with kill -9 leaves it: the record stays, nothing listens.
  const gone = `${root}/gone.sock`;
  const lock = `${database}.lock`;
  Deno.writeTextFileSync(lock, JSON.stringify({ pid: 4242, socket: `unix:${gone}` }));
  Deno.chmodSync(lock, 0o600);
  const out = await runClient(root, { database }, `${root}/client`, DEFAULT_CASE);
  assert.equal(out.name, "ConnectionError", out.message);
  assert.equal(out.code, "CONNECTION_CLOSED");
  assert.match(
    out.message!,
    new RegExp(
      `^Cannot connect to ${defaultSocketIn(`${root}/client`)}: No such file or directory ` +
        literal(
          `(os error 2), nor to unix:${gone}, the socket the database's lock file "${lock}" ` +
            `names (pid 4242): No such file or directory (os error 2) (is the server of ` +
            `"${database}" running?`,
        ),
    ),
  );
  // A path of the client's own is where it looks, and only there.
  const mine = await runClient(root, { path: `${root}/mine.sock` }, `${root}/client`, DEFAULT_CASE);
  assert.equal(mine.name, "ConnectionError", mine.message);
  assert.doesNotMatch(mine.message!, /lock file|gone\.sock/);
});

Deno.test("connect({ database }) that may not read the lock file, or finds it not this user's alone, keeps its error and names the file", async () => {
  await using l = await layout();
  const lock = `${l.database}.lock`;
  // Read access to its runtime directory only (not to the lock file): never asked for.
  const scoped = [
    "--allow-net",
    `--allow-read=${l.clientDir}`,
    `--allow-write=${l.clientDir}`,
    "--allow-env",
    "--allow-sys=uid",
  ];
  const denied = await runClient(l.root, { database: l.database }, l.clientDir, scoped);
  assert.equal(denied.name, "ConnectionError", denied.message);
  assert.match(
    denied.message!,
    new RegExp(
      `^Cannot connect to ${defaultSocketIn(l.clientDir)}: No such file or directory ` +
        literal(`(os error 2) (is the server of "${l.database}" running?`),
    ),
  );
  assert.ok(
    denied.message!.endsWith(
      `; a running server records its socket in the lock file "${lock}", which this client did ` +
        `not read (no read access to it was granted): pass that socket in connect({ path }), ` +
        `or run the client with --allow-read=${lock})`,
    ),
    denied.message,
  );
  // Writable by others: anyone could point the client (and its token) at their own socket.
  Deno.chmodSync(lock, 0o622);
  const open = await runClient(l.root, { database: l.database }, l.clientDir, DEFAULT_CASE);
  assert.equal(open.name, "ConnectionError", open.message);
  assert.match(open.message!, /did not read \(other users may write it \(mode 0622\)\): pass/);
});

Deno.test("connect({ database }) with a scoped --allow-env missing one of XDG_RUNTIME_DIR, TMPDIR, TMP, TEMP says so inside 'Cannot work out the default socket', naming all four", async () => {
  await using dir = await tempDir();
  const root = Deno.realPathSync(dir.path);
  const database = `${root}/app.db`;
  const base = ["--allow-net", "--allow-read", "--allow-write", "--allow-sys=uid"];
  const cases: [string, string][] = [
    ["XDG_RUNTIME_DIR", "TMPDIR"],
    ["XDG_RUNTIME_DIR,TMPDIR", "TMP"],
    ["XDG_RUNTIME_DIR,TMPDIR,TMP", "TEMP"],
    ["TMPDIR,TMP,TEMP", "XDG_RUNTIME_DIR"],
  ];
  for (const [allowed, refused] of cases) {
    const out = await runClient(root, { database }, null, [...base, `--allow-env=${allowed}`]);
    assert.equal(out.name, "NotCapable", out.message);
    // Names the refused variable and what to allow, inside the one wrapper (the TMPDIR case is
    // worded by transport/address.ts, the others by client/options.ts).
    const message = out.message ?? "";
    assert.ok(
      message.startsWith(`Cannot work out the default socket of "${database}": `) &&
        message.includes(`Requires env access to "${refused}"`) &&
        message.includes("--allow-env") &&
        message.endsWith("give the socket path explicitly"),
      out.message,
    );
  }
  // The four are enough: then no server answers (none runs).
  const out = await runClient(root, { database }, null, [
    ...base,
    "--allow-env=XDG_RUNTIME_DIR,TMPDIR,TMP,TEMP",
  ]);
  assert.equal(out.name, "ConnectionError", out.message);
  assert.match(out.message!, /^Cannot connect to unix:.*: No such file or directory/);
});
