/**
 * Server options: resolveServeOptions() validation and defaults, the
 * command line (parseServeArgs, and `--max-cursors` through a server process), unknown option
 * names, HOST:PORT parsing and default socket paths.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { resolveServeOptions, type ServeOptions } from "../server/options.ts";
import { loadSqlite } from "../engine/binding/load.ts";
import { parseServeArgs, serve } from "../server.ts";
import { connect, SqliteError } from "../client.ts";
import {
  DEFAULT_DATABASE,
  defaultSocketDir,
  defaultSocketPath,
  formatAddress,
  parseHostPort,
} from "../transport/address.ts";
import { inEnv, startServerProcess, tempDir } from "./_helpers.ts";

const SERVER_TS = fileURLToPath(new URL("../server.ts", import.meta.url));

const MiB = 1024 * 1024;

/**
 * The default socket directory, the default socket of `/data/app.db` and the
 * address `resolveServeOptions()` gives it, as this process's environment
 * makes them. Called in a child with the environment under test ({@link inEnv}).
 */
export function defaultSocketsHere(): { dir: string; path: string; address: unknown } {
  return {
    dir: defaultSocketDir(),
    path: defaultSocketPath("/data/app.db"),
    address: resolveServeOptions({ database: "/data/app.db" }).address,
  };
}

/** {@link defaultSocketsHere} in a child whose XDG_RUNTIME_DIR is `value` (or unset). */
function defaultSocketsWith(
  value: string | undefined,
): Promise<ReturnType<typeof defaultSocketsHere>> {
  return inEnv({ XDG_RUNTIME_DIR: value }, import.meta.url, "defaultSocketsHere");
}

function throwsWith(
  fn: () => unknown,
  type: typeof TypeError | typeof RangeError,
  message: RegExp,
): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof type, `expected ${type.name}, got ${(err as Error)?.name}`);
    assert.match((err as Error).message, message);
    return true;
  });
}

// ---- resolveServeOptions ------------------------------------------------

Deno.test("resolveServeOptions() fills in every default", () => {
  const config = resolveServeOptions();
  assert.deepEqual(config.address, {
    transport: "unix",
    path: defaultSocketPath(DEFAULT_DATABASE),
  });
  assert.equal(DEFAULT_DATABASE, "netsqlite.db");
  assert.equal(config.announceFile, null);
  assert.equal(config.maxFrameSize, 64 * MiB);
  assert.equal(config.maxConnections, 10000);
  assert.equal(config.engine.txTimeout, 0);
  assert.equal(config.engine.path, `${Deno.cwd()}/netsqlite.db`, "resolved once, at start");
  assert.equal(config.engine.synchronous, "full");
  assert.equal(config.engine.busyTimeout, 5000);
  assert.equal(config.engine.txIdleTimeout, 10000);
  assert.equal(config.engine.statementCacheSize, 256);
  assert.equal(config.releaseMemory, true);
  assert.deepEqual(resolveServeOptions({}), config);
});

Deno.test("resolveServeOptions() uses the default socket of the given database", () => {
  const config = resolveServeOptions({ database: "/data/app.db" });
  assert.equal(config.engine.path, "/data/app.db");
  assert.deepEqual(config.address, { transport: "unix", path: defaultSocketPath("/data/app.db") });
});

Deno.test("resolveServeOptions() keeps given values", () => {
  const config = resolveServeOptions({
    database: "x.db",
    path: "/tmp/x.sock",
    synchronous: "normal",
    busyTimeout: 0,
    txIdleTimeout: 0,
    maxFrameSize: 1024,
    statementCacheSize: 1,
  });
  assert.deepEqual(config.address, { transport: "unix", path: "/tmp/x.sock" });
  assert.equal(config.announceFile, null);
  assert.equal(config.maxFrameSize, 1024);
  assert.equal(config.engine.path, `${Deno.cwd()}/x.db`);
  assert.equal(config.engine.synchronous, "normal");
  assert.equal(config.engine.busyTimeout, 0);
  assert.equal(config.engine.txIdleTimeout, 0);
  assert.equal(config.engine.statementCacheSize, 1);
});

