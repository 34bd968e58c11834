/**
 * Clients that misbehave while other clients do normal work: the server stays
 * up, serves the others, and loses no acknowledged write. Real servers on
 * temp sockets (Unix, TCP and TLS); misbehaving clients are raw sockets (tests/_raw.ts) or
 * processes of their own that are SIGKILLed (tests/_misbehave_child.ts).
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import type { Client, ConnectOptions } from "../client.ts";
import type { ServeOptions } from "../server.ts";
import { Op, Status } from "../protocol/messages.ts";
import {
  delay,
  serverStats,
  startServer,
  statsUntil,
  tempDir,
  type TestServer,
} from "./_helpers.ts";
import { connect, serve } from "../mod.ts";
import { frame, Raw } from "./_raw.ts";
import { makeCertificate } from "./_certs.ts";

const CHILD = fileURLToPath(new URL("./_misbehave_child.ts", import.meta.url));

type Reply = [number, number, unknown];

/** A server with table `t (id, who)` and `big` (5,000 rows of ~200 bytes). */
async function setup(
  options: ServeOptions & { transport?: "unix" | "tcp" | "tls" } = {},
): Promise<TestServer> {
  const { transport, ...rest } = options;
  let pem: { ca: string; cert: string; key: string } | null = null;
  if (transport === "tls") {
    await using dir = await tempDir();
    pem = await makeCertificate(dir.path);
  }
  const started = await startServer({
    ...rest,
    transport: transport === "tls" ? "tcp" : transport,
    ...(pem === null ? {} : { tls: { cert: pem.cert, key: pem.key } }),
  });
  const connectOptions: ConnectOptions = pem === null
    ? started.connectOptions
    : { ...started.connectOptions, tls: { caCerts: [pem.ca] } };
  const srv: TestServer = {
    ...started,
    connectOptions,
    client: () => connect({ ...connectOptions, max: 1 }),
  };
  await using db = await srv.client();
  await db.exec(
    "CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT NOT NULL);" +
      "CREATE TABLE big (n INTEGER PRIMARY KEY, p TEXT);" +
      "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 5000) " +
      "INSERT INTO big SELECT n, printf('%.200c', 'x') FROM s",
  );
  return srv;
}

/** Inserts rows `from..to` of `who` one by one, each awaited (acknowledged). */
async function writeRows(db: Client, from: number, to: number, who: string): Promise<number[]> {
  const acked: number[] = [];
  for (let id = from; id <= to; id++) {
    const r = await db.run("INSERT INTO t (id, who) VALUES (?, ?)", [id, who]);
    assert.deepEqual(r, { changes: 1, lastInsertRowid: id });
    acked.push(id);
  }
  return acked;
}

async function idsOf(db: Client, who: string): Promise<number[]> {
  const rows = await db.values<[number]>("SELECT id FROM t WHERE who = ? ORDER BY id", [who]);
  return rows.map(([id]) => id);
}

/** A client process of tests/_misbehave_child.ts in `mode`, once it printed "ready". */
async function spawnChild(options: ConnectOptions, mode: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CHILD, JSON.stringify(options), mode],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("ready")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`child ${mode} ended before ready: ${out}`);
    out += value;
  }
  const drained = (async () => {
    while (!(await reader.read()).done);
  })();
  let status: Promise<Deno.CommandStatus> | null = null;
  const kill = () => {
    if (status === null) {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      status = child.status.then(async (s) => {
        await drained;
        return s;
      });
    }
    return status;
  };
  return { pid: child.pid, kill, [Symbol.asyncDispose]: async () => void await kill() };
}

/** Bytes of `frames` in one buffer. */
function joined(frames: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
  let off = 0;
  for (const f of frames) out.set(f, off), off += f.length;
  return out;
}

const rawHello = frame([Op.Hello, 1, { version: 1 }]);

