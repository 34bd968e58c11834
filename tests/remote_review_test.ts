/**
 * Remote use over slow links and with secrets: `--frame-timeout` counts the
 * time since the last byte of an incomplete frame (not since its first), the
 * TLS hint for a certificate made again with another key, and tokens that
 * UTF-8 cannot carry unchanged.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { serve } from "../server.ts";
import { ConnectionError } from "../protocol/errors.ts";
import { Op } from "../protocol/messages.ts";
import { delay, startServer, tempDir } from "./_helpers.ts";
import { frame, Raw } from "./_raw.ts";

const SERVER_TS = fileURLToPath(new URL("../server.ts", import.meta.url));

type Reply = [number, number, unknown];

/** Writes `bytes`, returning the error instead of throwing it (the server may have closed). */
async function tryWrite(raw: Raw, bytes: Uint8Array): Promise<Error | null> {
  try {
    await raw.write(bytes);
    return null;
  } catch (err) {
    return err as Error;
  }
}

Deno.test("Session keeps a connection open that pipelines small frames, each write ending inside the next, for longer than frameTimeout", async () => {
  // Was: the timer started when a read ended inside a frame was cleared only
  // by a read ending on a frame boundary, so this stream, which never ends on
  // one, was closed with FRAME_TIMEOUT after frameTimeout (500 ms) although a
  // byte came every 50 ms.
  await using srv = await startServer({ frameTimeout: 500 });
  await using raw = await Raw.open(srv.connectOptions.path!);
  const query = (id: number) => frame([Op.Query, id, `SELECT ${id} AS x`, null]);
  let carry = new Uint8Array(0);
  let id = 2;
  const started = performance.now();
  // 4 × frameTimeout: each write completes one frame and sends half of the next.
  while (performance.now() - started < 2000) {
    const next = query(id++);
    const half = next.length >> 1;
    const bytes = new Uint8Array(carry.length + half);
    bytes.set(carry);
    bytes.set(next.subarray(0, half), carry.length);
    carry = next.slice(half);
    const failed = await tryWrite(raw, bytes);
    assert.equal(failed, null, `write failed after ${(performance.now() - started).toFixed(0)} ms`);
    await delay(50);
  }
  assert.equal(await tryWrite(raw, carry), null);
  // Every request is answered, in order, and nothing else was sent (no FRAME_TIMEOUT).
  for (let want = 2; want < id; want++) {
    const reply = await raw.read(10_000) as Reply;
    assert.deepEqual(reply, [want, 0, [["x"], [[want]]]]);
  }
  await raw.write(frame([Op.Query, id, "SELECT 'open' AS x", null]));
  assert.deepEqual(await raw.read(10_000), [id, 0, [["x"], [["open"]]]]);
});

Deno.test("Session answers one large frame trickled in for longer than frameTimeout, a byte at least every frameTimeout / 3", async () => {
  // Was: a frame had frameTimeout from its first byte to arrive whole, so a
  // large value over a slow link was cut off while its bytes still flowed.
  await using srv = await startServer({ frameTimeout: 600 });
  await using raw = await Raw.open(srv.connectOptions.path!);
  const blob = new Uint8Array(30_000).map((_, i) => i % 251);
  const bytes = frame([Op.Query, 2, "SELECT length(?) AS n, hex(substr(?1, 1, 4)) AS h", [blob]]);
  const pieces = 20; // 19 pauses of 100 ms: 1.9 s, over 3 × frameTimeout
  const size = Math.ceil(bytes.length / pieces);
  const started = performance.now();
  for (let off = 0; off < bytes.length; off += size) {
    if (off > 0) await delay(100);
    const failed = await tryWrite(raw, bytes.subarray(off, off + size));
    assert.equal(failed, null, `write failed after ${(performance.now() - started).toFixed(0)} ms`);
  }
  const ms = performance.now() - started;
  assert.ok(ms > 1200, `trickled in ${ms.toFixed(0)} ms only: not over 2 × frameTimeout`);
  assert.deepEqual(await raw.read(10_000), [2, 0, [["n", "h"], [[30_000, "00010203"]]]]);
});

