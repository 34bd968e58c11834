/**
 * The `netsqlite` command against real servers, as a fresh reviewer used it: `.headers ON` typed
 * in capitals (sqlite3 takes it), `stats --watch` with more seconds than a timer holds, and a
 * script with a long multi-line statement (a multi-row `INSERT`, a text literal over many lines),
 * which the statement splitter must handle in time proportional to its length.
 */

import assert from "node:assert/strict";
import { splitStatements, SqlSplitter } from "../cli/sql_split.ts";
import { startServer } from "./_helpers.ts";
import { CLI, cli } from "./_cli.ts";

function socketOf(srv: { connectOptions: unknown }): string {
  return (srv.connectOptions as { path: string }).path;
}

Deno.test("cli.ts shell: on/off arguments of dot commands are taken in any case, as sqlite3 takes them", async () => {
  await using srv = await startServer();
  const sock = socketOf(srv);
  const r = await cli(
    ["shell", "--socket", sock, "--mode", "csv"],
    ".headers OFF\nSELECT 1 AS a;\n.headers On\nSELECT 2 AS b;\n.timer NO\n.header YES\nSELECT 3 AS c;\n",
  );
  assert.equal(r.stderr, "");
  assert.equal(r.code, 0);
  assert.equal(r.stdout, "1\r\nb\r\n2\r\nc\r\n3\r\n");
  // Other words are still refused, named as given.
  const bad = await cli(["shell", "--socket", sock, "-c", ".headers TRUE"]);
  assert.equal(bad.code, 1);
  assert.equal(bad.stderr, 'Error: Invalid argument "TRUE" of ".headers": expected on or off\n');
});

Deno.test("cli.ts stats: --watch longer than a timer can wait is refused, not polled every millisecond", async () => {
  await using srv = await startServer();
  const sock = socketOf(srv);
  // 3,000,000 s is more than 2^31 - 1 ms: a timer that long fires after 1 ms instead.
  const r = await cli(["stats", "--socket", sock, "--json", "--watch", "3000000", "--count", "3"]);
  assert.equal(r.code, 2, r.stdout + r.stderr);
  assert.equal(r.stdout, "");
  assert.match(
    r.stderr,
    /^netsqlite stats: Invalid --watch "3000000": expected at most 2147483 seconds \(24 days\)\n/,
  );
  // The largest accepted value watches: one report, then a wait (the command is stopped here).
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, "stats", "--socket", sock, "--json", "--watch", "2147483"],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "null",
  }).spawn();
  let text = "";
  const decoder = new TextDecoder();
  const reader = child.stdout.getReader();
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
  }
  await new Promise((resolve) => setTimeout(resolve, 500));
  child.kill("SIGTERM");
  for (let r = await reader.read(); !r.done; r = await reader.read()) {
    text += decoder.decode(r.value);
  }
  await child.status;
  assert.equal(text.split("\n").length, 2, "one report, then the wait");
  assert.equal(JSON.parse(text).connections.admin, 1);
});

/** Runs `cli.ts shell` on `script`, stopped (SIGKILL) after `ms`: a stopped run fails the test. */
async function shellWithin(sock: string, script: string, ms: number) {
  const started = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, "shell", "--socket", sock, "--mode", "csv", "--no-headers"],
    env: { NETSQLITE_HISTORY: "", NO_COLOR: "1" },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(ms),
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(script));
  await w.close();
  const out = await child.output();
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  const dec = new TextDecoder();
  return { ...out, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr), seconds };
}

