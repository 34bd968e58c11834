/**
 * A raw protocol connection for tests that need requests the client never
 * sends as such (a cancel of a given id, requests written together): typed
 * requests out, replies in, in order.
 */

import assert from "node:assert/strict";
import { MessageDecoder, MessageEncoder } from "../protocol/codec.ts";
import { Op, PROTOCOL_VERSION, type Request, Status } from "../protocol/messages.ts";
import { FrameReader } from "../transport/frame_reader.ts";

/** A raw protocol connection: typed requests out, replies in. */
export class Wire implements AsyncDisposable {
  readonly #conn: Deno.Conn;
  readonly #enc = new MessageEncoder(1 << 20);
  readonly #dec = new MessageDecoder();
  readonly #reader = new FrameReader(1 << 22);
  readonly #buf = new Uint8Array(64 * 1024);
  #id = 1;

  private constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /** Connects to the server on socket `path` and says hello. */
  static async open(path: string): Promise<Wire> {
    const wire = new Wire(await Deno.connect({ transport: "unix", path }));
    await wire.call(Op.Hello, { version: PROTOCOL_VERSION });
    return wire;
  }

  /** Sends one request without waiting; returns its id. */
  async send(op: number, ...args: unknown[]): Promise<number> {
    const id = ++this.#id;
    this.#enc.append([op, id, ...args] as unknown as Request);
    await this.#conn.write(this.#enc.take());
    return id;
  }

  /**
   * Sends requests (`[op, ...args]` each) in one write, so the server reads
   * them together; returns their ids.
   */
  async sendAll(...requests: unknown[][]): Promise<number[]> {
    const ids = requests.map(([op, ...args]) => {
      const id = ++this.#id;
      this.#enc.append([op, id, ...args] as unknown as Request);
      return id;
    });
    await this.#conn.write(this.#enc.take());
    return ids;
  }

  /** The id the next request will take. */
  get nextId(): number {
    return this.#id + 1;
  }

  /** Sends `cancel` for request `target` (it has no reply of its own). */
  async cancel(target: number): Promise<void> {
    await this.send(Op.Cancel, target);
  }

  /** The next reply: `[id, status, body]`. */
  async reply(): Promise<[number, number, unknown]> {
    for (;;) {
      const frame = this.#reader.next();
      if (frame !== undefined) return this.#dec.decode(frame) as [number, number, unknown];
      const n = await this.#conn.read(this.#buf);
      if (n === null) throw new Error("connection closed");
      this.#reader.push(this.#buf.slice(0, n));
    }
  }

  /** Sends a request and returns its reply (which must be the next one). */
  async call(op: number, ...args: unknown[]): Promise<{ status: number; body: unknown }> {
    const id = await this.send(op, ...args);
    const [got, status, body] = await this.reply();
    assert.equal(got, id, "replies come in request order");
    return { status, body };
  }

  /** Runs `sql` (a `run`), asserting success; returns the reply's status. */
  async ok(sql: string): Promise<number> {
    const { status, body } = await this.call(Op.Run, sql, null, null);
    assert.equal(status & Status.Error, 0, `${sql}: ${JSON.stringify(body)}`);
    return status;
  }

  /** Runs `sql` (a `run`), expecting the error `code`; returns its message. */
  async fails(sql: string, code: string): Promise<string> {
    const { status, body } = await this.call(Op.Run, sql, null, null);
    assert.equal(status & Status.Error, Status.Error, `${sql} succeeded`);
    assert.equal((body as { code: string }).code, code, JSON.stringify(body));
    return (body as { message: string }).message;
  }

  /** `SELECT count(*)` of table `t`, which must succeed. */
  async count(): Promise<number> {
    const { status, body } = await this.call(Op.Query, "SELECT count(*) FROM t", null, null);
    assert.equal(status & Status.Error, 0, JSON.stringify(body));
    return ((body as [string[], unknown[][]])[1][0] as number[])[0];
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.#conn.close();
    return Promise.resolve();
  }
}