Deno.test("resolveServeOptions() listens on TCP when a port or hostname is given", () => {
  assert.deepEqual(resolveServeOptions({ port: 7878 }).address, {
    transport: "tcp",
    hostname: "127.0.0.1",
    port: 7878,
  });
  assert.deepEqual(resolveServeOptions({ hostname: "::1" }).address, {
    transport: "tcp",
    hostname: "::1",
    port: 0,
  });
  assert.deepEqual(resolveServeOptions({ hostname: "0.0.0.0", port: 65535, token: "t" }).address, {
    transport: "tcp",
    hostname: "0.0.0.0",
    port: 65535,
  });
  assert.equal(resolveServeOptions({ port: 0 }).announceFile, null);
});

Deno.test("resolveServeOptions() refuses both a socket path and a TCP address", () => {
  throwsWith(
    () => resolveServeOptions({ path: "/tmp/a.sock", port: 1 }),
    TypeError,
    /give either "path" \(Unix socket\) or "hostname"\/"port" \(TCP\)/,
  );
  throwsWith(
    () => resolveServeOptions({ path: "/tmp/a.sock", hostname: "localhost" }),
    TypeError,
    /either "path"/,
  );
});

Deno.test("resolveServeOptions() refuses an empty or non-string database", () => {
  throwsWith(
    () => resolveServeOptions({ database: "" }),
    TypeError,
    /^Invalid option "database": expected a file path/,
  );
  throwsWith(
    () => resolveServeOptions({ database: 42 as unknown as string }),
    TypeError,
    /^Invalid option "database": expected a file path, got 42$/,
  );
});

// path and hostname are not validated: { path: 42 } fails later inside
// node:path, { hostname: 42 } with "addr.hostname.includes is not a function",
// and { path: "" } binds a socket, then fails in chmod and leaks the listener.
Deno.test("resolveServeOptions() refuses a path or hostname that is not a non-empty string", () => {
  const cases: [ServeOptions, RegExp][] = [
    [{ path: 42 as unknown as string }, /^Invalid option "path"/],
    [{ path: "" }, /^Invalid option "path"/],
    [{ hostname: 42 as unknown as string }, /^Invalid option "hostname"/],
  ];
  for (const [options, message] of cases) {
    throwsWith(() => resolveServeOptions(options), TypeError, message);
  }
});

Deno.test("resolveServeOptions() refuses an unknown synchronous mode", () => {
  for (const mode of ["off", "FULL", "extra", ""]) {
    throwsWith(
      () => resolveServeOptions({ synchronous: mode as ServeOptions["synchronous"] }),
      TypeError,
      new RegExp(`^Invalid option "synchronous": expected "full" or "normal", got "${mode}"$`),
    );
  }
});

Deno.test("resolveServeOptions() keeps releaseMemory: false and refuses a non-boolean", () => {
  assert.equal(resolveServeOptions({ releaseMemory: false }).releaseMemory, false);
  for (const value of [0, "no", null]) {
    throwsWith(
      () => resolveServeOptions({ releaseMemory: value as unknown as boolean }),
      TypeError,
      new RegExp(`^Invalid option "releaseMemory": expected a boolean, got ${shown(value)}$`),
    );
  }
});

Deno.test("resolveServeOptions() refuses non-integer numbers with TypeError", () => {
  const cases: [keyof ServeOptions, unknown][] = [
    ["port", 1.5],
    ["port", "80"],
    ["busyTimeout", NaN],
    ["busyTimeout", Infinity],
    ["txIdleTimeout", "10"],
    ["maxFrameSize", 2048.5],
    ["statementCacheSize", true],
  ];
  for (const [name, value] of cases) {
    throwsWith(
      () => resolveServeOptions({ [name]: value } as ServeOptions),
      TypeError,
      new RegExp(`^Invalid option "${name}": expected an integer, got ${shown(value)}$`),
    );
  }
});

