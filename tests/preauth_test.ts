/**
 * Remote (TCP) hardening on real servers: connections that never send their
 * hello hold handshake slots, not connection slots (`maxConnections`), and
 * are closed after `helloTimeout`; past `maxHandshakes` new ones wait in the
 * listen backlog, and past `maxHandshakesPerAddress` (per TCP address other
 * than loopback) they are closed at once; accepted TCP connections have keepalive on; a cursor not advanced for
 * `cursorIdleTimeout` is closed and its snapshot released; `stats` does not
 * report a transaction the engine rolled back; token warnings; a refused
 * token answered only after `AUTH_REFUSAL_DELAY_MS`, and logged by reason.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { connect, ProtocolError, SqliteError } from "../client.ts";
import type { Link } from "../client/link.ts";
import { Op, type StatsReport } from "../protocol/messages.ts";
import { serve } from "../server.ts";
import { MAX_TOKEN_BYTES, tokenFileWarning, TokenGate } from "../server/auth.ts";
import { Logger } from "../server/log.ts";
import { AUTH_REFUSAL_DELAY_MS } from "../server/session.ts";
import { FrameChannel } from "../transport/frame_channel.ts";
import { delay, openTestLink, startServer, tempDir, type TestServer, within } from "./_helpers.ts";
import { spawnServer, stop } from "./_logged_server.ts";

const ENGINES = ["ffi", "node"] as const;
const TOKEN = "s3cr3t-token-XYZ-0123456789";

function link(srv: TestServer): Promise<Link & AsyncDisposable> {
  return openTestLink({ ...srv.connectOptions, token: TOKEN });
}

/** True when the server closed `conn` (EOF or reset) within `ms`, without sending a byte. */
async function closedSilently(conn: Deno.Conn, ms: number): Promise<boolean> {
  const buf = new Uint8Array(64);
  const read = conn.read(buf).catch(() => null);
  const r = await within(read, ms);
  if (r === "timeout") {
    conn.close();
    await read;
    return false;
  }
  return r === null;
}

async function stats(srv: TestServer): Promise<StatsReport> {
  await using l = await link(srv);
  return await l.request(Op.Stats, []) as StatsReport;
}

Deno.test("connections that never send their hello do not use --max-connections: a client with the token is served", async () => {
  await using srv = await startServer({ transport: "tcp", maxConnections: 3, token: TOKEN });
  const { hostname, port } = srv.connectOptions as { hostname: string; port: number };
  const silent: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 10; i++) silent.push(await Deno.connect({ hostname, port }));
    await delay(50);
    // Was: TOO_MANY_CONNECTIONS while the silent ones waited for their frame timeout.
    await using db = await connect({ ...srv.connectOptions, token: TOKEN });
    assert.deepEqual(await db.values("SELECT 1"), [[1]]);
    const s = await stats(srv);
    assert.equal(s.connections.open, 2); // db, and the link asking
    assert.equal(s.connections.handshaking, 10);
    assert.equal(s.connections.refused, 0);
  } finally {
    for (const c of silent) c.close();
  }
});

Deno.test("--max-connections still counts accepted hellos: one more is refused with TOO_MANY_CONNECTIONS", async () => {
  await using srv = await startServer({ transport: "tcp", maxConnections: 2, token: TOKEN });
  await using a = await connect({ ...srv.connectOptions, token: TOKEN, max: 1 });
  await using b = await connect({ ...srv.connectOptions, token: TOKEN, max: 1 });
  await a.values("SELECT 1");
  await b.values("SELECT 1");
  await assert.rejects(
    async () => {
      await using c = await connect({ ...srv.connectOptions, token: TOKEN, max: 1 });
      await c.values("SELECT 1");
    },
    (err: unknown) => err instanceof ProtocolError && err.code === "TOO_MANY_CONNECTIONS",
  );
});

Deno.test("a connection without a hello is closed after helloTimeout, not frameTimeout", async () => {
  await using srv = await startServer({ transport: "tcp", helloTimeout: 200, frameTimeout: 10000 });
  const { hostname, port } = srv.connectOptions as { hostname: string; port: number };
  const conn = await Deno.connect({ hostname, port });
  const t0 = performance.now();
  const buf = new Uint8Array(4096);
  let got = 0;
  const reading = (async () => {
    for (let n; (n = await conn.read(buf.subarray(got)).catch(() => null)) !== null;) got += n;
  })();
  assert.notEqual(await within(reading, 3000), "timeout", "not closed within 3 s");
  const ms = performance.now() - t0;
  conn.close();
  assert.ok(ms >= 150 && ms < 2500, `closed after ${ms.toFixed(0)} ms`);
  assert.match(
    new TextDecoder().decode(buf.subarray(0, got)),
    /no hello within 200 ms \(--hello-timeout\)/,
  );
});

