/**
 * A relative Unix socket path under the permissions of `deno task serve`
 * (not `-A`): Deno then binds and connects to it resolved against the
 * working directory, so what must fit in `sun_path` (107 bytes on Linux) is
 * the full path. The server's private directory for its socket is chosen by
 * the full path's length too, and a full path too long is refused with a
 * message that says so (Deno's own: "path must be shorter than SUN_LEN").
 * Real server and client processes, each started in a deep directory.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { connect } from "../client.ts";
import { readStdoutUntil, SERVE_TASK_FLAGS, tempDir } from "./_helpers.ts";

const SERVER_TS = fileURLToPath(new URL("../server.ts", import.meta.url));
const CLIENT_TS = fileURLToPath(new URL("../client.ts", import.meta.url));
const unix = Deno.build.os === "linux";

/** A directory under `base` whose `x.sock` has a full path of `bytes` bytes. */
function deepDir(base: string, bytes: number): string {
  const pad = bytes - `${base}//x.sock`.length;
  assert.ok(pad > 0 && pad < 250, `base ${base} leaves ${pad}`);
  const dir = `${base}/${"d".repeat(pad)}`;
  Deno.mkdirSync(dir);
  assert.equal(`${dir}/x.sock`.length, bytes);
  return dir;
}

/** `deno run` with the serve task's permissions, from `cwd`. */
function denoRun(cwd: string, script: string, args: string[]): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", ...SERVE_TASK_FLAGS, script, ...args],
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

Deno.test({
  name: "serve task permissions, relative --socket whose full path fits but whose private " +
    "directory's would not: the server listens, and clients reach it",
  ignore: !unix,
  async fn() {
    await using base = await tempDir();
    // 100 bytes in full: `.x.sock.<pid>.<8 hex>.tmp/s` and `.nsq<pid>.<8 hex>/s` beside it
    // would be over 107 in full (under 107 as written, relative): before, Deno was asked to
    // bind one of those and refused ("path must be shorter than SUN_LEN").
    const dir = deepDir(base.path, 100);
    const child = denoRun(dir, SERVER_TS, ["--db", "a.db", "--socket", "x.sock"]);
    const stderr = new Response(child.stderr).text();
    try {
      const { text, drained } = await readStdoutUntil(child, /serving|\n$/);
      assert.match(
        text,
        /serving a\.db .* on unix:.*\/x\.sock/,
        await stderrIfExited(child, stderr),
      );
      await using db = await connect({ path: `${dir}/x.sock` });
      assert.deepEqual(await db.values("SELECT 40 + 2"), [[42]]);
      child.kill("SIGTERM");
      await drained;
    } finally {
      try {
        child.kill("SIGKILL");
      } catch {
        // exited
      }
      await child.status;
      await stderr;
    }
  },
});

/** The child's stderr, if it has exited within a moment (for a failed assertion's message). */
async function stderrIfExited(child: Deno.ChildProcess, stderr: Promise<string>): Promise<string> {
  const ended = await Promise.race([
    child.status.then(() => true),
    new Promise<boolean>((r) => setTimeout(() => r(false), 2000)),
  ]);
  return ended ? await stderr : "(still running)";
}

Deno.test({
  name: "serve task permissions, relative --socket too long in full: the server says the full " +
    "path's length and that Deno resolved it",
  ignore: !unix,
  async fn() {
    await using base = await tempDir();
    const dir = deepDir(base.path, 120);
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-prompt",
        ...SERVE_TASK_FLAGS,
        SERVER_TS,
        "--db",
        "a.db",
        "--socket",
        "x.sock",
      ],
      cwd: dir,
      stdin: "null",
    }).output();
    const err = new TextDecoder().decode(out.stderr);
    assert.notEqual(out.code, 0);
    assert.match(
      err,
      /Cannot listen on unix:x\.sock: the path is 120 bytes long, and a Unix socket path may have at most 107/,
    );
    assert.match(err, /resolved against the working directory/);
    assert.doesNotMatch(err, /SUN_LEN/);
  },
});

Deno.test({
  name: "a client under narrower permissions than -A, relative path too long in full: the error " +
    "says the full path's length and that Deno resolved it",
  ignore: !unix,
  async fn() {
    await using base = await tempDir();
    const dir = deepDir(base.path, 120);
    const script = `${base.path}/client.ts`;
    await Deno.writeTextFile(
      script,
      `import { connect } from ${JSON.stringify(new URL(`file://${CLIENT_TS}`).href)};\n` +
        `try { await connect({ path: "x.sock" }); console.log("connected"); }\n` +
        `catch (err) { console.log(err.name + ": " + err.message); }\n`,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", ...SERVE_TASK_FLAGS, script],
      cwd: dir,
      stdin: "null",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.match(
      text,
      /ConnectionError: Cannot connect to unix:x\.sock: the path is 120 bytes long, .*resolved against the working directory/,
      new TextDecoder().decode(out.stderr),
    );
    assert.doesNotMatch(text, /SUN_LEN/);
  },
});
