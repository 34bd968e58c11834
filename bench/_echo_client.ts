/**
 * Client side of the echo floor: sends 4-byte length-prefixed frames with a
 * 40-byte payload (about the size of a netsqlite point-read request) and
 * waits for the echo, using only `Deno.Conn` reads and writes.
 *
 * @module
 */

/** Payload bytes of one echo frame. */
export const ECHO_PAYLOAD = 40;
/** Bytes of one framed echo message. */
export const ECHO_FRAME = 4 + ECHO_PAYLOAD;

function frames(count: number): Uint8Array {
  const out = new Uint8Array(count * ECHO_FRAME);
  const view = new DataView(out.buffer);
  for (let i = 0; i < count; i++) {
    view.setUint32(i * ECHO_FRAME, ECHO_PAYLOAD);
    out.fill(0x61 + (i % 26), i * ECHO_FRAME + 4, (i + 1) * ECHO_FRAME);
  }
  return out;
}

/** Where the echo server listens. */
export type EchoAddress = { path: string } | { hostname: string; port: number };

/** Connects to the echo server (Nagle off for TCP). */
export async function connectEcho(addr: EchoAddress): Promise<Deno.Conn> {
  if ("path" in addr) return await Deno.connect({ transport: "unix", path: addr.path });
  const conn = await Deno.connect({ hostname: addr.hostname, port: addr.port });
  conn.setNoDelay(true);
  return conn;
}

/** One-at-a-time echo round trips on one connection. */
export class EchoClient {
  readonly #conn: Deno.Conn;
  readonly #frame = frames(1);
  readonly #buf = new Uint8Array(64 * 1024);

  /** @param conn A connection to the echo server. */
  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /** Sends one frame and resolves once all of its bytes came back. */
  async roundTrip(): Promise<void> {
    await this.#conn.write(this.#frame);
    let got = 0;
    while (got < ECHO_FRAME) {
      const n = await this.#conn.read(this.#buf);
      if (n === null) throw new Error("echo server closed the connection");
      got += n;
    }
  }

  /** Closes the connection. */
  close(): void {
    try {
      this.#conn.close();
    } catch { /* already closed */ }
  }
}

/**
 * Keeps `inflight` frames outstanding on `conn` until `shouldStop()` is true:
 * for every frame that comes back it calls `onDone(latencyMs, now)` and sends
 * a new one; frames completed in one read are replaced with one write.
 */
export async function pipelinedEcho(
  conn: Deno.Conn,
  inflight: number,
  shouldStop: () => boolean,
  onDone: (latencyMs: number, now: number) => void,
): Promise<void> {
  const batch = frames(inflight);
  const sent = new Float64Array(inflight); // ring of send times
  let head = 0; // oldest outstanding
  let tail = 0; // next slot
  let outstanding = 0;
  const send = async (count: number) => {
    const now = performance.now();
    for (let i = 0; i < count; i++) {
      sent[tail] = now;
      tail = (tail + 1) % inflight;
    }
    outstanding += count;
    const bytes = batch.subarray(0, count * ECHO_FRAME);
    for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
  };
  await send(inflight);
  const buf = new Uint8Array(64 * 1024);
  let partial = 0; // bytes of a frame not yet complete
  while (outstanding > 0) {
    const n = await conn.read(buf);
    if (n === null) throw new Error("echo server closed the connection");
    partial += n;
    const done = Math.floor(partial / ECHO_FRAME);
    partial -= done * ECHO_FRAME;
    if (done === 0) continue;
    const now = performance.now();
    for (let i = 0; i < done; i++) {
      onDone(now - sent[head], now);
      head = (head + 1) % inflight;
    }
    outstanding -= done;
    if (!shouldStop()) await send(done);
  }
}