Deno.test("past maxHandshakes new connections wait in the listen backlog and are served once a slot frees", async () => {
  await using srv = await startServer({ maxHandshakes: 4, helloTimeout: 5000 });
  const path = srv.connectOptions.path!;
  const silent: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 4; i++) silent.push(await Deno.connect({ transport: "unix", path }));
    await delay(50);
    // The fifth is neither accepted nor closed: its hello waits in the backlog.
    const extra = await Deno.connect({ transport: "unix", path });
    assert.equal(await closedSilently(extra, 300), false, "the fifth was closed"); // (closes it)
    const client = connect({ ...srv.connectOptions, max: 1 });
    assert.equal(await within(client, 300), "timeout", "a client was served past the limit");
    // A handshake slot frees as soon as a hello is accepted, or its connection closes.
    silent.pop()!.close();
    const db = await within(client, 3000);
    assert.notEqual(db, "timeout", "the waiting client was not served once slots freed");
    await using served = db as Awaited<typeof client>;
    assert.deepEqual(await served.values("SELECT 2"), [[2]]);
    const s = await stats(srv);
    assert.equal(s.connections.dropped, 0);
    assert.equal(s.connections.handshaking, 3);
  } finally {
    for (const c of silent) c.close();
  }
});

/** A non-loopback IPv4 address of this machine, or `null`. */
function lanAddress(): string | null {
  for (const i of Deno.networkInterfaces()) {
    if (i.family === "IPv4" && !i.address.startsWith("127.")) return i.address;
  }
  return null;
}

