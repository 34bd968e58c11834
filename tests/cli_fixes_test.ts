/**
 * Findings of a review of the `netsqlite` command, on the engine of `NETSQLITE_ENGINE`: a
 * destination that names a directory that does not exist (`backup daily/`) is refused instead
 * of becoming a file; the shell's `.tables`, `.schema` and `.indexes` show TEMP objects; a
 * statement of a script that surely has no rows costs one request; a copy's name with a line
 * break stays on one line of the summary; `stats --watch` starts each report on a terminal at the
 * top line. And of a second review: names any client chooses (a TEMP table's) and error messages
 * reach the terminal with their control characters escaped (`stats`, the commands' error lines,
 * the shell's `.tables`, `.indexes` and errors); `.schema temp.NAME` matches the qualified name;
 * `.schema` leaves out the shadow tables of virtual tables, so that it replays; `backup link/`
 * and `backup afile/` say what is there.
 */

import assert from "node:assert/strict";
import { describeBackup, describeIntegrity, describeVacuum, runAdmin } from "../cli/admin.ts";
import type { Client } from "../client.ts";
import { Op } from "../protocol/messages.ts";
import { openTestLink, startServer, tempDir } from "./_helpers.ts";
import { serve } from "../server.ts";
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

/** True when the text holds a C0 control character other than a line break, DEL or a C1 one. */
function hasControl(text: string): boolean {
  // deno-lint-ignore no-control-regex
  return /[\x00-\x09\x0b-\x1f\x7f-\x9f]/.test(text);
}

Deno.test("cli.ts stats, the commands' error lines and the shell's .tables, .indexes and errors escape control characters in names clients chose", async () => {
  await using dir = await tempDir();
  const copies = `${Deno.realPathSync(dir.path)}/copies`;
  await Deno.mkdir(copies);
  await using srv = await startServer({ backupDir: copies });
  const sock = ["--socket", socketOf(srv)];
  // Any SQL client, no admin, names a TEMP table and an index with escape sequences and a break.
  await using db = await srv.client();
  await db.run('CREATE TEMP TABLE "x\x1b[2J\x1b]0;owned\x07\ny"(a)');
  await db.run('CREATE INDEX temp."i\x1b[31m" ON "x\x1b[2J\x1b]0;owned\x07\ny"(a)');
  const stats = await cli(["stats", ...sock]);
  assert.equal(stats.code, 0, stats.stderr);
  assert.equal(hasControl(stats.stdout), false, JSON.stringify(stats.stdout));
  assert.match(
    stats.stdout,
    new RegExp(
      "\\nTEMP objects  2 on the writer \\(" +
        RegExp.escape(
          String.raw`table "x\u001b[2J\u001b]0;owned\u0007\ny", index "i\u001b[31m"`,
        ) + "\\): every statement",
    ),
  );
  // The shell's lists: quoted and escaped, TEMP ones after `temp.`.
  const shell = await cli(["shell", ...sock], ".tables\n.indexes\n");
  assert.equal(shell.stderr, "");
  assert.equal(
    shell.stdout,
    String.raw`temp."x\u001b[2J\u001b]0;owned\u0007\ny"` + "\n" + String.raw`temp."i\u001b[31m"` +
      "\n",
  );
  // An error naming one (SQLite's message quotes what the statement said).
  const bad = await cli(["shell", ...sock, "-c", 'SELECT * FROM "nope\x1b[2J\x1b[31m"']);
  assert.equal(bad.code, 1);
  assert.equal(
    bad.stderr,
    String.raw`Error: SQLITE_ERROR: no such table: nope\u001b[2J\u001b[31m` + "\n",
  );
  // A command's error line naming a destination the user gave.
  const evil = "a\nb\x1b[2J\u0085.db";
  assert.equal((await cli(["backup", evil, ...sock])).code, 0);
  const again = await cli(["backup", evil, ...sock]);
  assert.equal(again.code, 1);
  assert.equal(
    again.stderr,
    `netsqlite backup: BAD_REQUEST: Cannot back up to "${copies}/` +
      String
        .raw`a\nb\u001b[2J\u0085.db": the file exists; choose a new name (nothing is overwritten)` +
      "\n",
  );
  // Integrity problems name tables and indexes: each stays on its line.
  assert.equal(
    describeIntegrity({
      ok: false,
      problems: ["row 1 missing from index i\x1b[2J\nx"],
      pages: 2,
      bytes: 8192,
      ms: 1,
    }),
    "integrity: 1 problem (2 pages, 8.0 KiB, 1.0 ms):\n" +
      String.raw`  row 1 missing from index i\u001b[2J\nx`,
  );
});

