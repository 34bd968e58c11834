/**
 * A client on a database's default socket finds the database's server when
 * it listens elsewhere: under another `XDG_RUNTIME_DIR` (a server started
 * from an ssh login, `/tmp/netsqlite-<uid>/`, and a desktop client with
 * `/run/user/<uid>`), as the lock file beside the database records it. The
 * client reads that file only where it may without asking for a permission
 * and only when it is this user's and a small regular file (not a FIFO, which
 * would block it, nor a file too large to be a record); otherwise its error
 * names the file. It connects to the socket the file names only where that
 * asks for no permission (on a terminal, Deno would prompt); otherwise its
 * error names the socket and the flags. Also:
 * a scoped `--allow-env` missing one of the variables the socket directory
 * comes from is reported inside "Cannot work out the default socket", by
 * client and server alike, naming the variable refused and the whole list.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { cli } from "./_cli.ts";
import {
  asNobody,
  canRunAsNobody,
  canUseTerminal,
  onTerminal,
  readStdoutUntil,
  tempDir,
  TERMINAL_LIMIT_MS,
} from "./_helpers.ts";
import { ENGINE } from "./_logged_server.ts";
import { basename } from "node:path";

const CLIENT = new URL("../client.ts", import.meta.url).href;
const SERVER = fileURLToPath(new URL("../server.ts", import.meta.url));
/** The uid and gid of {@link asNobody}. */
const NOBODY = 65534;

/**
 * A layout: `server/` and `client/`, two runtime directories (0700), `tmp/`,
 * and `app.db` served by a server process started with `XDG_RUNTIME_DIR` set
 * to `server/`, on its default socket there; with `server: "tmp"`, started
 * without `XDG_RUNTIME_DIR` and with `TMPDIR` set to `tmp/` (as from an ssh
 * login), on its default socket in `tmp/netsqlite-<uid>/` (this process's
 * environment is left alone: test files running beside this one share it).
 * With `user` ({@link asNobody}) the server runs as that user, and the
 * layout is theirs.
 */
async function layout(server: "runtime" | "tmp" = "runtime", user: string[] = []): Promise<
  & {
    root: string;
    database: string;
    listening: string;
    clientDir: string;
    /** Stops the server (it releases its lock). */
    stop(): Promise<void>;
  }
  & AsyncDisposable
> {
  const dir = await tempDir();
  const root = Deno.realPathSync(dir.path);
  Deno.mkdirSync(`${root}/server`, { mode: 0o700 });
  Deno.mkdirSync(`${root}/client`, { mode: 0o700 });
  Deno.mkdirSync(`${root}/tmp`, { mode: 0o700 });
  if (user.length > 0) {
    for (const made of [root, `${root}/server`, `${root}/client`, `${root}/tmp`]) {
      Deno.chownSync(made, NOBODY, NOBODY);
    }
  }
  const database = `${root}/app.db`;
  const [command, ...pre] = [...user, Deno.execPath()];
  const child = new Deno.Command(command, {
    args: [...pre, "run", "-A", SERVER, "--db", database, "--engine", ENGINE],
    ...(server === "runtime"
      ? { env: { XDG_RUNTIME_DIR: `${root}/server` } }
      : { clearEnv: true, env: { ...passedEnv(), TMPDIR: `${root}/tmp` } }),
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
    stop,
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
  /** How long `connect()` took to fail, in ms. */
  ms?: number;
  /** With `measureReads`: the bytes the process had read (`rchar` of /proc/self/io) then. */
  read?: number;
}

/** HOME, PATH and DENO_DIR of this process, those set: all a child gets of its environment. */
function passedEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const key of ["HOME", "PATH", "DENO_DIR"]) {
    const value = Deno.env.get(key);
    if (value !== undefined) env[key] = value;
  }
  return env;
}

/**
 * Writes the client program to `<root>/client.ts`: `connect({ ...options,
 * max: 2, connectTimeout: 10000 })` (options as JSON in its first argument),
 * then a statement on one connection while another is reserved (two
 * connections of the pool); prints its outcome as one line of JSON. With a
 * second argument `measureReads` it also prints how many bytes it had read
 * when connect() failed (that needs -A: Deno lets nothing less read
 * /proc/self).
 */
