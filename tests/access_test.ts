/**
 * Access control: socket permissions, tokens, TLS, read-only mode, and what
 * clients may not do to the shared database (ATTACH, extensions, unsafe and
 * per-connection PRAGMAs).
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { connect } from "../client.ts";
import { parseServeArgs, serve, type ServeOptions } from "../server.ts";
import { ConnectionError, ProtocolError, type SqliteError } from "../protocol/errors.ts";
import { startServer, startServerProcess, tempDir } from "./_helpers.ts";
import {
  FD_IN_USE_GUESS,
  FD_MINIMAL_SERVICE,
  FD_RESERVE,
  fdBudget,
  FDS_PER_CURSOR,
  openFileCount,
  openFileLimit,
} from "../server/connection_limit.ts";
import { CONNECTION_PRAGMAS, samePragmaValue, UNSAFE_PRAGMAS } from "../engine/policy.ts";
import { makeCertificate } from "./_certs.ts";

const SERVER_TS = fileURLToPath(new URL("../server.ts", import.meta.url));

/**
 * Runs `deno run -A server.ts args` to its end (for servers that refuse to
 * start); with `killAfterMs`, kills it (SIGTERM) if it is still running then.
 */
async function runServer(
  args: string[],
  env: Record<string, string> = {},
  killAfterMs = 0,
): Promise<{ code: number; stderr: string }> {
  const killer = new AbortController();
  const timer = killAfterMs > 0 ? setTimeout(() => killer.abort(), killAfterMs) : undefined;
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", SERVER_TS, ...args],
      env,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      signal: killer.signal,
    }).output();
    return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
  } finally {
    clearTimeout(timer);
  }
}

async function rejectsWithCode(p: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  await assert.rejects(p, (err: SqliteError) => {
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });
}

function mode(path: string): number {
  return Deno.statSync(path).mode! & 0o777;
}

Deno.test("serve() makes the socket 0600 in a 0700 directory it creates", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/run/a.sock`;
  await using _server = await serve({ database: `${dir.path}/a.db`, path });
  assert.equal(mode(path), 0o600);
  assert.equal(mode(`${dir.path}/run`), 0o700);
});

Deno.test("serve() applies socketMode 0o660 and lets the group search a directory it creates", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/run/a.sock`;
  await using _server = await serve({ database: `${dir.path}/a.db`, path, socketMode: 0o660 });
  assert.equal(mode(path), 0o660);
  assert.equal(mode(`${dir.path}/run`), 0o710);
  await using db = await connect({ path });
  assert.deepEqual(await db.values("SELECT 1"), [[1]]);
});

Deno.test("server.ts --socket-mode 660 sets the mode; a mode without owner access is refused", async () => {
  await using dir = await tempDir();
  const bad = await runServer([
    "--db",
    `${dir.path}/a.db`,
    "--socket",
    `${dir.path}/a.sock`,
    "--socket-mode",
    "066",
  ]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /Invalid --socket-mode: 066 must let the owner read and write/);
  const garbage = await runServer(["--socket-mode", "rw-rw----"]);
  assert.equal(garbage.code, 2);
  assert.match(garbage.stderr, /Invalid --socket-mode "rw-rw----": expected octal permissions/);
});