/** A value as the option errors show it: strings quoted (an empty one is `""`, not nothing). */
function shown(value: unknown): string {
  return typeof value === "string" ? JSON.stringify(value) : String(value);
}

Deno.test('resolveServeOptions() shows an empty string as "" in its errors', () => {
  for (const key of ["database", "sqliteLib", "backupDir", "path"] as const) {
    assert.throws(
      () => resolveServeOptions({ [key]: "" }),
      (err: unknown) => err instanceof TypeError && err.message.endsWith(', got ""'),
      key,
    );
  }
});

Deno.test("resolveServeOptions() refuses numbers out of range with RangeError", () => {
  const cases: [keyof ServeOptions, number, string][] = [
    ["port", -1, "0..65535"],
    ["port", 65536, "0..65535"],
    ["busyTimeout", -1, "0..2147483647"],
    ["busyTimeout", 2 ** 31, "0..2147483647"],
    ["txIdleTimeout", -5, "0..2147483647"],
    ["maxFrameSize", 1023, "1024..2147483647"],
    ["maxFrameSize", 2 ** 31, "1024..2147483647"],
    ["statementCacheSize", 0, "1..1000000"],
    ["maxConnections", 0, "1..1000000"],
    ["txTimeout", -1, "0..2147483647"],
  ];
  for (const [name, value, range] of cases) {
    throwsWith(
      () => resolveServeOptions({ [name]: value } as ServeOptions),
      RangeError,
      new RegExp(`^Invalid option "${name}": ${value} is outside ${range.replace(/\./g, "\\.")}$`),
    );
  }
});

Deno.test("resolveServeOptions() accepts the bounds of each range", () => {
  assert.equal(resolveServeOptions({ maxFrameSize: 1024 }).maxFrameSize, 1024);
  assert.equal(resolveServeOptions({ maxFrameSize: 2 ** 31 - 1 }).maxFrameSize, 2 ** 31 - 1);
  assert.equal(resolveServeOptions({ busyTimeout: 2 ** 31 - 1 }).engine.busyTimeout, 2 ** 31 - 1);
  assert.equal(resolveServeOptions({ port: 0 }).address.transport, "tcp");
  assert.equal(resolveServeOptions({ statementCacheSize: 1e6 }).engine.statementCacheSize, 1e6);
});

// ---- parseServeArgs ------------------------------------------------------

Deno.test("parseServeArgs() with no arguments leaves every option to its default", () => {
  const options = parseServeArgs([]);
  assert.notEqual(options, "help");
  assert.deepEqual(resolveServeOptions(options as ServeOptions), resolveServeOptions({}));
});

Deno.test("parseServeArgs() reads --db, --socket, --synchronous and the number flags", () => {
  const options = parseServeArgs([
    "--db",
    "/data/app.db",
    "--socket",
    "/run/app.sock",
    "--synchronous",
    "normal",
    "--busy-timeout",
    "250",
    "--tx-idle-timeout",
    "0",
    "--max-frame-size",
    "4096",
  ]);
  assert.notEqual(options, "help");
  const o = options as ServeOptions;
  assert.equal(o.database, "/data/app.db");
  assert.equal(o.path, "/run/app.sock");
  assert.equal(o.synchronous, "normal");
  assert.equal(o.busyTimeout, 250);
  assert.equal(o.txIdleTimeout, 0);
  assert.equal(o.maxFrameSize, 4096);
  assert.equal(o.hostname, undefined);
  assert.equal(o.port, undefined);
  const config = resolveServeOptions(options as ServeOptions);
  assert.deepEqual(config.address, { transport: "unix", path: "/run/app.sock" });
  assert.equal(config.engine.busyTimeout, 250);
  assert.equal(config.engine.txIdleTimeout, 0);
  assert.equal(config.engine.synchronous, "normal");
  assert.equal(config.maxFrameSize, 4096);
});