for (const transport of ["unix", "tcp", "tls"] as const) {
  Deno.test({
    name:
      `misbehave (${transport}): a client killed inside a transaction with a cursor open while others write: ` +
      `its writes roll back, the writer is released at once, every acknowledged write stays`,
    async fn() {
      await using srv = await setup({ transport, txIdleTimeout: 60_000 });
      await using a = await srv.client();
      await using b = await srv.client();
      // Others write before the victim takes the writer.
      const before = await writeRows(a, 1, 50, "a");
      await using victim = await spawnChild(srv.connectOptions, "tx-cursor");
      await statsUntil(
        srv.connectOptions,
        (s) => s.transactions.length === 1 && s.cursors === 1,
        "victim in tx with cursor",
      );
      // Writes now wait for the victim's transaction; reads go on.
      let settled = 0;
      const waiting = Array.from(
        { length: 20 },
        (_, i) =>
          b.run("INSERT INTO t (id, who) VALUES (?, 'b')", [101 + i]).finally(() => settled++),
      );
      assert.deepEqual(await a.values("SELECT count(*) FROM t"), [[50]]);
      await delay(200);
      assert.equal(settled, 0, "a write passed the victim's transaction");
      const t0 = performance.now();
      await victim.kill();
      const results = await Promise.all(waiting);
      const ms = performance.now() - t0;
      results.forEach((r, i) => assert.deepEqual(r, { changes: 1, lastInsertRowid: 101 + i }));
      // The server sees the socket end at once: far below the 60 s idle lease.
      assert.ok(ms < 10_000, `the writer was released ${ms.toFixed(0)} ms after the kill`);
      const after = await writeRows(a, 201, 250, "a");
      assert.deepEqual(await idsOf(a, "a"), [...before, ...after]);
      assert.deepEqual(await idsOf(a, "b"), Array.from({ length: 20 }, (_, i) => 101 + i));
      assert.deepEqual(await idsOf(a, "doomed"), []);
      const s = await statsUntil(srv.connectOptions, (s) => s.cursors === 0, "cursor released");
      assert.deepEqual(s.transactions, []);
      assert.deepEqual(await a.values("PRAGMA integrity_check"), [["ok"]]);
    },
  });

  Deno.test({
    name:
      `misbehave (${transport}): a client killed in a transaction while 2,000 of its reads of ` +
      `64 KiB are in flight: its transaction rolls back, a waiting writer lands`,
    async fn() {
      await using srv = await setup({ transport, txIdleTimeout: 60_000, busyTimeout: 30_000 });
      await using a = await srv.client();
      await using victim = await spawnChild(srv.connectOptions, "tx-pipeline");
      await statsUntil(srv.connectOptions, (s) => s.transactions.length === 1, "victim in tx");
      const w = a.run("INSERT INTO t (id, who) VALUES (1, 'a')");
      await delay(100);
      await victim.kill();
      assert.deepEqual(await w, { changes: 1, lastInsertRowid: 1 });
      assert.deepEqual(await idsOf(a, "doomed"), []);
      const s = await statsUntil(
        srv.connectOptions,
        (s) => s.connections.open <= 2 && s.transactions.length === 0,
        "victim gone",
      );
      assert.equal(s.cursors, 0);
      assert.deepEqual(await writeRows(a, 2, 11, "a"), [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    },
  });

  Deno.test({
    name:
      `misbehave (${transport}): a client killed with a streamed cursor open (no transaction) while others ` +
      `write: its snapshot is released, the others' writes all land`,
    async fn() {
      await using srv = await setup({ transport });
      await using a = await srv.client();
      await using victim = await spawnChild(srv.connectOptions, "cursor");
      await statsUntil(srv.connectOptions, (s) => s.cursors === 1, "victim's cursor open");
      const during = writeRows(a, 1, 100, "a");
      await delay(50);
      await victim.kill();
      const acked = await during;
      await statsUntil(srv.connectOptions, (s) => s.cursors === 0, "victim's cursor closed");
      assert.deepEqual(await idsOf(a, "a"), acked);
      // Its snapshot no longer holds back a checkpoint: TRUNCATE is not blocked.
      assert.deepEqual(await a.values("PRAGMA wal_checkpoint(TRUNCATE)"), [[0, 0, 0]]);
      // Only `a` and the stats reader's own session are connected.
      const s = await serverStats(srv.connectOptions);
      assert.equal(s.connections.open, 2);
    },
  });
}

Deno.test({
  name: "misbehave: a client that opens a transaction, pipelines thousands of requests and " +
    "stops reading is closed by the write-stall timeout; its transaction rolls back and waiting " +
    "writers land",
  async fn() {
    await using srv = await setup({
      writeStallTimeout: 2000,
      txIdleTimeout: 60_000,
      busyTimeout: 30_000,
    });
    const path = srv.connectOptions.path!;
    await using a = await srv.client();
    await using b = await srv.client();
    const raw = await Raw.open(path);
    await raw.write(
      frame([Op.Exec, 2, "BEGIN IMMEDIATE; INSERT INTO t (id, who) VALUES (999, 'doomed')"]),
    );
    const begun = await raw.read(10_000) as Reply;
    assert.equal(begun[1] & Status.InTransaction, Status.InTransaction, JSON.stringify(begun));
    // Thousands of 64 KiB results, never read.
    let sent = 0;
    let stop = false;
    const flooding = (async () => {
      let id = 3;
      while (!stop) {
        const chunk: Uint8Array[] = [];
        for (let i = 0; i < 200; i++) {
          chunk.push(frame([Op.Query, id++, "SELECT zeroblob(65536)", null]));
        }
        const all = new Uint8Array(chunk.reduce((n, c) => n + c.length, 0));
        let off = 0;
        for (const c of chunk) all.set(c, off), off += c.length;
        await raw.write(all);
        sent += 200;
      }
    })().catch((e) => e);
    const t0 = performance.now();
    const w = b.run("INSERT INTO t (id, who) VALUES (1, 'b')");
    // Reads of others go on meanwhile.
    for (let i = 0; i < 20; i++) {
      assert.deepEqual(await a.values("SELECT count(*) FROM big"), [[5000]]);
    }
    assert.deepEqual(await w, { changes: 1, lastInsertRowid: 1 });
    const ms = performance.now() - t0;
    stop = true;
    raw.conn.close();
    assert.ok(await flooding instanceof Error);
    console.log(
      `never-reader in a transaction: ${sent} requests sent; writer waited ${ms.toFixed(0)} ms`,
    );
    assert.ok(sent < 20_000, `the server kept reading: ${sent}`);
    assert.ok(ms < 20_000, `the writer waited ${ms.toFixed(0)} ms`);
    assert.deepEqual(await idsOf(a, "doomed"), []);
    assert.deepEqual(await idsOf(a, "b"), [1]);
  },
});

Deno.test({
  name: "misbehave: 300 connections abandoned mid-frame (before and after hello) leave nothing " +
    "behind and run nothing, while another client writes",
  async fn() {
    await using srv = await setup({ helloTimeout: 60_000, frameTimeout: 60_000 });
    const path = srv.connectOptions.path!;
    await using a = await srv.client();
    const writing = writeRows(a, 1, 300, "a");
    const insert = (id: number) =>
      frame([Op.Run, 2, "INSERT INTO t (id, who) VALUES (?, 'half')", [id]]);
    for (let round = 0; round < 3; round++) {
      const conns: Deno.UnixConn[] = [];
      for (let i = 0; i < 100; i++) {
        const conn = await Deno.connect({ transport: "unix", path });
        conns.push(conn);
        const kind = i % 4;
        if (kind === 0) await conn.write(rawHello.subarray(0, 2)); // half a header
        else if (kind === 1) await conn.write(rawHello.subarray(0, rawHello.length - 1));
        else {
          await conn.write(rawHello);
          const f = insert(10_000 + round * 100 + i);
          // After hello: all but the last byte, or a header announcing the frame only.
          await conn.write(kind === 2 ? f.subarray(0, f.length - 1) : f.subarray(0, 4));
        }
      }
      for (const c of conns) c.close();
    }
    const acked = await writing;
    const s = await statsUntil(
      srv.connectOptions,
      (s) => s.connections.open <= 2,
      "abandoned connections gone",
    );
    assert.ok(s.connections.total >= 302, JSON.stringify(s.connections));
    assert.deepEqual(await idsOf(a, "a"), acked);
    assert.deepEqual(await idsOf(a, "half"), []);
    assert.deepEqual(s.transactions, []);
  },
});

Deno.test({
  name: "misbehave: half-frames of 60 connections completed in reverse order all run once, " +
    "each answered on its own connection",
  async fn() {
    await using srv = await setup({ frameTimeout: 60_000 });
    const path = srv.connectOptions.path!;
    await using a = await srv.client();
    const raws: Raw[] = [];
    try {
      const frames: Uint8Array[] = [];
      for (let i = 0; i < 60; i++) {
        raws.push(await Raw.open(path));
        // A payload of a few KiB, split at a different place on each connection.
        const f = frame([Op.Run, 7, "INSERT INTO t (id, who) VALUES (?, ?) RETURNING id", [
          i + 1,
          `h${i}`.padEnd(3000, "-"),
        ]]);
        frames.push(f);
        await raws[i].write(f.subarray(0, 1 + (i * 53) % (f.length - 1)));
      }
      // Meanwhile another client is served.
      assert.deepEqual(
        await writeRows(a, 1001, 1010, "a"),
        Array.from({ length: 10 }, (_, i) => 1001 + i),
      );
      for (let i = 59; i >= 0; i--) {
        await raws[i].write(frames[i].subarray(1 + (i * 53) % (frames[i].length - 1)));
      }
      for (let i = 0; i < 60; i++) {
        const r = await raws[i].read(20_000) as Reply;
        assert.equal(r[0], 7);
        assert.equal(r[1] & Status.Error, 0, JSON.stringify(r));
      }
    } finally {
      for (const r of raws) await r[Symbol.asyncDispose]();
    }
    const rows = await a.values<[number, string]>(
      "SELECT id, who FROM t WHERE id <= 60 ORDER BY id",
    );
    assert.deepEqual(
      rows,
      Array.from({ length: 60 }, (_, i) => [i + 1, `h${i}`.padEnd(3000, "-")]),
    );
  },
});

Deno.test({
  name: "misbehave: a frame announcing more than maxFrameSize inside a transaction: the requests " +
    "before it are answered, then FRAME_TOO_LARGE, the transaction rolls back and the writer is free",
  async fn() {
    await using srv = await setup({ maxFrameSize: 64 * 1024, txIdleTimeout: 60_000 });
    const path = srv.connectOptions.path!;
    await using a = await srv.client();
    await using raw = await Raw.open(path);
    const header = new Uint8Array(4);
    new DataView(header.buffer).setUint32(0, 64 * 1024 + 1);
    const parts = [
      frame([Op.Exec, 2, "BEGIN IMMEDIATE"]),
      frame([Op.Run, 3, "INSERT INTO t (id, who) VALUES (500, 'doomed')", null]),
      header,
      new Uint8Array(100),
    ];
    const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let off = 0;
    for (const p of parts) all.set(p, off), off += p.length;
    await raw.write(all);
    const r2 = await raw.read(10_000) as Reply;
    const r3 = await raw.read(10_000) as Reply;
    assert.deepEqual([r2[0], r2[1]], [2, Status.InTransaction]);
    assert.deepEqual([r3[0], r3[1]], [3, Status.InTransaction]);
    const err = await raw.read(10_000) as Reply;
    assert.equal(err[0], 0);
    assert.equal((err[2] as { code: string }).code, "FRAME_TOO_LARGE", JSON.stringify(err));
    assert.equal(await raw.read(10_000), "EOF");
    const t0 = performance.now();
    assert.deepEqual(await a.run("INSERT INTO t (id, who) VALUES (1, 'a')"), {
      changes: 1,
      lastInsertRowid: 1,
    });
    assert.ok(performance.now() - t0 < 5000);
    assert.deepEqual(await idsOf(a, "doomed"), []);
  },
});

Deno.test({
  name: "misbehave: 40 connections that queue BEGIN IMMEDIATE + INSERT behind a held writer and " +
    "vanish (half of them after their BEGIN ran) leave the writer free and nothing written",
  async fn() {
    await using srv = await setup({ txIdleTimeout: 60_000, busyTimeout: 30_000 });
    const path = srv.connectOptions.path!;
    await using holder = await srv.client();
    await using a = await srv.client();
    await holder.exec("BEGIN IMMEDIATE");
    const raws: Raw[] = [];
    for (let i = 0; i < 40; i++) {
      const raw = await Raw.open(path);
      raws.push(raw);
      await raw.write(joined([
        frame([Op.Exec, 2, "BEGIN IMMEDIATE"]),
        frame([Op.Run, 3, "INSERT INTO t (id, who) VALUES (?, 'gone')", [2000 + i]]),
      ]));
    }
    await statsUntil(
      srv.connectOptions,
      (s) => s.writer.waiting >= 40,
      "40 waiting for the writer",
    );
    // Half vanish while waiting.
    for (let i = 0; i < 20; i++) raws[i].conn.close();
    // A well-behaved writer queues behind the rest.
    const w = a.run("INSERT INTO t (id, who) VALUES (1, 'a')");
    await holder.exec("COMMIT");
    // The other 20 run their BEGIN in turn and vanish as soon as they are in it.
    for (let i = 20; i < 40; i++) {
      const r = await raws[i].read(30_000) as Reply;
      assert.deepEqual([r[0], r[1]], [2, Status.InTransaction], JSON.stringify(r));
      raws[i].conn.close();
    }
    assert.deepEqual(await w, { changes: 1, lastInsertRowid: 1 });
    assert.deepEqual(await idsOf(a, "gone"), []);
    const s = await statsUntil(
      srv.connectOptions,
      (s) => s.writer.waiting === 0 && s.transactions.length === 0,
      "all gone",
    );
    assert.equal(s.connections.open, 3);
    assert.deepEqual(await writeRows(a, 2, 10, "a"), [2, 3, 4, 5, 6, 7, 8, 9, 10]);
  },
});

Deno.test({
  name: "misbehave: a client that half-closes inside a transaction gets its replies (the unrun " +
    "ABORTED), its transaction rolls back and the writer is free",
  async fn() {
    await using srv = await setup({ txIdleTimeout: 60_000, busyTimeout: 30_000 });
    const path = srv.connectOptions.path!;
    await using a = await srv.client();
    await using raw = await Raw.open(path);
    await raw.write(joined([
      frame([Op.Exec, 2, "BEGIN IMMEDIATE"]),
      frame([Op.Run, 3, "INSERT INTO t (id, who) VALUES (77, 'doomed')", null]),
      frame([Op.Query, 4, "SELECT count(*) FROM t", null]),
    ]));
    await raw.conn.closeWrite();
    const w = a.run("INSERT INTO t (id, who) VALUES (1, 'a')");
    const r2 = await raw.read(10_000) as Reply;
    assert.deepEqual([r2[0], r2[1]], [2, Status.InTransaction]);
    // PROTOCOL.md: inside a transaction that nothing received can commit, what is not run
    // by the time the server reads the EOF is answered ABORTED (the transaction is rolled
    // back when the connection closes); what ran before is answered as usual.
    const r3 = await raw.read(10_000) as Reply;
    const r4 = await raw.read(10_000) as Reply;
    assert.equal(r3[0], 3);
    assert.equal(r4[0], 4);
    if (r3[1] & Status.Error) assert.equal((r3[2] as { code: string }).code, "ABORTED");
    if (r4[1] & Status.Error) assert.equal((r4[2] as { code: string }).code, "ABORTED");
    else assert.deepEqual(r4, [4, Status.InTransaction, [["count(*)"], [[1]]]]);
    assert.equal(await raw.read(10_000), "EOF");
    assert.deepEqual(await w, { changes: 1, lastInsertRowid: 1 });
    assert.deepEqual(await idsOf(a, "doomed"), []);
  },
});

Deno.test({
  name: "misbehave: a client that closes while a 20 MB reply is being written to it does not " +
    "disturb others",
  async fn() {
    await using srv = await setup();
    const path = srv.connectOptions.path!;
    await using a = await srv.client();
    for (let round = 0; round < 5; round++) {
      const raw = await Raw.open(path);
      await raw.write(
        new Uint8Array([
          ...frame([Op.Query, 2, "SELECT zeroblob(20000000)", null]),
          ...frame([Op.Run, 3, "INSERT INTO t (id, who) VALUES (?, 'late')", [3000 + round]]),
        ]),
      );
      // Read a little of the reply, then go away.
      await raw.conn.read(new Uint8Array(1000));
      raw.conn.close();
      assert.deepEqual(
        await writeRows(a, round * 10 + 1, round * 10 + 10, "a"),
        Array.from({ length: 10 }, (_, i) => round * 10 + i + 1),
      );
    }
    await statsUntil(srv.connectOptions, (s) => s.connections.open <= 2, "closed ones gone");
    assert.equal((await idsOf(a, "a")).length, 50);
    assert.deepEqual(await a.values("PRAGMA integrity_check"), [["ok"]]);
  },
});

Deno.test({
  name: "misbehave: a client gone while its atomic request runs (a 10,000-statement batch, an " +
    "exec script BEGIN … COMMIT, a SAVEPOINT … RELEASE script) leaves all of it or none",
  async fn() {
    // A script holding COMMIT runs to its end once its client is gone (PROTOCOL.md): some
    // seconds on a loaded machine, which the others' writes wait for.
    await using srv = await setup({ busyTimeout: 60_000 });
    const path = srv.connectOptions.path!;
    await using a = await srv.client();
    const N = 10_000;
    const stmts = Array.from(
      { length: N },
      (_, i) => ["INSERT INTO t (id, who) VALUES (?, 'batch')", [100_000 + i]],
    );
    const script = (who: string, base: number, open: string, close: string) =>
      open + "; " + Array.from({ length: N }, (_, i) =>
        `INSERT INTO t (id, who) VALUES (${base + i}, '${who}')`).join("; ") +
      "; " + close;
    const cases: [string, Uint8Array][] = [
      ["batch", frame([Op.Batch, 2, stmts])],
      ["script", frame([Op.Exec, 2, script("script", 200_000, "BEGIN", "COMMIT")])],
      ["savepoint", frame([Op.Exec, 2, script("savepoint", 300_000, "SAVEPOINT s", "RELEASE s")])],
    ];
    for (const [who, bytes] of cases) {
      for (let round = 0; round < 3; round++) {
        const raw = await Raw.open(path);
        await raw.write(bytes);
        // Gone after 0, 20 or 60 ms.
        if (round > 0) await delay(round === 1 ? 20 : 60);
        raw.conn.close();
        const during = await writeRows(a, 1, 20, `a-${who}-${round}`);
        await statsUntil(srv.connectOptions, (s) => s.connections.open <= 2, "gone client closed");
        assert.deepEqual(await idsOf(a, `a-${who}-${round}`), during);
        const [[n]] = await a.values<[number]>("SELECT count(*) FROM t WHERE who = ?", [who]);
        assert.ok(n === 0 || n === N, `${who} round ${round}: ${n} of ${N} statements kept`);
        await a.run("DELETE FROM t WHERE who = ?", [who]);
        await a.run("DELETE FROM t WHERE id <= 20");
      }
    }
    // An autocommit script stops between two statements: what it kept is a prefix.
    const plain = Array.from(
      { length: N },
      (_, i) => `INSERT INTO t (id, who) VALUES (${400_000 + i}, 'plain')`,
    ).join("; ");
    for (const wait of [0, 20, 60]) {
      const raw = await Raw.open(path);
      await raw.write(frame([Op.Exec, 2, plain]));
      if (wait > 0) await delay(wait);
      raw.conn.close();
      await statsUntil(srv.connectOptions, (s) => s.connections.open <= 2, "gone client closed");
      const [[n, max]] = await a.values<[number, number | null]>(
        "SELECT count(*), max(id) FROM t WHERE who = 'plain'",
      );
      assert.equal(max === null ? 0 : max - 400_000 + 1, n, `${n} rows kept, up to ${max}`);
      await a.run("DELETE FROM t WHERE who = 'plain'");
    }
    assert.deepEqual(await a.values("PRAGMA integrity_check"), [["ok"]]);
  },
});

Deno.test({
  name: "misbehave: a client pipelining 20,000 inserts and reading nothing takes turns with a " +
    "client writing one at a time; every acknowledged write is there, the other's ran in order",
  async fn() {
    await using srv = await setup({ writeStallTimeout: 60_000 });
    const path = srv.connectOptions.path!;
    await using a = await srv.client();
    const raw = await Raw.open(path);
    const N = 20_000;
    const frames = Array.from(
      { length: N },
      (_, i) =>
        frame([Op.Run, 2 + i, "INSERT INTO t (id, who) VALUES (?, 'flood')", [100_000 + i]]),
    );
    const flooding = (async () => {
      for (let i = 0; i < N; i += 1000) await raw.write(joined(frames.slice(i, i + 1000)));
    })().catch((e) => e);
    const t0 = performance.now();
    let worst = 0;
    const acked: number[] = [];
    for (let id = 1; id <= 200; id++) {
      const t = performance.now();
      assert.deepEqual(await a.run("INSERT INTO t (id, who) VALUES (?, 'a')", [id]), {
        changes: 1,
        lastInsertRowid: id,
      });
      acked.push(id);
      worst = Math.max(worst, performance.now() - t);
    }
    console.log(
      `200 acknowledged writes beside a 20,000-insert flood: ${
        (performance.now() - t0).toFixed(0)
      } ms, worst ${worst.toFixed(0)} ms`,
    );
    assert.ok(worst < 10_000, `worst write ${worst.toFixed(0)} ms`);
    raw.conn.close();
    await flooding;
    await statsUntil(srv.connectOptions, (s) => s.connections.open <= 2, "flooder gone");
    assert.deepEqual(await idsOf(a, "a"), acked);
    // What of the flood ran, ran in order: a prefix.
    const [[n, max]] = await a.values<[number, number | null]>(
      "SELECT count(*), max(id) FROM t WHERE who = 'flood'",
    );
    assert.equal(max === null ? 0 : max - 100_000 + 1, n, `${n} flood rows up to ${max}`);
  },
});

Deno.test({
  name: "misbehave: a transaction whose client stopped reading is rolled back by its idle lease; " +
    "its requests queued behind it fail with TX_TIMEOUT, none runs outside the transaction",
  async fn() {
    await using srv = await setup({
      txIdleTimeout: 1000,
      writeStallTimeout: 60_000,
      busyTimeout: 30_000,
    });
    const path = srv.connectOptions.path!;
    await using a = await srv.client();
    const raw = await Raw.open(path);
    try {
      // BEGIN, a write, thousands of 64 KiB reads (never read), then more writes and COMMIT.
      const head = [
        frame([Op.Exec, 2, "BEGIN IMMEDIATE"]),
        frame([Op.Run, 3, "INSERT INTO t (id, who) VALUES (1, 'tx')", null]),
      ];
      const reads = Array.from(
        { length: 3000 },
        (_, i) => frame([Op.Query, 4 + i, "SELECT zeroblob(65536)", null]),
      );
      const tail = [
        frame([Op.Run, 3004, "INSERT INTO t (id, who) VALUES (2, 'tx')", null]),
        frame([Op.Exec, 3005, "COMMIT"]),
      ];
      const sending = raw.write(joined([...head, ...reads, ...tail]));
      // Another writer waits for the transaction, then lands once its lease ends.
      const t0 = performance.now();
      assert.deepEqual(await a.run("INSERT INTO t (id, who) VALUES (100, 'a')"), {
        changes: 1,
        lastInsertRowid: 100,
      });
      const waited = performance.now() - t0;
      assert.ok(waited < 20_000, `the other writer waited ${waited.toFixed(0)} ms`);
      // Now read everything the server answers.
      const replies = new Map<number, Reply>();
      for (;;) {
        const r = await raw.read(30_000) as Reply;
        replies.set(r[0], r);
        if (r[0] === 3005) break;
      }
      await sending;
      assert.deepEqual(replies.get(2)!.slice(0, 2), [2, Status.InTransaction]);
      assert.deepEqual(replies.get(3)!.slice(0, 2), [3, Status.InTransaction]);
      // The reads ran in the transaction until its lease ended; from then on every request
      // fails with TX_TIMEOUT (the client must send ROLLBACK), none runs outside it.
      let expired = 0;
      for (let id = 4; id <= 3005; id++) {
        const r = replies.get(id)!;
        if (expired === 0 && r[1] === Status.InTransaction) continue;
        expired = expired || id;
        assert.equal(
          (r[2] as { code?: string }).code,
          "TX_TIMEOUT",
          `${id}: ${JSON.stringify(r).slice(0, 200)}`,
        );
      }
      assert.ok(expired > 4, "no read ran before the lease ended");
      console.log(`lease ended at request ${expired} of 3005`);
      for (const id of [3004, 3005]) {
        const r = replies.get(id)!;
        assert.equal(r[1] & Status.Error, Status.Error, JSON.stringify(r));
        assert.equal((r[2] as { code: string }).code, "TX_TIMEOUT", JSON.stringify(r));
      }
      assert.deepEqual(await idsOf(a, "tx"), []);
      assert.deepEqual(await idsOf(a, "a"), [100]);
    } finally {
      raw.conn.close();
    }
  },
});

Deno.test({
  name: "misbehave: client processes killed at random moments of their transactions while " +
    "another client writes: no transaction is half there, every acknowledged write is",
  async fn() {
    await using srv = await setup({ txIdleTimeout: 60_000, busyTimeout: 30_000 });
    await using a = await srv.client();
    let stop = false;
    const acked: number[] = [];
    const writing = (async () => {
      for (let id = 1; !stop; id++) {
        await a.run("INSERT INTO t (id, who) VALUES (?, 'a')", [id]);
        acked.push(id);
      }
    })();
    let seed = 7;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    for (let round = 0; round < 2; round++) {
      const children = await Promise.all(
        Array.from(
          { length: 3 },
          (_, i) => spawnChild(srv.connectOptions, `pairs:${(round * 3 + i + 1) * 1_000_000}`),
        ),
      );
      await Promise.all(children.map(async (c) => {
        await delay(50 + rand() * 400);
        await c.kill();
      }));
    }
    // Once the killed clients are gone, the writer is free: a write lands at once.
    await statsUntil(srv.connectOptions, (s) => s.transactions.length === 0, "no transaction left");
    stop = true;
    await writing;
    assert.deepEqual(await idsOf(a, "a"), acked);
    const pairs = await a.values<[number]>("SELECT id FROM t WHERE who = 'pair' ORDER BY id");
    assert.ok(pairs.length >= 12, `only ${pairs.length} rows of the killed clients' transactions`);
    for (let i = 0; i < pairs.length; i += 2) {
      assert.equal(pairs[i][0] % 2, 0, `row ${pairs[i][0]} without the row before it`);
      assert.equal(pairs[i + 1]?.[0], pairs[i][0] + 1, `row ${pairs[i][0]} without its pair`);
    }
    assert.deepEqual(await a.values("PRAGMA integrity_check"), [["ok"]]);
  },
});

Deno.test({
  name: "misbehave: a client that pipelines BEGIN, 200 inserts and COMMIT as separate requests " +
    "and vanishes at once leaves all of them or none, with or without a writer to wait for",
  async fn() {
    await using srv = await setup({ busyTimeout: 30_000 });
    const path = srv.connectOptions.path!;
    await using a = await srv.client();
    await using holder = await srv.client();
    const N = 200;
    const outcomes: number[] = [];
    for (let round = 0; round < 12; round++) {
      const held = round % 2 === 1;
      if (held) await holder.exec("BEGIN IMMEDIATE");
      const base = 1_000_000 * (round + 1);
      const raw = await Raw.open(path);
      const frames = [frame([Op.Exec, 2, "BEGIN IMMEDIATE"])];
      for (let i = 0; i < N; i++) {
        frames.push(
          frame([Op.Run, 3 + i, "INSERT INTO t (id, who) VALUES (?, 'pipe')", [base + i]]),
        );
      }
      frames.push(frame([Op.Exec, 3 + N, "COMMIT"]));
      await raw.write(joined(frames));
      if (round % 3 === 1) await delay(2);
      if (round % 3 === 2) await delay(10);
      raw.conn.close();
      if (held) {
        await delay(20);
        await holder.exec("COMMIT");
      }
      await statsUntil(srv.connectOptions, (s) => s.connections.open <= 3, "gone client closed");
      const [[n]] = await a.values<[number]>(
        "SELECT count(*) FROM t WHERE who = 'pipe' AND id >= ? AND id < ?",
        [base, base + N],
      );
      assert.ok(n === 0 || n === N, `round ${round}: ${n} of ${N} rows of the transaction kept`);
      outcomes.push(n);
      assert.deepEqual(await a.run("INSERT INTO t (id, who) VALUES (?, 'a')", [round + 1]), {
        changes: 1,
        lastInsertRowid: round + 1,
      });
    }
    console.log(`rows kept per round: ${outcomes.join(" ")}`);
  },
});

Deno.test({
  name:
    "misbehave: six kinds of misbehaving clients at once for 3 s beside two well-behaved ones: " +
    "every acknowledged write is there, transfers keep their total, nothing of the others stays",
  async fn() {
    await using srv = await setup({
      maxFrameSize: 1024 * 1024,
      writeStallTimeout: 1000,
      txIdleTimeout: 60_000,
      busyTimeout: 30_000,
    });
    const path = srv.connectOptions.path!;
    await using g1 = await srv.client();
    await using g2 = await srv.client();
    await g1.exec(
      "CREATE TABLE acct (id INTEGER PRIMARY KEY, bal INTEGER NOT NULL);" +
        "INSERT INTO acct SELECT n, 1000 FROM big WHERE n <= 10",
    );
    let stop = false;
    const until = performance.now() + 3000;
    const acked: number[] = [];
    let transfers = 0;
    // 3 s, or longer on a loaded machine until the well-behaved clients made
    // 20 inserts and 20 transfers beside the others (at most 30 s more).
    const going = () =>
      !stop && (performance.now() < until ||
        ((acked.length < 20 || transfers < 20) && performance.now() < until + 30_000));
    const swallow = (p: Promise<unknown>) => p.catch(() => {});
    const counts = new Map<string, number>();
    const count = (k: string) => counts.set(k, (counts.get(k) ?? 0) + 1);
    const oversize = new Uint8Array(4);
    new DataView(oversize.buffer).setUint32(0, 1024 * 1024 + 1);
    const misbehavers = [
      async () => { // half a frame, then gone
        const raw = await Raw.open(path);
        const f = frame([Op.Run, 2, "INSERT INTO t (id, who) VALUES (-1, 'doomed')", null]);
        await raw.write(f.subarray(0, f.length - 2));
        raw.conn.close();
        count("half");
      },
      async () => { // BEGIN and a write, gone without reading
        const raw = await Raw.open(path);
        await raw.write(joined([
          frame([Op.Exec, 2, "BEGIN IMMEDIATE"]),
          frame([Op.Run, 3, "INSERT INTO t (id, who) VALUES (-2, 'doomed')", null]),
        ]));
        raw.conn.close();
        count("tx");
      },
      async () => { // never reads: closed by the write-stall timeout
        const raw = await Raw.open(path);
        const reads = Array.from(
          { length: 200 },
          (_, i) => frame([Op.Query, 2 + i, "SELECT zeroblob(65536)", null]),
        );
        await swallow(raw.write(joined(reads)));
        await swallow(raw.write(joined(reads)));
        await delay(200);
        raw.conn.close();
        count("never-reader");
      },
      async () => { // a cursor, one chunk read, gone
        const raw = await Raw.open(path);
        await raw.write(frame([Op.Iterate, 2, "SELECT * FROM big", null, null]));
        await raw.read(10_000);
        raw.conn.close();
        count("cursor");
      },
      async () => { // garbage after the hello
        const raw = await Raw.open(path);
        await swallow(raw.write(new Uint8Array([0, 0, 0, 5, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1])));
        await raw.read(10_000);
        raw.conn.close();
        count("garbage");
      },
      async () => { // a frame announcing more than maxFrameSize, in a transaction
        const raw = await Raw.open(path);
        await swallow(
          raw.write(
            joined([
              frame([Op.Exec, 2, "BEGIN IMMEDIATE; INSERT INTO t (id, who) VALUES (-3, 'doomed')"]),
              oversize,
            ]),
          ),
        );
        while ((await raw.read(10_000)) !== "EOF");
        raw.conn.close();
        count("oversize");
      },
    ];
    const bad = misbehavers.map(async (m) => {
      while (going()) await m();
    });
    const inserting = (async () => {
      for (let id = 1; going(); id++) {
        await g2.run("INSERT INTO t (id, who) VALUES (?, 'g2')", [id]);
        acked.push(id);
      }
    })();
    const transferring = (async () => {
      while (going()) {
        const from = 1 + (transfers % 10);
        const to = 1 + ((transfers * 7 + 3) % 10);
        await g1.transaction(async (tx) => {
          await tx.run("UPDATE acct SET bal = bal - 5 WHERE id = ?", [from]);
          await tx.run("UPDATE acct SET bal = bal + 5 WHERE id = ?", [to]);
        });
        transfers++;
      }
    })();
    try {
      await Promise.all([inserting, transferring]);
    } finally {
      stop = true;
      await Promise.all(bad);
    }
    console.log(
      `${acked.length} inserts, ${transfers} transfers beside ` +
        [...counts].map(([k, n]) => `${n} ${k}`).join(", "),
    );
    for (const m of ["half", "tx", "never-reader", "cursor", "garbage", "oversize"]) {
      assert.ok((counts.get(m) ?? 0) >= 1, `${m} never ran`);
    }
    assert.ok(
      acked.length >= 20 && transfers >= 20,
      `${acked.length} inserts, ${transfers} transfers`,
    );
    await statsUntil(
      srv.connectOptions,
      (s) => s.connections.open <= 3 && s.transactions.length === 0,
      "misbehavers gone",
    );
    assert.deepEqual(await idsOf(g1, "g2"), acked);
    assert.deepEqual(await idsOf(g1, "doomed"), []);
    assert.deepEqual(await g1.values("SELECT sum(bal), count(*) FROM acct"), [[10_000, 10]]);
    assert.deepEqual(await g1.values("PRAGMA integrity_check"), [["ok"]]);
  },
});

Deno.test({
  name: "misbehave: over TLS, a client that keeps sending and never reads is no longer read " +
    "from, as over plain TCP: the server does not buffer what it sends without bound",
  async fn() {
    await using dir = await tempDir();
    const pem = await makeCertificate(dir.path);
    const server = await serve({
      database: `${dir.path}/a.db`,
      hostname: "127.0.0.1",
      port: 0,
      logLevel: "error",
      tls: { cert: pem.cert, key: pem.key },
    });
    try {
      const port = (server.addr as Deno.NetAddr).port;
      await using good = await connect({
        hostname: "127.0.0.1",
        port,
        max: 1,
        tls: { caCerts: [pem.ca] },
      });
      await good.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)");
      const conn = await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts: [pem.ca] });
      await conn.write(frame([Op.Hello, 1, { version: 1 }]));
      assert.ok((await conn.read(new Uint8Array(4096)) ?? 0) > 0);
      // 100 requests for 64 KiB results (6.4 MiB of replies, past the 4 MiB a connection may
      // have unread), then 1,000 small requests per write, never a reply read.
      await conn.write(
        joined(
          Array.from(
            { length: 100 },
            (_, i) => frame([Op.Query, 2 + i, "SELECT zeroblob(65536)", null]),
          ),
        ),
      );
      const chunk = joined(
        Array.from({ length: 1000 }, (_, i) => frame([Op.Query, 200 + i, "SELECT 1", null])),
      );
      let sent = 0;
      let stop = false;
      const LIMIT = 256 * 1024 * 1024;
      const writing = (async () => {
        while (!stop && sent < LIMIT) {
          await conn.write(chunk);
          sent += chunk.length;
        }
      })().catch(() => {});
      // Meanwhile the good client is served.
      for (let id = 1; id <= 20; id++) {
        assert.deepEqual(await good.run("INSERT INTO t (id) VALUES (?)", [id]), {
          changes: 1,
          lastInsertRowid: id,
        });
        await delay(100);
      }
      const sentThen = sent;
      await delay(500);
      const mib = (n: number) => (n / 1024 / 1024).toFixed(1);
      console.log(`TLS never-reader: ${mib(sent)} MiB of requests taken by the server in ~2.5 s`);
      // Plain TCP takes ~6 MiB (4096 queued requests and the socket buffers) before the
      // client's writes block; without backpressure over TLS the server took 200+ MiB a second.
      assert.ok(
        sent < 32 * 1024 * 1024,
        `the server took ${mib(sent)} MiB from a client that never reads`,
      );
      assert.equal(sent, sentThen, "the server kept reading from a client that never reads");
      // Once the client reads its replies, the server reads its requests again.
      const buf = new Uint8Array(1 << 20);
      let replyBytes = 0;
      const t0 = performance.now();
      while (sent < sentThen + 4 * chunk.length && performance.now() - t0 < 30_000) {
        replyBytes += await conn.read(buf) ?? 0;
      }
      assert.ok(
        sent >= sentThen + 4 * chunk.length,
        `after ${mib(replyBytes)} MiB of replies read`,
      );
      stop = true;
      conn.close();
      await writing;
      assert.deepEqual(await good.values("SELECT count(*) FROM t"), [[20]]);
    } finally {
      await server.shutdown();
    }
  },
});

Deno.test({
  name: "misbehave: over TLS, writes waiting for the writer behind another client's " +
    "transaction keep their connection and land (the server's check for a vanished client)",
  async fn() {
    await using srv = await setup({ transport: "tls", txIdleTimeout: 60_000 });
    await using holder = await srv.client();
    await using b = await srv.client();
    await holder.exec("BEGIN IMMEDIATE");
    const waiting = Array.from(
      { length: 20 },
      (_, i) =>
        b.run("INSERT INTO t (id, who) VALUES (?, 'b')", [i + 1]).then(
          (r) => r,
          (e) => e as Error,
        ),
    );
    // The server checks every 100 ms whether a client whose write waits is gone: several times here.
    await statsUntil(srv.connectOptions, (s) => s.writer.waiting === 1, "b waits for the writer");
    await delay(500);
    await holder.exec("COMMIT");
    const results = await Promise.all(waiting);
    results.forEach((r, i) =>
      assert.deepEqual(r, { changes: 1, lastInsertRowid: i + 1 }, String(r))
    );
    assert.deepEqual(await idsOf(b, "b"), Array.from({ length: 20 }, (_, i) => i + 1));
  },
});