Deno.test("server.ts refuses to listen on a non-loopback TCP address without a token", async () => {
  await using dir = await tempDir();
  const r = await runServer(["--db", `${dir.path}/a.db`, "--tcp", "0.0.0.0:0"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /Cannot listen on tcp:0\.0\.0\.0:0 without a token/);
  assert.match(r.stderr, /--token, NETSQLITE_TOKEN or --token-file/);
  assert.match(r.stderr, /or listen on 127\.0\.0\.1/);
  // Nothing was created: it refused before opening the database.
  await assert.rejects(Deno.lstat(`${dir.path}/a.db`), Deno.errors.NotFound);
});

Deno.test("server.ts --no-token serves without a token although NETSQLITE_TOKEN is set, and goes alone", async () => {
  await using dir = await tempDir();
  const db = ["--db", `${dir.path}/a.db`, "--socket", `${dir.path}/a.sock`];
  const [withToken, withFile] = await Promise.all([
    runServer([...db, "--no-token", "--token", "a"]),
    runServer([...db, "--no-token", "--token-file", `${dir.path}/nope`]),
  ]);
  assert.equal(withToken.code, 2);
  assert.match(withToken.stderr, /give --no-token alone, not with --token$/m);
  assert.equal(withFile.code, 2);
  assert.match(withFile.stderr, /give --no-token alone, not with --token-file$/m);
  await using srv = await startServerProcess({
    dir: dir.path,
    database: `${dir.path}/b.db`,
    args: ["--no-token"],
    env: { NETSQLITE_TOKEN: "from-the-environment" },
  });
  await using client = await connect(srv.connectOptions);
  assert.deepEqual(await client.values("SELECT 1"), [[1]]);
});

Deno.test("server.ts refuses inconsistent access flags with a clear message", async () => {
  await using dir = await tempDir();
  const db = ["--db", `${dir.path}/a.db`, "--socket", `${dir.path}/a.sock`];
  await Deno.writeTextFile(`${dir.path}/empty`, "\n");
  const [both, empty, missing, halfTls, tlsUnix, readonly] = await Promise.all([
    runServer([...db, "--token", "a", "--token-file", `${dir.path}/empty`]),
    runServer([...db, "--token-file", `${dir.path}/empty`]),
    runServer([...db, "--token-file", `${dir.path}/nope`]),
    runServer([...db, "--tls-cert", `${dir.path}/empty`]),
    runServer([...db, "--tls-cert", `${dir.path}/empty`, "--tls-key", `${dir.path}/empty`]),
    runServer([...db, "--readonly"]),
  ]);
  assert.match(both.stderr, /give --token or --token-file, not both/);
  assert.match(empty.stderr, /Cannot use token file ".*empty": it is empty/);
  assert.match(missing.stderr, /Cannot read token file ".*nope"/);
  assert.match(halfTls.stderr, /--tls-cert and --tls-key go together/);
  assert.match(tlsUnix.stderr, /Invalid --tls-cert: TLS is for TCP; give --tcp too/);
  assert.match(readonly.stderr, /Cannot serve ".*a\.db" read-only: the file does not exist/);
  for (const r of [both, empty, missing, halfTls, tlsUnix, readonly]) assert.notEqual(r.code, 0);
});

Deno.test("server.ts exits 2 on an empty token however given: --token '', an empty --token-file, NETSQLITE_TOKEN set but empty", async () => {
  await using dir = await tempDir();
  const db = ["--db", `${dir.path}/a.db`, "--socket", `${dir.path}/a.sock`];
  await Deno.writeTextFile(`${dir.path}/empty`, "");
  const [flag, file, env] = await Promise.all([
    runServer([...db, "--token", ""]),
    runServer([...db, "--token-file", `${dir.path}/empty`]),
    runServer(db, { NETSQLITE_TOKEN: "" }, 15_000), // (it used to serve without a token)
  ]);
  assert.deepEqual([flag.code, file.code, env.code], [2, 2, 2], env.stderr);
  assert.match(flag.stderr, /^netsqlite: Invalid --token: expected a non-empty secret\n/);
  assert.match(file.stderr, /Cannot use token file ".*empty": it is empty/);
  assert.match(
    env.stderr,
    /^netsqlite: Invalid NETSQLITE_TOKEN: it is set but empty; set it to the token, or unset it to serve without one\n/,
  );
  // Nothing was served: none of them opened the database.
  await assert.rejects(Deno.lstat(`${dir.path}/a.db`), Deno.errors.NotFound);
});

for (const transport of ["unix", "tcp"] as const) {
  Deno.test(`connect({ token }) is accepted; a wrong or missing token gets AUTH and a closed connection (${transport})`, async () => {
    await using ts = await startServer({ transport, token: "s3cret" });
    await using db = await connect({ ...ts.connectOptions, token: "s3cret" });
    assert.deepEqual(await db.values("SELECT 42"), [[42]]);
    const where = transport === "unix"
      ? `unix:${(ts.connectOptions as { path: string }).path}`
      : `tcp:127.0.0.1:${(ts.connectOptions as { port: number }).port}`;
    for (const token of ["wrong", "s3cre", "s3cret ", undefined]) {
      await assert.rejects(connect({ ...ts.connectOptions, token }), (err: ProtocolError) => {
        assert.ok(err instanceof ProtocolError);
        assert.equal(err.code, "AUTH");
        // The server's address is named, and where the token comes from.
        assert.equal(
          err.message,
          token === undefined
            ? `Cannot start session on ${where}: the server requires a token: pass connect({ token })`
            : `Cannot start session on ${where}: wrong token: check the token given in connect({ token })`,
        );
        return true;
      });
    }
    // The accepted client is unaffected.
    assert.deepEqual(await db.values("SELECT 43"), [[43]]);
  });
}

Deno.test("server.ts takes the token from NETSQLITE_TOKEN and logs refused attempts", async () => {
  await using dir = await tempDir();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SERVER_TS, "--db", `${dir.path}/a.db`, "--tcp", "0.0.0.0:0"],
    env: { NETSQLITE_TOKEN: "from-env" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let banner = "";
  while (!/on tcp:\S+:\d+/.test(banner)) {
    const { value, done } = await out.read();
    if (done) break;
    banner += value;
  }
  const port = Number(/on tcp:\S+:(\d+)/.exec(banner)?.[1]);
  try {
    await using db = await connect({ hostname: "127.0.0.1", port, token: "from-env" });
    assert.deepEqual(await db.values("SELECT 1"), [[1]]);
    await assert.rejects(connect({ hostname: "127.0.0.1", port, token: "nope" }), /wrong token/);
  } finally {
    child.kill("SIGTERM");
  }
  assert.equal((await child.status).code, 0);
  while (!(await out.read()).done) { /* drain */ }
  const stderr = await new Response(child.stderr).text();
  assert.match(stderr, /netsqlite: refused a connection from 127\.0\.0\.1:\d+: wrong token/);
  // Listening beyond loopback without TLS is allowed with a token, but warned about.
  assert.match(stderr, /without TLS the token and all data cross the network in clear text/);
});

Deno.test("serve({ tls }) and connect({ tls: { caCerts } }) make a TLS round trip", async () => {
  await using dir = await tempDir();
  const { ca, cert, key } = await makeCertificate(
    dir.path,
    "IP:127.0.0.1,DNS:localhost",
    "/CN=localhost",
  );
  const tls = { cert, key };
  await using server = await serve({
    database: `${dir.path}/a.db`,
    hostname: "127.0.0.1",
    port: 0,
    tls,
    token: "t",
  });
  const addr = server.addr as { hostname: string; port: number };
  await using db = await connect({
    hostname: "127.0.0.1",
    port: addr.port,
    token: "t",
    tls: { caCerts: [ca] },
  });
  await db.exec("CREATE TABLE t (v)");
  await db.run("INSERT INTO t VALUES (?)", ["over TLS"]);
  assert.deepEqual(await db.values("SELECT v FROM t"), [["over TLS"]]);
  // A client that does not trust the certificate cannot connect.
  await assert.rejects(
    connect({ hostname: "127.0.0.1", port: addr.port, token: "t", tls: {} }),
    (err: Error) => err.name === "ConnectionError" && /with TLS/.test(err.message),
  );
});

Deno.test("serve({ readonly }) answers reads and refuses writes with READONLY", async () => {
  await using dir = await tempDir();
  const database = `${dir.path}/a.db`;
  {
    await using _rw = await serve({ database, path: `${dir.path}/rw.sock` });
    await using db = await connect({ path: `${dir.path}/rw.sock` });
    await db.exec("CREATE TABLE t (v); INSERT INTO t VALUES (1), (2)");
  }
  await using _ro = await serve({ database, path: `${dir.path}/ro.sock`, readonly: true });
  await using db = await connect({ path: `${dir.path}/ro.sock`, max: 1 });
  assert.deepEqual(await db.values("SELECT v FROM t ORDER BY v"), [[1], [2]]);
  const readonly = /the server runs read-only \(--readonly\)/;
  await rejectsWithCode(db.run("INSERT INTO t VALUES (3)"), "READONLY", readonly);
  await rejectsWithCode(db.run("UPDATE t SET v = 0"), "READONLY", readonly);
  await rejectsWithCode(db.exec("CREATE TABLE u (x)"), "READONLY", readonly);
  await rejectsWithCode(db.exec("DROP TABLE t"), "READONLY", readonly);
  await rejectsWithCode(db.exec("PRAGMA user_version = 7"), "READONLY", readonly);
  // A read transaction works.
  await db.exec("BEGIN");
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[2]]);
  await db.exec("COMMIT");
  assert.deepEqual(await db.values("SELECT v FROM t ORDER BY v"), [[1], [2]]);
});

