/**
 * The `netsqlite` command's arguments and output, against real servers:
 * option values that start with `-`, a bad `bench` flag, `.schema` leaving
 * out SQLite's own objects, floats beyond 2^53, and results streamed in the
 * csv, json and line modes past `--max-result-bytes`.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { joinValues } from "../cli/args.ts";
import { formatResult, realText } from "../cli/format.ts";
import { Shell, type ShellIO } from "../cli/shell.ts";
import { openAdminLink } from "../cli/admin.ts";
import { resolveConnectOptions } from "../client/options.ts";
import { Op } from "../protocol/messages.ts";
import { startServer } from "./_helpers.ts";
import { cli } from "./_cli.ts";

function socketOf(srv: { connectOptions: unknown }): string {
  return (srv.connectOptions as { path: string }).path;
}

/** Rows 1..n of one column `i`. */
function counting(n: number, select = "i"): string {
  return `WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ${n}) ` +
    `SELECT ${select} FROM c`;
}

// ---- arguments -------------------------------------------------------------------

Deno.test("joinValues() gives an option taking a value the next argument, whatever it starts with", () => {
  const options = {
    command: { type: "string" as const, short: "c" },
    token: { type: "string" as const },
    json: { type: "boolean" as const },
  };
  assert.deepEqual(
    joinValues(["-c", "-- note", "--token", "-s", "--json", "--token=x", "--", "-c"], options),
    ["--command=-- note", "--token=-s", "--json", "--token=x", "--", "-c"],
  );
  assert.deepEqual(joinValues(["--json", "-c"], options), ["--json", "-c"], "no value: as is");
});

Deno.test("cli.ts shell -c and --command take SQL starting with '-'; --token a secret starting with '-'", async () => {
  await using srv = await startServer({ token: "-s3cret" });
  const sock = socketOf(srv);
  const sql = "-- report\nSELECT 1 AS n";
  for (const flag of ["-c", "--command"]) {
    const r = await cli([
      "shell",
      "--socket",
      sock,
      "--token",
      "-s3cret",
      "--mode",
      "csv",
      flag,
      sql,
    ]);
    assert.equal(r.stderr, "");
    assert.equal(r.code, 0);
    assert.equal(r.stdout, "n\r\n1\r\n");
  }
  const stats = await cli(["stats", "--json", "--socket", sock, "--token", "-s3cret"]);
  assert.equal(stats.code, 0, stats.stderr);
  assert.equal(JSON.parse(stats.stdout).connections.admin, 1);
  const missing = await cli(["shell", "--socket", sock, "-c"]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /^netsqlite shell: Option '-c, --command <value>' argument missing/);
});

Deno.test("cli.ts bench with a bad flag says so in one line with exit status 2, no stack trace", async () => {
  const r = await cli(["bench", "--bogus"]);
  assert.equal(r.code, 2);
  assert.equal(r.stdout, "");
  // As `netsqlite serve --bogus` says it (README, The netsqlite command).
  assert.equal(r.stderr, "netsqlite: Unknown option '--bogus' (--help lists the options)\n");
  const bad = await cli(["bench", "--duration", "soon"]);
  assert.equal(bad.code, 2);
  assert.equal(
    bad.stderr,
    "netsqlite: --duration expects seconds > 0 (--help lists the options)\n",
  );
  // Run directly, bench/load.ts names itself.
  const direct = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", fileURLToPath(new URL("../bench/load.ts", import.meta.url)), "--bogus"],
    stdin: "null",
  }).output();
  assert.equal(direct.code, 2);
  assert.equal(
    new TextDecoder().decode(direct.stderr),
    "bench/load.ts: Unknown option '--bogus' (--help lists the options)\n",
  );
});

// ---- .schema ---------------------------------------------------------------------