Deno.test("Session closes a connection whose incomplete frame got no byte for frameTimeout, counted from its last byte", async () => {
  await using srv = await startServer({ frameTimeout: 400 });
  await using raw = await Raw.open(srv.connectOptions.path!);
  const bytes = frame([Op.Query, 2, "SELECT 1 AS x", null]);
  // Bytes for 0.9 s (over 2 × frameTimeout), then none: the rest never comes.
  const started = performance.now();
  let lastByte = 0;
  for (let i = 0; i < 10; i++) {
    if (i > 0) await delay(100);
    assert.equal(await tryWrite(raw, bytes.subarray(i, i + 1)), null);
    lastByte = performance.now();
  }
  const reply = await raw.read(10_000) as Reply;
  const after = performance.now() - lastByte;
  assert.equal(reply[0], 0);
  assert.equal(reply[1] & 1, 1);
  const err = reply[2] as { code: string; message: string };
  assert.equal(err.code, "FRAME_TIMEOUT");
  assert.equal(
    err.message,
    "Closing connection: no byte of an incomplete frame arrived for 400 ms (--frame-timeout)",
  );
  // At least frameTimeout after the last byte (less timer slack), so well past
  // frameTimeout after the first.
  assert.ok(after >= 350, `closed ${after.toFixed(0)} ms after the last byte`);
  assert.ok(performance.now() - started >= 1200);
  assert.equal(await raw.read(10_000), "EOF");
});

// ---- TLS: a certificate made again with another key --------------------------

const HAS_OPENSSL = await new Deno.Command("openssl", { args: ["version"], stdout: "null" })
  .output().then((o) => o.success, () => false);

