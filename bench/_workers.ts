/**
 * The parent side of `_load_worker.ts`: spawns a worker process and talks
 * to it in JSON lines.
 *
 * @module
 */

import { fileURLToPath } from "node:url";

const WORKER_TS = fileURLToPath(new URL("./_load_worker.ts", import.meta.url));

/** A `_load_worker.ts` child process speaking JSON lines. */
export class WorkerProcess {
  readonly child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #lines: AsyncIterator<string>;
  readonly #encoder = new TextEncoder();

  /** @param denoFlags Extra `deno run` flags, e.g. `--cpu-prof`. */
  constructor(denoFlags: string[] = []) {
    this.child = new Deno.Command(Deno.execPath(), {
      args: ["run", ...denoFlags, "-A", WORKER_TS],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#writer = this.child.stdin.getWriter();
    this.#lines = readLines(this.child.stdout);
  }

  async send(msg: unknown): Promise<void> {
    await this.#writer.write(this.#encoder.encode(JSON.stringify(msg) + "\n"));
  }

  async receive<T>(): Promise<T> {
    const { value, done } = await this.#lines.next();
    if (done) throw new Error(`worker ${this.child.pid} exited`);
    const msg = JSON.parse(value);
    if (msg.type === "error") throw new Error(`worker ${this.child.pid}: ${msg.message}`);
    return msg as T;
  }

  async exit(): Promise<void> {
    await this.send({ type: "exit" }).catch(() => {});
    await this.#writer.close().catch(() => {});
    let timer: ReturnType<typeof setTimeout> | undefined;
    const exited = await Promise.race([
      this.child.status.then(() => true),
      new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), 3000)),
    ]);
    clearTimeout(timer);
    if (!exited) this.kill();
    await this.child.status;
    // Drain what is left so the stream is released.
    for (;;) if ((await this.#lines.next()).done) break;
  }

  kill(): void {
    try {
      this.child.kill("SIGKILL");
    } catch { /* gone */ }
  }
}

/** Splits a byte stream into non-empty text lines. */
export async function* readLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of stream) {
    pending += decoder.decode(chunk, { stream: true });
    let nl;
    while ((nl = pending.indexOf("\n")) !== -1) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (line.trim() !== "") yield line;
    }
  }
}

/**
 * Runs `deno fmt` on generated files so they pass the repository's
 * `deno fmt --check` (which also covers markdown and JSON). Best effort.
 */
export async function formatFiles(paths: string[]): Promise<void> {
  try {
    await new Deno.Command(Deno.execPath(), {
      args: ["fmt", "--quiet", ...paths],
      cwd: new URL("..", import.meta.url),
      stdout: "null",
      stderr: "inherit",
    }).output();
  } catch { /* leave them unformatted */ }
}