Deno.test("cli.ts shell .schema leaves out sqlite_sequence and sqlite_stat1, so AUTOINCREMENT and ANALYZE replay", async () => {
  await using srv = await startServer();
  await using copy = await startServer();
  const ddl = "CREATE TABLE t(id INTEGER PRIMARY KEY AUTOINCREMENT, v);\n" +
    "CREATE INDEX tv ON t(v);\n";
  const made = await cli(
    ["shell", "--socket", socketOf(srv)],
    ddl + "INSERT INTO t(v) VALUES (1);\nANALYZE;\n",
  );
  assert.equal(made.code, 0, made.stderr);
  const dump = await cli(["shell", "--socket", socketOf(srv), "-c", ".schema"]);
  assert.equal(dump.code, 0, dump.stderr);
  assert.equal(dump.stdout, ddl);
  const replay = await cli(
    ["shell", "--socket", socketOf(copy), "--mode", "csv", "--no-headers"],
    dump.stdout + "INSERT INTO t(v) VALUES (7);\nSELECT name, seq FROM sqlite_sequence;\n",
  );
  assert.equal(replay.stderr, "");
  assert.equal(replay.code, 0);
  assert.equal(replay.stdout, "t,1\r\n");
});

// ---- floats ----------------------------------------------------------------------

Deno.test("realText() and the modes write a float of 2^53 or more so it does not look like an integer", () => {
  assert.equal(realText(1e18, false), "1.0e+18");
  assert.equal(realText(-1e300, false), "-1.0e+300");
  assert.equal(realText(2 ** 64, false), "1.84467440737096e+19");
  assert.equal(realText(2 ** 64, true), "1.8446744073709552e+19");
  assert.equal(Number(realText(2 ** 64, true)), 2 ** 64, "exact form reads back the same double");
  const result = { columns: ["f", "g", "small"], rows: [[2 ** 64, 1e18, 2 ** 53 - 1]] };
  assert.equal(
    formatResult("table", result),
    "+----------------------+---------+------------------+\n" +
      "| f                    | g       | small            |\n" +
      "+----------------------+---------+------------------+\n" +
      "| 1.84467440737096e+19 | 1.0e+18 | 9007199254740991 |\n" +
      "+----------------------+---------+------------------+\n",
  );
  assert.equal(
    formatResult("line", result),
    "    f = 1.84467440737096e+19\n    g = 1.0e+18\nsmall = 9007199254740991\n",
  );
  assert.equal(
    formatResult("csv", result),
    "f,g,small\r\n1.8446744073709552e+19,1.0e+18,9007199254740991\r\n",
  );
  const json = formatResult("json", result);
  assert.equal(json, '[{"f":1.8446744073709552e+19,"g":1.0e+18,"small":9007199254740991}]\n');
  assert.deepEqual(JSON.parse(json), [{ f: 2 ** 64, g: 1e18, small: 2 ** 53 - 1 }]);
});

Deno.test("cli.ts shell prints REALs beyond 2^53 as sqlite3 does, integers that large with all digits", async () => {
  await using srv = await startServer();
  const r = await cli([
    "shell",
    "--socket",
    socketOf(srv),
    "--mode",
    "line",
    "-c",
    "SELECT 18446744073709551615 AS f, 1e18 AS g, 9007199254740993 AS i, 2.5 AS h",
  ]);
  assert.equal(r.stderr, "");
  assert.equal(r.stdout, "f = 1.84467440737096e+19\ng = 1.0e+18\ni = 9007199254740993\nh = 2.5\n");
});

// ---- streaming -------------------------------------------------------------------

