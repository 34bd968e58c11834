/**
 * Findings of a review of the server's request path above the engine
 * (server/session.ts, transport/), each through a real server: a process
 * (`deno run server.ts`) where the defect would hang the server itself.
 */

import assert from "node:assert/strict";
import { ErrorCode } from "../protocol/errors.ts";
import { Op, Status } from "../protocol/messages.ts";
import { decodeMsgpack } from "../protocol/msgpack.ts";
import { FrameReader } from "../transport/frame_reader.ts";
import { connect } from "../client.ts";
import { delay, startServer, startServerProcess, within } from "./_helpers.ts";
import { concat } from "./_bytes.ts";
import { makeCertificate } from "./_certs.ts";
import { frame } from "./_raw.ts";

Deno.test("SIGTERM while a half-closed subscriber still has requests queued: the server tells it SHUTTING_DOWN and exits (it spun at 100% CPU for ever)", async () => {
  await using server = await startServerProcess({ args: ["--grace-ms", "200"] });
  const path = (server.connectOptions as { path: string }).path;
  // Another connection holds a transaction open, so that the engine is not
  // idle when the shutdown ends the subscriber's connection: its feeds then
  // wait for more changes, 10 ms at a time.
  const holder = await Deno.connect({ transport: "unix", path });
  try {
    await holder.write(concat([
      frame([Op.Hello, 1, { version: 1 }]),
      frame([Op.Exec, 2, "CREATE TABLE t(x); BEGIN; INSERT INTO t VALUES (1)", null, null]),
    ]));
    const holderReader = new FrameReader(1 << 20);
    const hbuf = new Uint8Array(1 << 16);
    for (let got = 0; got < 2;) {
      const n = await holder.read(hbuf);
      assert.notEqual(n, null);
      holderReader.push(hbuf.slice(0, n!));
      for (let f; (f = holderReader.next()) !== undefined;) {
        const [, status] = decodeMsgpack(f) as [number, number];
        assert.equal(status & Status.Error, 0);
        got++;
      }
    }
    // A large reply it does not read: its last frame, at the shutdown, waits
    // for a second (a client that reads nothing), and its transaction with it.
    await holder.write(frame([Op.Query, 3, "SELECT zeroblob(8000000)", null, null]));
    // The subscriber (on node:sqlite, which has no feeds, the subscribe fails
    // and the connection is shut down as any other): a feed, then many slow reads pipelined, then the end of
    // its sending side (a half-close: it still reads its replies).
    const conn = await Deno.connect({ transport: "unix", path });
    const slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000) " +
      "SELECT count(*) FROM c";
    const requests = [frame([Op.Hello, 1, { version: 1 }]), frame([Op.Subscribe, 2, {}])];
    for (let i = 0; i < 3000; i++) requests.push(frame([Op.Query, i + 3, slow, null, null]));
    const bytes = concat(requests);
    const writing = (async () => {
      for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
      await conn.closeWrite();
    })();
    const reader = new FrameReader(1 << 24);
    const buf = new Uint8Array(1 << 16);
    let replies = 0;
    let last: [number, number, { code?: string }] | null = null;
    let signalled = false;
    const readAll = (async () => {
      for (;;) {
        const n = await conn.read(buf).catch(() => null);
        if (n === null) return;
        reader.push(buf.slice(0, n));
        for (let f; (f = reader.next()) !== undefined;) {
          last = decodeMsgpack(f) as [number, number, { code?: string }];
          if (last[0] !== 0) replies++;
        }
        if (!signalled && replies > 300) {
          signalled = true;
          server.child.kill("SIGTERM");
        }
      }
    })();
    const read = await within(readAll, 10_000);
    await writing.catch(() => {});
    conn.close();
    assert.notEqual(read, "timeout", `the server never ended the connection (${replies} replies)`);
    assert.ok(signalled, `only ${replies} replies came before the end`);
    assert.ok(replies < 3002, "every request ran: the shutdown came too late to test anything");
    assert.deepEqual(
      [last![0], last![1], last![2].code],
      [0, Status.Error, ErrorCode.ShuttingDown],
    );
    const status = await within(server.child.status, 10_000);
    assert.notEqual(status, "timeout", "the server did not exit");
    assert.equal((status as Deno.CommandStatus).code, 0);
  } finally {
    holder.close();
  }
});

Deno.test("A client that half-closes inside a frame still gets the replies of the requests it sent whole (the incomplete frame drew FRAME_TIMEOUT and closed the connection)", async () => {
  await using server = await startServer({ frameTimeout: 100 });
  const path = (server.connectOptions as { path: string }).path;
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    // Each takes longer than the frame timeout (and its grace after a stall).
    const slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c " +
      "WHERE x < 1000000) SELECT count(*) FROM c";
    await conn.write(concat([
      frame([Op.Hello, 1, { version: 1 }]),
      frame([Op.Query, 2, slow, null, null]),
      frame([Op.Query, 3, slow, null, null]),
      frame([Op.Query, 4, slow, null, null]),
      frame([Op.Query, 5, "SELECT 1", null, null]).subarray(0, 6), // never completed
    ]));
    await conn.closeWrite();
    const got: unknown[] = [];
    const reader = new FrameReader(1 << 20);
    const buf = new Uint8Array(1 << 16);
    for (;;) {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) break;
      reader.push(buf.slice(0, n));
      for (let f; (f = reader.next()) !== undefined;) got.push(decodeMsgpack(f));
    }
    assert.deepEqual(
      got.slice(1),
      [2, 3, 4].map((id) => [id, Status.Ok, [["count(*)"], [[1000000]]]]),
    );
  } finally {
    conn.close();
  }
});