Deno.test("cli.ts shell: a statement over 20,000 lines (multi-row INSERT, text literal) is split in linear time", async () => {
  await using srv = await startServer();
  const sock = socketOf(srv);
  const n = 20_000;
  const rows = Array.from({ length: n }, (_, i) => `(${i}, 'row ${i}; of many')`);
  const maxB = Array.from({ length: n }, (_, i) => `row ${i}; of many`).sort().at(-1);
  const insert = `CREATE TABLE m(a, b);\nINSERT INTO m VALUES\n${rows.join(",\n")};\n` +
    "SELECT count(*), sum(a), max(b) FROM m;\n";
  const text = Array.from({ length: n }, (_, i) => `line ${i}; -- not a comment /* nor this`);
  const literal = `SELECT length('${text.join("\n")}'), 'after';\n`;
  // Before the fix each took minutes (the pending text was scanned again for every line pushed).
  const deadline = 40_000;
  for (
    const [script, want] of [[insert, `${n},${n * (n - 1) / 2},${maxB}\r\n`], [
      literal,
      `${text.join("\n").length},after\r\n`,
    ]]
  ) {
    const r = await shellWithin(sock, script, deadline);
    assert.equal(r.stderr, "");
    assert.equal(r.code, 0, `exit ${r.code} after ${r.seconds} s`);
    assert.equal(r.stdout, want);
  }
});

Deno.test("SqlSplitter: a chunk is scanned once, whatever tokens its ends cut; statements come back whole", () => {
  const lines = Array.from({ length: 50_000 }, (_, i) => `'it''s ${i}' /* c ${i} */ || -- x\n`);
  const s = new SqlSplitter();
  const started = performance.now();
  s.push("SELECT\n");
  for (const line of lines) assert.deepEqual(s.push(line), []);
  assert.equal(s.isEmpty, false);
  assert.deepEqual(s.push("'end';\n"), ["SELECT\n" + lines.join("") + "'end';"]);
  assert.equal(s.isEmpty, true);
  const ms = performance.now() - started;
  // Linear: well under a second here; before the fix this took minutes.
  assert.ok(ms < 20_000, `${ms.toFixed(0)} ms`);
  assert.deepEqual(splitStatements("SELECT 1; -- a\n/* b */ SELECT 'c;''d'"), [
    "SELECT 1;",
    "SELECT 'c;''d'",
  ]);
});

Deno.test({
  name: "cli.ts shell on a terminal: a long pasted line is drawn once, not again for every key",
  ignore: Deno.build.os !== "linux" || !Deno.statSync("/usr/bin/script").isFile,
  async fn() {
    await using srv = await startServer();
    const sock = socketOf(srv);
    const command = `'${Deno.execPath()}' run -A '${CLI}' shell --socket '${sock}' --mode csv`;
    const child = new Deno.Command("script", {
      args: ["-qefc", command, "/dev/null"],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
      env: { NETSQLITE_HISTORY: "", TERM: "xterm", NO_COLOR: "1" },
    }).spawn();
    const writer = child.stdin.getWriter();
    let screen = "";
    const pump = (async () => {
      const dec = new TextDecoder();
      for await (const chunk of child.stdout) screen += dec.decode(chunk, { stream: true });
    })();
    const waitFor = async (text: string, from: number, ms: number): Promise<number> => {
      const deadline = Date.now() + ms;
      while (true) {
        const at = screen.indexOf(text, from);
        if (at !== -1) return at + text.length;
        if (Date.now() > deadline) {
          throw new Error(
            `Timed out waiting for ${JSON.stringify(text)}: ${JSON.stringify(screen.slice(-300))}`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    };
    try {
      let at = await waitFor("netsqlite> ", 0, 20_000);
      // (csv lines end \r\n, and the terminal turns the \n into \r\n.)
      // Before the fix each key redrew the whole line: 80,000 keys took several minutes.
      const pasted = `SELECT length('${"x".repeat(80_000)}') AS n;`;
      await writer.write(new TextEncoder().encode(pasted + "\r"));
      at = await waitFor("n\r\r\n80000\r\r\n", at, 40_000);
      at = await waitFor("netsqlite> ", at, 20_000);
      // Typing goes on as before: keys typed one at a time are echoed.
      await writer.write(new TextEncoder().encode("SELECT 'next' AS m;\r"));
      at = await waitFor("m\r\r\nnext\r\r\n", at, 20_000);
      // Far less was drawn than a redraw of the line per key (80 columns each).
      assert.ok(screen.length < 400_000, `${screen.length} characters drawn`);
      await writer.write(new TextEncoder().encode(".quit\r"));
    } finally {
      await writer.close().catch(() => {});
      assert.equal((await child.status).code, 0);
      await pump;
    }
  },
});
