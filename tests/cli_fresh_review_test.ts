/**
 * The `netsqlite` command against real servers, as a fresh reviewer used it: `.headers ON` typed
 * in capitals (sqlite3 takes it), `stats --watch` with more seconds than a timer holds, and a
 * script with a long multi-line statement (a multi-row `INSERT`, a text literal over many lines),
 * which the statement splitter must handle in time proportional to its length.
 */

import assert from "node:assert/strict";
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
