/**
 * TLS parity with plain TCP: what the TCP tests check (large replies, slow
 * readers, write stalls, the hello timeout, shutdown, stats, restarts, many
 * connections) done over TLS too, with the same values and error codes.
 * Real servers on 127.0.0.1, certificates made by openssl.
 */

import assert from "node:assert/strict";
import { connect, type ConnectOptions } from "../mod.ts";
import { serve, type ServeOptions, type Server } from "../server.ts";
import { Op } from "../protocol/messages.ts";
import { decodeMsgpack } from "../protocol/msgpack.ts";
import { delay, serverStats, startServerProcess, tempDir } from "./_helpers.ts";
import { frame } from "./_raw.ts";
import { cli } from "./_cli.ts";
import { makeCertificate, type Pem } from "./_certs.ts";

const HAS_OPENSSL = await new Deno.Command("openssl", { args: ["version"], stdout: "null" })
  .output().then((o) => o.success, () => false);

let sharedPem: Pem | null = null;
async function pem(): Promise<Pem> {
  if (sharedPem === null) {
    await using dir = await tempDir();
    sharedPem = await makeCertificate(dir.path);
  }
  return sharedPem;
}

type Kind = "tcp" | "tls";

interface Setup extends AsyncDisposable {
  server: Server;
  port: number;
  dir: string;
  options: ConnectOptions;
  /** A raw connection (TLS or not), before its hello. */
  raw(): Promise<Deno.Conn>;
}

