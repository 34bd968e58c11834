/**
 * The command lines of `netsqlite shell`, the administration commands and the
 * server: several `-c` run in order, an unknown option is named without
 * `parseArgs`'s hint about positionals (its quote unbalanced, and no command
 * needs it), and a bad server flag is one line, not the line and the help.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { parseFlags } from "../cli/args.ts";
import { parseShellArgs, SHELL_FLAGS } from "../cli/shell.ts";
import { ADMIN_FLAGS } from "../cli/admin.ts";
import { parseServeArgs } from "../server.ts";
import { startServer } from "./_helpers.ts";
import { cli } from "./_cli.ts";

const SERVER_TS = fileURLToPath(new URL("../server.ts", import.meta.url));

function socketOf(srv: { connectOptions: unknown }): string {
  return (srv.connectOptions as { path: string }).path;
}

/** `deno run -A server.ts ...args` (it fails before it opens anything). */
async function runServer(
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SERVER_TS, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

// ---- several -c ------------------------------------------------------------------

Deno.test("parseShellArgs() keeps every -c and --command, in order", () => {
  const parsed = parseShellArgs([
    "-c",
    "SELECT 1",
    "--mode",
    "csv",
    "--command",
    "-- two\nSELECT 2",
  ]);
  assert.notEqual(parsed, "help");
  if (parsed === "help") return;
  assert.deepEqual(parsed.commands, ["SELECT 1", "-- two\nSELECT 2"]);
  assert.equal(parsed.mode, "csv");
  const none = parseShellArgs(["--mode", "json"]);
  assert.ok(none !== "help" && none.commands.length === 0);
});

Deno.test("parseFlags() returns the values of an option given more than once in lists, in order; others: the last", () => {
  const options = {
    command: { type: "string", short: "c", multiple: true },
    mode: { type: "string" },
  } as const;
  const p = parseFlags(["-c", "a", "--mode", "x", "--command=b", "-cc", "--mode", "y"], options);
  assert.deepEqual(p.lists, { command: ["a", "b", "c"] });
  assert.deepEqual(p.values, { mode: "y" });
  assert.deepEqual(parseFlags([], options).lists, { command: [] });
});

Deno.test("cli.ts shell runs each of several -c in order, each a script of its own", async () => {
  await using srv = await startServer();
  const sock = socketOf(srv);
  const r = await cli([
    "shell",
    "--socket",
    sock,
    "--mode",
    "csv",
    "-c",
    "CREATE TABLE t(a)",
    "-c",
    "INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)",
    "--command",
    "SELECT count(*) AS n FROM t",
    "-c",
    // A statement without `;` ends with its -c: it does not run on into the next one.
    "SELECT 'x' AS last",
  ]);
  assert.equal(r.stderr, "");
  assert.equal(r.code, 0);
  assert.equal(r.stdout, "n\r\n2\r\nlast\r\nx\r\n");
});

Deno.test("cli.ts shell with several -c stops at the first error (exit status 1), at .quit and at .exit CODE", async () => {
  await using srv = await startServer();
  const sock = socketOf(srv);
  const shell = (...sql: string[]) =>
    cli(["shell", "--socket", sock, "--mode", "csv", ...sql.flatMap((s) => ["-c", s])]);
  const count = async (): Promise<string> => {
    const r = await shell("SELECT count(*) AS n FROM t");
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  };
  assert.equal((await shell("CREATE TABLE t(a)")).code, 0);

  const failed = await shell("SELECT 1 AS a", "SELECT nope", "INSERT INTO t VALUES (1)");
  assert.equal(failed.code, 1);
  assert.equal(failed.stdout, "a\r\n1\r\n");
  // As a single -c reports it: no line number.
  assert.equal(failed.stderr, "Error: SQLITE_ERROR: no such column: nope\n");
  assert.equal(await count(), "n\r\n0\r\n", "the -c after the error did not run");
  // The error is the exit status whatever runs after it would have done.
  const single = await shell("SELECT nope");
  assert.equal(single.code, failed.code);
  assert.equal(single.stderr, failed.stderr);

  const exited = await shell("INSERT INTO t VALUES (1)", ".exit 3", "INSERT INTO t VALUES (2)");
  assert.equal(exited.code, 3, exited.stderr);
  assert.equal(await count(), "n\r\n1\r\n");

  const quit = await shell("INSERT INTO t VALUES (1)", ".quit", "INSERT INTO t VALUES (2)");
  assert.equal(quit.code, 0, quit.stderr);
  assert.equal(await count(), "n\r\n2\r\n");
});

// ---- unknown options ---------------------------------------------------------------

Deno.test("parseFlags() names an unknown option without parseArgs's hint about positionals", () => {
  const refused = (args: string[], message: string) =>
    assert.throws(() => parseFlags(args, SHELL_FLAGS), (err: unknown) => {
      assert.ok(err instanceof TypeError, String(err));
      assert.equal(err.message, message);
      return true;
    });
  refused(["--bogus"], "Unknown option '--bogus'");
  refused(["-c", "SELECT 1", "-x"], "Unknown option '-x'");
  // A quote in the name does not cut it short.
  refused(["--it's"], "Unknown option '--it's'");
  // A group of short options is named with the argument it came in; a long option with one dash
  // gets the option it may mean.
  refused(["-bogus"], "Unknown option '-b' in '-bogus'");
  refused(["-mode", "csv"], "Unknown option '-m' in '-mode': did you mean '--mode'?");
  assert.throws(
    () => parseFlags(["-json"], ADMIN_FLAGS.stats),
    { name: "TypeError", message: "Unknown option '-j' in '-json': did you mean '--json'?" },
  );
  // The other errors of parseArgs carry no such hint: as they are.
  assert.throws(() => parseFlags(["-c"], SHELL_FLAGS), {
    message: "Option '-c, --command <value>' argument missing",
  });
  assert.throws(() => parseFlags(["--no-headers=1"], SHELL_FLAGS), {
    message: "Option '--no-headers' does not take an argument",
  });
});

Deno.test("cli.ts shell, stats and backup name an unknown option in their words, then their help", async () => {
  for (const command of ["shell", "stats", "backup"]) {
    const r = await cli([command, "--bogus"]);
    assert.equal(r.code, 2, command);
    assert.equal(r.stdout, "");
    assert.ok(
      r.stderr.startsWith(
        `netsqlite ${command}: Unknown option '--bogus'\n\nnetsqlite ${command}: `,
      ),
      r.stderr,
    );
    assert.doesNotMatch(r.stderr, /positional|'-- "/);
  }
});

// ---- the server's flags ----------------------------------------------------------------

Deno.test("parseServeArgs() names an unknown option, and a one-dash long option's two-dash form", () => {
  assert.throws(() => parseServeArgs(["--bogus"]), {
    name: "TypeError",
    message: "Unknown option '--bogus'",
  });
  assert.throws(() => parseServeArgs(["-db", "a.db"]), {
    name: "TypeError",
    message: "Unknown option '-d' in '-db': did you mean '--db'?",
  });
});

Deno.test("server.ts and cli.ts serve with a bad flag or value print one line, not the help, with exit status 2", async () => {
  const cases: [string[], string][] = [
    // A mistake in the options themselves: where they are listed.
    [["--bogus"], "Unknown option '--bogus' (--help lists the options)"],
    [
      ["-db", "x.db"],
      "Unknown option '-d' in '-db': did you mean '--db'? (--help lists the options)",
    ],
    [["--db"], "Option '--db <value>' argument missing (--help lists the options)"],
    [
      ["--readonly=yes"],
      "Option '--readonly' does not take an argument (--help lists the options)",
    ],
    [
      ["x.db"],
      "Unexpected argument 'x.db'. This command does not take positional arguments " +
      "(--help lists the options)",
    ],
    // A bad value of a known option: the line alone.
    [
      ["--busy-timeout", "abc"],
      'Invalid --busy-timeout "abc": expected a whole number in decimal digits',
    ],
  ];
  for (const [args, message] of cases) {
    const expected = `netsqlite: ${message}\n`;
    const direct = await runServer(args);
    assert.equal(direct.code, 2, direct.stderr);
    assert.equal(direct.stdout, "");
    assert.equal(direct.stderr, expected);
    const viaCli = await cli(["serve", ...args]);
    assert.equal(viaCli.code, 2, viaCli.stderr);
    assert.equal(viaCli.stderr, expected);
  }
  // The help is still there for those who ask.
  const help = await runServer(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--busy-timeout MS/);
});

Deno.test('cli.ts: a bad --channel and an empty --db or --socket are bad arguments (exit 2) named by their flag; serve shows an empty value as ""', async () => {
  const cases: [string[], string][] = [
    [
      ["shell", "--channel", "bad/x", "-c", "select 1"],
      'netsqlite shell: Invalid --channel "bad/x": expected 1-64 letters, digits, ".", "_" or "-"',
    ],
    [
      ["integrity", "--channel", "bad/x"],
      'netsqlite integrity: Invalid --channel "bad/x": expected 1-64 letters, digits, ".", "_" or "-"',
    ],
    [
      ["shell", "--db", "", "-c", "select 1"],
      "netsqlite shell: Invalid --db: it is empty; expected a path",
    ],
    [
      ["backup", "x.db", "--socket", ""],
      "netsqlite backup: Invalid --socket: it is empty; expected a path",
    ],
  ];
  for (const [args, line] of cases) {
    const r = await cli(args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.equal(r.stdout, "");
    assert.equal(r.stderr.split("\n")[0], line);
  }
  const serve = await cli(["serve", "--db", ""]);
  assert.equal(serve.code, 2, serve.stderr);
  assert.equal(serve.stderr, 'netsqlite: Invalid --db: expected a file path, got ""\n');
});
