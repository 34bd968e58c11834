/**
 * Opening a connection against peers that are not (answering) netsqlite
 * servers: a TCP listener that accepts and stays silent (with and without
 * TLS, on the first connection and on a pool's reconnect), and an HTTP server.
 */

import assert from "node:assert/strict";
import { connect, ConnectionError, ProtocolError } from "../mod.ts";
import { openLink } from "../client/connection.ts";
import { resolveConnectOptions } from "../client/options.ts";
import { connectTo } from "../transport/connect.ts";
import { MAX_SOCKET_PATH_BYTES } from "../transport/listen.ts";
import { delay, startServer, within } from "./_helpers.ts";
import { cli } from "./_cli.ts";

/** A TCP listener on 127.0.0.1 that accepts connections and never writes. */
function silentListener(): {
  port: number;
  /** Resolves with how each accepted connection ended: `"closed by peer"` at EOF. */
  ends: Promise<string>[];
} & AsyncDisposable {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const ends: Promise<string>[] = [];
  const accepting = (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      ends.push((async () => {
        const buf = new Uint8Array(1024);
        try {
          while (await conn.read(buf) !== null) { /* swallow what the client sends */ }
          return "closed by peer";
        } catch (err) {
          return `read failed: ${(err as Error).message}`;
        }
      })());
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    ends,
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting;
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed already */ }
      }
      await Promise.all(ends);
    },
  };
}

/** Awaits `p`, expecting a rejection; returns the error and the time it took. */
async function rejection(p: Promise<unknown>): Promise<{ err: Error; ms: number }> {
  const t0 = performance.now();
  try {
    await p;
  } catch (err) {
    return { err: err as Error, ms: performance.now() - t0 };
  }
  throw new Error("expected a rejection");
}

Deno.test("connect() with TLS to a peer that never answers the TLS handshake rejects with REQUEST_TIMEOUT after requestTimeout and gives up", async () => {
  await using peer = silentListener();
  const { err, ms } = await rejection(
    connect({ hostname: "127.0.0.1", port: peer.port, requestTimeout: 300, tls: {} }),
  );
  assert.ok(err instanceof ConnectionError, String(err));
  assert.equal(err.code, "REQUEST_TIMEOUT");
  assert.match(
    err.message,
    /^Cannot connect to tcp:127\.0\.0\.1:\d+ with TLS: the TLS handshake did not complete within 300 ms \(connectTimeout\)$/,
  );
  assert.ok(ms >= 290 && ms < 3000, `took ${ms} ms`);
  // Under Deno 2.9 the socket of a TLS handshake given up stays open until the peer closes it.
  assert.equal(peer.ends.length, 1);
});

Deno.test("connect({ connectTimeout }) bounds a plain connection whose hello gets no reply, without any requestTimeout", async () => {
  await using peer = silentListener();
  const { err, ms } = await rejection(
    connect({ hostname: "127.0.0.1", port: peer.port, connectTimeout: 250 }),
  );
  assert.ok(err instanceof ConnectionError, String(err));
  assert.equal(err.code, "REQUEST_TIMEOUT");
  assert.match(
    err.message,
    /^Cannot connect to tcp:127\.0\.0\.1:\d+: no handshake reply within 250 ms \(connectTimeout\): the connection was closed \(no request was sent\)$/,
  );
  assert.ok(ms >= 240 && ms < 3000, `took ${ms} ms`);
  assert.equal(await peer.ends[0], "closed by peer");
});

Deno.test("A pool's reconnect to a peer that accepts and stays silent fails after connectTimeout", async () => {
  await using srv = await startServer({ transport: "tcp" });
  const target = srv.connectOptions as { hostname: string; port: number };
  // A proxy that forwards its first connection to the server and holds every later one silent.
  const proxy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  let first: Deno.Conn | null = null;
  const piping: Promise<unknown>[] = [];
  const accepting = (async () => {
    for await (const conn of proxy) {
      if (first !== null) {
        held.push(conn);
        piping.push(conn.readable.pipeTo(new WritableStream()).catch(() => {}));
        continue;
      }
      first = conn;
      const upstream = await Deno.connect(target);
      piping.push(
        conn.readable.pipeTo(upstream.writable).catch(() => {}),
        upstream.readable.pipeTo(conn.writable).catch(() => {}),
      );
    }
  })();
  try {
    await using db = await connect({
      hostname: "127.0.0.1",
      port: (proxy.addr as Deno.NetAddr).port,
      max: 1,
      // Room for the first connection's handshake through the proxy on a loaded machine.
      connectTimeout: 1000,
    });
    assert.deepEqual(await db.values("SELECT 1"), [[1]]);
    first!.close(); // the connection is lost; a call after the loss reconnects through the proxy
    let { err, ms } = await rejection(db.values("SELECT 2"));
    // A call sent before the client saw the loss fails with it; the next one reconnects.
    if (err instanceof ConnectionError && err.code === "CONNECTION_CLOSED") {
      ({ err, ms } = await rejection(db.values("SELECT 2")));
    }
    assert.ok(err instanceof ConnectionError, String(err));
    assert.equal(err.code, "REQUEST_TIMEOUT");
    assert.match(err.message, /no handshake reply within 1000 ms \(connectTimeout\)/);
    assert.ok(ms < 5000, `took ${ms} ms`);
  } finally {
    proxy.close();
    await accepting;
    for (const c of held) {
      try {
        c.close();
      } catch { /* closed by the client already */ }
    }
    await Promise.all(piping);
  }
});

