/**
 * Runs one crash-trial writer as its own `deno run` process
 * (tests/fixtures/crash_writer.ts) and reads what it was acknowledged from its
 * output: one line per acknowledged write, printed right after the
 * acknowledgement, so a line is there exactly when the write was acknowledged.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import type { ConnectOptions } from "../../client.ts";

const FIXTURE = fileURLToPath(new URL("../fixtures/crash_writer.ts", import.meta.url));

/** What one writer process reported. */
export interface WriterOutput {
  /** Acknowledged autocommit row ids. */
  rows: number[];
  /** Acknowledged transactions: [group id, row count]. */
  txs: [number, number][];
  busy: number;
  unexpected: string[];
}

/** A running writer process. */
export interface WriterProcess extends AsyncDisposable {
  /** Acknowledgements printed so far. */
  acked(): { rows: number; txs: number };
  /** Waits for the process to end (it ends when its connection dies) and parses its output. */
  finish(): Promise<WriterOutput>;
}

/** Parameters of one writer process. */
export interface WriterParams {
  connectOptions: ConnectOptions;
  w: number;
  trial: number;
  seed: number;
  idBase: number;
  groupBase: number;
}

/** How long a writer may take to exit after the server died (it should take milliseconds). */
const EXIT_LIMIT_MS = 10_000;

/**
 * Starts a writer process and resolves once it is connected and writing.
 *
 * @throws {Error} When the process exits before connecting.
 */
export async function writerProcess(params: WriterParams): Promise<WriterProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", FIXTURE, JSON.stringify(params)],
    stdout: "piped",
    stderr: "inherit",
    stdin: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("ready\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  if (!text.includes("ready\n")) {
    await child.status;
    throw new Error(`Crash writer ${params.w} did not start: ${JSON.stringify(text)}`);
  }
  // Keep reading, so the writer never blocks on a full pipe.
  const collected = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      text += value;
    }
  })().catch(() => {});
  let finished = false;
  return {
    acked: () => ({
      rows: text.match(/^row /gm)?.length ?? 0,
      txs: text.match(/^tx /gm)?.length ?? 0,
    }),
    async finish(): Promise<WriterOutput> {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          try {
            child.kill("SIGKILL");
          } catch { /* gone */ }
          resolve();
        }, EXIT_LIMIT_MS);
      });
      try {
        const status = await Promise.race([child.status, late.then(() => null)]);
        await collected;
        finished = true;
        const out = parse(text);
        if (status === null) {
          out.unexpected.push(
            `writer ${params.w}: did not exit ${EXIT_LIMIT_MS} ms after the crash`,
          );
        } else if (status.code !== 0) {
          out.unexpected.push(`writer ${params.w}: exited with ${status.code}`);
        }
        if (!text.includes("\nend\n")) out.unexpected.push(`writer ${params.w}: no end line`);
        return out;
      } finally {
        clearTimeout(timer);
        await child.status;
      }
    },
    async [Symbol.asyncDispose]() {
      if (!finished) {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }
      await child.status;
      await collected;
    },
  };
}

function parse(text: string): WriterOutput {
  const out: WriterOutput = { rows: [], txs: [], busy: 0, unexpected: [] };
  for (const line of text.split("\n")) {
    const [kind, a, b] = line.split(" ");
    if (kind === "row") out.rows.push(Number(a));
    else if (kind === "tx") out.txs.push([Number(a), Number(b)]);
    else if (kind === "busy") out.busy = Number(a);
    else if (kind === "unexpected") out.unexpected.push(JSON.parse(line.slice(11)));
  }
  return out;
}
