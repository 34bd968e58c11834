/**
 * Findings of a review of the `netsqlite` command, on the engine of `NETSQLITE_ENGINE`: a
 * destination that names a directory that does not exist (`backup daily/`) is refused instead
 * of becoming a file; the shell's `.tables`, `.schema` and `.indexes` show TEMP objects; a
 * statement of a script that surely has no rows costs one request; a copy's name with a line
 * break stays on one line of the summary; `stats --watch` starts each report on a terminal at the
 * top line.
 */

import assert from "node:assert/strict";
import { describeBackup, describeVacuum, runAdmin } from "../cli/admin.ts";
import { Op } from "../protocol/messages.ts";
import { openTestLink, startServer, tempDir } from "./_helpers.ts";
import { cli } from "./_cli.ts";

function socketOf(srv: { connectOptions: unknown }): string {
  return (srv.connectOptions as { path: string }).path;
}

Deno.test("backup and vacuum into a path with a trailing separator whose directory does not exist are refused (no file made)", async () => {
  await using dir = await tempDir();
  const copies = `${Deno.realPathSync(dir.path)}/copies`;
  await Deno.mkdir(copies);
  await using srv = await startServer({ backupDir: copies });
  await using a = await openTestLink(srv.connectOptions);
  await a.request(Op.Exec, ["CREATE TABLE t(x); INSERT INTO t VALUES (1)"]);
  const missing = (what: string, name: string) =>
    new RegExp(
      `^Cannot ${what} "${RegExp.escape(`${copies}/${name}/`)}": the directory ` +
        `"${RegExp.escape(`${copies}/${name}`)}" does not exist \\(the server creates no ` +
        `directories\\); create it first and name a new file in it \\(for example ` +
        `"${RegExp.escape(`${copies}/${name}/copy.db`)}"\\)$`,
    );
  const cases = [
    [Op.Backup, "back up to", "daily/", "daily"],
    [Op.Vacuum, "vacuum into", "weekly/", "weekly"],
    [Op.Backup, "back up to", `${copies}/monthly/`, "monthly"],
    [Op.Vacuum, "vacuum into", "yearly/.", "yearly"],
  ] as const;
  for (const [op, what, dest, name] of cases) {
    await assert.rejects(a.request(op, [dest]), (err: Error & { code: string }) => {
      assert.equal(err.code, "BAD_REQUEST", err.message);
      assert.match(err.message, missing(what, name));
      return true;
    });
  }
  // Through the command as well.
  const sock = ["--socket", socketOf(srv)];
  const backup = await cli(["backup", "daily/", ...sock]);
  assert.equal(backup.code, 1, backup.stderr);
  assert.match(
    backup.stderr.trimEnd(),
    /^netsqlite backup: BAD_REQUEST: Cannot back up to ".*\/copies\/daily\/": the directory ".*\/copies\/daily" does not exist /,
  );
  const vacuum = await cli(["vacuum", "--into", "weekly/", ...sock]);
  assert.equal(vacuum.code, 1, vacuum.stderr);
  assert.match(
    vacuum.stderr,
    /^netsqlite vacuum: BAD_REQUEST: Cannot vacuum into ".*\/copies\/weekly\/": the directory /,
  );
  assert.deepEqual([...Deno.readDirSync(copies)], [], "no file named after the directory");
  // An existing directory, with or without the separator, is refused as before.
  await Deno.mkdir(`${copies}/daily`);
  for (const dest of ["daily", "daily/"]) {
    await assert.rejects(
      a.request(Op.Backup, [dest]),
      /: it is a directory; name a new file in it/,
    );
  }
  // And a file in it is written.
  assert.equal((await a.request(Op.Backup, ["daily/a.db"])).dest, `${copies}/daily/a.db`);
  assert.deepEqual([...Deno.readDirSync(`${copies}/daily`)].map((e) => e.name), ["a.db"]);
});

