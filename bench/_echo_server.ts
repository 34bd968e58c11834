/**
 * Raw Unix-socket echo server: the transport floor netsqlite is measured
 * against. It writes back every byte it reads, doing no framing or decoding.
 *
 * Usage: `deno run -A bench/_echo_server.ts SOCKET_PATH`. It also listens on
 * TCP 127.0.0.1 (a free port, Nagle off), prints
 * `echo listening on PATH tcp:127.0.0.1:PORT`, and exits on SIGTERM or when
 * its stdin closes (so it never outlives the benchmark that started it).
 *
 * @module
 */

const path = Deno.args[0];
if (path === undefined) {
  console.error("usage: _echo_server.ts SOCKET_PATH");
  Deno.exit(2);
}

async function echo(conn: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  try {
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      for (let off = 0; off < n;) off += await conn.write(buf.subarray(off, n));
    }
  } catch {
    // Peer reset: nothing to do.
  } finally {
    try {
      conn.close();
    } catch { /* already closed */ }
  }
}

const listener = Deno.listen({ transport: "unix", path });
const tcp = Deno.listen({ transport: "tcp", hostname: "127.0.0.1", port: 0 });
const exit = () => {
  try {
    listener.close();
    tcp.close();
    Deno.removeSync(path);
  } catch { /* gone */ }
  Deno.exit(0);
};
Deno.addSignalListener("SIGTERM", exit);
(async () => {
  // EOF on stdin: the parent is gone.
  const buf = new Uint8Array(256);
  try {
    while ((await Deno.stdin.read(buf)) !== null) { /* ignore */ }
  } catch { /* closed */ }
  exit();
})();
console.log(`echo listening on ${path} tcp:127.0.0.1:${tcp.addr.port}`);
(async () => {
  for await (const conn of tcp) {
    conn.setNoDelay(true);
    echo(conn);
  }
})();
for await (const conn of listener) echo(conn);