Deno.test("parseServeArgs() accepts --flag=value syntax", () => {
  const options = parseServeArgs(["--db=a.db", "--busy-timeout=10"]) as ServeOptions;
  assert.equal(options.database, "a.db");
  assert.equal(options.busyTimeout, 10);
});

Deno.test("parseServeArgs() reads --tcp HOST:PORT", () => {
  const a = parseServeArgs(["--tcp", "0.0.0.0:7878"]) as ServeOptions;
  assert.equal(a.hostname, "0.0.0.0");
  assert.equal(a.port, 7878);
  assert.equal(a.path, undefined);
  assert.deepEqual(resolveServeOptions({ ...a, token: "t" }).address, {
    transport: "tcp",
    hostname: "0.0.0.0",
    port: 7878,
  });
  const b = parseServeArgs(["--tcp", "[::1]:0"]) as ServeOptions;
  assert.equal(b.hostname, "::1");
  assert.equal(b.port, 0);
});

Deno.test('parseServeArgs() returns "help" for --help and -h', () => {
  assert.equal(parseServeArgs(["--help"]), "help");
  assert.equal(parseServeArgs(["-h"]), "help");
  assert.equal(parseServeArgs(["--db", "x.db", "--help"]), "help");
});

Deno.test("parseServeArgs() refuses a number flag that is not a number", () => {
  throwsWith(
    () => parseServeArgs(["--busy-timeout", "abc"]),
    TypeError,
    /^Invalid --busy-timeout "abc": expected a whole number in decimal digits$/,
  );
  throwsWith(
    () => parseServeArgs(["--tx-idle-timeout", ""]),
    TypeError,
    /^Invalid --tx-idle-timeout "": expected a whole number in decimal digits$/,
  );
  throwsWith(
    () => parseServeArgs(["--max-frame-size", " "]),
    TypeError,
    /^Invalid --max-frame-size " ": expected a whole number in decimal digits$/,
  );
  throwsWith(
    () => parseServeArgs(["--busy-timeout", "Infinity"]),
    TypeError,
    /^Invalid --busy-timeout "Infinity"/,
  );
});

Deno.test("parseServeArgs() takes decimal digits only and leaves range checks to resolveServeOptions()", () => {
  for (const value of ["1.5", "0x10", "1e3"]) {
    throwsWith(
      () => parseServeArgs(["--busy-timeout", value]),
      TypeError,
      /expected a whole number in decimal digits$/,
    );
  }
  throwsWith(() => resolveServeOptions({ busyTimeout: 1.5 }), TypeError, /expected an integer/);
  const neg = parseServeArgs(["--tx-idle-timeout", "-1"]) as ServeOptions;
  assert.equal(neg.txIdleTimeout, -1);
  throwsWith(() => resolveServeOptions(neg), RangeError, /"txIdleTimeout": -1 is outside/);
  const both = parseServeArgs(["--socket", "/tmp/s.sock", "--tcp", "127.0.0.1:0"]) as ServeOptions;
  throwsWith(() => resolveServeOptions(both), TypeError, /either "path"/);
  const sync = parseServeArgs(["--synchronous", "off"]) as ServeOptions;
  throwsWith(
    () => resolveServeOptions(sync),
    TypeError,
    /"synchronous": expected "full" or "normal", got "off"/,
  );
});

Deno.test("parseServeArgs() refuses unknown flags, positionals, bad --tcp and missing values", () => {
  assert.throws(() => parseServeArgs(["--nope"]), /nope/);
  assert.throws(() => parseServeArgs(["app.db"]), /app\.db/);
  assert.throws(() => parseServeArgs(["--db"]), /--db/);
  throwsWith(
    () => parseServeArgs(["--tcp", "localhost"]),
    TypeError,
    /^Cannot parse address "localhost": expected HOST:PORT, e\.g\. 127\.0\.0\.1:7878$/,
  );
  throwsWith(
    () => parseServeArgs(["--tcp", "h:99999"]),
    TypeError,
    /Cannot parse address "h:99999"/,
  );
});

