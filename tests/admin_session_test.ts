/**
 * Admin sessions (hello `admin: true`), on real in-process servers: the CLI's
 * administration commands open them, they take the slots kept beyond
 * `--max-connections` for them (`ADMIN_RESERVED_CONNECTIONS`), so `stats`,
 * `checkpoint` and `integrity` work at a full server; past those slots they
 * are refused `TOO_MANY_CONNECTIONS`; they run only maintenance requests
 * (SQL: `FORBIDDEN`), and need the token like any connection.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { type Client, connect, ProtocolError, SqliteError } from "../client.ts";
import type { Link } from "../client/link.ts";
import { resolveConnectOptions } from "../client/options.ts";
import { openAdminLink, runAdmin } from "../cli/admin.ts";
import { Op, type StatsReport } from "../protocol/messages.ts";
import { decodeHello } from "../protocol/requests.ts";
import { ADMIN_RESERVED_CONNECTIONS } from "../server/connection_limit.ts";
import { delay, startServer, startServerProcess, type TestServer } from "./_helpers.ts";

const ENGINES = ["ffi", "node"] as const;
const TOKEN = "admin-test-token-0123456789abcdef";

/** An admin session on `srv`, closed on dispose. */
async function adminLink(srv: TestServer, token?: string): Promise<Link & AsyncDisposable> {
  const l = await openAdminLink(await resolveConnectOptions({ ...srv.connectOptions, token }));
  return Object.assign(l, {
    async [Symbol.asyncDispose]() {
      l.fail(new Error("test done"));
      await l.ended;
    },
  });
}

/** `max` ordinary clients of one connection each, every one served (a query answered). */
async function fill(srv: TestServer, max: number, token?: string): Promise<Client[]> {
  const clients: Client[] = [];
  for (let i = 0; i < max; i++) {
    const c = await connect({ ...srv.connectOptions, max: 1, token });
    clients.push(c);
    assert.deepEqual(await c.values("SELECT 1"), [[1]]);
  }
  return clients;
}

/** `runAdmin(name, args)` with its output captured. */
async function admin(
  srv: TestServer,
  name: string,
  args: string[] = [],
): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const sock = ["--socket", (srv.connectOptions as { path: string }).path];
  const code = await runAdmin(name, [...args, ...sock], {
    out: (l) => out.push(l),
    err: (l) => err.push(l),
    progress: null,
  });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

function tooMany(pattern: RegExp): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof ProtocolError, String(err));
    assert.equal(err.code, "TOO_MANY_CONNECTIONS");
    assert.match(err.message, pattern);
    return true;
  };
}

Deno.test("two slots are kept for admin sessions", () => {
  assert.equal(ADMIN_RESERVED_CONNECTIONS, 2);
});