Deno.test({
  name: "maxHandshakesPerAddress bounds silent connections from one non-loopback address only",
  ignore: lanAddress() === null,
  async fn() {
    const lan = lanAddress()!;
    const dir = await Deno.makeTempDir();
    await using server = await serve({
      database: `${dir}/d.db`,
      hostname: "0.0.0.0",
      port: 0,
      token: TOKEN,
      maxHandshakesPerAddress: 3,
      logLevel: "error",
    });
    const port = (server.addr as { port: number }).port;
    const silent: Deno.Conn[] = [];
    try {
      for (let i = 0; i < 3; i++) silent.push(await Deno.connect({ hostname: lan, port }));
      // Loopback is not limited per address.
      for (let i = 0; i < 5; i++) silent.push(await Deno.connect({ hostname: "127.0.0.1", port }));
      await delay(50);
      const extra = await Deno.connect({ hostname: lan, port });
      assert.equal(await closedSilently(extra, 1000), true, "a fourth from one address was kept");
      extra.close();
      const loop = await Deno.connect({ hostname: "127.0.0.1", port });
      assert.equal(await closedSilently(loop, 300), false, "loopback was limited per address");
      // A client with the token from that address is still served once it says hello.
      silent.shift()!.close();
      await delay(50);
      await using db = await connect({ hostname: lan, port, token: TOKEN, max: 1 });
      assert.deepEqual(await db.values("SELECT 2"), [[2]]);
    } finally {
      for (const c of silent) c.close();
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "accepted TCP connections have keepalive on (a vanished host is noticed)",
  ignore: Deno.build.os !== "linux",
  async fn() {
    await using srv = await startServer({ transport: "tcp" });
    const { port } = srv.connectOptions as { port: number };
    await using db = await connect({ ...srv.connectOptions, token: TOKEN, max: 1 });
    await db.values("SELECT 1");
    let out = "";
    // Right after a reply the timer shown may be the retransmission one ("on").
    for (let i = 0; i < 20 && !/keepalive/.test(out); i++) {
      try {
        const r = await new Deno.Command("ss", {
          args: ["-tnoH", "state", "established", `( sport = :${port} )`],
          stdout: "piped",
          stderr: "null",
        }).output();
        out = new TextDecoder().decode(r.stdout);
      } catch {
        return; // no ss here
      }
      if (!/keepalive/.test(out)) await delay(100);
    }
    assert.match(out, /timer:\(keepalive,/, out);
  },
});

Deno.test("a FrameChannel without largeReads keeps reading 4 KiB at a time", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/s.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  try {
    const client = await Deno.connect({ transport: "unix", path });
    const conn = await listener.accept();
    const sizes = new Set<number>();
    const recording = {
      read: (b: Uint8Array) => {
        sizes.add(b.length);
        return conn.read(b);
      },
      write: (b: Uint8Array) => conn.write(b),
      close: () => conn.close(),
    };
    const outbox = { size: 0, take: () => new Uint8Array(0) };
    const handler = { onFrame: () => {}, onReadEnd: () => {}, onDrain: () => {} };
    const channel = new FrameChannel(recording as unknown as Deno.Conn, 1 << 20, outbox, handler);
    channel.largeReads = false;
    const loop = channel.readLoop();
    const payload = new Uint8Array(4 + 60000);
    new DataView(payload.buffer).setUint32(0, 60000);
    await client.write(payload);
    await delay(50);
    client.close();
    await loop;
    channel.close();
    assert.deepEqual([...sizes], [4096]);
  } finally {
    listener.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tokens longer than MAX_TOKEN_BYTES are refused at start, with the limit named", () => {
  new TokenGate("x".repeat(MAX_TOKEN_BYTES));
  assert.throws(
    () => new TokenGate("é".repeat(MAX_TOKEN_BYTES / 2 + 1)),
    (err: Error) =>
      err instanceof TypeError &&
      err.message === `Invalid option "token": 1026 bytes is longer than 1024 (UTF-8)`,
  );
});

Deno.test("a token file readable by group or others draws a warning; 0600 does not", async () => {
  if (Deno.build.os === "windows") return;
  const path = await Deno.makeTempFile();
  try {
    await Deno.writeTextFile(path, TOKEN);
    await Deno.chmod(path, 0o644);
    assert.match(tokenFileWarning(path)!, /is readable by every user \(mode 0644\).*chmod 600/);
    await Deno.chmod(path, 0o640);
    assert.match(tokenFileWarning(path)!, /is readable by its group \(mode 0640\)/);
    await Deno.chmod(path, 0o600);
    assert.equal(tokenFileWarning(path), null);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("server command line warns at start about a world-readable --token-file", async () => {
  if (Deno.build.os === "windows") return;
  const dir = await Deno.makeTempDir();
  const file = `${dir}/tok.txt`;
  await Deno.writeTextFile(file, TOKEN);
  await Deno.chmod(file, 0o644);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      fileURLToPath(new URL("../server.ts", import.meta.url)),
      "--db",
      `${dir}/d.db`,
      "--tcp",
      "127.0.0.1:0",
      "--token-file",
      file,
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  try {
    let err = "";
    const found = (async () => {
      while (!err.includes("readable by every user")) {
        const { value, done } = await reader.read();
        if (done) break;
        err += value;
      }
    })();
    assert.notEqual(await within(found, 15000), "timeout", err);
    // A line of the log, as the server's other warnings.
    assert.match(
      err,
      /^\d{4}-\d\d-\d\dT\S+Z warn {2}netsqlite: token file ".*tok\.txt" is readable by every user/m,
    );
  } finally {
    child.kill("SIGTERM"); // also when an assertion failed, or the wait never ends
    await reader.cancel();
    await child.stdout.cancel();
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a short token on a network address is warned about at start; loopback is not", async () => {
  const dir = await Deno.makeTempDir();
  const lines: string[] = [];
  const original = console.error;
  console.error = (line: string) => lines.push(line);
  try {
    await (await serve({ database: `${dir}/a.db`, hostname: "0.0.0.0", port: 0, token: "short" }))
      .shutdown();
    await (await serve({ database: `${dir}/b.db`, hostname: "127.0.0.1", port: 0, token: "short" }))
      .shutdown();
  } finally {
    console.error = original;
    await Deno.remove(dir, { recursive: true });
  }
  const warned = lines.filter((l) => l.includes("the token is 5 characters long"));
  assert.equal(warned.length, 1, lines.join("\n"));
  assert.match(warned[0], /warn +netsqlite: the token is 5 characters long, on tcp:0\.0\.0\.0:\d+/);
});

Deno.test("a socket every user may connect to without a token is warned about at start; a group's, or one with a token, is not", async () => {
  const dir = await Deno.makeTempDir();
  const lines: string[] = [];
  const original = console.error;
  console.error = (line: string) => lines.push(line);
  try {
    const cases: [string, number, string | null][] = [
      ["a", 0o777, null],
      ["b", 0o666, null],
      ["c", 0o660, null],
      ["d", 0o600, null],
      ["e", 0o777, "a-long-enough-token"],
    ];
    for (const [name, socketMode, token] of cases) {
      const path = `${dir}/${name}.sock`;
      await (await serve({ database: `${dir}/${name}.db`, path, socketMode, token })).shutdown();
    }
  } finally {
    console.error = original;
    await Deno.remove(dir, { recursive: true });
  }
  const warned = lines.filter((l) => l.includes("any local user can connect"));
  assert.equal(warned.length, 2, lines.join("\n"));
  assert.match(
    warned[0],
    /^\S+ warn {2}netsqlite: the socket unix:.*\/a\.sock is writable by every user \(--socket-mode 777\) and no token is set: any local user can connect and read or change the whole database; set a token \(--token-file or NETSQLITE_TOKEN; serve\(\{ token \}\)\), or use --socket-mode 660 and a trusted group$/,
  );
  assert.match(warned[1], /\/b\.sock is writable by every user \(--socket-mode 666\)/);
});

Deno.test("a throttled warning counts the distinct addresses held back and names the most frequent", () => {
  const lines: string[] = [];
  const log = new Logger("warn", (l) => lines.push(l));
  log.warnThrottled("auth", "refused a connection from 10.0.0.9: wrong token", 60000, "10.0.0.9");
  for (let i = 0; i < 40; i++) log.warnThrottled("auth", "x", 60000, "10.0.0.5");
  for (let i = 0; i < 3; i++) log.warnThrottled("auth", "x", 60000, "10.0.0.6");
  log.warnThrottled("auth", "x", 60000, "10.0.0.7");
  log.warnThrottled("auth", "x", 60000, "10.0.0.8");
  assert.equal(lines.length, 1);
  // The next line, once the interval passed (0 here), carries the summary.
  log.warnThrottled("auth", "refused a connection from 10.0.0.1: wrong token", 0, "10.0.0.1");
  assert.equal(lines.length, 2);
  assert.match(
    lines[1],
    /refused a connection from 10\.0\.0\.1: wrong token \(and 45 more like it since the last such line, from 4 addresses: 10\.0\.0\.5 ×40, 10\.0\.0\.6 ×3, 10\.0\.0\.[78] ×1, \.\.\.\)$/,
  );
});

for (const engine of ENGINES) {
  Deno.test(`${engine}: a cursor not advanced for cursorIdleTimeout is closed, its snapshot released, its next next() says why`, async () => {
    // 1 s: the kept cursor below is advanced every 50 ms or so; with 300 ms
    // and every 100 ms, a slow round trip on a loaded machine could close it.
    await using srv = await startServer({ engine, cursorIdleTimeout: 1000 });
    await using a = await link(srv);
    await using b = await link(srv);
    await a.request(Op.Exec, [
      "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);" +
      "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 6000) " +
      "INSERT INTO t(b) SELECT randomblob(200) FROM c;",
    ]);
    // One cursor idles, holding a snapshot older than the next write.
    const [idle] = await b.request(Op.Iterate, ["SELECT id, b FROM t", null, null]);
    await b.request(Op.Next, [idle]);
    await a.request(Op.Run, ["INSERT INTO t(b) VALUES (x'02')", null, null]);
    const held = await a.request(Op.Checkpoint, ["passive"]);
    assert.ok(held.checkpointed < held.walFrames, `idle snapshot ignored: ${JSON.stringify(held)}`);
    // Another, advanced every 50 ms, stays open until the idle one was
    // closed (stats counts one cursor left) and past the timeout.
    const [kept] = await b.request(Op.Iterate, ["SELECT id, b FROM t", null, null]);
    const keptAt = performance.now();
    for (let i = 0; i < 200; i++) {
      const [, done] = await b.request(Op.Next, [kept]);
      assert.equal(done, false);
      if (performance.now() - keptAt > 1200 && (await stats(srv)).cursors === 1) break;
      await delay(50);
    }
    assert.equal((await stats(srv)).cursors, 1, "the idle cursor was closed, the kept one not");
    const after = await a.request(Op.Checkpoint, ["passive"]);
    assert.equal(after.busy, false);
    assert.equal(after.checkpointed, after.walFrames, JSON.stringify(after));
    await assert.rejects(b.request(Op.Next, [idle]), (err: unknown) => {
      assert.ok(err instanceof SqliteError, String(err));
      assert.equal(err.code, "CURSOR_CLOSED");
      assert.match(
        err.message,
        new RegExp(
          `^Cursor ${idle} was closed: it was not advanced for 1000 ms \\(--cursor-idle-timeout\\)`,
        ),
      );
      return true;
    });
    // The kept one reads on; closing the idled one (a client cleaning up) is not an error.
    const [, done] = await b.request(Op.Next, [kept]);
    assert.equal(done, false);
    await b.request(Op.CloseCursor, [kept]);
    await b.request(Op.CloseCursor, [idle]);
    const truncated = await a.request(Op.Checkpoint, ["truncate"]);
    assert.equal(truncated.walBytesAfter, 0);
  });

  Deno.test(`${engine}: stats does not report a transaction the server rolled back at --tx-idle-timeout`, async () => {
    await using srv = await startServer({ engine, txIdleTimeout: 200, logLevel: "error" });
    await using a = await link(srv);
    await a.request(Op.Exec, ["CREATE TABLE t(x)"]);
    await a.request(Op.Exec, ["BEGIN"]);
    await a.request(Op.Run, ["INSERT INTO t VALUES (1)", null, null]);
    const during = await stats(srv);
    assert.equal(during.transactions.length, 1);
    await delay(500);
    const after = await stats(srv);
    assert.deepEqual(after.transactions, [], JSON.stringify(after.transactions));
    // The client still ends it with ROLLBACK; then it can begin again, and stats see that one.
    await a.request(Op.Exec, ["ROLLBACK"]).catch(() => {});
    await a.request(Op.Exec, ["BEGIN"]);
    await a.request(Op.Run, ["INSERT INTO t VALUES (2)", null, null]);
    assert.equal((await stats(srv)).transactions.length, 1);
    await a.request(Op.Exec, ["ROLLBACK"]);
  });
}

Deno.test("a refused token is answered after AUTH_REFUSAL_DELAY_MS; an accepted client does not wait for it", async () => {
  await using srv = await startServer({ transport: "tcp", token: TOKEN, logLevel: "error" });
  await using db = await connect({ ...srv.connectOptions, token: TOKEN, max: 1 });
  const start = performance.now();
  const refused = ["guess", undefined, "guess-2"].map((token) =>
    connect({ ...srv.connectOptions, token }).then(
      () => assert.fail("a wrong token was accepted"),
      (err: ProtocolError) => {
        assert.equal(err.code, "AUTH");
        return performance.now() - start;
      },
    )
  );
  // Served meanwhile, on its open connection and on a new one.
  assert.deepEqual(await db.values("SELECT 1"), [[1]]);
  await using other = await connect({ ...srv.connectOptions, token: TOKEN, max: 1 });
  assert.deepEqual(await other.values("SELECT 2"), [[2]]);
  const served = performance.now() - start;
  const answered = await Promise.all(refused);
  // A timer may fire a millisecond or so early; unslowed, a refusal takes a few ms.
  for (const ms of answered) assert.ok(ms >= AUTH_REFUSAL_DELAY_MS - 10, `refused after ${ms} ms`);
  assert.ok(served < Math.min(...answered), `served after ${served} ms, refused after ${answered}`);
});

Deno.test("refused hellos are logged by reason: no token and wrong token are counted apart", async () => {
  await using dir = await tempDir();
  const sock = `${dir.path}/s.sock`;
  const server = spawnServer(`${dir.path}/a.db`, sock, ["--token", TOKEN]);
  try {
    // Up once a client with the token is served.
    for (let i = 0;; i++) {
      const db = await connect({ path: sock, token: TOKEN }).catch((err) => {
        if (i === 300) throw err;
        return null;
      });
      if (db !== null) {
        await db.close();
        break;
      }
      await delay(50);
    }
    // Three clients without a token and one with a wrong one, within the log's 1 s interval.
    await Promise.all(
      [undefined, undefined, undefined, "guess"].map((token) =>
        assert.rejects(connect({ path: sock, token }), (err: ProtocolError) => err.code === "AUTH")
      ),
    );
  } finally {
    await stop(server);
  }
  const lines = server.log().split("\n").filter((l) => l.includes("refused a connection"));
  const none = lines.filter((l) => /: no token( \(|$)/.test(l));
  const wrong = lines.filter((l) => / wrong token( \(|$)/.test(l));
  assert.equal(none.length + wrong.length, lines.length, lines.join("\n"));
  assert.equal(wrong.length, 1, lines.join("\n"));
  assert.doesNotMatch(wrong[0], /more like it/, "a missing token was counted as a wrong one");
  // The first written, the other two counted in the line written when the interval ends.
  assert.equal(none.length, 2, lines.join("\n"));
  assert.match(none[1], /\(and 1 more like it since the last such line/);
});