Deno.test("cli.ts shell streams csv, json and line results past --max-result-bytes; table says what to do", async () => {
  await using srv = await startServer({ maxResultBytes: 100_000 });
  const sock = socketOf(srv);
  const n = 30_000; // about 10 bytes a row: 3 times the limit
  const csv = await cli([
    "shell",
    "--socket",
    sock,
    "--mode",
    "csv",
    "-c",
    counting(n, "i, 'x' AS s"),
  ]);
  assert.equal(csv.stderr, "");
  assert.equal(csv.code, 0);
  const lines = csv.stdout.split("\r\n");
  assert.equal(lines.length, n + 2);
  assert.deepEqual([lines[0], lines[1], lines[n], lines[n + 1]], ["i,s", "1,x", `${n},x`, ""]);
  const json = await cli(["shell", "--socket", sock, "--mode", "json", "-c", counting(n)]);
  assert.equal(json.code, 0, json.stderr);
  const objects = JSON.parse(json.stdout) as { i: number }[];
  assert.equal(objects.length, n);
  assert.deepEqual([objects[0], objects[n - 1]], [{ i: 1 }, { i: n }]);
  const line = await cli(["shell", "--socket", sock, "--mode", "line", "-c", counting(n)]);
  assert.equal(line.code, 0, line.stderr);
  assert.equal(line.stdout, Array.from({ length: n }, (_, k) => `i = ${k + 1}\n`).join("\n"));
  // Empty results look as when buffered.
  const none = await cli([
    "shell",
    "--socket",
    sock,
    "--mode",
    "json",
    "-c",
    "SELECT 1 AS a WHERE 0",
  ]);
  assert.equal(none.stdout, "[]\n");
  const table = await cli(["shell", "--socket", sock, "-c", counting(n)]);
  assert.equal(table.code, 1);
  assert.equal(table.stdout, "");
  assert.equal(
    table.stderr,
    "Error: RESULT_TOO_LARGE: Result exceeds maxResultBytes 100000 (--max-result-bytes): use " +
      ".mode csv, json or line (--mode) to stream the rows, add LIMIT, or raise the server's " +
      "--max-result-bytes\n",
  );
});

Deno.test("Shell: an error part way through a streamed result is reported and the session goes on", async () => {
  await using srv = await startServer({ maxResultBytes: 100_000 });
  const client = await srv.client();
  try {
    let out = "";
    let err = "";
    const io: ShellIO = {
      out: (t) => Promise.resolve(void (out += t)),
      err: (t) => Promise.resolve(void (err += t)),
    };
    const shell = new Shell(client, io, "json");
    // Row 20000 overflows: rows before it were sent in earlier chunks.
    const failing = counting(
      30_000,
      "i, CASE WHEN i = 20000 THEN abs(-9223372036854775808) END AS v",
    );
    await shell.runScript(
      (async function* () {
        yield `${failing};\n`;
      })(),
      "test",
    ).then(() => assert.fail("expected the script to stop"), () => {});
    assert.equal(err, "Error: near line 1: SQLITE_ERROR: integer overflow\n");
    assert.match(out, /^\[\{"i":1,"v":null\},\n/);
    assert.equal(out.endsWith("}\n"), true, "the open json line is ended");
    assert.equal(out.includes("]"), false, "no closing bracket: the result is not whole");
    const shown = out.trimEnd().split("\n").length;
    assert.ok(shown > 0 && shown < 20_000, `${shown} rows before the failing one`);
    // The same connection goes on: the cursor is gone, a new statement runs.
    out = "";
    await shell.execute("SELECT 2 AS n");
    assert.equal(out, '[{"n":2}]\n');
    const admin = await openAdminLink(await resolveConnectOptions(srv.connectOptions));
    try {
      assert.equal((await admin.request(Op.Stats, [])).cursors, 0, "no cursor left open");
    } finally {
      admin.fail(new Error("done"));
      await admin.ended;
    }
  } finally {
    await client.close();
  }
});

Deno.test("cli.ts shell keeps INSERT ... RETURNING on its buffered path in csv mode (all or nothing)", async () => {
  await using srv = await startServer({ maxResultBytes: 100_000 });
  const sock = socketOf(srv);
  const r = await cli(
    ["shell", "--socket", sock, "--mode", "csv"],
    "CREATE TABLE t(i);\n" +
      `INSERT INTO t ${counting(30_000)} RETURNING i;\n`,
  );
  assert.equal(r.code, 1);
  assert.equal(r.stdout, "");
  assert.equal(
    r.stderr,
    "Error: near line 2: RESULT_TOO_LARGE: Result exceeds maxResultBytes 100000 " +
      "(--max-result-bytes): a write's RETURNING rows are not streamed, in any mode: change " +
      "fewer rows at a time (narrow its WHERE), return fewer columns, or raise the server's " +
      "--max-result-bytes\n",
  );
  const count = await cli([
    "shell",
    "--socket",
    sock,
    "--mode",
    "csv",
    "-c",
    "SELECT count(*) AS n FROM t",
  ]);
  assert.equal(count.stdout, "n\r\n0\r\n", "nothing of the refused write stays");
});