Deno.test("ATTACH, DETACH, VACUUM INTO and load_extension() are refused with FORBIDDEN", async () => {
  await using ts = await startServer();
  await using db = await ts.client();
  const other = `${ts.dir}/other.db`;
  await rejectsWithCode(
    db.exec(`ATTACH '${other}' AS o`),
    "FORBIDDEN",
    /Cannot attach ".*other\.db": .*start the server with --allow-attach to permit/,
  );
  await rejectsWithCode(
    db.exec(`VACUUM INTO '${other}'`),
    "FORBIDDEN",
    /Cannot VACUUM INTO ".*other\.db": .*--allow-attach/,
  );
  // A target known only when the statement runs is refused then (or earlier).
  await assert.rejects(db.run("VACUUM INTO ?", [other]));
  await rejectsWithCode(db.exec("DETACH o"), "FORBIDDEN", /Cannot detach "o"/);
  await rejectsWithCode(
    db.query("SELECT load_extension('/tmp/x.so')"),
    "FORBIDDEN",
    /Cannot call load_extension\(\)/,
  );
  await assert.rejects(Deno.lstat(other), Deno.errors.NotFound);
  // The connection stays usable.
  assert.deepEqual(await db.values("SELECT 1"), [[1]]);
});

Deno.test("serve({ allowAttach }) permits ATTACH", async () => {
  await using ts = await startServer({ allowAttach: true });
  await using db = await ts.client();
  await db.exec(`ATTACH '${ts.dir}/other.db' AS o`);
  await db.exec("CREATE TABLE o.t (v); INSERT INTO o.t VALUES (5)");
  // The attached database lives on the writer: inside a transaction reads see it.
  await db.exec("BEGIN");
  assert.deepEqual(await db.values("SELECT v FROM o.t"), [[5]]);
  await db.exec("COMMIT");
  await db.exec("DETACH o");
  await db.exec(`VACUUM INTO '${ts.dir}/copy.db'`);
  const other = new DatabaseSync(`${ts.dir}/other.db`);
  assert.deepEqual(other.prepare("SELECT v FROM t").all().map((r) => r.v), [5]);
  other.close();
  assert.ok(Deno.statSync(`${ts.dir}/copy.db`).size > 0);
});

Deno.test("PRAGMAs that change durability or safety are refused; reading them works", async () => {
  await using ts = await startServer();
  await using db = await ts.client();
  for (
    const sql of [
      "PRAGMA synchronous = OFF",
      "PRAGMA main.synchronous = 0",
      "PRAGMA journal_mode = DELETE",
      "PRAGMA writable_schema = ON",
      "PRAGMA locking_mode = EXCLUSIVE",
      "PRAGMA wal_autocheckpoint = 0",
      "PRAGMA Journal_Mode = MEMORY",
    ]
  ) {
    await rejectsWithCode(
      db.exec(sql),
      "FORBIDDEN",
      /Cannot set PRAGMA \w+ to "[^"]+": it changes the durability or safety .*--allow-unsafe-pragmas/,
    );
  }
  assert.deepEqual(await db.values("PRAGMA synchronous"), [[2]]);
  assert.deepEqual(await db.values("PRAGMA journal_mode"), [["wal"]]);
  // Harmless PRAGMAs with arguments still work.
  await db.exec("CREATE TABLE t (a, b)");
  assert.equal((await db.query("PRAGMA table_info('t')")).length, 2);
});

Deno.test("serve({ allowUnsafePragmas }) permits setting them", async () => {
  await using ts = await startServer({ allowUnsafePragmas: true });
  await using db = await ts.client();
  await db.exec("PRAGMA synchronous = NORMAL");
  assert.deepEqual(await db.values("PRAGMA synchronous"), [[1]]);
});

Deno.test("One client's query_only and foreign_keys PRAGMAs are refused and change nothing for another", async () => {
  await using ts = await startServer();
  await using a = await ts.client();
  await using b = await ts.client();
  await b.exec(
    "CREATE TABLE p (id INTEGER PRIMARY KEY); CREATE TABLE c (p INTEGER REFERENCES p(id))",
  );
  const shared = /setting of the server's shared SQLite connection .*--allow-unsafe-pragmas/;
  for (
    const sql of [
      "PRAGMA query_only = 1",
      "PRAGMA foreign_keys = 0",
      "PRAGMA recursive_triggers = 1",
      "PRAGMA ignore_check_constraints = 1",
      "PRAGMA case_sensitive_like = 1",
    ]
  ) {
    await rejectsWithCode(a.exec(sql), "FORBIDDEN", shared);
  }
  // b still writes, and foreign keys are still enforced for b.
  await b.run("INSERT INTO p VALUES (1)");
  await b.run("INSERT INTO c VALUES (1)");
  await rejectsWithCode(b.run("INSERT INTO c VALUES (99)"), "SQLITE_CONSTRAINT_FOREIGNKEY");
  assert.deepEqual(await a.values("PRAGMA foreign_keys"), [[1]]);
  assert.deepEqual(await a.values("PRAGMA query_only"), [[0]]);
});