Deno.test("cli.ts shell .schema with a dotted pattern matches main.NAME and temp.NAME (as sqlite3 3.40)", async () => {
  await using srv = await startServer();
  const script = "CREATE TABLE t(a);\nCREATE INDEX ti ON t(a);\nCREATE TEMP TABLE tt(b);\n" +
    "CREATE INDEX temp.tti ON tt(b);\nCREATE TEMP VIEW tv AS SELECT 1;\n" +
    ".schema temp.tt\n.schema temp.%\n.schema main.t\n.schema main.%\n.schema temp.t\n" +
    ".schema TEMP.TV\n";
  const r = await cli(["shell", "--socket", socketOf(srv)], script);
  assert.equal(r.stderr, "");
  assert.equal(r.code, 0);
  const main = "CREATE TABLE t(a);\nCREATE INDEX ti ON t(a);\n";
  const temp = "CREATE TABLE temp.tt(b);\nCREATE INDEX temp.tti ON tt(b);\n";
  assert.equal(
    r.stdout,
    temp + // .schema temp.tt: the table and its index (by tbl_name)
      temp + "CREATE VIEW temp.tv AS SELECT 1;\n" + // temp.%
      main + // main.t
      main + // main.%
      "" + // temp.t: no TEMP object is named t
      "CREATE VIEW temp.tv AS SELECT 1;\n", // LIKE ignores case, as sqlite3
  );
});

/** True when the server's SQLite has fts5 (else the reason it has not). */
async function fts5(
  srv: { client(): Promise<Client> },
): Promise<string | true> {
  await using db = await srv.client();
  try {
    await db.run("CREATE VIRTUAL TABLE temp.probe USING fts5(x)");
    await db.run("DROP TABLE temp.probe");
    return true;
  } catch (err) {
    return (err as Error).message;
  }
}

Deno.test("cli.ts shell .schema leaves out the shadow tables of virtual tables (fts5), main and TEMP, so that it replays; a user's external-content table named like one stays", async () => {
  await using srv = await startServer();
  await using copy = await startServer();
  const has = await fts5(srv);
  if (has !== true) {
    console.log(`skipped on ${Deno.env.get("NETSQLITE_ENGINE") ?? "ffi"}: no fts5 (${has})`);
    return;
  }
  // notes_content is the user's own table, which PRAGMA table_list types `shadow` all the
  // same (fts5 claims the suffix): notes indexes it (external content). (SQLite 3.53 refuses a
  // trigger on it, as on any shadow table, in the defensive mode the server runs in.)
  const setup = "CREATE TABLE m(x);\nCREATE VIRTUAL TABLE f USING fts5(body);\n" +
    "CREATE TABLE f_notes(n);\nCREATE TABLE notes_content(id INTEGER PRIMARY KEY, body);\n" +
    "CREATE VIRTUAL TABLE notes USING fts5(body, content='notes_content', content_rowid='id');\n" +
    "CREATE VIRTUAL TABLE temp.g USING fts5(y);\nCREATE TEMP TABLE tt(z);\n";
  const r = await cli(["shell", "--socket", socketOf(srv)], setup + ".schema\n");
  assert.equal(r.stderr, "");
  // The shadow tables fts5 made are left out; the user's notes_content, which SQLite types
  // `shadow` too, stays.
  const schema = "CREATE TABLE m(x);\nCREATE VIRTUAL TABLE f USING fts5(body);\n" +
    "CREATE TABLE f_notes(n);\nCREATE TABLE notes_content(id INTEGER PRIMARY KEY, body);\n" +
    "CREATE VIRTUAL TABLE notes USING fts5(body, content='notes_content', content_rowid='id');\n" +
    "CREATE VIRTUAL TABLE temp.g USING fts5(y);\nCREATE TABLE temp.tt(z);\n";
  assert.equal(r.stdout, schema);
  // .tables still lists them, as sqlite3 does.
  const tables = await cli(["shell", "--socket", socketOf(srv), "-c", ".tables f%"]);
  assert.equal(
    tables.stdout,
    "f          f_config   f_content  f_data     f_docsize  f_idx      f_notes\n",
    tables.stderr,
  );
  const replay = await cli(["shell", "--socket", socketOf(copy)], r.stdout + ".schema\n");
  assert.equal(replay.stderr, "");
  assert.equal(replay.code, 0);
  assert.equal(replay.stdout, r.stdout, "the replayed database has the same schema");
  await using db = await copy.client();
  await db.run("INSERT INTO f VALUES ('hello world')");
  assert.deepEqual(await db.values("SELECT body FROM f WHERE f MATCH 'hello'"), [["hello world"]]);
  // (SQLite 3.53 makes a shadow-named table read-only in defensive mode: it is only read here.)
  assert.deepEqual(await db.values("SELECT count(*) FROM notes_content"), [[0]]);
});

