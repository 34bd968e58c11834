/**
 * TCP and TLS socket behaviour seen from outside: no delayed-ACK stall over
 * TLS (TCP_NODELAY on both ends), keepalive on both ends, and a client
 * killed with SIGKILL found gone at once (its running script stopped).
 * Real servers, real client processes, certificates made by openssl.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { connect, type ConnectOptions, type Queryable } from "../client.ts";
import { MessageEncoder } from "../protocol/codec.ts";
import { Op, PROTOCOL_VERSION } from "../protocol/messages.ts";
import { serve, type Server } from "../server.ts";
import { MAX_TOKEN_BYTES } from "../server/auth.ts";
import { MAX_TOKEN_BYTES as CLIENT_MAX_TOKEN_BYTES } from "../client/options.ts";
import {
  CERTIFICATE_EXPIRY_WARNING_DAYS,
  certificateWarning,
  TlsListener,
} from "../transport/tls_listener.ts";
import { X509Certificate } from "node:crypto";
import { spawnClientProcess } from "./_client_process.ts";
import { delay, tempDir } from "./_helpers.ts";
import { datedCertificate, makeCertificate as makeCertificateFor } from "./_certs.ts";

const HAS_OPENSSL = await new Deno.Command("openssl", { args: ["version"], stdout: "null" })
  .output().then((o) => o.success, () => false);
const HAS_SS = await new Deno.Command("ss", { args: ["-V"], stdout: "null" })
  .output().then((o) => o.success, () => false);

interface Setup extends AsyncDisposable {
  server: Server;
  port: number;
  options: ConnectOptions;
}

/** A server on 127.0.0.1 with TLS (or plain TCP), and the options to reach it. */
async function start(tls: boolean): Promise<Setup> {
  const dir = await tempDir();
  const pem = tls ? await makeCertificate(dir.path) : null;
  const server = await serve({
    database: `${dir.path}/a.db`,
    hostname: "127.0.0.1",
    port: 0,
    logLevel: "error",
    ...(pem !== null ? { tls: { cert: pem.cert, key: pem.key } } : {}),
  });
  const port = (server.addr as Deno.NetAddr).port;
  return {
    server,
    port,
    options: {
      hostname: "127.0.0.1",
      port,
      max: 1,
      ...(pem !== null ? { tls: { caCerts: [pem.ca] } } : {}),
    },
    async [Symbol.asyncDispose]() {
      await server.shutdown();
      await dir[Symbol.asyncDispose]();
    },
  };
}

/** A certificate for 127.0.0.1 and localhost, or for `names`. */
const makeCertificate = (dir: string, names = "IP:127.0.0.1,DNS:localhost") =>
  makeCertificateFor(dir, names);

Deno.test({
  name: "A 20 KB value over TLS makes its round trip without the 40 ms delayed-ACK stall",
  ignore: !HAS_OPENSSL,
  async fn() {
    await using s = await start(true);
    await using db = await connect(s.options);
    const blob = "x".repeat(20_000);
    await db.get("SELECT ? AS v", [blob]); // handshake and warm-up
    const round = async (value: string, inflight: number): Promise<number> => {
      const t0 = performance.now();
      const rows = await Promise.all(
        Array.from({ length: inflight }, () => db.get<{ v: string }>("SELECT ? AS v", [value])),
      );
      const ms = performance.now() - t0;
      assert.equal(rows[0]!.v.length, value.length);
      return ms;
    };
    // With Nagle on either end a 20 KB round waits for the peer's delayed
    // ACK (40 ms at least on Linux): every round takes 40–90 ms; without,
    // about 1 ms. A loaded machine slows rounds too, but not every one: the
    // test takes the quickest of 16 rounds, less the quickest of 16 rounds
    // of one small value made alongside (a lone small segment each way,
    // which Nagle never holds back: what the machine's load costs any
    // round), and fails when that is 25 ms or more in three attempts in a
    // row (load does not last through all of them, a stall does).
    for (const inflight of [1, 4]) {
      const tries: string[] = [];
      for (let attempt = 0; attempt < 3; attempt++) {
        let small = Infinity;
        let large = Infinity;
        for (let i = 0; i < 16; i++) {
          small = Math.min(small, await round("x", 1));
          large = Math.min(large, await round(blob, inflight));
        }
        tries.push(`${large.toFixed(1)} ms (a small value's ${small.toFixed(1)} ms)`);
        if (large - small < 25) break;
        assert.ok(
          attempt < 2,
          `stalled: ${inflight} in flight, quickest rounds ${tries.join(", ")}`,
        );
      }
      console.log(`${inflight} in flight, quickest 20 KB round: ${tries.join(", ")}`);
    }
  },
});

