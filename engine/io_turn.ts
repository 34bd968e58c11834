/**
 * Lets Deno look at the sockets while a script or batch runs from the event
 * loop.
 *
 * Deno learns that a socket has data (or room) only when its runtime polls
 * the operating system for it, and it does so when its event loop has
 * nothing ready to run, or after a long run of ready work. A script's chain
 * of statements is always ready work: a step in the background completes in
 * tens of µs, a 0 ms timer is due at once, and each is followed by a 2 ms
 * slice inline. So other connections' requests sat unread in their sockets
 * while the event loop kept running: 100–185 ms at a time during one
 * `exec` of `"select 1;"` × 400,000 on the FFI engine (measured: a probe's
 * point reads every 5 ms, 2-core VM; `strace` showed no `epoll_wait` on the
 * main thread for as long).
 *
 * {@link IoTurn.take} waits for one byte sent through a loopback TCP
 * connection of the engine's own: that read can complete only after such a
 * poll, which sees every other socket's readiness too. The script takes one
 * every {@link IO_TURN_MS}, so the requests that arrived meanwhile are read
 * and served between its statements: during that script, another client's
 * point reads took p50 2.3 ms, max 18 ms, against max 86–705 ms before, the
 * script as fast (`bench/nonblocking.ts`, same VM).
 *
 * Without the permission to listen on and connect to 127.0.0.1 (a server
 * embedded with a scoped `--allow-net`) it never asks for it: a turn is then
 * a 0 ms timer, as before.
 *
 * @module
 */

/** Running time (ms) of a script or batch between two turns. */
export const IO_TURN_MS = 2;

/** A loopback connection pair, opened at the first turn and closed with the engine. */
export class IoTurn {
  #pair: Promise<[Deno.TcpConn, Deno.Conn] | null> | null = null;
  #closed = false;
  readonly #one = new Uint8Array(1);
  readonly #buf = new Uint8Array(64);

  /** The turn under way: scripts running at once share it (one byte in flight at a time). */
  #taking: Promise<void> | null = null;

  /** Resolves once Deno polled the sockets (or, without the pair, from a 0 ms timer). */
  take(): Promise<void> {
    return this.#taking ??= this.#take().finally(() => this.#taking = null);
  }

  async #take(): Promise<void> {
    const pair = await (this.#pair ??= this.#open());
    if (pair === null || this.#closed) return await timerTurn();
    const [a, b] = pair;
    try {
      await a.write(this.#one);
      if (await b.read(this.#buf) === null) throw new Error("loopback connection ended");
    } catch {
      if (this.#closed) return; // closed meanwhile (the engine closes): nothing to wait for
      // Broken (reset by something else on the machine): timer turns from now on.
      for (const c of pair) c.close();
      this.#pair = Promise.resolve(null);
      return await timerTurn();
    }
  }

  /** Closes the pair (idempotent); later turns are timer turns. */
  close(): void {
    this.#closed = true;
    this.#pair?.then((pair) => {
      for (const c of pair ?? []) c.close();
    });
  }

  async #open(): Promise<[Deno.TcpConn, Deno.Conn] | null> {
    if (!mayUseLoopback()) return null;
    let listener: Deno.Listener | null = null;
    let a: Deno.TcpConn | null = null;
    try {
      listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const { port } = listener.addr as Deno.NetAddr;
      a = await Deno.connect({ hostname: "127.0.0.1", port });
      const b = await acceptFrom(listener, (a.localAddr as Deno.NetAddr).port);
      if (b === null) {
        a.close();
        return null;
      }
      a.setNoDelay(true); // each byte sent at once, not held for the last one's acknowledgement
      if (this.#closed) {
        a.close();
        b.close();
        return null;
      }
      return [a, b];
    } catch {
      a?.close();
      return null;
    } finally {
      listener?.close();
    }
  }
}

/**
 * Accepts the connection from local port `port` (ours): another process on
 * the machine may connect to the listener first; those are closed. `null`
 * after a few others.
 */
async function acceptFrom(listener: Deno.Listener, port: number): Promise<Deno.Conn | null> {
  for (let tries = 0; tries < 4; tries++) {
    const conn = await listener.accept();
    if ((conn.remoteAddr as Deno.NetAddr).port === port) return conn;
    conn.close();
  }
  return null;
}

/** True when listening on and connecting to 127.0.0.1 is granted (asking nobody). */
function mayUseLoopback(): boolean {
  try {
    return Deno.permissions.querySync({ name: "net", host: "127.0.0.1" }).state === "granted";
  } catch {
    return false;
  }
}

function timerTurn(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}