Deno.test("connect() to an HTTP server rejects with PROTOCOL_VERSION: the peer does not speak the netsqlite protocol", async () => {
  const { promise: listening, resolve } = Promise.withResolvers<Deno.NetAddr>();
  await using http = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: resolve },
    () => new Response("hello"),
  );
  const addr = await listening;
  const { err } = await rejection(connect({ hostname: addr.hostname, port: addr.port }));
  assert.ok(err instanceof ProtocolError, String(err));
  assert.equal(err.code, "PROTOCOL_VERSION");
  assert.match(
    err.message,
    /^Cannot connect to tcp:127\.0\.0\.1:\d+: the peer does not speak the netsqlite protocol: its first reply is not a hello reply \(it begins with "HTTP"\)$/,
  );
  void http;
});

/**
 * A TCP listener answering the first bytes of each connection with a TLS
 * alert, as a netsqlite TLS server answers a client without TLS; `received`
 * holds what each connection sent first.
 */
function tlsAlertPeer(): { port: number; received: Uint8Array[] } & AsyncDisposable {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const received: Uint8Array[] = [];
  const served: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const conn of listener) {
      served.push((async () => {
        const buf = new Uint8Array(4096);
        const n = await conn.read(buf).catch(() => null);
        if (n !== null) received.push(buf.slice(0, n));
        await conn.write(new Uint8Array([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32])).catch(() => 0);
        conn.close();
      })());
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    received,
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting;
      await Promise.all(served);
    },
  };
}

Deno.test("connect() with a token but without tls to a TLS server says the token crossed in clear text: rotate it", async () => {
  await using peer = tlsAlertPeer();
  const token = "my-very-secret-token-0123456789";
  const { err } = await rejection(connect({ hostname: "127.0.0.1", port: peer.port, token }));
  assert.ok(err instanceof ProtocolError, String(err));
  assert.equal(err.code, "PROTOCOL_VERSION");
  assert.match(
    err.message,
    /^Cannot connect to tcp:127\.0\.0\.1:\d+: the server speaks TLS: pass tls: \{ caCerts \} \(CLI: --tls-ca\); the token was sent in clear text before the server's reply: treat it as exposed and rotate it$/,
  );
  // It was: the hello went out with the token in it before any reply.
  const sent = new TextDecoder().decode(peer.received[0]);
  assert.ok(sent.includes(token), "the hello carried the token");
  // Without a token, nothing was exposed: the message says only what to do.
  const plain = await rejection(connect({ hostname: "127.0.0.1", port: peer.port }));
  assert.match(
    plain.err.message,
    /^Cannot connect to tcp:127\.0\.0\.1:\d+: the server speaks TLS: pass tls: \{ caCerts \} \(CLI: --tls-ca\)$/,
  );
});

Deno.test("connect() with TLS to a plain netsqlite server says the server does not speak TLS", async () => {
  await using srv = await startServer({ transport: "tcp" });
  const { err, ms } = await rejection(connect({ ...srv.connectOptions, tls: {} }));
  assert.ok(err instanceof ConnectionError, String(err));
  assert.match(
    err.message,
    /with TLS: .*\(the server does not speak TLS: connect without the tls option/,
  );
  assert.ok(ms < 5000, `took ${ms} ms`);
});

Deno.test("connect() to a TCP port where nothing listens names the address and --tcp, not the default socket", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  const { err } = await rejection(connect({ hostname: "127.0.0.1", port }));
  assert.ok(err instanceof ConnectionError, String(err));
  assert.match(err.message, /listening on that address and port\? Start it with --tcp HOST:PORT\)/);
  assert.doesNotMatch(err.message, /default socket/);
});