/** `ss` lines of established TCP sockets with `port` at either end, with their timers. */
async function sockets(port: number): Promise<string[]> {
  const out = await new Deno.Command("ss", {
    args: ["-tnoH", "state", "established", `( sport = :${port} or dport = :${port} )`],
    stdout: "piped",
  }).output();
  return new TextDecoder().decode(out.stdout).split("\n").filter((l) => l.trim() !== "");
}

for (const tls of [false, true]) {
  const kind = tls ? "TLS" : "TCP";
  Deno.test({
    name: `${kind} connections have keepalive on both ends (server and client sockets)`,
    ignore: !HAS_SS || (tls && !HAS_OPENSSL),
    async fn() {
      await using s = await start(tls);
      await using db = await connect(s.options);
      assert.deepEqual(await db.values("SELECT 1"), [[1]]);
      // Once every byte is acknowledged, the retransmission timer gives way to keepalive's.
      let lines: string[] = [];
      for (let i = 0; i < 20; i++) {
        await delay(50);
        lines = await sockets(s.port);
        if (!lines.some((l) => /timer:\(on,/.test(l))) break;
      }
      const server = lines.filter((l) => new RegExp(`127\\.0\\.0\\.1:${s.port}\\s+127`).test(l));
      const client = lines.filter((l) =>
        new RegExp(`127\\.0\\.0\\.1:${s.port}\\s+users`).test(l) ||
        new RegExp(`\\s127\\.0\\.0\\.1:${s.port}(\\s|$)`).test(l) && !server.includes(l)
      );
      assert.equal(server.length, 1, lines.join("\n"));
      assert.equal(client.length, 1, lines.join("\n"));
      assert.match(server[0], /timer:\(keepalive/, `server socket: ${server[0]}`);
      assert.match(client[0], /timer:\(keepalive/, `client socket: ${client[0]}`);
    },
  });
}

/** 4,000 statements of a few ms each: many seconds, unless stopped. */
const SLOW_SCRIPT = Array.from(
  { length: 4000 },
  () =>
    "INSERT INTO t SELECT count(*) FROM (WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL " +
    "SELECT i + 1 FROM c WHERE i < 20000) SELECT i FROM c);",
).join("\n");

/** Waits until `SELECT count(*) FROM t` exceeds 0, then returns it. */
async function rowsOnceStarted(db: Queryable): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const [[n]] = await db.values<[number]>("SELECT count(*) FROM t");
    if (n > 0) return n;
    await delay(25);
  }
  throw new Error("the script never started");
}

/** Asserts that the script stopped: no row added for a while, and far fewer than all. */
async function assertStopped(db: Queryable): Promise<void> {
  await delay(1000);
  const [[a]] = await db.values<[number]>("SELECT count(*) FROM t");
  await delay(600);
  const [[b]] = await db.values<[number]>("SELECT count(*) FROM t");
  assert.equal(b, a, `the script still runs: ${a} then ${b} rows`);
  assert.ok(b < 4000, `the script ran to its end: ${b} rows`);
  // The writer is free for others.
  await db.run("INSERT INTO t VALUES (-1)");
}

Deno.test({
  name:
    "A client killed (SIGKILL) during a long exec script over TLS is found gone: the script stops",
  ignore: !HAS_OPENSSL,
  async fn() {
    await using s = await start(true);
    await using db = await connect(s.options);
    await db.exec("CREATE TABLE t (n)");
    await using child = await spawnClientProcess(s.options);
    child.exec(SLOW_SCRIPT).catch(() => {}); // never answered: the process is killed
    await rowsOnceStarted(db);
    await child.kill();
    await assertStopped(db);
  },
});

Deno.test("A client killed (SIGKILL) with unread data over TCP (the kernel resets) is found gone: the script stops", async () => {
  await using s = await start(false);
  await using db = await connect(s.options);
  await db.exec("CREATE TABLE t (n)");
  // A raw client: it sends its hello and the script, and never reads the
  // hello's reply, so its kernel answers the kill with a reset, not a FIN.
  const encoder = new MessageEncoder(64 * 1024 * 1024);
  encoder.append([Op.Hello, 1, { version: PROTOCOL_VERSION }]);
  encoder.append([Op.Exec, 2, SLOW_SCRIPT]);
  const bytes = encoder.take();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `const conn = await Deno.connect({ hostname: "127.0.0.1", port: ${s.port} });
      const bytes = new Uint8Array(await new Response(Deno.stdin.readable).arrayBuffer());
      for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
      console.log("sent");
      setInterval(() => {}, 1000); // alive until killed`,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(bytes);
  await writer.close();
  const reader = child.stdout.getReader();
  await reader.read(); // "sent"
  reader.releaseLock();
  try {
    await rowsOnceStarted(db);
  } finally {
    child.kill("SIGKILL");
    await child.status;
    await child.stdout.cancel();
  }
  await assertStopped(db);
});

Deno.test("connect() refuses a token longer than a server accepts with a TypeError naming the limit", async () => {
  assert.equal(CLIENT_MAX_TOKEN_BYTES, MAX_TOKEN_BYTES);
  const token = "t".repeat(MAX_TOKEN_BYTES);
  await using dir = await tempDir();
  await using server = await serve({
    database: `${dir.path}/a.db`,
    hostname: "127.0.0.1",
    port: 0,
    logLevel: "error",
    token,
  });
  const port = (server.addr as Deno.NetAddr).port;
  {
    await using db = await connect({ hostname: "127.0.0.1", port, token, max: 1 });
    assert.deepEqual(await db.values("SELECT 1"), [[1]]);
  }
  // 1,023 ASCII characters and one of two bytes: 1,025 bytes.
  for (const long of [token + "t", "t".repeat(MAX_TOKEN_BYTES - 1) + "é", "x".repeat(5000)]) {
    const bytes = new TextEncoder().encode(long).length;
    await assert.rejects(
      connect({ hostname: "127.0.0.1", port, token: long, max: 1 }),
      (err: Error) => {
        assert.equal(err.name, "TypeError");
        assert.equal(
          err.message,
          `Invalid option "token": ${bytes} bytes is longer than a server accepts (1024, UTF-8)`,
        );
        return true;
      },
    );
  }
  // An empty token: a server never has one (and autostart would pass it on).
  await assert.rejects(connect({ hostname: "127.0.0.1", port, token: "", max: 1 }), {
    name: "TypeError",
    message:
      /^Invalid option "token": it is empty; pass the server's token, or leave the option out/,
  });
});

Deno.test({
  name: "A TLS client says what to do with a certificate that does not name the host",
  ignore: !HAS_OPENSSL,
  async fn() {
    await using dir = await tempDir();
    const { ca, cert, key } = await makeCertificate(dir.path, "DNS:other.example");
    await using server = await serve({
      database: `${dir.path}/a.db`,
      hostname: "127.0.0.1",
      port: 0,
      logLevel: "error",
      tls: { cert, key },
    });
    const port = (server.addr as Deno.NetAddr).port;
    await assert.rejects(
      connect({ hostname: "127.0.0.1", port, tls: { caCerts: [ca] }, max: 1 }),
      (err: Error) => {
        assert.equal(err.name, "ConnectionError");
        assert.match(
          err.message,
          /with TLS: .*\(the server's certificate does not name "127\.0\.0\.1": connect with a host name the certificate names, or make it with -addext subjectAltName=/,
        );
        return true;
      },
    );
  },
});

Deno.test("serve() itself warns once that a token on a network address without TLS crosses in clear text", async () => {
  await using dir = await tempDir();
  const server = new URL("../server.ts", import.meta.url).href;
  const run = async (tls: boolean) => {
    const pem = tls ? await makeCertificate(dir.path) : null;
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `import { serve } from ${JSON.stringify(server)};
        const s = await serve({ database: ${JSON.stringify(`${dir.path}/${tls}.db`)},
          hostname: "0.0.0.0", port: 0, token: "abcdefghijklmnopqrstuvwxyz",
          tls: ${pem === null ? "null" : JSON.stringify({ cert: pem.cert, key: pem.key })} });
        await s.shutdown();`,
      ],
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    return new TextDecoder().decode(out.stderr).match(/in clear text/g)?.length ?? 0;
  };
  assert.equal(await run(false), 1);
  if (HAS_OPENSSL) assert.equal(await run(true), 0);
});

Deno.test({
  name:
    "A TLS server closes the socket of a peer that never sends its ClientHello after helloTimeout",
  ignore: !HAS_OPENSSL,
  async fn() {
    await using dir = await tempDir();
    const { cert, key } = await makeCertificate(dir.path);
    await using server = await serve({
      database: `${dir.path}/a.db`,
      hostname: "127.0.0.1",
      port: 0,
      logLevel: "error",
      helloTimeout: 200,
      tls: { cert, key },
    });
    const conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: (server.addr as Deno.NetAddr).port,
    });
    try {
      const t0 = performance.now();
      // Deno.listenTls kept such a socket open until the peer closed it.
      const n = await conn.read(new Uint8Array(16)).catch(() => null);
      assert.equal(n, null);
      assert.ok(performance.now() - t0 < 3000);
    } finally {
      conn.close();
    }
  },
});