// ---- parseHostPort / formatAddress --------------------------------------

Deno.test("parseHostPort() parses HOST:PORT, [IPv6]:PORT and :PORT", () => {
  assert.deepEqual(parseHostPort("127.0.0.1:7878"), {
    transport: "tcp",
    hostname: "127.0.0.1",
    port: 7878,
  });
  assert.deepEqual(parseHostPort("localhost:0"), {
    transport: "tcp",
    hostname: "localhost",
    port: 0,
  });
  assert.deepEqual(parseHostPort("[::1]:8080"), { transport: "tcp", hostname: "::1", port: 8080 });
  assert.deepEqual(parseHostPort("[fe80::1%eth0]:1"), {
    transport: "tcp",
    hostname: "fe80::1%eth0",
    port: 1,
  });
  assert.deepEqual(parseHostPort(":65535"), {
    transport: "tcp",
    hostname: "127.0.0.1",
    port: 65535,
  });
});

Deno.test("parseHostPort() refuses text that is not HOST:PORT with a port 0-65535", () => {
  for (
    const bad of [
      "",
      "localhost",
      "host:",
      "host:-1",
      "host:65536",
      "host:12ab",
      "::1:80",
      "[::1]",
      "a:b:c",
      "host:1.5",
    ]
  ) {
    throwsWith(
      () => parseHostPort(bad),
      TypeError,
      new RegExp(`^Cannot parse address "${bad.replace(/[[\].]/g, "\\$&")}": expected HOST:PORT`),
    );
  }
});

Deno.test("formatAddress() writes unix:PATH and tcp:HOST:PORT with IPv6 in brackets", () => {
  assert.equal(formatAddress({ transport: "unix", path: "/tmp/x.sock" }), "unix:/tmp/x.sock");
  assert.equal(
    formatAddress({ transport: "tcp", hostname: "127.0.0.1", port: 80 }),
    "tcp:127.0.0.1:80",
  );
  assert.equal(formatAddress({ transport: "tcp", hostname: "::1", port: 80 }), "tcp:[::1]:80");
  // What formatAddress() writes, parseHostPort() reads back.
  assert.deepEqual(
    parseHostPort(formatAddress({ transport: "tcp", hostname: "::1", port: 9 }).slice(4)),
    {
      transport: "tcp",
      hostname: "::1",
      port: 9,
    },
  );
});

// ---- defaultSocketPath ---------------------------------------------------

Deno.test("defaultSocketPath() is stable for one database", () => {
  assert.equal(defaultSocketPath("/data/app.db"), defaultSocketPath("/data/app.db"));
  assert.equal(defaultSocketPath(), defaultSocketPath(DEFAULT_DATABASE));
  // A relative path names the same database as its absolute form.
  assert.equal(defaultSocketPath("rel.db"), defaultSocketPath(resolve("rel.db")));
  assert.equal(defaultSocketPath("/data/./x/../app.db"), defaultSocketPath("/data/app.db"));
});

Deno.test("defaultSocketPath() differs per database", () => {
  const paths = new Set([
    defaultSocketPath("/data/app.db"),
    defaultSocketPath("/other/app.db"),
    defaultSocketPath("/data/app2.db"),
    defaultSocketPath("/data/app.sqlite"),
    defaultSocketPath("/data/App.db"),
  ]);
  assert.equal(paths.size, 5);
});