Deno.test("connect({ database }) where no server runs names the database whose default socket it tried", async () => {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-test-" });
  try {
    const database = `${dir}/nobody here.db`;
    const { err } = await rejection(connect({ database }));
    assert.ok(err instanceof ConnectionError, String(err));
    assert.equal(err.code, "CONNECTION_CLOSED");
    assert.ok(
      err.message.includes(`(is the server of "${database}" running? Each database file`),
      err.message,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("connect({ path }) and --socket where no server runs ask only whether it runs: no default-socket advice", async () => {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-test-" });
  try {
    // A path given explicitly is not a default socket: no database to name, no advice on
    // which file's default socket to use.
    const path = `${dir}/x.sock`;
    const { err } = await rejection(connect({ path }));
    assert.ok(err instanceof ConnectionError, String(err));
    assert.match(
      err.message,
      new RegExp(`^Cannot connect to unix:${path}: .*\\(is the server running\\?\\)$`),
    );
    assert.doesNotMatch(err.message, /default socket|path it printed/);
    const r = await cli(["shell", "--socket", path, "-c", "SELECT 1"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /\(is the server running\?\)\n$/);
    assert.doesNotMatch(r.stderr, /default socket|path it printed/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("connect({ path }) and --socket refuse a Unix socket path longer than the system allows, naming its length in bytes and the limit", async () => {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-test-" });
  try {
    // Fewer characters than the limit, more bytes (é is two): the limit is in bytes.
    const long = `${dir}/${"é".repeat(Math.ceil((MAX_SOCKET_PATH_BYTES - dir.length) / 2))}`;
    await Deno.mkdir(long);
    const path = `${long}/s.sock`;
    const bytes = new TextEncoder().encode(path).length;
    assert.ok(path.length < MAX_SOCKET_PATH_BYTES && bytes > MAX_SOCKET_PATH_BYTES, path);
    const message = `Cannot connect to unix:${path}: the path is ${bytes} bytes long, and a ` +
      `Unix socket path may have at most ${MAX_SOCKET_PATH_BYTES} on ${Deno.build.os}; ` +
      "connect to a shorter path (a shorter $XDG_RUNTIME_DIR or TMPDIR for a default socket), " +
      "see README Troubleshooting";
    const { err } = await rejection(connect({ path }));
    assert.ok(err instanceof ConnectionError, String(err));
    assert.equal(err.code, "CONNECTION_CLOSED");
    assert.equal(err.message, message);
    const r = await cli(["shell", "--socket", path, "-c", "SELECT 1"]);
    assert.equal(r.code, 1);
    assert.ok(r.stderr.includes(message), r.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("connectTo() tries a Unix socket whose listen backlog is full again until it has room", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/s.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  const waiting: Deno.Conn[] = [];
  try {
    // Nothing is accepted: fill the backlog until the system refuses (EAGAIN).
    let full = false;
    for (let i = 0; i < 20_000 && !full; i++) {
      try {
        waiting.push(await Deno.connect({ transport: "unix", path }));
      } catch (err) {
        assert.equal((err as { code?: string }).code, "EAGAIN", String(err));
        full = true;
      }
    }
    assert.ok(full, "the backlog never filled");
    const connecting = connectTo({ transport: "unix", path }, null, 5000);
    await delay(30);
    // One accepted connection makes room in the backlog.
    (await listener.accept()).close();
    const conn = await connecting;
    conn.close();
  } finally {
    for (const c of waiting) c.close();
    listener.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("connectTo() given up by its signal while a full Unix socket backlog is retried rejects at once with the signal's reason", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/s.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  const waiting: Deno.Conn[] = [];
  try {
    let full = false;
    for (let i = 0; i < 20_000 && !full; i++) {
      try {
        waiting.push(await Deno.connect({ transport: "unix", path }));
      } catch (err) {
        assert.equal((err as { code?: string }).code, "EAGAIN", String(err));
        full = true;
      }
    }
    assert.ok(full, "the backlog never filled");
    const aborter = new AbortController();
    const reason = new ConnectionError("Client is closed");
    const connecting = rejection(connectTo({ transport: "unix", path }, null, 0, aborter.signal));
    await delay(30);
    aborter.abort(reason);
    const outcome = await within(connecting, 2000);
    assert.notEqual(outcome, "timeout", "the attempt went on after its signal aborted");
    assert.equal((outcome as { err: Error }).err, reason);
  } finally {
    for (const c of waiting) c.close();
    listener.close();
    await Deno.remove(dir, { recursive: true });
  }
});

for (const tls of [false, true]) {
  const stage = tls ? "the TLS handshake" : "the hello";
  Deno.test(`openLink() given up by its signal during ${stage} rejects at once with the signal's reason, its socket closed`, async () => {
    await using peer = silentListener();
    // No connectTimeout: only the signal ends the attempt.
    const config = await resolveConnectOptions({
      hostname: "127.0.0.1",
      port: peer.port,
      connectTimeout: 0,
      ...(tls ? { tls: {} } : {}),
    });
    const aborter = new AbortController();
    const reason = new ConnectionError("Client is closed");
    const opening = rejection(openLink(config, {}, aborter.signal));
    await delay(150);
    assert.equal(peer.ends.length, 1, "the peer accepted the connection");
    aborter.abort(reason);
    const outcome = await within(opening, 2000);
    assert.notEqual(outcome, "timeout", `${stage} went on after the signal aborted`);
    const { err } = outcome as { err: Error };
    assert.ok(err instanceof ConnectionError, String(err));
    if (tls) assert.equal(err, reason);
    else assert.equal(err.message, "Client is closed (no request was sent)");
    assert.equal(err.mayHaveRun, false);
    // Under Deno 2.9 the socket of a TLS handshake given up stays open until the peer closes it.
    if (!tls) assert.equal(await peer.ends[0], "closed by peer");
  });
}