/** Writes all of `bytes` to `conn`. */
async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
}

/** Reads `n` bytes from `conn` with reads of `size` bytes at most. */
async function readBytes(conn: Deno.Conn, n: number, size: number): Promise<void> {
  const buf = new Uint8Array(size);
  for (let got = 0; got < n;) {
    const r = await conn.read(buf);
    assert.ok(r !== null, `ended after ${got} of ${n} bytes`);
    got += r;
  }
}

Deno.test({
  name:
    "TlsListener reads a connection's TCP stream 4 KiB at a time until its reader reads more at once (64 KiB at most)",
  ignore: !HAS_OPENSSL,
  async fn() {
    await using dir = await tempDir();
    const pem = await makeCertificate(dir.path);
    const tcp = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    // The sizes of the buffers the TCP connections are read into.
    const sizes: number[] = [];
    const recording = {
      addr: tcp.addr,
      async accept(): Promise<Deno.TcpConn> {
        const conn = await tcp.accept();
        const read = conn.read.bind(conn);
        conn.read = (b: Uint8Array) => {
          sizes.push(b.length);
          return read(b);
        };
        return conn;
      },
      close: () => tcp.close(),
    };
    const listener = new TlsListener(
      recording as unknown as Deno.Listener<Deno.TcpConn>,
      pem.cert,
      pem.key,
    );
    const client = await Deno.connectTls({
      hostname: "127.0.0.1",
      port: (tcp.addr as Deno.NetAddr).port,
      caCerts: [pem.ca],
    });
    const conn = await listener.accept();
    try {
      // The TLS handshake and 60 KB read 4 KiB at a time, as a session does
      // until the hello is accepted: the TCP stream is read no faster.
      await Promise.all([writeAll(client, new Uint8Array(60_000)), readBytes(conn, 60_000, 4096)]);
      assert.ok(sizes.length > 0);
      assert.deepEqual([...new Set(sizes)], [4096]);
      // Once the reader reads 64 KiB at a time (a session let in), so is the stream.
      await Promise.all([
        writeAll(client, new Uint8Array(300_000)),
        readBytes(conn, 300_000, 1 << 20),
      ]);
      assert.equal(Math.max(...sizes), 64 * 1024);
    } finally {
      client.close();
      conn.close();
      listener.close();
    }
  },
});