Deno.test("defaultSocketPath() names the socket after the database file", () => {
  const p = defaultSocketPath("/data/my app.v2.db");
  assert.match(basename(p), /^my_app_v2-[0-9a-f]{8}\.sock$/);
  const long = defaultSocketPath(`/data/${"x".repeat(100)}.db`);
  assert.match(basename(long), new RegExp(`^${"x".repeat(32)}-[0-9a-f]{8}\\.sock$`));
  // A Unix socket path must stay short (sun_path is 108 bytes on Linux).
  assert.ok(basename(long).length <= 32 + 1 + 8 + 5);
});

Deno.test("defaultSocketPath() lives under $XDG_RUNTIME_DIR/netsqlite when it is set", async () => {
  // An existing directory: one that does not exist is ignored (socket_dir_test.ts).
  await using runtime = await tempDir();
  const here = await defaultSocketsWith(runtime.path);
  assert.equal(here.dir, `${runtime.path}/netsqlite`);
  assert.equal(dirname(here.path), `${runtime.path}/netsqlite`);
  assert.match(basename(here.path), /^app-[0-9a-f]{8}\.sock$/);
  assert.deepEqual(here.address, { transport: "unix", path: here.path });
});

Deno.test("defaultSocketPath() lives under <tmpdir>/netsqlite-<uid> without $XDG_RUNTIME_DIR", async () => {
  const inRuntime = await defaultSocketsWith("/");
  const expectedDir = join(tmpdir(), `netsqlite-${Deno.uid()}`);
  const unset = await defaultSocketsWith(undefined);
  assert.equal(unset.dir, expectedDir);
  assert.equal(dirname(unset.path), expectedDir);
  // Same file name wherever the directory is.
  assert.equal(dirname(inRuntime.path), "/netsqlite");
  assert.equal(basename(unset.path), basename(inRuntime.path));
  // An empty XDG_RUNTIME_DIR counts as unset.
  assert.equal((await defaultSocketsWith("")).dir, expectedDir);
});