for (const engine of ENGINES) {
  Deno.test(`${engine}: at --max-connections, netsqlite stats, checkpoint and integrity still run (admin sessions)`, async () => {
    await using srv = await startServer({ engine, maxConnections: 2 });
    const clients = await fill(srv, 2);
    try {
      // An ordinary client is refused, as before.
      await assert.rejects(
        connect({ ...srv.connectOptions, max: 1 }).then((c) => c.values("SELECT 1")),
        tooMany(/already serves 2 connections \(--max-connections\)/),
      );
      const stats = await admin(srv, "stats");
      assert.equal(stats.code, 0, stats.err);
      assert.match(
        stats.out,
        /\nconnections {3}3 open \(at most 2, and 2 more for admin sessions\), 1 of them an admin session, 0 handshaking, \d+ since start, 1 refused\n/,
      );
      const json = await admin(srv, "stats", ["--json"]);
      assert.equal(json.code, 0, json.err);
      const report: StatsReport = JSON.parse(json.out);
      assert.equal(report.connections.open, 3);
      assert.equal(report.connections.admin, 1);
      assert.equal(report.connections.max, 2);
      assert.equal(report.connections.reserved, 2);
      const checkpoint = await admin(srv, "checkpoint", ["--truncate"]);
      assert.equal(checkpoint.code, 0, checkpoint.err);
      assert.match(checkpoint.out, /^checkpoint \(truncate\): /);
      const integrity = await admin(srv, "integrity");
      assert.equal(integrity.code, 0, integrity.err);
      assert.match(integrity.out, /^integrity: ok \(/);
      // The ordinary clients went on meanwhile.
      assert.deepEqual(await clients[0].values("SELECT 2"), [[2]]);
    } finally {
      for (const c of clients) await c.close();
    }
  });
}

Deno.test("at --max-connections, admin sessions take the 2 reserved slots; a third is refused TOO_MANY_CONNECTIONS, and so is an ordinary client", async () => {
  await using srv = await startServer({ maxConnections: 2 });
  const clients = await fill(srv, 2);
  try {
    await using a = await adminLink(srv);
    await using _b = await adminLink(srv);
    await assert.rejects(
      adminLink(srv),
      tooMany(
        /^Cannot start admin session on unix:\S+: the server already serves 4 connections, 2 of them admin sessions \(--max-connections 2, and 2 more kept for admin sessions\); close some, or raise the limit$/,
      ),
    );
    await assert.rejects(
      connect({ ...srv.connectOptions, max: 1 }).then((c) => c.values("SELECT 1")),
      tooMany(
        /^Cannot start session on unix:\S+: the server already serves 2 connections \(--max-connections\); close some, or raise the limit$/,
      ),
    );
    const s = await a.request(Op.Stats, []);
    assert.deepEqual(
      [s.connections.open, s.connections.admin, s.connections.refused],
      [4, 2, 2],
    );
    // The CLI too is refused once the reserve is taken, with the server's reason.
    const stats = await admin(srv, "stats");
    assert.equal(stats.code, 1);
    assert.match(
      stats.err,
      /^netsqlite stats: TOO_MANY_CONNECTIONS: Cannot start admin session on unix:\S+: the server already serves/,
    );
  } finally {
    for (const c of clients) await c.close();
  }
});

Deno.test("admin sessions do not take ordinary slots from clients: with 2 admin sessions open, 2 ordinary clients are still served", async () => {
  await using srv = await startServer({ maxConnections: 2 });
  await using a = await adminLink(srv);
  await using _b = await adminLink(srv);
  const clients = await fill(srv, 2);
  try {
    await assert.rejects(
      connect({ ...srv.connectOptions, max: 1 }).then((c) => c.values("SELECT 1")),
      tooMany(/already serves 2 connections \(--max-connections\)/),
    );
    const s = await a.request(Op.Stats, []);
    assert.deepEqual([s.connections.open, s.connections.admin], [4, 2]);
  } finally {
    for (const c of clients) await c.close();
  }
  // Once closed (the server notices soon after), stats counts them out.
  let s = await a.request(Op.Stats, []);
  for (let i = 0; i < 100 && s.connections.open > 2; i++) {
    await delay(10);
    s = await a.request(Op.Stats, []);
  }
  assert.deepEqual([s.connections.open, s.connections.admin], [2, 2]);
});

Deno.test("an admin session's SQL requests are refused FORBIDDEN; its maintenance requests run", async () => {
  await using srv = await startServer();
  await using a = await adminLink(srv);
  const forbidden = (op: string) => (err: unknown): boolean => {
    assert.ok(err instanceof SqliteError, String(err));
    assert.equal(err.code, "FORBIDDEN");
    assert.equal(
      err.message,
      `Cannot run ${op} on an admin session: admin sessions run only maintenance requests ` +
        "(stats, checkpoint, vacuum, integrity, backup); open an ordinary connection for SQL",
    );
    return true;
  };
  await assert.rejects(a.request(Op.Query, ["SELECT 1", null, null]), forbidden("query"));
  await assert.rejects(a.request(Op.Exec, ["CREATE TABLE t(x)"]), forbidden("exec"));
  await assert.rejects(a.request(Op.Run, ["CREATE TABLE t(x)", null, null]), forbidden("run"));
  await assert.rejects(a.request(Op.Batch, [[["SELECT 1", null]]]), forbidden("batch"));
  await assert.rejects(a.request(Op.Prepare, ["SELECT 1"]), forbidden("prepare"));
  await assert.rejects(a.request(Op.Iterate, ["SELECT 1", null, null]), forbidden("iterate"));
  await assert.rejects(a.request(Op.Subscribe, [{}]), forbidden("subscribe"));
  // Nothing ran: the table does not exist.
  await using c = await srv.client();
  assert.deepEqual(
    await c.values("SELECT count(*) FROM sqlite_schema WHERE name = 't'"),
    [[0]],
  );
  // The session goes on, for what it may do.
  assert.equal((await a.request(Op.Integrity, [])).ok, true);
  assert.equal((await a.request(Op.Stats, [])).connections.admin, 1);
  assert.equal((await a.request(Op.Checkpoint, ["passive"])).mode, "passive");
});

Deno.test("an admin session needs the token like any other: refused AUTH without it, even at a full server", async () => {
  await using srv = await startServer({ maxConnections: 1, token: TOKEN });
  const clients = await fill(srv, 1, TOKEN);
  try {
    await assert.rejects(adminLink(srv), (err: unknown) => {
      assert.ok(err instanceof ProtocolError, String(err));
      assert.equal(err.code, "AUTH");
      return true;
    });
    await assert.rejects(adminLink(srv, "wrong-token-wrong-token-wrong-token"), (err: unknown) => {
      assert.equal((err as ProtocolError).code, "AUTH");
      return true;
    });
    const bare = await admin(srv, "stats");
    assert.equal(bare.code, 1);
    assert.match(bare.err, /^netsqlite stats: AUTH: /);
    const withToken = await admin(srv, "stats", ["--token", TOKEN]);
    assert.equal(withToken.code, 0, withToken.err);
    assert.match(withToken.out, /\nconnections {3}2 open \(at most 1, and 2 more for admin/);
  } finally {
    for (const c of clients) await c.close();
  }
});

Deno.test("hello admin: optional, a boolean or nothing; false is an ordinary session", async () => {
  assert.deepEqual(decodeHello([0, 1, { version: 1, admin: true }]), { version: 1, admin: true });
  assert.deepEqual(decodeHello([0, 1, { version: 1, admin: false }]), { version: 1 });
  assert.deepEqual(decodeHello([0, 1, { version: 1, token: "t" }]), { version: 1, token: "t" });
  assert.throws(
    () => decodeHello([0, 1, { version: 1, admin: "yes" }]),
    (err: unknown) => {
      assert.equal((err as SqliteError).code, "BAD_REQUEST");
      assert.equal((err as Error).message, "Cannot start session: hello admin must be a boolean");
      return true;
    },
  );
  await using srv = await startServer({ maxConnections: 1 });
  await using c = await srv.client();
  assert.deepEqual(await c.values("SELECT 1"), [[1]]);
});

Deno.test("server process at --max-connections 2 with 2 clients: `deno run cli.ts stats` and `integrity` exit 0", async () => {
  await using srv = await startServerProcess({ args: ["--max-connections", "2"] });
  const path = (srv.connectOptions as { path: string }).path;
  const a = await srv.client();
  const b = await srv.client();
  try {
    assert.deepEqual(await a.values("SELECT 1"), [[1]]);
    assert.deepEqual(await b.values("SELECT 1"), [[1]]);
    const run = async (args: string[]) => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", fileURLToPath(new URL("../cli.ts", import.meta.url)), ...args],
        stdin: "null",
        env: { NO_COLOR: "1" },
      }).output();
      const dec = new TextDecoder();
      return { code: out.code, out: dec.decode(out.stdout), err: dec.decode(out.stderr) };
    };
    const stats = await run(["stats", "--json", "--socket", path]);
    assert.equal(stats.code, 0, stats.err); // was 1: TOO_MANY_CONNECTIONS
    const c = JSON.parse(stats.out).connections;
    assert.deepEqual([c.open, c.admin, c.max, c.reserved], [3, 1, 2, 2]);
    const integrity = await run(["integrity", "--socket", path]);
    assert.equal(integrity.code, 0, integrity.err);
    assert.match(integrity.out, /^integrity: ok \(/);
  } finally {
    await a.close();
    await b.close();
  }
});