/** A server.ts process with TLS on 127.0.0.1, its port, and its standard error so far. */
async function startTlsServerProcess(dir: string, pem: { cert: string; key: string }) {
  await Deno.writeTextFile(`${dir}/cert.pem`, pem.cert);
  await Deno.writeTextFile(`${dir}/key.pem`, pem.key);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      fileURLToPath(new URL("../server.ts", import.meta.url)),
      "--db",
      `${dir}/a.db`,
      "--tcp",
      "127.0.0.1:0",
      "--tls-cert",
      `${dir}/cert.pem`,
      "--tls-key",
      `${dir}/key.pem`,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const state = { stderr: "" };
  const errDone = child.stderr.pipeThrough(new TextDecoderStream()).pipeTo(
    new WritableStream({ write: (chunk) => void (state.stderr += chunk) }),
  );
  const out = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let banner = "";
  while (!/on tcp:\S+:\d+/.test(banner)) {
    const { value, done } = await out.read();
    if (done) break;
    banner += value;
  }
  const outDone = (async () => {
    while (!(await out.read()).done) { /* drain */ }
  })();
  const port = Number(/on tcp:\S+:(\d+)/.exec(banner)?.[1]);
  return {
    port,
    state,
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGTERM");
      } catch { /* gone already */ }
      await child.status;
      await errDone;
      await outDone;
    },
  };
}