Deno.test("a copy's name with a line break or another control character stays on the summary's one line", async () => {
  await using dir = await tempDir();
  const copies = `${Deno.realPathSync(dir.path)}/copies`;
  await Deno.mkdir(copies);
  await using srv = await startServer({ backupDir: copies });
  const sock = ["--socket", socketOf(srv)];
  const backup = await cli(["backup", "a\nb.db", ...sock]);
  assert.equal(backup.code, 0, backup.stderr);
  assert.equal(backup.stdout.split("\n").length, 2, "one line");
  assert.match(
    backup.stdout,
    new RegExp(
      `^backup: \\d+ pages?, .* to "${RegExp.escape(copies)}/a\\\\nb\\.db" in [\\d.]+ ms\\n$`,
    ),
  );
  assert.deepEqual(Deno.readDirSync(copies).toArray().map((e) => e.name), ["a\nb.db"]);
  const vacuum = await cli(["vacuum", "--into", "c\x1b[2Jd\u0085.db", ...sock]);
  assert.equal(vacuum.code, 0, vacuum.stderr);
  assert.equal(vacuum.stdout.includes("\x1b"), false, "no escape sequence reaches the terminal");
  assert.match(
    vacuum.stdout,
    /^vacuum into ".*\/copies\/c\\u001b\[2Jd\\u0085\.db": \d+ -> \d+ pages, [^\n]*\n$/,
  );
  // A name without one is shown as it is, quotes included; JSON.parse reads the quoted form back.
  const report = { dest: '/b/x "y".db', pages: 1, bytes: 4096, ms: 1 };
  assert.equal(describeBackup(report), 'backup: 1 page, 4.0 KiB to /b/x "y".db in 1.0 ms');
  const odd = "/b/\t\r\u2028\u2029\x7f.db";
  const shown = describeVacuum({
    into: odd,
    pagesBefore: 2,
    pagesAfter: 1,
    bytesBefore: 8192,
    bytesAfter: 4096,
    walBusy: false,
    ms: 1,
  });
  assert.equal(
    shown,
    String
      .raw`vacuum into "/b/\t\r\u2028\u2029\u007f.db": 2 -> 1 pages, 8.0 KiB -> 4.0 KiB, 1.0 ms`,
  );
  assert.equal(JSON.parse(shown.slice("vacuum into ".length, shown.indexOf(": 2 ->"))), odd);
});