Deno.test("UNSAFE_PRAGMAS and CONNECTION_PRAGMAS cover every PRAGMA this SQLite has, but the harmless ones", () => {
  // Reads, checks and app-level settings clients may use; anything else must be listed.
  const harmless = new Set([
    "application_id",
    "collation_list",
    "compile_options",
    "data_version",
    "database_list",
    "foreign_key_check",
    "foreign_key_list",
    "freelist_count",
    "function_list",
    "incremental_vacuum",
    "index_info",
    "index_list",
    "index_xinfo",
    "integrity_check",
    "module_list",
    "optimize",
    "page_count",
    "pragma_list",
    "quick_check",
    "shrink_memory",
    "table_info",
    "table_list",
    "table_xinfo",
    "user_version",
    "wal_checkpoint",
  ]);
  const db = new DatabaseSync(":memory:");
  const known = db.prepare("PRAGMA pragma_list").all().map((r) => String(r.name));
  db.close();
  const listed = new Set([...UNSAFE_PRAGMAS, ...CONNECTION_PRAGMAS]);
  assert.deepEqual(known.filter((n) => !listed.has(n) && !harmless.has(n)), []);
  assert.ok(known.includes("query_only") && known.includes("synchronous"));
});

Deno.test("parseServeArgs() reads the access and lifecycle flags", async () => {
  await using dir = await tempDir();
  await Deno.writeTextFile(`${dir.path}/token`, "from-file\n");
  const o = parseServeArgs([
    "--socket-mode",
    "0660",
    "--token-file",
    `${dir.path}/token`,
    "--readonly",
    "--allow-attach",
    "--allow-unsafe-pragmas",
    "--grace-ms",
    "250",
    "--channel",
    "app",
  ]) as ServeOptions;
  assert.equal(o.socketMode, 0o660);
  assert.equal(o.token, "from-file");
  assert.equal(o.readonly, true);
  assert.equal(o.allowAttach, true);
  assert.equal(o.allowUnsafePragmas, true);
  assert.equal(o.graceMs, 250);
  assert.equal(o.channel, "app");
  const none = parseServeArgs([]) as ServeOptions;
  assert.equal(none.readonly, undefined);
  assert.equal(none.token, Deno.env.get("NETSQLITE_TOKEN"));
});

Deno.test("server.ts --max-connections 2: a third connection is refused with TOO_MANY_CONNECTIONS; once one closes, a new one is served", async () => {
  await using srv = await startServerProcess({ args: ["--max-connections", "2"] });
  const open = () => connect({ ...srv.connectOptions, max: 1 });
  const a = await open();
  await using b = await open();
  const full = (err: unknown) =>
    err instanceof ProtocolError && err.code === "TOO_MANY_CONNECTIONS";
  await assert.rejects(open(), (err: unknown) => {
    assert.ok(full(err), String(err));
    // The server's address is named, as in the other connect errors.
    assert.equal(
      (err as Error).message,
      `Cannot start session on unix:${(srv.connectOptions as { path: string }).path}: the ` +
        "server already serves 2 connections (--max-connections); close some, or raise the limit",
    );
    return true;
  });
  assert.deepEqual(await a.values("SELECT 1"), [[1]], "the open connections go on");
  await a.close();
  // The server learns of the close when it reads the end of that connection.
  let c = null;
  for (let tries = 0; c === null && tries < 100; tries++) {
    c = await open().catch((err) => {
      if (!full(err)) throw err;
      return new Promise<null>((resolve) => setTimeout(() => resolve(null), 20));
    });
  }
  assert.ok(c !== null, "a connection is served again once one closed");
  await using _c = c;
  assert.deepEqual(await c.values("SELECT 3"), [[3]]);
  assert.deepEqual(await b.values("SELECT 2"), [[2]]);
});

Deno.test("fdBudget() shares the open-file limit between connections, handshakes, cursors and background reads, saying why when it serves fewer", () => {
  const none = { handshakes: 0, backgroundReads: 16, warning: null };
  const unknown = "the open-file limit (ulimit -n) is unknown: connections and cursors are " +
    "not fitted to it, and past it new connections wait for their connect timeout and " +
    "cursors fail to open";
  assert.deepEqual(fdBudget(10000, null), {
    connections: 10000,
    handshakes: 0,
    cursors: 1024,
    backgroundReads: 16,
    warning: unknown,
  });
  assert.equal(
    fdBudget(10000, "no FFI").warning,
    unknown.replace("unknown:", "unknown (no FFI):"),
  );
  assert.deepEqual(fdBudget(10000, Infinity, 1024), {
    connections: 10000,
    handshakes: 1024,
    cursors: 1024,
    backgroundReads: 16,
    warning: null,
  });
  assert.deepEqual(fdBudget(10000, 20000), { connections: 10000, cursors: 1024, ...none });
  assert.deepEqual(fdBudget(600, 1024), { connections: 600, cursors: 120, ...none });
  assert.deepEqual(fdBudget(10000, 20000, 1024), {
    connections: 10000,
    handshakes: 1024,
    cursors: 1024,
    backgroundReads: 16,
    warning: null,
  });
  // Without a count of the descriptors in use, FD_IN_USE_GUESS stands for it.
  assert.deepEqual(fdBudget(10000, 1024, 1024), {
    connections: 516,
    handshakes: 172,
    cursors: 120,
    backgroundReads: 16,
    warning: "serving at most 516 connections (--max-connections 10000), 172 waiting for " +
      "their hello (--max-handshakes 1024) and 120 open cursors: the open-file limit is 1024 " +
      "(ulimit -n)",
  });
  // A small limit: background reads are fitted too, and the count in use is named.
  assert.deepEqual(fdBudget(10000, 64, 1024, { inUse: 24 }), {
    connections: 6,
    handshakes: 2,
    cursors: 1,
    backgroundReads: 1,
    warning: "serving at most 6 connections (--max-connections 10000), 2 waiting for their " +
      "hello (--max-handshakes 1024), 1 background read and 1 open cursor: the open-file limit " +
      "is 64 (ulimit -n), 24 of them in use at start",
  });
  assert.equal(fdBudget(10000, 64, 1024, { inUse: 24, backgroundReads: 4 }).backgroundReads, 1);
  assert.equal(fdBudget(10000, 4096, 1024, { inUse: 24, backgroundReads: 4 }).backgroundReads, 4);
  // Too low to serve at all: one of each, and a plain warning.
  const low = fdBudget(10000, 40, 1024, { inUse: 24 });
  assert.deepEqual([low.connections, low.handshakes, low.cursors, low.backgroundReads], [
    1,
    1,
    1,
    1,
  ]);
  assert.equal(
    low.warning,
    `the open-file limit is 40 (ulimit -n), 24 of them in use at start: too low to serve ` +
      `clients (the server's own files take about ${FD_RESERVE} more, each connection one and ` +
      "each cursor two): connections and cursors will fail for want of descriptors; raise it " +
      `to 1024 or more (ulimit -n 1024), ${24 + FD_RESERVE + FD_MINIMAL_SERVICE} at the very least`,
  );
  // What the budget grants fits the limit, with the descriptors in use and those set aside.
  for (const inUse of [null, 10, 24, 60]) {
    for (const limit of [64, 100, 160, 400, 1024, 4096, 65536]) {
      const used = inUse ?? FD_IN_USE_GUESS;
      if (limit - used - FD_RESERVE < FD_MINIMAL_SERVICE) continue;
      const b = fdBudget(1e6, limit, 1024, { inUse });
      const fds = used + FD_RESERVE + b.connections + b.handshakes +
        FDS_PER_CURSOR * (b.cursors + b.backgroundReads);
      assert.ok(fds <= limit, `${limit}, ${inUse}: ${fds}`);
      assert.ok(b.connections >= 1 && b.cursors >= 1 && b.backgroundReads >= 1, `${limit}`);
    }
  }
  const own = openFileLimit();
  if (Deno.build.os === "linux") assert.ok(own !== null && own > FD_RESERVE, String(own));
});