/**
 * Opens a TCP connection to `port`, sends `bytes` (if any) and, unless
 * `wait` is false, reads until the server closes.
 */
async function rawExchange(port: number, bytes: Uint8Array | null, wait = true): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    if (bytes !== null) await writeAll(conn, bytes);
    if (bytes !== null && wait) {
      const buf = new Uint8Array(1024);
      while (await conn.read(buf).catch(() => null) !== null) { /* until closed */ }
    }
  } finally {
    conn.close();
  }
}

Deno.test({
  name:
    "server.ts --tls-cert logs failed TLS handshakes at warn with the peer, once a second at most; a bare port check is not logged",
  ignore: !HAS_OPENSSL,
  async fn() {
    await using dir = await tempDir();
    const pem = await makeCertificate(dir.path);
    await using srv = await startTlsServerProcess(dir.path, pem);
    const port = srv.port;
    const failures =
      / warn {2}netsqlite: closed the connection of 127\.0\.0\.1:\d+: TLS handshake failed: /;
    // Port checks (connect, close) first: they are no handshake failure.
    for (let i = 0; i < 3; i++) await rawExchange(port, null);
    await delay(200);
    // An HTTP request: its line is written at once.
    await rawExchange(port, new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    const logged = async (what: RegExp) => {
      const deadline = performance.now() + 20000;
      while (!what.test(srv.state.stderr) && performance.now() < deadline) await delay(20);
      assert.match(srv.state.stderr, what);
    };
    await logged(
      /TLS handshake failed: the client did not start a TLS handshake \(its first bytes: 47 45 54 20\): a client without TLS, or another protocol/,
    );
    // Then five more within the second, held back: a plain netsqlite client,
    // a ClientHello cut short, a TLS record that is no handshake, two HTTP requests.
    await assert.rejects(connect({ hostname: "127.0.0.1", port, max: 1 }), /the server speaks TLS/);
    await rawExchange(port, new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]), false);
    await rawExchange(port, new Uint8Array([0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]));
    for (let i = 0; i < 2; i++) {
      await rawExchange(port, new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n"));
    }
    // A second later, a client that does not trust the certificate: its line
    // counts those held back since.
    await delay(1100);
    await assert.rejects(
      connect({ hostname: "127.0.0.1", port, max: 1, tls: {} }),
      /does not trust the server's certificate/,
    );
    await logged(
      /TLS handshake failed: received fatal alert: \w+ \(the client does not trust the server's certificate\)( \(and \d+ more like it since the last such line, from 1 address: 127\.0\.0\.1 ×\d+\))?\n/,
    );
    await delay(300);
    // Every failure counted once (on a slow machine, a held one may have had its own line);
    // the port checks not at all.
    const lines = srv.state.stderr.split("\n").filter((l) => failures.test(l));
    const held = lines.map((l) => Number(/\(and (\d+) more like it/.exec(l)?.[1] ?? 0));
    assert.equal(lines.length + held.reduce((a, b) => a + b, 0), 7, srv.state.stderr);
    assert.ok(held.some((n) => n > 0), srv.state.stderr);
  },
});

for (
  const [what, start, end, hint] of [
    [
      "has expired",
      "20200101000000Z",
      "20200201000000Z",
      /certificate expired.*\(the server's certificate has expired: renew it on the server \(--tls-cert\) and restart it, or check this machine's clock, see README Troubleshooting\)$/,
    ],
    [
      "is not valid yet",
      "20900101000000Z",
      "20900201000000Z",
      /\(the server's certificate is not valid yet: check the clocks of this machine and of the one that made the certificate, see README Troubleshooting\)$/,
    ],
  ] as const
) {
  Deno.test({
    name: `A TLS client says what to do with a certificate that ${what}; the server warns at start`,
    ignore: !HAS_OPENSSL,
    async fn() {
      await using dir = await tempDir();
      const { ca, cert, key } = await datedCertificate(dir.path, start, end);
      // The warning at start, from serve() in a process of its own (its log is stderr).
      const server = new URL("../server.ts", import.meta.url).href;
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "eval",
          `import { serve } from ${JSON.stringify(server)};
          const s = await serve({ database: ":memory:", hostname: "127.0.0.1", port: 0,
            tls: ${JSON.stringify({ cert, key })} });
          await s.shutdown();`,
        ],
        stdout: "null",
        stderr: "piped",
      }).output();
      const stderr = new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, stderr);
      const date = `${start.slice(0, 4)}-${start.slice(4, 6)}-${start.slice(6, 8)}`;
      assert.match(
        stderr,
        what === "has expired"
          ? /warn {2}netsqlite: the TLS certificate \(CN=dated; --tls-cert, serve\(\{ tls \}\)\) expired on 2020-02-01T00:00:00\.000Z: clients refuse it/
          : new RegExp(
            `warn {2}netsqlite: the TLS certificate \\(CN=dated; [^)]*\\)\\) is not valid before ${date}T00:00:00\\.000Z: clients refuse it until then`,
          ),
      );
      await using srv = await serve({
        database: `${dir.path}/a.db`,
        hostname: "127.0.0.1",
        port: 0,
        logLevel: "error",
        tls: { cert, key },
      });
      const port = (srv.addr as Deno.NetAddr).port;
      await assert.rejects(
        connect({ hostname: "127.0.0.1", port, tls: { caCerts: [ca] }, max: 1 }),
        (err: Error) => {
          assert.equal(err.name, "ConnectionError");
          assert.match(err.message, hint);
          return true;
        },
      );
    },
  });
}