Deno.test("runAdmin() stats --watch on a terminal: each report starts on the line the screen was cleared to", async () => {
  await using srv = await startServer();
  const out: string[] = [];
  const io = {
    out: (l: string) => out.push(l),
    err: () => {},
    progress: null,
    outIsTerminal: true,
  };
  const args = ["--watch", "0.05", "--count", "2", "--socket", socketOf(srv)];
  assert.equal(await runAdmin("stats", args, io), 0);
  assert.equal(out.length, 2, "one write per report, no line of its own for the clearing");
  // deno-lint-ignore no-control-regex
  for (const text of out) assert.match(text, /^\x1b\[H\x1b\[2Jnetsqlite /);
});

Deno.test("cli.ts shell .tables, .indexes and .schema show TEMP objects as temp.NAME (as sqlite3 does), and the schema replays", async () => {
  await using srv = await startServer();
  await using copy = await startServer();
  const script = "CREATE TABLE main_t(a);\nCREATE INDEX main_i ON main_t(a);\n" +
    'CREATE TEMP TABLE scratch(b);\nCREATE TEMPORARY VIEW "odd v" AS SELECT b FROM scratch;\n' +
    "CREATE UNIQUE INDEX temp.scratch_b ON scratch(b);\n" +
    ".tables\n.indexes\n.schema\n.tables s%\n.schema scratch\n";
  const r = await cli(["shell", "--socket", socketOf(srv)], script);
  assert.equal(r.stderr, "");
  assert.equal(r.code, 0);
  const schema = "CREATE TABLE main_t(a);\nCREATE INDEX main_i ON main_t(a);\n" +
    'CREATE TABLE temp.scratch(b);\nCREATE VIEW temp."odd v" AS SELECT b FROM scratch;\n' +
    "CREATE UNIQUE INDEX temp.scratch_b ON scratch(b);\n";
  assert.equal(
    r.stdout,
    "main_t        temp.odd v    temp.scratch\n" +
      "main_i          temp.scratch_b\n" +
      schema +
      "temp.scratch\n" +
      "CREATE TABLE temp.scratch(b);\nCREATE UNIQUE INDEX temp.scratch_b ON scratch(b);\n",
  );
  // Inside a transaction of the shell (on the writer) too; another session sees them as well,
  // since the server keeps TEMP objects on its one writer connection.
  const tx = await cli(["shell", "--socket", socketOf(srv), "-c", "BEGIN", "-c", ".tables"]);
  assert.equal(tx.stdout, "main_t        temp.odd v    temp.scratch\n", tx.stderr);
  // The output replays into an empty database, TEMP objects as TEMP objects.
  const replay = await cli(
    ["shell", "--socket", socketOf(copy)],
    schema + "SELECT type || ' ' || name FROM sqlite_temp_schema ORDER BY rowid;\n",
  );
  assert.equal(replay.stderr, "");
  assert.match(replay.stdout, /table scratch[\s\S]*view odd v[\s\S]*index scratch_b/);
  // Dropped, they are gone from the lists.
  const dropped = await cli(
    ["shell", "--socket", socketOf(srv)],
    'DROP TABLE temp.scratch;\nDROP VIEW temp."odd v";\n.tables\n.schema\n',
  );
  assert.equal(
    dropped.stdout,
    "main_t\nCREATE TABLE main_t(a);\nCREATE INDEX main_i ON main_t(a);\n",
    dropped.stderr,
  );
});

Deno.test("cli.ts shell: a script's statements without rows cost one request each; the output stays the same", async () => {
  await using srv = await startServer();
  const statements = 200;
  const inserts = Array.from({ length: statements }, (_, i) => `INSERT INTO t VALUES (${i});\n`);
  const script = "CREATE TABLE t(x);\n" + inserts.join("") +
    "WITH n(v) AS (SELECT 1000) INSERT INTO t SELECT v FROM n;\n" +
    "UPDATE t SET x = x WHERE x = 0;\nDELETE FROM t WHERE x = 1 RETURNING x AS gone;\n" +
    "INSERT INTO t VALUES ('returning');\n" +
    "SELECT count(*) AS n FROM t;\nBEGIN;\nINSERT INTO t VALUES (-1);\nCOMMIT;\n";
  await using a = await openTestLink(srv.connectOptions);
  const before = (await a.request(Op.Stats, [])).requests;
  const r = await cli(["shell", "--socket", socketOf(srv)], script);
  assert.equal(r.stderr, "");
  assert.equal(r.code, 0);
  assert.equal(
    r.stdout,
    "+------+\n| gone |\n+------+\n|    1 |\n+------+\n" +
      "+-----+\n| n   |\n+-----+\n| 201 |\n+-----+\n",
  );
  const after = (await a.request(Op.Stats, [])).requests;
  const sent = (op: string) => (after[op] ?? 0) - (before[op] ?? 0);
  // CREATE, the INSERTs, the WITH ... INSERT, UPDATE, BEGIN, INSERT, COMMIT: one run each. The
  // DELETE ... RETURNING, the INSERT whose text says "returning" and the SELECT are prepared,
  // then read (query) or, without columns, run.
  assert.equal(sent("run"), 1 + statements + 1 + 1 + 3 + 1);
  assert.equal(sent("prepare"), 3);
  assert.equal(sent("query"), 2);
  // An error is reported as before, at its line, and stops the script.
  const bad = await cli(
    ["shell", "--socket", socketOf(srv)],
    "INSERT INTO t VALUES (1);\nINSERT INTO nope VALUES (1);\nINSERT INTO t VALUES (2);\n",
  );
  assert.equal(bad.code, 1);
  assert.equal(bad.stderr, "Error: near line 2: SQLITE_ERROR: no such table: nope\n");
});