function writeClient(root: string): string {
  const script = `${root}/client.ts`;
  Deno.writeTextFileSync(
    script,
    `import { connect } from "${CLIENT}";
const started = performance.now();
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
  const ms = Math.round(performance.now() - started);
  const { name, code, message } = err as Error & { code?: string };
  const read = Deno.args[1] === "measureReads"
    ? Number(/^rchar: (\\d+)$/m.exec(Deno.readTextFileSync("/proc/self/io"))![1])
    : undefined;
  console.log(JSON.stringify({ ok: false, name, code, message, ms, read }));
}
`,
  );
  return script;
}

/** How long a client process may take before it is killed and its test fails, in ms. */
const CLIENT_LIMIT_MS = 30_000;

/**
 * Runs a client process ({@link writeClient}) with `XDG_RUNTIME_DIR` set to
 * `runtimeDir` (unset when `null`), no other variable but HOME, PATH and
 * DENO_DIR, and the permission flags `flags`; as `extra.user`
 * ({@link asNobody}) when given; returns what it printed. One that has not
 * ended within {@link CLIENT_LIMIT_MS} (a client that hangs) is killed, and
 * fails the test.
 */
async function runClient(
  root: string,
  options: { database: string } | { path: string },
  runtimeDir: string | null,
  flags: string[],
  extra: { measureReads?: boolean; user?: string[] } = {},
): Promise<Outcome> {
  const script = writeClient(root);
  const env: Record<string, string> = runtimeDir === null ? {} : { XDG_RUNTIME_DIR: runtimeDir };
  Object.assign(env, passedEnv());
  const [command, ...pre] = [...extra.user ?? [], Deno.execPath()];
  const child = new Deno.Command(command, {
    args: [
      ...pre,
      "run",
      "--no-prompt",
      ...flags,
      script,
      JSON.stringify(options),
      ...(extra.measureReads ? ["measureReads"] : []),
    ],
    clearEnv: true,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let killed = false;
  const timer = setTimeout(() => {
    killed = true;
    child.kill("SIGKILL");
  }, CLIENT_LIMIT_MS);
  const out = await child.output().finally(() => clearTimeout(timer));
  const stdout = new TextDecoder().decode(out.stdout);
  const printed = stdout + new TextDecoder().decode(out.stderr);
  assert.ok(!killed, `The client had not ended after ${CLIENT_LIMIT_MS} ms: ${printed}`);
  assert.equal(out.code, 0, printed);
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

Deno.test("connect({ database }) and the server with a scoped --allow-env missing one of XDG_RUNTIME_DIR, TMPDIR, TMP, TEMP say so inside 'Cannot work out the default socket', naming the one refused and all four", async () => {
  await using dir = await tempDir();
  const root = Deno.realPathSync(dir.path);
  const database = `${root}/app.db`;
  const base = ["--allow-net", "--allow-read", "--allow-write", "--allow-sys=uid"];
  /** The message README quotes, for the variable `refused` (denied: by --deny-env). */
  const expected = (refused: string, denied = false): string =>
    `Cannot work out the default socket of "${database}": its directory depends on the ` +
    `environment variables XDG_RUNTIME_DIR, TMPDIR, TMP, TEMP, and reading ${refused} was ` +
    `not allowed (Requires env access to "${refused}", run again with the --allow-env ` +
    `flag); run with --allow-env=XDG_RUNTIME_DIR,TMPDIR,TMP,TEMP (or --allow-env)` +
    (denied ? ` and without the --deny-env that denies ${refused}` : "") +
    ", or give the socket path explicitly";
  // Neither XDG_RUNTIME_DIR nor TMPDIR, TMP, TEMP is set: each is read in turn.
  const cases: [string[], string, boolean][] = [
    [["--allow-env=XDG_RUNTIME_DIR"], "TMPDIR", false],
    [["--allow-env=XDG_RUNTIME_DIR,TMPDIR"], "TMP", false],
    [["--allow-env=XDG_RUNTIME_DIR,TMPDIR,TMP"], "TEMP", false],
    [["--allow-env=TMPDIR,TMP,TEMP"], "XDG_RUNTIME_DIR", false],
    // Denied: --allow-env does not override it, and the message says so.
    [["--allow-env=XDG_RUNTIME_DIR,TMPDIR,TMP,TEMP", "--deny-env=TMP"], "TMP", true],
    [["--allow-env", "--deny-env=TMP"], "TMP", true],
  ];
  for (const [flags, refused, denied] of cases) {
    const out = await runClient(root, { database }, null, [...base, ...flags]);
    assert.equal(out.name, "NotCapable", out.message);
    assert.equal(out.message, expected(refused, denied), flags.join(" "));
  }
  // The server words it the same (the token and the engine given: it reads no other variable),
  // also when Deno could prompt but has no terminal to (a service): the read it cannot ask
  // for turns the variable's state to "denied", which is no --deny-env of the user's.
  for (const prompt of [["--no-prompt"], []]) {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        ...prompt,
        ...base,
        "--allow-env=XDG_RUNTIME_DIR,TMPDIR",
        SERVER,
        "--db",
        database,
        "--token",
        "a-long-enough-token",
        "--engine",
        "node",
      ],
      clearEnv: true,
      env: passedEnv(),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const timer = setTimeout(() => child.kill("SIGKILL"), CLIENT_LIMIT_MS); // one that (wrongly) serves
    const server = await child.output().finally(() => clearTimeout(timer));
    const stderr = new TextDecoder().decode(server.stderr);
    assert.equal(server.code, 1, stderr);
    assert.equal(stderr, `netsqlite: ${expected("TMP")}\n`, prompt.join(" "));
    assert.deepEqual([...Deno.readDirSync(root)].map((e) => e.name).sort(), ["client.ts"]);
  }
  // The four are enough: then no server answers (none runs).
  const out = await runClient(root, { database }, null, [
    ...base,
    "--allow-env=XDG_RUNTIME_DIR,TMPDIR,TMP,TEMP",
  ]);
  assert.equal(out.name, "ConnectionError", out.message);
  assert.match(out.message!, /^Cannot connect to unix:.*: No such file or directory/);
});

/**
 * Runs the client program ({@link writeClient}) on a terminal
 * ({@link onTerminal}: prompts allowed, nothing typed), with
 * `XDG_RUNTIME_DIR` set to `runtimeDir`, `TMPDIR` to `tmp`, and the
 * permission flags `flags`. Returns what the terminal showed (with `\r\n`
 * line ends), the outcome printed (`null` if none), and whether it was
 * killed (after {@link TERMINAL_LIMIT_MS}: a prompt waits until then).
 */
async function runClientOnTerminal(
  root: string,
  options: { database: string },
  env: { XDG_RUNTIME_DIR: string; TMPDIR: string },
  flags: string[],
): Promise<{ screen: string; outcome: Outcome | null; killed: boolean }> {
  const script = writeClient(root);
  const { screen, killed } = await onTerminal(
    [Deno.execPath(), "run", ...flags, script, JSON.stringify(options)],
    env,
  );
  const line = /^\{"ok":.*\}\r?$/m.exec(screen);
  return { screen, outcome: line === null ? null : JSON.parse(line[0]) as Outcome, killed };
}

Deno.test({
  name:
    "connect({ database }) on a terminal never asks for access to the socket its lock file names: without it, a ConnectionError naming the socket and the flags",
  ignore: !canUseTerminal,
  async fn() {
    // The server from an ssh login (/tmp/netsqlite-<uid>/), the client in a desktop session.
    await using l = await layout("tmp");
    const lock = `${l.database}.lock`;
    const socket = l.listening;
    assert.ok(socket.startsWith(`${l.root}/tmp/netsqlite-`), socket);
    const env = { XDG_RUNTIME_DIR: l.clientDir, TMPDIR: `${l.root}/tmp` };
    // Access to its runtime directory, the database and its lock file: not to the socket there.
    const scoped = (read: string[], write: string[]): string[] => [
      "--allow-net",
      "--allow-env",
      "--allow-sys=uid",
      `--allow-read=${[`${l.root}/client.ts`, l.clientDir, l.database, lock, ...read].join(",")}`,
      `--allow-write=${[l.clientDir, l.database, ...write].join(",")}`,
    ];
    const denied = await runClientOnTerminal(l.root, { database: l.database }, env, scoped([], []));
    assert.doesNotMatch(denied.screen, /Deno requests|Allow\?/);
    assert.ok(
      !denied.killed,
      `The client had not ended after ${TERMINAL_LIMIT_MS} ms: ${denied.screen}`,
    );
    const out = denied.outcome;
    assert.ok(out !== null, denied.screen);
    assert.equal(out.name, "ConnectionError", out.message);
    assert.equal(out.code, "CONNECTION_CLOSED");
    assert.match(
      out.message!,
      new RegExp(
        `^Cannot connect to ${defaultSocketIn(l.clientDir)}: No such file or directory ` +
          literal(`(os error 2) (is the server of "${l.database}" running?`),
      ),
    );
    assert.ok(
      out.message!.endsWith(
        `; the lock file "${lock}" says the server (pid ` +
          `${JSON.parse(Deno.readTextFileSync(lock)).pid}) listens at unix:${socket}, which this ` +
          `client did not connect to (no read or write access to it was granted, and connecting ` +
          `would ask for it): run the client with --allow-read=${socket} ` +
          `--allow-write=${socket})`,
      ),
      out.message,
    );
    // With the access it names, it connects there, still without asking for anything.
    const allowed = await runClientOnTerminal(
      l.root,
      { database: l.database },
      env,
      scoped([socket], [socket]),
    );
    assert.doesNotMatch(allowed.screen, /Deno requests|Allow\?/);
    assert.ok(
      !allowed.killed,
      `The client had not ended after ${TERMINAL_LIMIT_MS} ms: ${allowed.screen}`,
    );
    assert.deepEqual(allowed.outcome, {
      ok: true,
      database: l.database,
      rows: [["from the client"]],
    });
  },
});

Deno.test("connect({ database }) whose lock file is a FIFO fails within its connectTimeout, naming the file, rather than wait for a writer", async () => {
  await using dir = await tempDir();
  const root = Deno.realPathSync(dir.path);
  Deno.mkdirSync(`${root}/client`, { mode: 0o700 });
  const database = `${root}/app.db`;
  const lock = `${database}.lock`;
  const made = await new Deno.Command("mkfifo", { args: ["-m", "0600", lock] }).output();
  assert.equal(made.code, 0, new TextDecoder().decode(made.stderr));
  // Opening a FIFO to read waits for a writer: none comes. runClient kills a client that hangs.
  const out = await runClient(root, { database }, `${root}/client`, DEFAULT_CASE);
  assert.equal(out.name, "ConnectionError", out.message);
  assert.ok(out.ms! < 10_000, `connect() took ${out.ms} ms, its connectTimeout being 10000`);
  assert.match(
    out.message!,
    new RegExp(`^Cannot connect to ${defaultSocketIn(`${root}/client`)}: No such file`),
  );
  assert.ok(
    out.message!.endsWith(
      `; a running server records its socket in the lock file "${lock}", which this client did ` +
        `not read (it is not a lock record (a small regular file)): pass that socket in ` +
        `connect({ path }))`,
    ),
    out.message,
  );
});

Deno.test({
  name:
    "connect({ database }) does not read a lock file too large to be a lock record, and says why it did not",
  ignore: Deno.build.os !== "linux", // how much was read comes from /proc/self/io
  async fn() {
    await using dir = await tempDir();
    const root = Deno.realPathSync(dir.path);
    Deno.mkdirSync(`${root}/client`, { mode: 0o700 });
    const database = `${root}/app.db`;
    const lock = `${database}.lock`;
    // A record naming a socket, then 256 MiB (a sparse file: no room taken on disk).
    const size = 256 * 1024 * 1024;
    const record = JSON.stringify({ pid: 4242, socket: `unix:${root}/gone.sock` });
    Deno.writeTextFileSync(lock, record, { mode: 0o600 });
    Deno.truncateSync(lock, size);
    Deno.chmodSync(lock, 0o600);
    const out = await runClient(root, { database }, `${root}/client`, ["-A"], {
      measureReads: true,
    });
    assert.equal(out.name, "ConnectionError", out.message);
    // The whole process read far less than the file (its modules, its cache): not the file.
    assert.ok(out.read! < size / 4, `The client read ${out.read} bytes, the lock file is ${size}`);
    assert.ok(
      out.message!.endsWith(
        `; a running server records its socket in the lock file "${lock}", which this client ` +
          `did not read (it is not a lock record (a small regular file)): pass that socket in ` +
          `connect({ path }))`,
      ),
      out.message,
    );
  },
});

Deno.test({
  name:
    "connect({ database }) whose default socket refuses it (permission denied) connects to the socket the lock file names; when that does not answer either, or the file is not read, the error says what was refused and what the lock file said",
  // A socket of mode 0000 refuses everyone but root: as root, the client (and its server) run
  // as nobody.
  ignore: Deno.build.os !== "linux" || (Deno.uid() === 0 && !canRunAsNobody),
  async fn() {
    const user = Deno.uid() === 0 ? asNobody : [];
    await using l = await layout("runtime", user);
    const lock = `${l.database}.lock`;
    // The client's default socket (its own XDG_RUNTIME_DIR), there but refusing it, as one of
    // another user or a runtime directory another user's would (not this database's server).
    const refusing = `${l.clientDir}/netsqlite/${basename(l.listening)}`;
    Deno.mkdirSync(`${l.clientDir}/netsqlite`, { mode: 0o700 });
    if (user.length > 0) Deno.chownSync(`${l.clientDir}/netsqlite`, NOBODY, NOBODY);
    const listener = Deno.listen({ transport: "unix", path: refusing });
    try {
      Deno.chmodSync(refusing, 0o000);
      const found = await runClient(l.root, { database: l.database }, l.clientDir, DEFAULT_CASE, {
        user,
      });
      assert.deepEqual(found, { ok: true, database: l.database, rows: [["from the client"]] });
      // The server gone, its record left (as kill -9 leaves it): both sockets named.
      await l.stop();
      const gone = `${l.root}/gone.sock`;
      Deno.writeTextFileSync(lock, JSON.stringify({ pid: 4242, socket: `unix:${gone}` }));
      Deno.chmodSync(lock, 0o600);
      if (user.length > 0) Deno.chownSync(lock, NOBODY, NOBODY);
      const neither = await runClient(l.root, { database: l.database }, l.clientDir, DEFAULT_CASE, {
        user,
      });
      assert.equal(neither.name, "ConnectionError", neither.message);
      assert.equal(neither.code, "CONNECTION_CLOSED");
      assert.ok(
        neither.message!.startsWith(
          `Cannot connect to unix:${refusing}: Permission denied (os error 13), nor to ` +
            `unix:${gone}, the socket the database's lock file "${lock}" names (pid 4242): No ` +
            `such file or directory (os error 2) (is the server of "${l.database}" running?`,
        ),
        neither.message,
      );
      // A lock file not read (others may write it): the refusal, and where to look.
      Deno.chmodSync(lock, 0o622);
      const unread = await runClient(l.root, { database: l.database }, l.clientDir, DEFAULT_CASE, {
        user,
      });
      assert.equal(
        unread.message,
        `Cannot connect to unix:${refusing}: Permission denied (os error 13) (a running server ` +
          `records its socket in the lock file "${lock}", which this client did not read (other ` +
          `users may write it (mode 0622)): pass that socket in connect({ path }))`,
      );
      // No record: the refusal alone, as before.
      Deno.removeSync(lock);
      const none = await runClient(l.root, { database: l.database }, l.clientDir, DEFAULT_CASE, {
        user,
      });
      assert.equal(none.name, "ConnectionError", none.message);
      assert.equal(
        none.message,
        `Cannot connect to unix:${refusing}: Permission denied (os error 13)`,
      );
    } finally {
      listener.close();
    }
  },
});