Deno.test({
  name:
    "certificateWarning() warns of a certificate expired, not valid yet, or expiring within 14 days",
  ignore: !HAS_OPENSSL,
  async fn() {
    await using dir = await tempDir();
    const { cert } = await datedCertificate(dir.path, "20200101000000Z", "20210101000000Z");
    const to = new X509Certificate(cert).validToDate.getTime();
    const from = new X509Certificate(cert).validFromDate.getTime();
    const day = 86_400_000;
    const at = (ms: number) => certificateWarning(cert, new Date(ms));
    assert.equal(CERTIFICATE_EXPIRY_WARNING_DAYS, 14);
    assert.match(
      at(to + 1000)!,
      /^the TLS certificate \(CN=dated; .*\) expired on 2021-01-01T00:00:00\.000Z: /,
    );
    assert.match(at(from - 1000)!, /\) is not valid before /);
    assert.match(at(to - day / 2)!, /\) expires in less than a day, on /);
    assert.match(at(to - 10 * day - 1000)!, /\) expires in 10 days, on /);
    assert.match(at(to - day - 1000)!, /\) expires in 1 day, on /);
    assert.equal(at(to - 15 * day), null);
    assert.equal(certificateWarning("not a certificate"), null);
    // A chain: the first certificate (the server's) is the one judged.
    assert.match(certificateWarning(cert + cert, new Date(to + 1000))!, /expired on/);
  },
});