Deno.test("openFileCount() counts this process's open descriptors", () => {
  const limit = openFileLimit();
  if (Deno.build.os !== "linux" || limit === null || limit > 65536) return;
  // Threads of the runtime (a previous test's worker or library winding down) may open or close
  // a descriptor between two counts: one of a few tries must see exactly the file opened.
  const seen: string[] = [];
  for (let i = 0; i < 5; i++) {
    const before = openFileCount(limit);
    assert.ok(before !== null && before >= 3, String(before));
    const file = Deno.openSync(SERVER_TS);
    let after: number | null;
    try {
      after = openFileCount(limit);
    } finally {
      file.close();
    }
    if (after === before + 1) break;
    seen.push(`${before} then ${after}`);
  }
  assert.ok(seen.length < 5, `never one more after opening a file: ${seen.join(", ")}`);
  assert.equal(openFileCount(Infinity), null);
});

Deno.test("server.ts under a small open-file limit serves fewer connections and says so", async () => {
  await using dir = await tempDir();
  const script = 'ulimit -n 400 && exec "$0" run -A "$1" --db "$2" --socket "$3"';
  const child = new Deno.Command("sh", {
    args: ["-c", script, Deno.execPath(), SERVER_TS, `${dir.path}/l.db`, `${dir.path}/l.sock`],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let err = "";
  try {
    const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    while (!err.includes("in use at start\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      err += value;
    }
    reader.cancel();
  } finally {
    child.kill("SIGTERM");
    await child.status;
  }
  // The share is drawn from the limit less the descriptors open at start (counted).
  const inUse = Number(/, (\d+) of them in use at start\n/.exec(err)?.[1]);
  assert.ok(inUse > 3 && inUse < 100, err);
  const budget = fdBudget(10000, 400, 1024, { inUse });
  assert.ok(err.includes(`warn  netsqlite: ${budget.warning}\n`), err);
  assert.match(
    budget.warning!,
    /^serving at most \d+ connections \(--max-connections 10000\), \d+ waiting for their hello \(--max-handshakes 1024\), \d+ background reads and \d+ open cursors: the open-file limit is 400 \(ulimit -n\), \d+ of them in use at start$/,
  );
});

Deno.test("server.ts under a small open-file limit refuses a cursor past its share with a clear error, and keeps accepting connections", async () => {
  await using dir = await tempDir();
  const sock = `${dir.path}/c.sock`;
  const script = 'ulimit -n 400 && exec "$0" run -A "$1" --db "$2" --socket "$3"';
  const child = new Deno.Command("sh", {
    args: ["-c", script, Deno.execPath(), SERVER_TS, `${dir.path}/c.db`, sock],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const clients = [];
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    for (let out = ""; !out.includes("serving");) out += (await reader.read()).value ?? "";
    reader.cancel();
    // The warning (written before the banner) says how many descriptors were in use at start.
    const errors = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    let err = "";
    while (!err.includes("in use at start\n")) err += (await errors.read()).value ?? "";
    errors.cancel();
    const inUse = Number(/, (\d+) of them in use at start\n/.exec(err)?.[1]);
    const share = fdBudget(10000, 400, 1024, { inUse }).cursors;
    assert.ok(share > 16 && share < 48, String(share));
    const db = await connect({ path: sock, max: 1 });
    clients.push(db);
    await db.exec(
      "CREATE TABLE t (x); WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c " +
        "WHERE n < 50000) INSERT INTO t SELECT n FROM c",
    );
    // The limit's share of cursors (fdBudget); each stays open, unread.
    const cursors = [];
    let refused: unknown = null;
    for (let c = 0; c < 3 && refused === null; c++) {
      const conn = await connect({ path: sock, max: 1 });
      clients.push(conn);
      for (let i = 0; i < 16 && refused === null; i++) {
        const it = conn.iterate("SELECT x FROM t")[Symbol.asyncIterator]();
        try {
          await it.next();
          cursors.push({ it, conn });
        } catch (err) {
          refused = err;
        }
      }
    }
    assert.equal(cursors.length, share);
    assert.equal((refused as { code?: string })?.code, "BAD_REQUEST", String(refused));
    assert.ok(
      String((refused as Error).message).startsWith(
        `Too many open cursors on the server: ${share},`,
      ),
      String(refused),
    );
    // New connections are still accepted and served, and closing a cursor makes room.
    const late = await connect({ path: sock, max: 1 });
    clients.push(late);
    assert.deepEqual(await late.values("SELECT count(*) FROM t"), [[50000]]);
    // (On the closed cursor's connection: its close is handled first.)
    const closed = cursors.pop()!;
    await closed.it.return!(undefined);
    const again = closed.conn.iterate("SELECT x FROM t")[Symbol.asyncIterator]();
    assert.equal((await again.next()).value?.x, 1);
    await again.return!(undefined);
    for (const { it } of cursors) await it.return!(undefined);
  } finally {
    for (const c of clients) await c.close();
    child.kill("SIGTERM");
    await child.status;
  }
});

const ffiEngine = (Deno.env.get("NETSQLITE_ENGINE") ?? "ffi") !== "node";

Deno.test("fts3_tokenizer() and reading sqlite_stmt are refused: code addresses and other clients' SQL", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  for (
    const sql of [
      "SELECT hex(fts3_tokenizer('simple'))",
      "SELECT fts3_tokenizer('evil', x'4141414141414141')",
      "SELECT fts3_tokenizer(?, ?)",
    ]
  ) {
    await assert.rejects(db.values(sql, sql.includes("?") ? ["evil", new Uint8Array(8)] : []), {
      code: "FORBIDDEN",
      message:
        "Cannot call fts3_tokenizer(): it reads and sets code addresses in the server process",
    });
  }
  if (ffiEngine) { // (node:sqlite's SQLite has no sqlite_stmt table)
    await db.run("SELECT 'hunter2' AS secret");
    await assert.rejects(db.values("SELECT sql FROM sqlite_stmt"), {
      code: "FORBIDDEN",
      message: /^Cannot read sqlite_stmt: it shows the SQL of other clients' statements/,
    });
  }
});

Deno.test("TEMP triggers, and TEMP tables or views named like a table, are refused: other clients' statements would meet them", async () => {
  await using srv = await startServer();
  await using a = await srv.client();
  await using b = await srv.client();
  await a.exec(
    "CREATE TABLE accounts (owner); CREATE VIEW totals AS SELECT count(*) FROM accounts",
  );
  for (
    const [sql, name] of [
      ["CREATE TEMP TRIGGER steal AFTER INSERT ON main.accounts BEGIN SELECT 1; END", "steal"],
      ["CREATE TRIGGER temp.steal AFTER INSERT ON main.accounts BEGIN SELECT 1; END", "steal"],
    ]
  ) {
    await assert.rejects(a.exec(sql), {
      code: "FORBIDDEN",
      message: new RegExp(
        `^Cannot create TEMP trigger "${name}": on the server's shared connection`,
      ),
    });
  }
  for (
    const [sql, name] of [
      ["CREATE TEMP TABLE accounts (x)", "accounts"],
      ["CREATE TABLE temp.Accounts (x)", "Accounts"],
      ["CREATE TEMP VIEW totals AS SELECT 0", "totals"],
      ["CREATE VIEW temp.accounts AS SELECT 0", "accounts"],
    ]
  ) {
    await assert.rejects(a.exec(sql), {
      code: "FORBIDDEN",
      message: new RegExp(
        `^Cannot give a table or view the name "${name}": a TEMP one and another`,
      ),
    });
  }
  // Nor by renaming, a virtual table, or the database's table made after the TEMP one.
  await a.exec("CREATE TEMP TABLE zz (x)");
  await assert.rejects(a.exec("ALTER TABLE temp.zz RENAME TO [Accounts]"), {
    code: "FORBIDDEN",
    message: /^Cannot give a table or view the name "Accounts": a TEMP one and another/,
  });
  await a.exec("DROP TABLE temp.zz");
  await assert.rejects(a.exec("CREATE VIRTUAL TABLE temp.accounts USING fts5(owner)"), {
    code: "FORBIDDEN",
  });
  await a.exec("CREATE TEMP TABLE orders (x)");
  await assert.rejects(b.exec("CREATE TABLE orders (id)"), {
    code: "FORBIDDEN",
    message: /^Cannot give a table or view the name "orders".*, or drop the TEMP one$/,
  });
  await assert.rejects(b.exec('ALTER TABLE accounts RENAME TO "orders"'), { code: "FORBIDDEN" });
  await a.exec("DROP TABLE temp.orders");
  await b.exec("CREATE TABLE orders (id)");
  // Another client's writes land in the real table.
  await b.run("INSERT INTO accounts VALUES ('carol')");
  assert.deepEqual(await b.values("SELECT owner FROM main.accounts"), [["carol"]]);
  // TEMP objects of their own names stay allowed, however spelled, and are found.
  await a.exec("CREATE VIEW temp.mine AS SELECT 42 AS n");
  assert.deepEqual(await b.values("SELECT n FROM mine"), [[42]]);
  await a.exec("DROP VIEW temp.mine");
});

Deno.test("A value larger than 256 MiB (or twice --max-frame-size) is refused by SQLite at once (SQLITE_TOOBIG), not built", async () => {
  await using srv = await startServer({ maxFrameSize: 1024 * 1024 });
  await using db = await srv.client();
  await assert.rejects(db.values("SELECT length(zeroblob(1000000000))"), { code: "SQLITE_TOOBIG" });
  await assert.rejects(db.values("SELECT length(hex(zeroblob(140000000)))"), {
    code: "SQLITE_TOOBIG",
  });
  assert.deepEqual(await db.values("SELECT length(hex(zeroblob(1000000)))"), [[2000000]]);
  // A little over a frame: the advice of RESULT_TOO_LARGE.
  await assert.rejects(db.values("SELECT zeroblob(1100000)"), { code: "RESULT_TOO_LARGE" });
});

Deno.test("A refused PRAGMA set to the value the server already has is allowed (ORM start-up lines); any change is still refused", async () => {
  await using ts = await startServer();
  await using db = await ts.client();
  // Twice each: the second run comes from the statement cache and is checked again.
  for (let i = 0; i < 2; i++) {
    await db.exec("PRAGMA foreign_keys = ON");
    await db.run("PRAGMA foreign_keys = yes");
    await db.exec("PRAGMA foreign_keys = 1");
    assert.deepEqual(await db.values("PRAGMA journal_mode = WAL"), [["wal"]]);
    await db.exec("PRAGMA main.Journal_Mode = wal");
    await db.exec("PRAGMA synchronous = FULL");
    await db.exec("PRAGMA synchronous = 2");
    await db.exec("PRAGMA recursive_triggers = OFF");
  }
  const refused = [
    "PRAGMA foreign_keys = OFF",
    "PRAGMA foreign_keys = 2",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA synchronous = 1",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA recursive_triggers = ON",
    // No value to compare: it cannot be read back.
    "PRAGMA case_sensitive_like = 0",
  ];
  for (const sql of refused) {
    await rejectsWithCode(
      db.exec(sql),
      "FORBIDDEN",
      /^Cannot set PRAGMA \w+ to "\w+": .*already has is allowed/,
    );
    await rejectsWithCode(db.run(sql), "FORBIDDEN");
  }
  assert.deepEqual(await db.values("PRAGMA foreign_keys"), [[1]]);
  assert.deepEqual(await db.values("PRAGMA synchronous"), [[2]]);
  assert.deepEqual(await db.values("PRAGMA journal_mode"), [["wal"]]);
  // Foreign keys are still enforced on the writer.
  await db.exec("CREATE TABLE p (id INTEGER PRIMARY KEY); CREATE TABLE c (p REFERENCES p(id))");
  await rejectsWithCode(db.run("INSERT INTO c VALUES (1)"), "SQLITE_CONSTRAINT_FOREIGNKEY");
  // Only spellings SQLite reads the same way count.
  assert.equal(samePragmaValue("foreign_keys", "TRUE", 1), true);
  assert.equal(samePragmaValue("foreign_keys", "-1", 1), false);
  assert.equal(samePragmaValue("cache_size", "-2000", -2000), true);
  assert.equal(samePragmaValue("synchronous", "extra", 3n), true);
  assert.equal(samePragmaValue("synchronous", "on", 1), false);
  assert.equal(samePragmaValue("temp_store", "memory", 2), true);
  assert.equal(samePragmaValue("busy_timeout", "0x10", 16), false);
  assert.equal(samePragmaValue("journal_mode", "WAL", "wal"), true);
  assert.equal(samePragmaValue("journal_mode", "WAL", null), false);
});

Deno.test("PRAGMA defer_foreign_keys = ON is allowed inside the client's transaction, refused outside", async () => {
  await using ts = await startServer();
  await using a = await ts.client();
  await using b = await ts.client();
  await a.exec("CREATE TABLE p (id INTEGER PRIMARY KEY); CREATE TABLE c (p REFERENCES p(id))");
  const outside =
    /^Cannot set PRAGMA defer_foreign_keys to "ON" outside a transaction: .*inside your transaction/;
  await rejectsWithCode(a.exec("PRAGMA defer_foreign_keys = ON"), "FORBIDDEN", outside);
  await a.transaction(async (tx) => {
    await tx.run("PRAGMA defer_foreign_keys = ON");
    await tx.run("INSERT INTO c VALUES (7)"); // checked at COMMIT, by then resolved
    await tx.run("INSERT INTO p VALUES (7)");
  });
  await a.exec(
    "BEGIN; PRAGMA defer_foreign_keys = ON; INSERT INTO c VALUES (8); INSERT INTO p VALUES (8); COMMIT",
  );
  // SQLite reset it at COMMIT: the same (cached) text outside a transaction is refused again.
  assert.deepEqual(await a.values("PRAGMA defer_foreign_keys"), [[0]]);
  await rejectsWithCode(a.run("PRAGMA defer_foreign_keys = ON"), "FORBIDDEN", outside);
  await rejectsWithCode(b.run("PRAGMA defer_foreign_keys = ON"), "FORBIDDEN", outside);
  await rejectsWithCode(b.run("INSERT INTO c VALUES (9)"), "SQLITE_CONSTRAINT_FOREIGNKEY");
  assert.deepEqual(await a.values("SELECT p FROM c ORDER BY p"), [[7], [8]]);
});

Deno.test("VACUUM INTO however written is refused with FORBIDDEN and how to permit it", async () => {
  await using ts = await startServer();
  await using db = await ts.client();
  const dir = ts.dir;
  const named = (file: string) =>
    new RegExp(`^Cannot VACUUM INTO "${dir}/${file}": .*--allow-attach to permit`);
  const unnamed =
    /^Cannot VACUUM INTO a file given by a parameter or an expression: ATTACH, .*--allow-attach to permit/;
  const cases: [() => Promise<unknown>, RegExp][] = [
    [() => db.exec(`VACUUM /*c*/ INTO '${dir}/a.db'`), named("a\\.db")],
    [() => db.exec(`vacuum "main" into'${dir}/b.db';`), named("b\\.db")],
    [() => db.exec(`VACUUM [main] -- c\n INTO '${dir}/c.db' -- d`), named("c\\.db")],
    [() => db.exec(`VACUUM INTO ('${dir}/d.db')`), unnamed],
    [() => db.exec(`VACUUM INTO '${dir}/' || 'e.db'`), unnamed],
    [() => db.exec("VACUUM INTO char(47, 116, 109, 112, 47, 120)"), unnamed],
    [() => db.run("VACUUM main INTO ?", [`${dir}/f.db`]), unnamed],
    [() => db.prepare("VACUUM INTO :f").then((s) => s.run({ f: `${dir}/g.db` })), unnamed],
  ];
  for (const [run, message] of cases) await rejectsWithCode(run(), "FORBIDDEN", message);
  assert.deepEqual([...Deno.readDirSync(dir)].filter((e) => /^[a-g]\.db$/.test(e.name)), []);
  await db.exec("VACUUM"); // in place, no file: allowed
});

Deno.test("ATTACH and DETACH of a name known only when run are refused saying so, not as an empty name", async () => {
  await using ts = await startServer();
  await using db = await ts.client();
  const file = `${ts.dir}/other.db`;
  const given = (what: string) =>
    new RegExp(
      `^Cannot ${what} given by a parameter or an expression: ATTACH, DETACH and VACUUM INTO ` +
        ".*--allow-attach to permit\\)$",
    );
  await rejectsWithCode(
    db.run("ATTACH ? AS a", [file]),
    "FORBIDDEN",
    given("attach a database file"),
  );
  await rejectsWithCode(
    db.exec(`ATTACH '${ts.dir}/' || 'other.db' AS a`),
    "FORBIDDEN",
    given("attach a database file"),
  );
  await rejectsWithCode(db.run("DETACH ?", ["a"]), "FORBIDDEN", given("detach a database"));
  // A literal is named, the empty one too (ATTACH '' opens a temporary database).
  await rejectsWithCode(db.exec("ATTACH '' AS e"), "FORBIDDEN", /^Cannot attach "": ATTACH, /);
  await assert.rejects(Deno.lstat(file), Deno.errors.NotFound);
});

Deno.test("serve({ readonly }) refuses VACUUM and PRAGMA incremental_vacuum with READONLY", async () => {
  await using dir = await tempDir();
  const database = `${dir.path}/a.db`;
  {
    await using _rw = await serve({ database, path: `${dir.path}/rw.sock` });
    await using db = await connect({ path: `${dir.path}/rw.sock` });
    await db.exec("CREATE TABLE t (v); INSERT INTO t VALUES (1)");
  }
  await using _ro = await serve({ database, path: `${dir.path}/ro.sock`, readonly: true });
  await using db = await connect({ path: `${dir.path}/ro.sock` });
  const readonly = /^Cannot \w+.*: the server runs read-only \(--readonly\)$/;
  for (
    const sql of [
      "VACUUM",
      "vacuum main",
      "PRAGMA incremental_vacuum",
      "PRAGMA incremental_vacuum(5)",
    ]
  ) {
    await rejectsWithCode(db.exec(sql), "READONLY", readonly);
  }
  assert.deepEqual(await db.values("SELECT v FROM t"), [[1]]);
});

Deno.test("serve({ readonly }) refuses PRAGMA wal_checkpoint and PRAGMA optimize with READONLY, also when the WAL holds another process's frames", async () => {
  await using dir = await tempDir();
  const database = `${dir.path}/a.db`;
  const other = new DatabaseSync(database);
  try {
    other.exec(
      "PRAGMA journal_mode = WAL; CREATE TABLE t (v); CREATE INDEX tv ON t (v); " +
        "INSERT INTO t VALUES (1), (2)",
    );
    await using _ro = await serve({ database, path: `${dir.path}/ro.sock`, readonly: true });
    await using db = await connect({ path: `${dir.path}/ro.sock`, max: 1 });
    // Another process writes: the WAL holds frames a checkpoint would copy back.
    other.exec("PRAGMA wal_autocheckpoint = 0; INSERT INTO t VALUES (3)");
    const refused = (what: string) =>
      new RegExp(`^Cannot run PRAGMA ${what}: the server runs read-only \\(--readonly\\)$`);
    for (
      const [sql, what] of [
        ["PRAGMA wal_checkpoint", "wal_checkpoint"],
        ["PRAGMA wal_checkpoint(TRUNCATE)", "wal_checkpoint"],
        ["PRAGMA main.wal_checkpoint(PASSIVE)", "wal_checkpoint"],
        ["PRAGMA optimize", "optimize"],
        ["PRAGMA optimize(0x10002)", "optimize"],
        ["SELECT * FROM pragma_optimize", "optimize"],
        ["SELECT count(*) FROM Pragma_Optimize(0x10002)", "optimize"],
      ]
    ) {
      await rejectsWithCode(db.values(sql), "READONLY", refused(what));
    }
    // Reads go on, and see the other process's write.
    assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[3]]);
  } finally {
    other.close();
  }
});

Deno.test("Policy edges: PRAGMA synchronous under --allow-unsafe-pragmas, VACUUM after semicolons, a column named rename", async () => {
  {
    await using srv = await startServer({ allowUnsafePragmas: true });
    await using db = await srv.client();
    // The shared reader's snapshot cannot take it: the writer does.
    await db.run("PRAGMA synchronous = FULL");
    await db.run("PRAGMA synchronous = NORMAL");
    assert.deepEqual(await db.values("PRAGMA synchronous"), [[1]]);
  }
  await using srv = await startServer();
  await using db = await srv.client();
  await assert.rejects(db.exec(`;VACUUM INTO '${srv.dir}/x.db'`), {
    code: "FORBIDDEN",
    message: /^Cannot VACUUM INTO/,
  });
  await db.exec("CREATE TABLE t (rename); CREATE TEMP TABLE scratch (x)");
  await db.exec("ALTER TABLE t RENAME COLUMN rename TO scratch");
  assert.deepEqual(await db.values("SELECT name FROM pragma_table_info('t')"), [["scratch"]]);
});

Deno.test("a TLS client says what to do with a certificate it cannot trust: a self-signed one marked as CA, or one signed by a CA it was not given", async () => {
  await using dir = await tempDir();
  // `openssl req -x509` marks the certificate as a CA unless told otherwise.
  const made = await new Deno.Command("openssl", {
    args: ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
      .concat(["-days", "1", "-keyout", `${dir.path}/key.pem`, "-out", `${dir.path}/cert.pem`])
      .concat(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"]),
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(made.code, 0, new TextDecoder().decode(made.stderr));
  const selfSigned = await Deno.readTextFile(`${dir.path}/cert.pem`);
  const selfSignedKey = await Deno.readTextFile(`${dir.path}/key.pem`);
  const signed = await makeCertificate(dir.path, "IP:127.0.0.1,DNS:localhost", "/CN=localhost"); // (writes its own cert.pem and key.pem)
  for (
    const [name, tls, caCerts, hint] of [
      [
        "self-signed CA",
        { cert: selfSigned, key: selfSignedKey },
        [selfSigned],
        /the server's certificate is marked as a CA.*basicConstraints=critical,CA:FALSE/,
      ],
      [
        "private CA not given",
        { cert: signed.cert, key: signed.key },
        undefined,
        /the client does not trust the server's certificate: pass the certificate that signed it in tls: \{ caCerts: \[pem\] \}/,
      ],
    ] as const
  ) {
    await using server = await serve({
      database: `${dir.path}/${name}.db`,
      hostname: "127.0.0.1",
      port: 0,
      tls,
    });
    const { port } = server.addr as { port: number };
    await assert.rejects(
      connect({ hostname: "127.0.0.1", port, tls: caCerts ? { caCerts: [...caCerts] } : true }),
      (err: unknown) => {
        assert.ok(err instanceof ConnectionError, `${name}: ${err}`);
        assert.match(err.message, hint, name);
        return true;
      },
    );
  }
});
