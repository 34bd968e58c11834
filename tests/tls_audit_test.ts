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
import { delay, tempDir } from "./_helpers.ts";
import { frame } from "./_raw.ts";

const HAS_OPENSSL = await new Deno.Command("openssl", { args: ["version"], stdout: "null" })
  .output().then((o) => o.success, () => false);

type Pem = { ca: string; cert: string; key: string };

/** A CA and a certificate it signed for 127.0.0.1 (openssl), as tests/tls_socket_test.ts makes them. */
async function makeCertificate(dir: string): Promise<Pem> {
  const ext = `${dir}/leaf.ext`;
  await Deno.writeTextFile(
    ext,
    "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1\n",
  );
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  const steps = [
    ["req", "-x509", ...ec, "-keyout", `${dir}/ca.key`, "-out", `${dir}/ca.pem`, "-days", "30"]
      .concat(["-subj", "/CN=netsqlite test CA"]),
    ["req", ...ec, "-keyout", `${dir}/key.pem`, "-out", `${dir}/leaf.csr`, "-subj", "/CN=x"],
    ["x509", "-req", "-in", `${dir}/leaf.csr`, "-CA", `${dir}/ca.pem`, "-CAkey", `${dir}/ca.key`]
      .concat(["-CAcreateserial", "-out", `${dir}/cert.pem`, "-days", "30", "-extfile", ext]),
  ];
  for (const args of steps) {
    const out = await new Deno.Command("openssl", { args, stdout: "null", stderr: "piped" })
      .output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  }
  const read = (name: string) => Deno.readTextFile(`${dir}/${name}`);
  return { ca: await read("ca.pem"), cert: await read("cert.pem"), key: await read("key.pem") };
}

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

async function start(kind: Kind, extra: Partial<ServeOptions> = {}, port = 0): Promise<Setup> {
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
class FrameReader {
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

async function hello(conn: Deno.Conn): Promise<FrameReader> {
  await writeAll(conn, frame([Op.Hello, 1, { version: 1 }]));
  const r = new FrameReader(conn);
  const reply = await r.next() as [number, number];
  assert.equal(reply[1], 0, JSON.stringify(reply));
  return r;
}

for (const kind of ["tcp", "tls"] as const) {
  Deno.test({
    name: `${kind}: a client reading a 16 MiB reply slowly but steadily is not closed by ` +
      "--write-stall-timeout (1.5 s) and gets all of it",
    ignore: !HAS_OPENSSL,
    async fn() {
      await using s = await start(kind, { writeStallTimeout: 1500 });
      const conn = await s.raw();
      try {
        const r = await hello(conn);
        const size = 16 * 1024 * 1024;
        await writeAll(conn, frame([Op.Query, 2, `SELECT zeroblob(${size}) AS b`, null]));
        // About 6 MiB a second: 256 KiB, then 40 ms; the reply takes ~3 s or more, never a pause of 1.5 s.
        let since = 0;
        const t0 = performance.now();
        const reply = await r.next(async () => {
          if (r.total - since >= 256 * 1024) {
            since = r.total;
            await delay(40);
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