Deno.test("loadSqlite: an explicit library that cannot load fails, naming the path and the reason; --engine node still wins", async () => {
  const missing = "/nonexistent/libsqlite3.so";
  for (const engine of ["auto", "ffi"] as const) {
    assert.throws(
      () => loadSqlite({ engine, library: missing }),
      (err: Error & { code: string }) => {
        assert.equal(err.code, "SQLITE_LIBRARY_NOT_LOADED");
        assert.match(
          err.message,
          /^Cannot load SQLite through FFI: "\/nonexistent\/libsqlite3\.so": .*No such file/,
        );
        assert.match(err.message, /named by --sqlite-lib/);
        return true;
      },
    );
  }
  assert.equal(loadSqlite({ engine: "node", library: missing }).engine, "node");
  // The same through NETSQLITE_SQLITE_LIB and the command line: the server does not start.
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-lib-" });
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", fileURLToPath(new URL("../cli.ts", import.meta.url)), "serve", "--db"]
        .concat([`${dir}/x.db`, "--socket", `${dir}/x.sock`]),
      env: { NETSQLITE_SQLITE_LIB: missing, NETSQLITE_ENGINE: "auto" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 1, stderr);
    assert.match(
      stderr,
      /^netsqlite: Cannot load SQLite through FFI: "\/nonexistent\/libsqlite3\.so": /,
    );
    assert.match(stderr, /named by NETSQLITE_SQLITE_LIB: fix the path, or use --engine node\)\n$/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadSqlite: auto without FFI permission says in its limitations why FFI was not used", async () => {
  const script = `import { loadSqlite } from ${
    JSON.stringify(new URL("../engine/binding/load.ts", import.meta.url).href)
  };
const s = loadSqlite({ engine: "auto" });
console.log(JSON.stringify([s.engine, s.limitations[0]]));`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-check", script],
    env: { NETSQLITE_SQLITE_LIB: "", NETSQLITE_ENGINE: "" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  // `deno eval` has every permission: FFI loads when the system has libsqlite3.
  const [engine, first] = JSON.parse(new TextDecoder().decode(out.stdout));
  if (engine === "ffi") {
    const run = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-read", "--allow-env", "--no-check", "-"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const w = run.stdin.getWriter();
    await w.write(new TextEncoder().encode(script));
    await w.close();
    const r = await run.output();
    const [e2, why] = JSON.parse(new TextDecoder().decode(r.stdout));
    assert.equal(e2, "node");
    assert.equal(
      why,
      "FFI not used: FFI is not permitted (run with --allow-ffi for all files: with " +
        "--allow-ffi=PATH Deno refuses the pointer functions the binding needs)",
    );
  } else {
    assert.match(first, /^FFI not used: /);
  }
});

Deno.test("resolveServeOptions() refuses a maxPartialFrameBytes below one largest frame and two reads", () => {
  assert.throws(
    () => resolveServeOptions({ maxFrameSize: 64 * 1024, maxPartialFrameBytes: 65536 }),
    /^RangeError: Invalid option "maxPartialFrameBytes": 65536 is below 196608, maxFrameSize \(65536\) \+ 128 KiB: /,
  );
  const ok = resolveServeOptions({ maxFrameSize: 64 * 1024, maxPartialFrameBytes: 196608 });
  assert.equal(ok.maxPartialFrameBytes, 196608);
});

Deno.test("resolveServeOptions() refuses a SQLite URI as the database, naming it", () => {
  assert.throws(
    () => resolveServeOptions({ database: "file:app.db?mode=rwc" }),
    /^TypeError: Invalid option "database": "file:app\.db\?mode=rwc" is a URI; give the file's path/,
  );
});

// ---- unknown option names --------------------------------------------------

Deno.test("resolveServeOptions() refuses an unknown option name with TypeError, naming the one meant", () => {
  const cases: [Record<string, unknown>, string][] = [
    [
      { maxCursor: 4 },
      'Invalid option "maxCursor": not a serve() option; did you mean "maxCursors"?',
    ],
    [
      { "max-cursors": 4 },
      'Invalid option "max-cursors": not a serve() option; did you mean "maxCursors"?',
    ],
    [
      { busyTimeOut: 1 },
      'Invalid option "busyTimeOut": not a serve() option; did you mean "busyTimeout"?',
    ],
    [{ graceMS: 1 }, 'Invalid option "graceMS": not a serve() option; did you mean "graceMs"?'],
    // The command line's names, and other servers'.
    [{ db: "a.db" }, 'Invalid option "db": not a serve() option; did you mean "database"?'],
    [{ socket: "/s" }, 'Invalid option "socket": not a serve() option; did you mean "path"?'],
    [
      { tcp: "127.0.0.1:1" },
      'Invalid option "tcp": not a serve() option; did you mean "hostname" and "port"?',
    ],
    // An undefined value is still a name the caller meant to set.
    [
      { statementTimeOut: undefined },
      'Invalid option "statementTimeOut": not a serve() option; did you mean "statementTimeout"?',
    ],
    [
      { dqlite: { nodes: ["127.0.0.1:9001"], database: "d", poolsize: 2 } },
      'Invalid option "dqlite.poolsize": not a dqlite option; did you mean "dqlite.poolSize"?',
    ],
  ];
  for (const [options, message] of cases) {
    throwsWith(
      () => resolveServeOptions(options as ServeOptions),
      TypeError,
      new RegExp(`^${message.replace(/[.?()]/g, "\\$&")}$`),
    );
  }
  // Nothing near: every known name is listed.
  throwsWith(
    () => resolveServeOptions({ zzzz: 1 } as ServeOptions),
    TypeError,
    /^Invalid option "zzzz": not a serve\(\) option \(known: database, path, hostname, port, .*, maxCursors, .*, dqlite\)$/,
  );
  throwsWith(
    () => resolveServeOptions(null as unknown as ServeOptions),
    TypeError,
    /^Invalid options: expected an object, got null$/,
  );
});

Deno.test("resolveServeOptions() accepts every option the command line sets", () => {
  // Every flag given: parseServeArgs() sets only known names (some undefined).
  const options = parseServeArgs([
    "--db=/data/a.db",
    "--socket=/run/a.sock",
    "--max-cursors=3",
    "--cursor-idle-timeout=5",
    "--grace-ms=7",
  ]) as ServeOptions;
  const config = resolveServeOptions(options);
  assert.equal(config.engine.maxCursors, 3);
  assert.equal(config.cursorIdleTimeout, 5);
  assert.equal(config.graceMs, 7);
});

Deno.test("serve() refuses an unknown option before it creates anything", async () => {
  await using dir = await tempDir();
  await assert.rejects(
    serve(
      { database: `${dir.path}/a.db`, path: `${dir.path}/a.sock`, maxCursor: 4 } as ServeOptions,
    ),
    (err: unknown) => {
      assert.ok(err instanceof TypeError, String(err));
      assert.equal(
        err.message,
        'Invalid option "maxCursor": not a serve() option; did you mean "maxCursors"?',
      );
      return true;
    },
  );
  assert.deepEqual([...Deno.readDirSync(dir.path)], []);
});

// ---- --max-cursors -----------------------------------------------------------

Deno.test("parseServeArgs() reads --max-cursors; its range is maxCursors'", () => {
  assert.equal((parseServeArgs(["--max-cursors", "3"]) as ServeOptions).maxCursors, 3);
  assert.equal((parseServeArgs(["--max-cursors=1000000"]) as ServeOptions).maxCursors, 1e6);
  assert.equal((parseServeArgs([]) as ServeOptions).maxCursors, undefined);
  throwsWith(
    () => parseServeArgs(["--max-cursors", "many"]),
    TypeError,
    /^Invalid --max-cursors "many": expected a whole number in decimal digits$/,
  );
  const zero = parseServeArgs(["--max-cursors", "0"]) as ServeOptions;
  throwsWith(
    () => resolveServeOptions(zero),
    RangeError,
    /"maxCursors": 0 is outside 1\.\.1000000$/,
  );
});

Deno.test("server.ts --max-cursors N: the hello's limits say N, and cursor N + 1 on a connection fails", async () => {
  await using srv = await startServerProcess({ args: ["--max-cursors", "3"] });
  await using db = await connect({ ...srv.connectOptions, max: 1 });
  assert.equal(db.serverInfo.limits.maxCursors, 3);
  // Enough rows that each cursor stays open after its first chunk.
  const sql = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 5000) " +
    "SELECT x FROM n";
  const open: AsyncIterator<unknown>[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      const it = db.iterate(sql)[Symbol.asyncIterator]();
      open.push(it);
      assert.equal((await it.next()).done, false);
    }
    const fourth = db.iterate(sql)[Symbol.asyncIterator]();
    await assert.rejects(fourth.next(), (err: unknown) => {
      assert.ok(err instanceof SqliteError, String(err));
      assert.equal(err.code, "BAD_REQUEST");
      assert.match(err.message, /Too many open cursors: 3 per connection/);
      return true;
    });
  } finally {
    for (const it of open) await it.return?.();
  }
});

Deno.test("server.ts --max-cursors out of range exits 2 naming the flag; --help lists it", async () => {
  await using dir = await tempDir();
  const run = (args: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", SERVER_TS, ...args],
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
    }).output();
  const bad = await run([
    "--db",
    `${dir.path}/a.db`,
    "--socket",
    `${dir.path}/a.sock`,
    "--max-cursors",
    "0",
  ]);
  assert.equal(bad.code, 2);
  assert.equal(
    new TextDecoder().decode(bad.stderr),
    "netsqlite: Invalid --max-cursors: 0 is outside 1..1000000\n",
  );
  const help = await run(["--help"]);
  assert.equal(help.code, 0);
  assert.match(
    new TextDecoder().decode(help.stdout),
    /\n {2}--max-cursors N {9}cursors one connection may hold open at once \(default 16\)/,
  );
});