/** A self-signed certificate (not a CA) for 127.0.0.1 with subject CN=localhost, made by openssl. */
async function selfSigned(dir: string, name: string): Promise<{ cert: string; key: string }> {
  const out = await new Deno.Command("openssl", {
    args: ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
      .concat(["-days", "1", "-keyout", `${dir}/${name}.key`, "-out", `${dir}/${name}.pem`])
      .concat(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"])
      .concat(["-addext", "basicConstraints=critical,CA:FALSE"]),
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return {
    cert: await Deno.readTextFile(`${dir}/${name}.pem`),
    key: await Deno.readTextFile(`${dir}/${name}.key`),
  };
}

Deno.test({
  name:
    "connect() with TLS trusting a certificate of the same name but another key (made again) says the client does not trust the server's certificate",
  ignore: !HAS_OPENSSL,
  async fn() {
    await using dir = await tempDir();
    const before = await selfSigned(dir.path, "before");
    const again = await selfSigned(dir.path, "again");
    await using server = await serve({
      database: `${dir.path}/a.db`,
      hostname: "127.0.0.1",
      port: 0,
      tls: again,
    });
    const { port } = server.addr as { port: number };
    // The certificate the server has is trusted when given.
    {
      await using db = await connect({
        hostname: "127.0.0.1",
        port,
        tls: { caCerts: [again.cert] },
      });
      assert.deepEqual(await db.values("SELECT 1"), [[1]]);
    }
    // Was: "... invalid peer certificate: BadSignature" and no hint.
    await assert.rejects(
      connect({ hostname: "127.0.0.1", port, tls: { caCerts: [before.cert] }, reconnect: false }),
      (err: unknown) => {
        assert.ok(err instanceof ConnectionError, String(err));
        assert.match(
          err.message,
          /BadSignature \(the client does not trust the server's certificate: pass the certificate that signed it in tls: \{ caCerts: \[pem\] \}, or --tls-ca FILE to the CLI\)/,
        );
        return true;
      },
    );
  },
});

// ---- tokens that UTF-8 cannot carry unchanged ------------------------------------

Deno.test("connect() and serve() refuse a token with a lone surrogate with a TypeError (it would become U+FFFD, another token)", async () => {
  // Was: the client sent "a\uFFFD-..." and a server whose token is that accepted it.
  await using srv = await startServer({ transport: "tcp", token: "a\uFFFD-0123456789abcdef" });
  for (const token of ["a\uD800-0123456789abcdef", "\uDC00", "end\uD83D"]) {
    await assert.rejects(connect({ ...srv.connectOptions, token }), (err: unknown) => {
      assert.ok(err instanceof TypeError, String(err));
      assert.equal(
        err.message,
        'Invalid option "token": it has a lone UTF-16 surrogate, which UTF-8 cannot represent ' +
          "(it would be sent as U+FFFD, another token)",
      );
      return true;
    });
  }
  // A surrogate pair is well-formed; U+FFFD itself is an ordinary character.
  {
    await using db = await connect({ ...srv.connectOptions, token: "a\uFFFD-0123456789abcdef" });
    assert.deepEqual(await db.values("SELECT 1"), [[1]]);
  }
  await using dir = await tempDir();
  await assert.rejects(
    serve({ database: `${dir.path}/a.db`, path: `${dir.path}/a.sock`, token: "x\uDFFFy" }),
    (err: unknown) => {
      assert.ok(err instanceof TypeError, String(err));
      assert.match(err.message, /^Invalid option "token": it has a lone UTF-16 surrogate/);
      return true;
    },
  );
  await using _pair = await serve({
    database: `${dir.path}/b.db`,
    path: `${dir.path}/b.sock`,
    token: "key \u{1F511}",
  });
  await using db = await connect({ path: `${dir.path}/b.sock`, token: "key \u{1F511}" });
  assert.deepEqual(await db.values("SELECT 2"), [[2]]);
});

/** Runs server.ts through `sh` (to pass bytes that are not UTF-8), to its end. */
async function runServerSh(script: string): Promise<{ code: number; stderr: string }> {
  const out = await new Deno.Command("sh", {
    args: ["-c", script, "sh", Deno.execPath(), SERVER_TS],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test({
  name:
    "server.ts exits 2 on a token that is not UTF-8: in --token-file, in NETSQLITE_TOKEN, or in --token (where it became U+FFFD)",
  ignore: Deno.build.os === "windows",
  async fn() {
    await using dir = await tempDir();
    const file = `${dir.path}/token`;
    await Deno.writeFile(file, new Uint8Array([0x73, 0x65, 0x63, 0xff, 0x72, 0x65, 0x74, 0x0a]));
    const db = `--db '${dir.path}/a.db' --socket '${dir.path}/a.sock'`;
    const [fromFile, fromEnv, fromFlag] = await Promise.all([
      runServerSh(`exec "$1" run -A "$2" ${db} --token-file '${file}'`),
      runServerSh(`NETSQLITE_TOKEN="$(printf 'Zq\\377Wx')" exec "$1" run -A "$2" ${db}`),
      runServerSh(`exec "$1" run -A "$2" ${db} --token "$(printf 'Zq\\377Wx')"`),
    ]);
    assert.deepEqual([fromFile.code, fromEnv.code, fromFlag.code], [2, 2, 2], fromEnv.stderr);
    assert.match(
      fromFile.stderr,
      /^netsqlite: Cannot use token file ".*token": it is not valid UTF-8 \(write the token as UTF-8 text\)\n/,
    );
    // (Deno's own message would quote the secret.)
    assert.match(
      fromEnv.stderr,
      /^netsqlite: Invalid NETSQLITE_TOKEN: it is not valid UTF-8; set it to the token as UTF-8\n/,
    );
    assert.doesNotMatch(fromEnv.stderr, /Zq/);
    assert.match(fromFlag.stderr, /^netsqlite: Invalid --token: it holds U\+FFFD/);
    // Nothing was served.
    await assert.rejects(Deno.lstat(`${dir.path}/a.db`), Deno.errors.NotFound);
  },
});

Deno.test("server.ts reads a token file in UTF-8, without a leading byte order mark", async () => {
  await using dir = await tempDir();
  const file = `${dir.path}/token`;
  await Deno.writeFile(file, new TextEncoder().encode("\uFEFFclé-0123456789abcdef\n"));
  await Deno.chmod(file, 0o600).catch(() => {});
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SERVER_TS, "--db", `${dir.path}/a.db`, "--tcp", "127.0.0.1:0"]
      .concat(["--token-file", file]),
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const out = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  try {
    let banner = "";
    while (!/on tcp:\S+:\d+/.test(banner)) {
      const { value, done } = await out.read();
      if (done) break;
      banner += value;
    }
    const port = Number(/on tcp:\S+:(\d+)/.exec(banner)?.[1]);
    await using db = await connect({ hostname: "127.0.0.1", port, token: "clé-0123456789abcdef" });
    assert.deepEqual(await db.values("SELECT 1"), [[1]]);
  } finally {
    child.kill("SIGTERM");
    await child.status;
    while (!(await out.read()).done) { /* drain */ }
  }
});