Deno.test("backup and vacuum into link/ and afile/: a link is followed to a directory, a file is not a directory", async () => {
  await using dir = await tempDir();
  const base = Deno.realPathSync(dir.path);
  const copies = `${base}/copies`;
  await Deno.mkdir(copies);
  await Deno.mkdir(`${copies}/real`);
  await Deno.mkdir(`${base}/outside`);
  await Deno.writeTextFile(`${copies}/afile`, "x");
  await Deno.symlink(`${copies}/real`, `${copies}/link`);
  await Deno.symlink(`${copies}/afile`, `${copies}/filelink`);
  await Deno.symlink(`${base}/outside`, `${copies}/outlink`);
  await using srv = await startServer({ backupDir: copies });
  await using a = await openTestLink(srv.connectOptions);
  await a.request(Op.Exec, ["CREATE TABLE t(x)"]);
  const refused = async (op: typeof Op.Backup | typeof Op.Vacuum, dest: string) => {
    try {
      await a.request(op, [dest]);
    } catch (err) {
      return `${(err as { code: string }).code}: ${(err as Error).message.replaceAll(base, "B")}`;
    }
    return "written";
  };
  for (const [op, what] of [[Op.Backup, "back up to"], [Op.Vacuum, "vacuum into"]] as const) {
    for (const dest of ["link/", "link/."]) {
      assert.equal(
        await refused(op, dest),
        `BAD_REQUEST: Cannot ${what} "B/copies/link": it is a directory; name a new file in it ` +
          '(for example "B/copies/link/copy.db")',
      );
    }
    for (const name of ["afile", "filelink"]) {
      for (const dest of [`${name}/`, `${name}/.`]) {
        assert.equal(
          await refused(op, dest),
          `BAD_REQUEST: Cannot ${what} "B/copies/${name}/": "B/copies/${name}" is not a ` +
            "directory; name a new file in a directory (nothing is overwritten)",
        );
      }
    }
    assert.equal(
      await refused(op, "outlink/"),
      `FORBIDDEN: Cannot ${what} "outlink/": it is a directory outside "B/copies" (through a ` +
        'symbolic link to "B/outside"), and the server permits destinations under "B/copies" ' +
        "only (--backup-dir)",
    );
    // Without the separator the link itself is there: not overwritten.
    assert.equal(
      await refused(op, "link"),
      `BAD_REQUEST: Cannot ${what} "B/copies/link": the file exists; choose a new name ` +
        "(nothing is overwritten)",
    );
  }
  // A file in the linked directory is written, as before; nothing else was made.
  assert.equal(await refused(Op.Backup, "link/a.db"), "written");
  assert.deepEqual(Deno.readDirSync(`${copies}/real`).toArray().map((e) => e.name), ["a.db"]);
  assert.deepEqual(Deno.readDirSync(`${base}/outside`).toArray(), []);
  assert.deepEqual(
    Deno.readDirSync(copies).toArray().map((e) => e.name).sort(),
    ["afile", "filelink", "link", "outlink", "real"],
  );
});

Deno.test("cli.ts shell and stats take --channel NAME, the server of a named channel; with --db, --socket or --tcp it is refused", async () => {
  await using dir = await tempDir();
  const channel = `cli-test-${crypto.randomUUID().slice(0, 8)}`;
  await using _server = await serve({ channel, database: `${dir.path}/a.db` });
  const shell = await cli(["shell", "--channel", channel, "-c", "SELECT 6 * 7 AS n"]);
  assert.equal(shell.stderr, "");
  assert.match(shell.stdout, /\b42\b/);
  const stats = await cli(["stats", "--channel", channel, "--json"]);
  assert.equal(stats.code, 0, stats.stderr);
  assert.equal(JSON.parse(stats.stdout).database, `${dir.path}/a.db`);
  const both = await cli([
    "shell",
    "--channel",
    channel,
    "--socket",
    `${dir.path}/x.sock`,
    "-c",
    "SELECT 1",
  ]);
  assert.equal(both.code, 2);
  assert.match(both.stderr, /Give at most one of --db, --socket, --channel and --tcp/);
});