Deno.test("Nothing follows a connection-level error: frames the client sends while the server still writes it are not read (a cancel drew an ABORTED reply after FRAME_TIMEOUT, a frame too large a second error)", async () => {
  await using server = await startServer({ frameTimeout: 200 });
  const path = (server.connectOptions as { path: string }).path;
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    const reader = new FrameReader(1 << 24);
    const buf = new Uint8Array(1 << 16);
    const next = async (): Promise<unknown> => {
      for (;;) {
        const f = reader.next();
        if (f !== undefined) return decodeMsgpack(f);
        const n = await conn.read(buf).catch(() => null);
        if (n === null) return "EOF";
        reader.push(buf.slice(0, n));
      }
    };
    await conn.write(frame([Op.Hello, 1, { version: 1 }]));
    assert.equal((await next() as unknown[])[1], Status.Ok);
    // A reply the client does not read yet (it fills the socket: the
    // server's last frame waits behind it), then a frame left incomplete
    // past --frame-timeout.
    await conn.write(frame([Op.Query, 2, "SELECT zeroblob(3000000) AS b", null, null]));
    const third = frame([Op.Query, 3, "SELECT 1", null, null]);
    await conn.write(third.subarray(0, 6));
    await delay(600);
    // While the FRAME_TIMEOUT frame waits to be written: the rest of the
    // frame, a cancel of it, and a frame far too large.
    const tooLarge = new Uint8Array([0xff, 0xff, 0xff, 0xf0]);
    await conn.write(concat([third.subarray(6), frame([Op.Cancel, 4, 3]), tooLarge]));
    await delay(100);
    const got: unknown[] = [];
    for (let msg; (msg = await next()) !== "EOF";) got.push(msg);
    assert.deepEqual(
      got.map((m) => {
        const [id, status, body] = m as [number, number, { code?: string }];
        return [id, status, id === 2 ? "rows" : body.code];
      }),
      [[2, Status.Ok, "rows"], [0, Status.Error, ErrorCode.FrameTimeout]],
    );
  } finally {
    conn.close();
  }
});

/**
 * Opens `n` TCP connections to 127.0.0.1:`port` and resets each at once
 * (SO_LINGER 0, then close: an RST), through libc: what a port scanner or a
 * client killed right after connecting leaves in the listen backlog.
 */
function resetConnections(port: number, n: number): void {
  const libc = Deno.dlopen("libc.so.6", {
    socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
    connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
    setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
    close: { parameters: ["i32"], result: "i32" },
  });
  try {
    const addr = new Uint8Array(16); // sockaddr_in
    new DataView(addr.buffer).setUint16(0, 2, true); // AF_INET, host order
    new DataView(addr.buffer).setUint16(2, port); // network order
    addr.set([127, 0, 0, 1], 4);
    const linger = new Int32Array([1, 0]); // on, 0 s: close sends an RST
    for (let i = 0; i < n; i++) {
      const fd = libc.symbols.socket(2, 1, 0); // AF_INET, SOCK_STREAM
      assert.ok(fd >= 0);
      assert.equal(libc.symbols.connect(fd, addr, addr.length), 0);
      assert.equal(libc.symbols.setsockopt(fd, 1, 13, linger, 8), 0); // SOL_SOCKET, SO_LINGER
      libc.symbols.close(fd);
    }
  } finally {
    libc.close();
  }
}

Deno.test({
  name:
    "Connections reset before they were accepted do not hold up the accept loop (each paused it 50 ms, as for EMFILE)",
  ignore: Deno.build.os !== "linux",
}, async (t) => {
  for (const kind of ["tcp", "tls"] as const) {
    await t.step(kind, async () => {
      const dir = await Deno.makeTempDir({ prefix: "netsqlite-test-" });
      try {
        const pem = kind === "tls" ? await makeCertificate(dir) : null;
        await using server = await startServer({
          transport: "tcp",
          logLevel: "error",
          ...(pem !== null ? { tls: { cert: pem.cert, key: pem.key } } : {}),
        });
        const port = (server.connectOptions as { port: number }).port;
        resetConnections(port, 60);
        const start = performance.now();
        await using db = await connect({
          ...server.connectOptions,
          max: 1,
          ...(pem !== null ? { tls: { caCerts: [pem.ca] } } : {}),
        });
        assert.deepEqual(await db.get("SELECT 1 AS one"), { one: 1 });
        const ms = performance.now() - start;
        assert.ok(ms < 1000, `a new client waited ${ms.toFixed(0)} ms behind 60 reset connections`);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    });
  }
});
