/**
 * Faults audit 2: clients and operators that misbehave (processes stopped
 * with SIGSTOP, ...), against real servers and client processes.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { delay, startServer, startServerProcess, statsUntil, tempDir, within } from "./_helpers.ts";

const CLIENT_TS = new URL("../client.ts", import.meta.url).href;
const SERVER_TS = fileURLToPath(new URL("../server.ts", import.meta.url));

/** A `deno eval` child whose stdout is read line by line; disposing it ends it. */
class EvalChild {
  readonly child: Deno.ChildProcess;
  #out: ReadableStreamDefaultReader<string>;
  #text = "";
  #stopped = false;

  constructor(code: string) {
    this.child = new Deno.Command(Deno.execPath(), {
      args: ["eval", code],
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#out = this.child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** Reads until `line` has been printed (or the output ends). */
  async until(line: string): Promise<void> {
    while (!this.#text.includes(`${line}\n`)) {
      const { value, done } = await this.#out.read();
      if (done) return;
      this.#text += value;
    }
  }

  signal(sig: "SIGSTOP" | "SIGCONT"): void {
    this.child.kill(sig);
    this.#stopped = sig === "SIGSTOP";
  }

  /** Waits for the child to exit 0 and returns its last line, parsed as JSON. */
  async lastJson(): Promise<unknown> {
    for (;;) {
      const { value, done } = await this.#out.read();
      if (done) break;
      this.#text += value;
    }
    assert.equal((await this.child.status).code, 0, this.#text);
    return JSON.parse(this.#text.trim().split("\n").at(-1)!);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#stopped) this.child.kill("SIGCONT");
    try {
      this.child.kill("SIGKILL");
    } catch { /* exited */ }
    await this.child.status;
    await this.#out.cancel().catch(() => {});
  }
}

/** The child's `requestTimeout`: far above what its write takes once the writer is free. */
const REQUEST_TIMEOUT = 3000;

Deno.test("Link: a client process stopped (SIGSTOP) past its requestTimeout reads the reply that came meanwhile, not REQUEST_TIMEOUT", async () => {
  await using srv = await startServer();
  await using holder = await srv.client();
  await holder.exec("CREATE TABLE t (v TEXT)");
  // The child's write waits for the writer until the holder commits, which
  // happens only once the child is stopped: its reply comes while it is.
  await holder.exec("BEGIN IMMEDIATE");
  await using child = new EvalChild(
    `import { connect } from ${JSON.stringify(CLIENT_TS)};
    const db = await connect({ ...${JSON.stringify(srv.connectOptions)}, max: 1,
      requestTimeout: ${REQUEST_TIMEOUT} });
    const write = db.run("INSERT INTO t VALUES ('child')");
    console.log("sent");
    const outcome = await write.then((r) => ({ changes: r.changes }),
      (e) => ({ code: e.code, message: e.message }));
    console.log(JSON.stringify(outcome));
    await db.close();`,
  );
  await child.until("sent");
  await statsUntil(srv.connectOptions, (r) => r.writer.waiting >= 1, "the child's write waits");
  child.signal("SIGSTOP");
  const stoppedAt = performance.now();
  await holder.exec("COMMIT");
  // The write committed, and so was answered, while its client was stopped.
  for (let i = 0; (await holder.get<{ n: number }>("SELECT count(*) AS n FROM t"))!.n < 1; i++) {
    assert.ok(i < 1000, "the child's write did not commit");
    await delay(10);
  }
  // Stopped until well past its request's deadline.
  await delay(Math.max(0, stoppedAt + REQUEST_TIMEOUT + 1500 - performance.now()));
  child.signal("SIGCONT");
  // Was: REQUEST_TIMEOUT "No reply ... within 3000 ms (requestTimeout) ... it may have run",
  // for a write the server had committed and answered in time.
  assert.deepEqual(await child.lastJson(), { changes: 1 });
});

/** The child's `connectTimeout`. */
const CONNECT_TIMEOUT = 3000;

Deno.test("openLink: a client process stopped (SIGSTOP) past its connectTimeout reads the handshake reply that came meanwhile", async () => {
  await using srv = await startServerProcess();
  // The server is stopped while the child connects, so the handshake reply
  // comes only once the child is stopped in its turn.
  srv.child.kill("SIGSTOP");
  let serverStopped = true;
  try {
    await using child = new EvalChild(
      `import { connect } from ${JSON.stringify(CLIENT_TS)};
      console.log("connecting");
      const outcome = await connect({ ...${JSON.stringify(srv.connectOptions)}, max: 1,
        connectTimeout: ${CONNECT_TIMEOUT} }).then(
          async (db) => { const row = await db.get("SELECT 1 AS one"); await db.close(); return row; },
          (e) => ({ code: e.code, message: e.message }));
      console.log(JSON.stringify(outcome));`,
    );
    await child.until("connecting");
    // Time to connect and send the hello (the listen backlog takes them), well within the limit.
    await delay(1000);
    child.signal("SIGSTOP");
    const stoppedAt = performance.now();
    srv.child.kill("SIGCONT");
    serverStopped = false;
    // The server answered the child's hello (its session counts among the open ones).
    await statsUntil(srv.connectOptions, (r) => r.connections.total >= 2, "the child's hello");
    await delay(Math.max(0, stoppedAt + CONNECT_TIMEOUT + 1500 - performance.now()));
    child.signal("SIGCONT");
    // Was: REQUEST_TIMEOUT "Cannot connect to ...: no handshake reply within 3000 ms".
    assert.deepEqual(await child.lastJson(), { one: 1 });
  } finally {
    if (serverStopped) srv.child.kill("SIGCONT");
  }
});

const HAS_NOHUP = Deno.build.os === "linux" &&
  await new Deno.Command("nohup", { args: ["true"], stdout: "null", stderr: "null" }).output()
    .then((o) => o.success, () => false);

Deno.test({
  name:
    "server.ts started with nohup keeps ignoring SIGHUP (a closed terminal); SIGTERM still stops it",
  ignore: !HAS_NOHUP,
  fn: async () => {
    await using dir = await tempDir();
    const sock = `${dir.path}/s.sock`;
    const child = new Deno.Command("nohup", {
      args: [Deno.execPath(), "run", "-A", SERVER_TS, "--db", `${dir.path}/a.db`, "--socket", sock],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    let ended = false;
    let text = "";
    const read = child.stdout.pipeThrough(new TextDecoderStream()).pipeTo(
      new WritableStream({ write: (chunk) => void (text += chunk) }),
    );
    try {
      while (!/netsqlite: engine .*\n/.test(text)) {
        assert.equal(await within(child.status, 50), "timeout", `the server exited: ${text}`);
      }
      child.kill("SIGHUP");
      await delay(1000);
      // Was: the server stopped (Deno's listener for SIGINT catches SIGHUP too, undoing nohup).
      assert.equal(await within(child.status, 0), "timeout", `the server exited: ${text}`);
      {
        await using db = await connect({ path: sock, max: 1 });
        assert.deepEqual(await db.get("SELECT 1 AS one"), { one: 1 });
      }
      child.kill("SIGTERM");
      assert.equal((await child.status).code, 0);
      ended = true;
      await read;
      assert.match(
        text,
        /\nnetsqlite: SIGHUP ignored, as it was when the server started \(nohup\): a hang-up does not stop the server; SIGINT or SIGTERM does\n/,
      );
    } finally {
      if (!ended) {
        try {
          child.kill("SIGKILL");
        } catch { /* exited */ }
        await child.status;
        await read;
      }
    }
  },
});