export async function start(
  kind: Kind,
  extra: Partial<ServeOptions> = {},
  port = 0,
): Promise<Setup> {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-test-" });
  const p = kind === "tls" ? await pem() : null;
  const server = await serve({
    database: `${dir}/a.db`,
    hostname: "127.0.0.1",
    port,
    logLevel: Deno.env.get("TLS_AUDIT_LOG") === "1" ? "warn" : "error",
    ...(p !== null ? { tls: { cert: p.cert, key: p.key } } : {}),
    ...extra,
  });
  const actual = (server.addr as Deno.NetAddr).port;
  let down = false;
  return {
    server,
    port: actual,
    dir,
    options: {
      hostname: "127.0.0.1",
      port: actual,
      max: 1,
      ...(p !== null ? { tls: { caCerts: [p.ca] } } : {}),
    },
    raw: () =>
      p !== null
        ? Deno.connectTls({ hostname: "127.0.0.1", port: actual, caCerts: [p.ca] })
        : Deno.connect({ hostname: "127.0.0.1", port: actual }),
    async [Symbol.asyncDispose]() {
      if (!down) {
        down = true;
        await server.shutdown();
      }
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** Reads whole frames from a raw connection, optionally slowly. */
export class FrameReader {
  #chunks: Uint8Array[] = [];
  #have = 0;
  total = 0;
  constructor(readonly conn: Deno.Conn, readonly chunk = 65536) {}

  #take(n: number): Uint8Array {
    const out = new Uint8Array(n);
    let off = 0;
    while (off < n) {
      const c = this.#chunks[0];
      const k = Math.min(c.length, n - off);
      out.set(c.subarray(0, k), off);
      off += k;
      if (k === c.length) this.#chunks.shift();
      else this.#chunks[0] = c.subarray(k);
    }
    this.#have -= n;
    return out;
  }

  #peekLength(): number {
    const head = new Uint8Array(4);
    let off = 0;
    for (const c of this.#chunks) {
      const k = Math.min(c.length, 4 - off);
      head.set(c.subarray(0, k), off);
      off += k;
      if (off === 4) break;
    }
    return new DataView(head.buffer).getUint32(0);
  }

  async next(pause?: () => Promise<void>): Promise<unknown> {
    for (;;) {
      if (this.#have >= 4) {
        const n = this.#peekLength();
        if (this.#have >= 4 + n) {
          this.#take(4);
          return decodeMsgpack(this.#take(n));
        }
      }
      const chunk = new Uint8Array(this.chunk);
      const n = await this.conn.read(chunk).catch(() => null);
      if (n === null) return "EOF";
      this.total += n;
      this.#have += n;
      this.#chunks.push(chunk.subarray(0, n));
      if (pause !== undefined) await pause();
    }
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
}

export async function hello(conn: Deno.Conn): Promise<FrameReader> {
  await writeAll(conn, frame([Op.Hello, 1, { version: 1 }]));
  const r = new FrameReader(conn);
  const reply = await r.next() as [number, number];
  assert.equal(reply[1], 0, JSON.stringify(reply));
  return r;
}

for (const kind of ["tcp", "tls"] as const) {
  Deno.test({
    name: `${kind}: a client reading a 16 MiB reply slowly but steadily is not closed by ` +
      "--write-stall-timeout (3 s) and gets all of it",
    ignore: !HAS_OPENSSL,
    async fn() {
      await using s = await start(kind, { writeStallTimeout: 3000 });
      const conn = await s.raw();
      try {
        const r = await hello(conn);
        const size = 16 * 1024 * 1024;
        await writeAll(conn, frame([Op.Query, 2, `SELECT zeroblob(${size}) AS b`, null]));
        // About 3 MiB a second: 256 KiB, then 80 ms; the reply takes 5 s or more, never a pause of 3 s.
        let since = 0;
        const t0 = performance.now();
        const reply = await r.next(async () => {
          if (r.total - since >= 256 * 1024) {
            since = r.total;
            await delay(80);
          }
        });
        const ms = performance.now() - t0;
        assert.notEqual(reply, "EOF", `closed after ${r.total} bytes in ${ms.toFixed(0)} ms`);
        const [id, status] = reply as [number, number, unknown];
        assert.equal(id, 2);
        assert.equal(status, 0, JSON.stringify(reply).slice(0, 300));
        assert.ok(r.total > size, `${r.total}`);
      } finally {
        conn.close();
      }
    },
  });

  Deno.test({
    name: `${kind}: a client holding the writer that never reads its replies is closed after ` +
      "--write-stall-timeout, its transaction rolled back; another writer then commits",
    ignore: !HAS_OPENSSL,
    async fn() {
      await using s = await start(kind, {
        writeStallTimeout: 1000,
        txIdleTimeout: 60_000,
        busyTimeout: 30_000,
      });
      await using db = await connect(s.options);
      await db.exec("CREATE TABLE t (x)");
      const conn = await s.raw();
      try {
        await hello(conn);
        await writeAll(
          conn,
          new Uint8Array([
            ...frame([Op.Exec, 2, "BEGIN IMMEDIATE; INSERT INTO t VALUES ('held')"]),
            ...Array.from(
              { length: 8 },
              (_, i) => frame([Op.Query, 3 + i, "SELECT zeroblob(8000000)", null]),
            ).flatMap((f) => [...f]),
          ]),
        );
        await delay(300);
        const t0 = performance.now();
        assert.deepEqual(await db.run("INSERT INTO t VALUES ('other')"), {
          changes: 1,
          lastInsertRowid: 1,
        });
        const ms = performance.now() - t0;
        assert.ok(ms < 20_000, `${ms}`);
        assert.deepEqual(await db.values("SELECT x FROM t"), [["other"]]);
      } finally {
        conn.close();
      }
    },
  });
}

/** The error `p` rejects with, as name/code/message/mayHaveRun. */
async function failure(p: Promise<unknown>): Promise<Record<string, unknown>> {
  try {
    await p;
  } catch (e) {
    const err = e as Error & { code?: string; mayHaveRun?: boolean };
    return { name: err.name, code: err.code, message: err.message, mayHaveRun: err.mayHaveRun };
  }
  throw new Error("did not fail");
}

for (const kind of ["tcp", "tls"] as const) {
  Deno.test({
    name: `${kind}: a 20 MB blob each way, a 30 MB result of 30,000 rows, and a cursor read ` +
      "slowly give the same values",
    ignore: !HAS_OPENSSL,
    async fn() {
      await using s = await start(kind);
      await using db = await connect(s.options);
      const blob = new Uint8Array(20_000_000);
      for (let i = 0; i < blob.length; i += 4096) blob[i] = (i / 4096) & 0xff;
      await db.exec("CREATE TABLE b (id INTEGER PRIMARY KEY, v BLOB)");
      assert.deepEqual(await db.run("INSERT INTO b (v) VALUES (?)", [blob]), {
        changes: 1,
        lastInsertRowid: 1,
      });
      const back = await db.get<{ v: Uint8Array }>("SELECT v FROM b");
      assert.equal(back!.v.length, blob.length);
      assert.deepEqual(back!.v, blob);
      const rows = await db.values<[number, string]>(
        "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 30000) " +
          "SELECT n, printf('%.1000c', 'x') FROM s",
      );
      assert.equal(rows.length, 30_000);
      assert.equal(rows[29_999][0], 30_000);
      assert.equal(rows.reduce((n, r) => n + r[1].length, 0), 30_000_000);
      let n = 0;
      let sum = 0;
      for await (
        const row of db.iterate<{ n: number; p: string }>(
          "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 20000) " +
            "SELECT n, printf('%.500c', 'y') AS p FROM s",
        )
      ) {
        n++;
        sum += row.n;
        assert.equal(row.p.length, 500);
        if (n % 2000 === 0) await delay(100);
      }
      assert.equal(n, 20_000);
      assert.equal(sum, 20_000 * 20_001 / 2);
    },
  });

  Deno.test({
    name: `${kind}: an aborted call and a statement timeout fail with the same errors`,
    ignore: !HAS_OPENSSL,
    async fn() {
      await using s = await start(kind, { statementTimeout: 200 });
      await using db = await connect(s.options);
      // Bounded (node:sqlite cannot stop a running statement: its deadline is checked when it
      // ends), a few seconds long at most.
      const endless = "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s " +
        "WHERE n < 6000000) SELECT count(*) FROM s";
      const timedOut = await failure(db.get(endless));
      assert.equal(timedOut.code, "STATEMENT_TIMEOUT", JSON.stringify(timedOut));
      const ac = new AbortController();
      setTimeout(() => ac.abort(), 200);
      const aborted = await failure(db.get(endless, [], { signal: ac.signal }));
      assert.equal(aborted.name, "AbortError", JSON.stringify(aborted));
      assert.equal(aborted.code, "ABORTED", JSON.stringify(aborted));
      assert.deepEqual(await db.get("SELECT 7 AS x"), { x: 7 });
    },
  });

  Deno.test({
    name: `${kind}: a wrong token fails with AUTH; the stats (admin) connection works`,
    ignore: !HAS_OPENSSL,
    async fn() {
      await using s = await start(kind, { token: "right-token-0123456789" });
      const wrong = await failure(
        connect({ ...s.options, token: "wrong-token" }).then((c) =>
          c.get("SELECT 1").finally(() => c.close())
        ),
      );
      assert.equal(wrong.code, "AUTH", JSON.stringify(wrong));
      const none = await failure(
        connect(s.options).then((c) => c.get("SELECT 1").finally(() => c.close())),
      );
      assert.equal(none.code, "AUTH", JSON.stringify(none));
      const options = { ...s.options, token: "right-token-0123456789" };
      await using db = await connect(options);
      assert.deepEqual(await db.get("SELECT 1 AS one"), { one: 1 });
      const stats = await serverStats(options);
      // This client's connection and the stats request's own.
      assert.equal((stats as unknown as { connections: { open: number } }).connections.open, 2);
    },
  });

  Deno.test({
    name: `${kind}: a connection that says nothing (after its TLS handshake) is closed by ` +
      "--hello-timeout, and one closed mid-frame or mid-handshake leaves nothing",
    ignore: !HAS_OPENSSL,
    async fn() {
      await using s = await start(kind, { helloTimeout: 500 });
      const silent = await s.raw();
      if (kind === "tls") await (silent as Deno.TlsConn).handshake();
      const t0 = performance.now();
      const r = new FrameReader(silent);
      const got = await r.next();
      const ms = performance.now() - t0;
      assert.ok(ms >= 300 && ms < 5000, `closed after ${ms.toFixed(0)} ms: ${JSON.stringify(got)}`);
      assert.deepEqual(got, [0, 1, {
        code: "FRAME_TIMEOUT",
        message: "Closing connection: no hello within 500 ms (--hello-timeout)",
      }]);
      assert.equal(await r.next(), "EOF");
      silent.close();
      // Mid-frame: half a frame after the hello, then gone.
      for (let i = 0; i < 20; i++) {
        const c = await s.raw();
        await hello(c);
        const f = frame([Op.Query, 2, "SELECT 1", null]);
        await writeAll(c, f.subarray(0, 5));
        c.close();
      }
      // Mid-handshake: a TCP connection that sends part of a ClientHello.
      for (let i = 0; i < 20; i++) {
        const c = await Deno.connect({ hostname: "127.0.0.1", port: s.port });
        await writeAll(c, new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
        c.close();
      }
      await using db = await connect(s.options);
      assert.deepEqual(await db.get("SELECT 2 AS two"), { two: 2 });
      let open = -1;
      for (let i = 0; i < 50; i++) {
        const st = await serverStats(s.options) as unknown as {
          connections: { open: number; handshaking: number };
        };
        open = st.connections.open + st.connections.handshaking;
        if (open === 2) break; // db's connection and the stats request's own
        await delay(100);
      }
      assert.equal(open, 2);
    },
  });

  Deno.test({
    name: `${kind}: 200 connections at once each write and read`,
    ignore: !HAS_OPENSSL,
    async fn() {
      await using s = await start(kind, { busyTimeout: 60_000 });
      await using setup = await connect(s.options);
      await setup.exec("CREATE TABLE c (id INTEGER PRIMARY KEY, v TEXT)");
      const clients = await Promise.all(
        Array.from({ length: 200 }, () => connect({ ...s.options, requestTimeout: 60_000 })),
      );
      try {
        const results = await Promise.all(clients.map(async (c, i) => {
          await c.run("INSERT INTO c (id, v) VALUES (?, ?)", [i + 1, `v${i}`]);
          return (await c.get<{ v: string }>("SELECT v FROM c WHERE id = ?", [i + 1]))!.v;
        }));
        assert.deepEqual(results, clients.map((_, i) => `v${i}`));
        assert.deepEqual(await setup.values("SELECT count(*), sum(id) FROM c"), [[200, 20_100]]);
      } finally {
        await Promise.all(clients.map((c) => c.close()));
      }
    },
  });
}

for (const kind of ["tcp", "tls"] as const) {
  Deno.test({
    name: `${kind}: shutdown with busy clients: a transaction left open is told it was rolled ` +
      "back, a call in flight gets SHUTTING_DOWN, and the server is down within the grace period",
    ignore: !HAS_OPENSSL,
    async fn() {
      await using s = await start(kind);
      await using a = await connect(s.options);
      await using b = await connect(s.options);
      await a.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)");
      await a.exec("BEGIN IMMEDIATE; INSERT INTO t (who) VALUES ('a')");
      // b waits for the writer a holds.
      const waiting = failure(b.run("INSERT INTO t (who) VALUES ('b')"));
      await delay(200);
      const t0 = performance.now();
      await s.server.shutdown({ graceMs: 500 });
      const ms = performance.now() - t0;
      assert.ok(ms < 5000, `shutdown took ${ms.toFixed(0)} ms`);
      const bErr = await waiting;
      const aErr = await failure(a.run("INSERT INTO t (who) VALUES ('a2')"));
      assert.match(String(bErr.message), /Server is shutting down/, JSON.stringify(bErr));
      assert.equal(bErr.mayHaveRun, false, JSON.stringify(bErr));
      assert.match(String(aErr.message), /Server is shutting down/, JSON.stringify(aErr));
      assert.match(String(aErr.message), /rolled back/, JSON.stringify(aErr));
    },
  });

  Deno.test({
    name: `${kind}: a client pool gets through a server restart on the same port`,
    ignore: !HAS_OPENSSL,
    async fn() {
      const first = await start(kind);
      const database = `${first.dir}/a.db`;
      const port = first.port;
      await using db = await connect({ ...first.options, max: 4 });
      await db.exec("CREATE TABLE t (x)");
      await Promise.all([1, 2, 3, 4].map((x) => db.run("INSERT INTO t VALUES (?)", [x])));
      await first.server.shutdown();
      // In one process the client reads the server's last frames on its next turns: a call made
      // at once may still go to the connection the server is closing (a restart takes longer).
      await delay(200);
      const second = await start(kind, { database }, port);
      try {
        const results: unknown[] = [];
        for (let i = 0; i < 4; i++) {
          results.push(
            await db.values("SELECT count(*) FROM t").catch((e) => `${e.code}: ${e.message}`),
          );
        }
        assert.deepEqual(results, Array(4).fill([[4]]));
        assert.deepEqual(
          await Promise.all([1, 2, 3, 4, 5, 6].map(() => db.values("SELECT count(*) FROM t"))),
          Array(6).fill([[4]]),
        );
      } finally {
        await second.server.shutdown();
        await Deno.remove(second.dir, { recursive: true }).catch(() => {});
        await Deno.remove(first.dir, { recursive: true }).catch(() => {});
      }
    },
  });
}

for (const kind of ["tcp", "tls"] as const) {
  Deno.test({
    name: `${kind}: SIGTERM to a server process with busy clients: calls waiting for the writer ` +
      "fail with the shutdown's message (mayHaveRun false), the transaction open is rolled back, " +
      "the process exits 0 within the grace period",
    ignore: !HAS_OPENSSL,
    async fn() {
      await using dir = await tempDir();
      const p = await pem();
      await Deno.writeTextFile(`${dir.path}/cert.pem`, p.cert);
      await Deno.writeTextFile(`${dir.path}/key.pem`, p.key);
      await using srv = await startServerProcess({
        transport: "tcp",
        args: ["--grace-ms", "1000", "--log-level", "error"].concat(
          kind === "tls"
            ? ["--tls-cert", `${dir.path}/cert.pem`, "--tls-key", `${dir.path}/key.pem`]
            : [],
        ),
      });
      const options: ConnectOptions = {
        ...srv.connectOptions,
        max: 1,
        ...(kind === "tls" ? { tls: { caCerts: [p.ca] } } : {}),
      };
      await using a = await connect(options);
      await a.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)");
      await a.exec("BEGIN IMMEDIATE; INSERT INTO t (who) VALUES ('a')");
      const others = await Promise.all(Array.from({ length: 10 }, () => connect(options)));
      try {
        const waiting = others.map((c, i) => failure(c.run("INSERT INTO t (who) VALUES (?)", [i])));
        await delay(300);
        const t0 = performance.now();
        srv.child.kill("SIGTERM");
        const status = await srv.child.status;
        const ms = performance.now() - t0;
        assert.equal(status.code, 0);
        assert.ok(ms < 8000, `exited after ${ms.toFixed(0)} ms`);
        for (const err of await Promise.all(waiting)) {
          assert.match(String(err.message), /Server is shutting down/, JSON.stringify(err));
          assert.equal(err.mayHaveRun, false, JSON.stringify(err));
        }
        const aErr = await failure(a.run("INSERT INTO t (who) VALUES ('a2')"));
        assert.match(String(aErr.message), /Server is shutting down/, JSON.stringify(aErr));
        assert.match(String(aErr.message), /rolled back/, JSON.stringify(aErr));
      } finally {
        await Promise.all(others.map((c) => c.close()));
      }
    },
  });
}

Deno.test({
  name: "Raw misbehaviour gets the same replies over TLS as over TCP: an oversized frame before " +
    "the hello, a wrong protocol version, garbage, a frame left incomplete (--frame-timeout), " +
    "an unknown op",
  ignore: !HAS_OPENSSL,
  async fn() {
    const replies: Record<Kind, unknown[][]> = { tcp: [], tls: [] };
    for (const kind of ["tcp", "tls"] as const) {
      // The hello gets its own generous window: under a loaded CI machine a TLS handshake plus
      // hello took over the 500 ms it would otherwise share with --frame-timeout, and the
      // server's hello timeout then closed the connection before TLS was up (read as "EOF").
      await using s = await start(kind, { frameTimeout: 500, helloTimeout: 30_000 });
      const cases: [string, (c: Deno.Conn) => Promise<void>][] = [
        [
          "oversized hello",
          (c) => writeAll(c, frame([Op.Hello, 1, { version: 1, x: "y".repeat(5000) }])),
        ],
        ["wrong version", (c) => writeAll(c, frame([Op.Hello, 1, { version: 999 }]))],
        ["garbage", (c) => writeAll(c, new Uint8Array([0, 0, 0, 3, 0xc1, 0xc1, 0xc1]))],
        ["incomplete", async (c) => {
          await hello(c);
          await writeAll(c, frame([Op.Query, 2, "SELECT 1", null]).subarray(0, 6));
        }],
        ["unknown op", async (c) => {
          await hello(c);
          await writeAll(c, frame([250, 2, "x"]));
        }],
      ];
      for (const [what, act] of cases) {
        const c = await s.raw();
        try {
          await act(c);
          const r = new FrameReader(c);
          const got: unknown[] = [what];
          // An unknown op is answered and the connection stays open: one reply. The others
          // get a connection-level error, then the end of the stream.
          for (let i = 0; i < (what === "unknown op" ? 1 : 3); i++) {
            const f = await r.next();
            got.push(f);
            if (f === "EOF") break;
          }
          replies[kind].push(got);
        } finally {
          c.close();
        }
      }
    }
    assert.deepEqual(replies.tls, replies.tcp);
    assert.deepEqual(
      replies.tcp.map(([what, f]) => [what, (f as [number, number, { code: string }])[2].code]),
      [
        ["oversized hello", "FRAME_TOO_LARGE"],
        ["wrong version", "PROTOCOL_VERSION"],
        ["garbage", "BAD_REQUEST"],
        ["incomplete", "FRAME_TIMEOUT"],
        ["unknown op", "BAD_REQUEST"],
      ],
    );
  },
});

for (const kind of ["tcp", "tls"] as const) {
  Deno.test({
    name: `${kind}: the CLI's admin commands (stats --json, checkpoint, integrity) work, also at ` +
      "a full server (--max-connections), and a client past the limit gets TOO_MANY_CONNECTIONS",
    ignore: !HAS_OPENSSL,
    async fn() {
      await using dir = await tempDir();
      const p = await pem();
      await Deno.writeTextFile(`${dir.path}/ca.pem`, p.ca);
      await using s = await start(kind, { maxConnections: 2 });
      await using a = await connect(s.options);
      await using b = await connect(s.options);
      await a.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)");
      assert.deepEqual(await b.values("SELECT count(*) FROM t"), [[1]]);
      const third = await failure(
        connect(s.options).then((c) => c.get("SELECT 1").finally(() => c.close())),
      );
      assert.equal(third.code, "TOO_MANY_CONNECTIONS", JSON.stringify(third));
      const flags = ["--tcp", `127.0.0.1:${s.port}`].concat(
        kind === "tls" ? ["--tls-ca", `${dir.path}/ca.pem`] : [],
      );
      const stats = await cli(["stats", "--json", ...flags]);
      assert.equal(stats.code, 0, stats.stderr);
      const report = JSON.parse(stats.stdout) as { connections: { open: number; admin: number } };
      assert.equal(report.connections.open, 3, stats.stdout.slice(0, 500));
      assert.equal(report.connections.admin, 1, stats.stdout.slice(0, 500));
      const checkpoint = await cli(["checkpoint", ...flags]);
      assert.equal(checkpoint.code, 0, checkpoint.stderr);
      const integrity = await cli(["integrity", ...flags]);
      assert.equal(integrity.code, 0, integrity.stderr);
      assert.match(integrity.stdout, /^integrity: ok/, integrity.stdout);
    },
  });
}

for (const kind of ["tcp", "tls"] as const) {
  Deno.test({
    name: `${kind}: a client that closes mid-frame inside its transaction frees the writer at ` +
      "once, its transaction rolled back",
    ignore: !HAS_OPENSSL,
    async fn() {
      await using s = await start(kind, { busyTimeout: 30_000, txIdleTimeout: 60_000 });
      await using db = await connect(s.options);
      await db.exec("CREATE TABLE t (x)");
      const conn = await s.raw();
      const r = await hello(conn);
      await writeAll(conn, frame([Op.Exec, 2, "BEGIN IMMEDIATE; INSERT INTO t VALUES ('held')"]));
      assert.deepEqual((await r.next() as unknown[]).slice(0, 1), [2]);
      const other = db.run("INSERT INTO t VALUES ('other')");
      await delay(200);
      await writeAll(conn, frame([Op.Exec, 3, "INSERT INTO t VALUES ('more')"]).subarray(0, 7));
      const t0 = performance.now();
      conn.close();
      assert.deepEqual(await other, { changes: 1, lastInsertRowid: 1 });
      const ms = performance.now() - t0;
      assert.ok(ms < 5000, `the writer was freed after ${ms.toFixed(0)} ms`);
      assert.deepEqual(await db.values("SELECT x FROM t"), [["other"]]);
    },
  });
}

for (const kind of ["tcp", "tls"] as const) {
  Deno.test({
    name: `${kind}: shutdown with connections before their hello (silent, mid-handshake, after ` +
      "the TLS handshake) ends at once and closes them",
    ignore: !HAS_OPENSSL,
    async fn() {
      await using s = await start(kind, { helloTimeout: 60_000, frameTimeout: 60_000 });
      const silent = await Deno.connect({ hostname: "127.0.0.1", port: s.port });
      const partial = await Deno.connect({ hostname: "127.0.0.1", port: s.port });
      await writeAll(partial, new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
      const shaken = await s.raw();
      if (kind === "tls") await (shaken as Deno.TlsConn).handshake();
      const conns = [silent, partial, shaken];
      try {
        await delay(200);
        const t0 = performance.now();
        await s.server.shutdown({ graceMs: 1000 });
        const ms = performance.now() - t0;
        assert.ok(ms < 3000, `shutdown took ${ms.toFixed(0)} ms`);
        for (const c of conns) {
          const buf = new Uint8Array(4096);
          let end: string | number = 0;
          for (let i = 0; i < 10 && typeof end === "number"; i++) {
            end = await c.read(buf).then((n) => n === null ? "EOF" : n, () => "error");
          }
          assert.ok(typeof end === "string", "still open");
        }
      } finally {
        for (const c of conns) c.close();
      }
    },
  });
}
