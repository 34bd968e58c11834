/**
 * The `netsqlite` command against real servers, as a reviewer used it: output into a pipe whose
 * reader stops (`stats --watch | head -1`, the interactive shell), the shell's advice when a
 * write's `RETURNING` rows are too large, `-h` and `--help` as option values, dot commands given
 * too many arguments, the `stats` report's counts, and the `backup` refusal naming the CLI flag.
 */

import assert from "node:assert/strict";
import { type AdminIO, runAdmin } from "../cli/admin.ts";
import { OutputClosed } from "../cli/broken_pipe.ts";
import { DatabaseSync } from "node:sqlite";
import { serverStats, startServer, tempDir } from "./_helpers.ts";
import { CLI, cli } from "./_cli.ts";

function socketOf(srv: { connectOptions: unknown }): string {
  return (srv.connectOptions as { path: string }).path;
}

/** Runs a bash pipeline with `$0` the deno binary, `$1` cli.ts and `$2`... `args`. */
async function pipeline(script: string, args: string[]): Promise<{ out: string; err: string }> {
  const out = await new Deno.Command("bash", {
    args: ["-c", script, Deno.execPath(), CLI, ...args],
    env: { NETSQLITE_HISTORY: "", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { out: dec.decode(out.stdout), err: dec.decode(out.stderr) };
}

/** Waits until the server counts no admin session (the command's connection is closed). */
async function noAdminSession(srv: { connectOptions: Parameters<typeof serverStats>[0] }) {
  const deadline = Date.now() + 30_000;
  while (true) {
    const admin = (await serverStats(srv.connectOptions)).connections.admin;
    if (admin === 0) return;
    if (Date.now() > deadline) assert.fail(`${admin} admin sessions still open`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

// ---- a reader that stops early -------------------------------------------------------

Deno.test("cli.ts stats --watch piped into head ends quietly with status 0, its admin session closed", async () => {
  await using srv = await startServer();
  for (const json of [[], ["--json"]]) {
    // `timeout`: without the fix the command polls forever; 124 then says it had to be killed.
    const r = await pipeline(
      'timeout 60 "$0" run -A "$1" stats --socket "$2" --watch 0.1 "${@:3}" | head -1; ' +
        'echo "status ${PIPESTATUS[0]}"',
      [socketOf(srv), ...json],
    );
    const lines = r.out.split("\n");
    assert.equal(lines.at(-2), "status 0", r.out + r.err);
    if (json.length > 0) assert.equal(JSON.parse(lines[0]).connections.admin, 1);
    else assert.match(lines[0], new RegExp(`^netsqlite \\S+, up .*, pid ${Deno.pid}, engine `));
    assert.equal(r.err, "");
    await noAdminSession(srv);
  }
});

Deno.test("runAdmin(): an output whose reader went away ends stats --watch with 0; integrity keeps its status 3", async () => {
  await using dir = await tempDir();
  {
    await using srv = await startServer();
    const writes: string[] = [];
    const errors: string[] = [];
    const io: AdminIO = {
      out: (line) => {
        if (writes.length === 2) throw new OutputClosed(new Deno.errors.BrokenPipe());
        writes.push(line);
      },
      err: (line) => errors.push(line),
      progress: null,
      outIsTerminal: false,
    };
    const status = await runAdmin("stats", ["--watch", "0.05", "--socket", socketOf(srv)], io);
    assert.equal(status, 0);
    assert.deepEqual(errors, []);
    assert.equal(writes.length, 2, "a report, and the blank line before the next");
    await noAdminSession(srv);
  }
  // A damaged database: the check ran and found problems, whether or not the report was read.
  const db = new DatabaseSync(`${dir.path}/bad.db`);
  db.exec("PRAGMA journal_mode = DELETE; CREATE TABLE t(x); CREATE INDEX i ON t(x)");
  db.exec("INSERT INTO t VALUES (1), (2), (3)");
  const { rootpage } = db.prepare("SELECT rootpage FROM sqlite_schema WHERE name = 'i'")
    .get() as { rootpage: number };
  const { page_size } = db.prepare("PRAGMA page_size").get() as { page_size: number };
  db.close();
  const page = new Uint8Array(8); // an empty index leaf page
  page[0] = 0x0a;
  new DataView(page.buffer).setUint16(5, page_size);
  {
    using f = await Deno.open(`${dir.path}/bad.db`, { write: true });
    await f.seek((rootpage - 1) * page_size, Deno.SeekMode.Start);
    await f.write(page);
  }
  await using srv = await startServer({ database: `${dir.path}/bad.db` });
  for (const json of [[], ["--json"]]) {
    const errors: string[] = [];
    const io: AdminIO = {
      out: () => {
        throw new OutputClosed(new Deno.errors.BrokenPipe());
      },
      err: (line) => errors.push(line),
      progress: null,
    };
    assert.equal(await runAdmin("integrity", [...json, "--socket", socketOf(srv)], io), 3);
    assert.deepEqual(errors, []);
  }
});

const encoder = new TextEncoder();

const HAS_SCRIPT = (() => {
  try {
    return Deno.build.os === "linux" && Deno.statSync("/usr/bin/script").isFile &&
      Deno.statSync("/bin/bash").isFile;
  } catch {
    return false;
  }
})();

Deno.test({
  name: "cli.ts shell on a terminal with its output piped into head ends quietly with status 0",
  ignore: !HAS_SCRIPT,
  async fn() {
    await using srv = await startServer();
    // Standard input is the terminal `script` makes; standard output a pipe into `head -1`, which
    // stops after the banner's first line. The prompt may still fit in the pipe before `head`
    // ends, so lines are typed until a write (their echo, a result, the next prompt) finds the
    // reader gone.
    const command = `'${Deno.execPath()}' run -A '${CLI}' shell --socket '${socketOf(srv)}' ` +
      '| head -1; echo "status ${PIPESTATUS[0]}"';
    const child = new Deno.Command("script", {
      args: ["-qefc", command, "/dev/null"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      // `script` runs the command with $SHELL, and PIPESTATUS is bash's (sh has no such thing).
      env: { NETSQLITE_HISTORY: "", TERM: "xterm", NO_COLOR: "1", SHELL: "/bin/bash" },
    }).spawn();
    const writer = child.stdin.getWriter();
    const dec = new TextDecoder();
    let screen = "";
    const deadline = Date.now() + 60_000;
    const reader = child.stdout.getReader();
    let read = reader.read();
    try {
      while (!/status \d+/.test(screen) && Date.now() < deadline) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const tick = new Promise<"tick">((resolve) => {
          timer = setTimeout(() => resolve("tick"), 300);
        });
        const got = await Promise.race([read, tick]);
        clearTimeout(timer);
        if (got === "tick") {
          if (screen.includes("netsqlite shell ")) {
            await writer.write(encoder.encode("SELECT 1;\r")).catch(() => {});
          }
          continue;
        }
        if (got.done) break;
        screen += dec.decode(got.value, { stream: true });
        read = reader.read();
      }
    } finally {
      await writer.close().catch(() => {});
      if (!/status \d+/.test(screen)) {
        try {
          child.kill("SIGKILL");
        } catch { /* it ended already: its output says how */ }
      }
      for (let got = await read; !got.done; got = await reader.read()) {
        screen += dec.decode(got.value, { stream: true });
      }
      await child.status;
      await child.stderr.cancel();
    }
    assert.match(screen, /^netsqlite shell \S+, server /);
    assert.match(screen, /status 0\r\n/, screen);
    assert.doesNotMatch(screen, /BrokenPipe|error/i);
  },
});

// ---- what to do about a write's RETURNING rows -----------------------------------------

Deno.test("cli.ts shell: UPDATE/DELETE ... RETURNING past --max-result-bytes advises what fits a write, in every mode", async () => {
  await using srv = await startServer({ maxResultBytes: 100_000 });
  const sock = socketOf(srv);
  const fill = await cli([
    "shell",
    "--socket",
    sock,
    "-c",
    "CREATE TABLE r(x); INSERT INTO r WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL " +
    "SELECT i + 1 FROM c WHERE i < 5000) SELECT printf('%050d', i) FROM c",
  ]);
  assert.equal(fill.code, 0, fill.stderr);
  const writeHint = "Error: RESULT_TOO_LARGE: Result exceeds maxResultBytes 100000 " +
    "(--max-result-bytes): a write's RETURNING rows are not streamed, in any mode: change fewer " +
    "rows at a time (narrow its WHERE), return fewer columns, or raise the server's " +
    "--max-result-bytes\n";
  for (
    const sql of [
      "UPDATE r SET x = x RETURNING *",
      "WITH w AS (SELECT 1) DELETE FROM r RETURNING x",
    ]
  ) {
    for (const mode of ["table", "csv", "json", "line"]) {
      const r = await cli(["shell", "--socket", sock, "--mode", mode, "-c", sql]);
      assert.equal(r.code, 1, `${mode}: ${sql}`);
      assert.equal(r.stdout, "");
      assert.equal(r.stderr, writeHint, `${mode}: ${sql}`);
    }
  }
  const left = await cli([
    "shell",
    "--socket",
    sock,
    "--mode",
    "csv",
    "-c",
    "SELECT count(*) FROM r",
  ]);
  assert.equal(left.stdout, "count(*)\r\n5000\r\n", "the refused writes left nothing changed");
  // A query keeps its advice: stream it in another mode.
  const query = await cli(["shell", "--socket", sock, "-c", "SELECT * FROM r"]);
  assert.equal(query.code, 1);
  assert.match(
    query.stderr,
    /: use \.mode csv, json or line \(--mode\) to stream the rows, add LIMIT, or raise the server's --max-result-bytes\n$/,
  );
});

// ---- -h and --help as option values ----------------------------------------------------

Deno.test("cli.ts: -h and --help given as an option's value are that value, not a request for help", async () => {
  await using srv = await startServer({ token: "-h", logLevel: "error" });
  const sock = socketOf(srv);
  const shell = await cli([
    "shell",
    "--socket",
    sock,
    "--token",
    "-h",
    "--mode",
    "csv",
    "-c",
    "SELECT 1 AS n",
  ]);
  assert.equal(shell.stderr, "");
  assert.equal(shell.code, 0);
  assert.equal(shell.stdout, "n\r\n1\r\n");
  // `-c --help`: SQL that is a comment, so nothing to print.
  const comment = await cli(["shell", "--socket", sock, "--token", "-h", "-c", "--help"]);
  assert.equal(comment.code, 0, comment.stderr);
  assert.equal(comment.stdout, "");
  const stats = await cli(["stats", "--json", "--socket", sock, "--token", "-h"]);
  assert.equal(stats.code, 0, stats.stderr);
  assert.equal(JSON.parse(stats.stdout).connections.admin, 1);
  const vacuum = await cli(["vacuum", "--into", "--help", "--socket", sock, "--token", "-h"]);
  assert.equal(vacuum.code, 1, "sent, and refused by the server: not help");
  assert.match(vacuum.stderr, /^netsqlite vacuum: FORBIDDEN: Cannot vacuum into "--help": /);
  // Where an option stands, they still ask for help.
  for (const args of [["shell", "--token", "x", "-h"], ["stats", "--json", "--help"]]) {
    const help = await cli(args);
    assert.equal(help.code, 0);
    assert.match(help.stdout, new RegExp(`^netsqlite ${args[0]}: `));
  }
  const serve = await cli(["serve", "--db", "x.db", "-h"]);
  assert.equal(serve.code, 0);
  assert.match(serve.stdout, /netsqlite serve \[options\]/);
});

// ---- dot commands ----------------------------------------------------------------------

Deno.test("cli.ts shell refuses a dot command given more arguments than it takes, as sqlite3 does", async () => {
  await using srv = await startServer();
  await using dir = await tempDir();
  const sock = socketOf(srv);
  await Deno.writeTextFile(`${dir.path}/a b.sql`, "SELECT 'spaced' AS s;\n");
  await Deno.writeTextFile(`${dir.path}/a`, "SELECT 'wrong file' AS s;\n");
  const split = await cli(["shell", "--socket", sock, "-c", `.read ${dir.path}/a b.sql`]);
  assert.equal(split.code, 1);
  assert.equal(split.stdout, "", "the first argument alone was not read");
  assert.equal(
    split.stderr,
    `Error: Unexpected argument "b.sql" of ".read": usage ".read FILE" (quote a FILE with ` +
      `blanks: .read 'my file.sql')\n`,
  );
  const quoted = await cli([
    "shell",
    "--socket",
    sock,
    "--mode",
    "csv",
    "-c",
    `.read '${dir.path}/a b.sql'`,
  ]);
  assert.equal(quoted.code, 0, quoted.stderr);
  assert.equal(quoted.stdout, "s\r\nspaced\r\n");
  for (
    const [line, usage] of [
      [".tables a b", ".tables [PATTERN]"],
      [".headers on off", ".headers on|off"],
      [".mode csv json", ".mode [MODE]"],
      [".schema t u", ".schema [TABLE]"],
      [".exit 0 1", ".exit [CODE]"],
    ]
  ) {
    const r = await cli(["shell", "--socket", sock], `${line}\nSELECT 'after' AS a;\n`);
    assert.equal(r.code, 1, line);
    assert.equal(r.stdout, "", line);
    assert.match(
      r.stderr,
      new RegExp(
        `^Error: near line 1: Unexpected argument "\\S+" of "\\.\\w+": usage "${
          usage.replace(/[.[\]|]/g, "\\$&")
        }"\n$`,
      ),
      line,
    );
  }
});

Deno.test("cli.ts shell: a dot command missing its argument says which, with its usage", async () => {
  await using srv = await startServer();
  const sock = socketOf(srv);
  for (
    const [line, message] of [
      [".headers", 'Missing ON|OFF: usage ".headers on|off"'],
      [".header", 'Missing ON|OFF: usage ".header on|off"'],
      [".timer", 'Missing ON|OFF: usage ".timer on|off"'],
      [".read", 'Missing FILE: usage ".read FILE"'],
    ]
  ) {
    const r = await cli(["shell", "--socket", sock], `${line}\nSELECT 'after' AS a;\n`);
    assert.equal(r.code, 1, line);
    assert.equal(r.stdout, "", line);
    assert.equal(r.stderr, `Error: near line 1: ${message}\n`, line);
  }
  // A value that is not on or off is named as before.
  const bad = await cli(["shell", "--socket", sock, "-c", ".headers maybe"]);
  assert.equal(bad.code, 1);
  assert.equal(bad.stderr, 'Error: Invalid argument "maybe" of ".headers": expected on or off\n');
});

Deno.test("cli.ts shell: .exit CODE ends a script with that status, .quit ignores words after it (as sqlite3)", async () => {
  await using srv = await startServer();
  const sock = socketOf(srv);
  for (
    const [script, code, out] of [
      [".exit 0\nSELECT 'not run';\n", 0, ""],
      ["SELECT 'ran' AS a;\n.exit 3\nSELECT 'not run';\n", 3, "a\r\nran\r\n"],
      [".quit now\nSELECT 'not run';\n", 0, ""],
      [".exit\n", 0, ""],
    ] as const
  ) {
    const r = await cli(["shell", "--socket", sock, "--mode", "csv"], script);
    assert.equal(r.code, code, script);
    assert.equal(r.stdout, out, script);
    assert.equal(r.stderr, "", script);
  }
  const bad = await cli(["shell", "--socket", sock], ".exit soon\n");
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /Invalid argument "soon" of "\.exit": expected a status 0 to 255/);
});

// ---- stats counts and the backup refusal -------------------------------------------------

Deno.test("cli.ts stats says 1 error, not 1 errors", async () => {
  await using srv = await startServer();
  const db = await srv.client();
  try {
    await assert.rejects(db.exec("SELECT * FROM nowhere"));
  } finally {
    await db.close();
  }
  const r = await cli(["stats", "--socket", socketOf(srv)]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^requests {6}\d+ since start, 1 error$/m);
});

Deno.test("cli.ts backup and vacuum --into on a server without --backup-dir name --backup-dir, not serve({ backupDir })", async () => {
  await using srv = await startServer({ logLevel: "error" });
  const sock = socketOf(srv);
  for (const args of [["backup", "copy.db"], ["vacuum", "--into", "copy.db"]]) {
    const r = await cli([...args, "--socket", sock]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /^netsqlite \w+: FORBIDDEN: Cannot (back up to|vacuum into) "copy\.db": this server writes no files for clients; start it with --backup-dir DIR to permit destinations under DIR\n$/,
    );
  }
});

// ---- how floats are shown ------------------------------------------------------------

Deno.test("cli.ts shell shows floats below 2^53 exactly, as README's table says (not sqlite3's %!.15g)", async () => {
  await using srv = await startServer();
  const r = await cli([
    "shell",
    "--socket",
    socketOf(srv),
    "--mode",
    "line",
    "-c",
    "SELECT 0.1+0.2 AS a, 1.0/3 AS b, 1e-7 AS c, 1e15 AS d, 2.0 AS e, -0.0 AS f, 1e308*10 AS g",
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(
    r.stdout,
    "a = 0.30000000000000004\nb = 0.3333333333333333\nc = 1e-7\nd = 1000000000000000\n" +
      "e = 2\nf = -0\ng = Infinity\n",
  );
});

// ---- tokens the command line cannot carry unchanged ------------------------------------

Deno.test("cli.ts shell: a NETSQLITE_TOKEN that is not UTF-8, or a --token whose bytes were not, is refused with exit 2 (not ignored, not changed)", async () => {
  await using srv = await startServer({ token: "right-token-0123456789" });
  const run = async (prefix: string, flags: string) => {
    const out = await new Deno.Command("bash", {
      args: [
        "-c",
        `${prefix} '${Deno.execPath()}' run -A '${CLI}' shell --socket '${socketOf(srv)}' ` +
        `${flags} -c 'SELECT 1'`,
      ],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", NETSQLITE_HISTORY: "" },
    }).output();
    return { code: out.code, err: new TextDecoder().decode(out.stderr) };
  };
  const env = await run("NETSQLITE_TOKEN=$'right-token-\\xff'", "");
  assert.equal(env.code, 2, env.err);
  assert.match(env.err, /Invalid NETSQLITE_TOKEN: it is not valid UTF-8/);
  assert.doesNotMatch(env.err, /right-token/);
  const arg = await run("", "--token $'right-token-\\xff'");
  assert.equal(arg.code, 2, arg.err);
  assert.match(arg.err, /Invalid --token: it holds U\+FFFD/);
  // The same token as UTF-8 works.
  const ok = await run("NETSQLITE_TOKEN=right-token-0123456789", "");
  assert.equal(ok.code, 0, ok.err);
});
