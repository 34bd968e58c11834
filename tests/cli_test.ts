/**
 * The `netsqlite` command: the statement splitter and output modes as pure
 * functions, then `cli.ts` run as a child process against a real in-process
 * server — non-interactively (`-c`, standard input, `.read`, each mode, exit
 * status) and interactively through a pseudo-terminal (`script`).
 */

import assert from "node:assert/strict";
import { isComplete, splitStatements, SqlSplitter } from "../cli/sql_split.ts";
import { csvField, displayWidth, formatResult, jsonValue } from "../cli/format.ts";
import { describeCheckpoint, describeIntegrity, openAdminLink, runAdmin } from "../cli/admin.ts";
import { resolveConnectOptions } from "../client/options.ts";
import { DatabaseSync } from "node:sqlite";
import { VERSION } from "../server.ts";
import { startServer, tempDir } from "./_helpers.ts";
import { capturedIO, CLI, cli } from "./_cli.ts";

// ---- statement splitting ---------------------------------------------------------

Deno.test("splitStatements() ends statements only at ; outside strings, identifiers and comments", () => {
  assert.deepEqual(
    splitStatements(
      "SELECT 'a;b', \"c;d\", [e;f], `g;h`; -- x;y\nSELECT /* ; */ 2;;  ; SELECT 'it''s;'",
    ),
    [
      "SELECT 'a;b', \"c;d\", [e;f], `g;h`;",
      "SELECT /* ; */ 2;",
      "SELECT 'it''s;'",
    ],
  );
  assert.deepEqual(splitStatements("  -- only a comment\n ; /* and */ ;"), []);
});

Deno.test("SqlSplitter keeps a CREATE TRIGGER body whole, up to ; END;", () => {
  const trigger = "CREATE TEMP TRIGGER tr AFTER INSERT ON t BEGIN\n" +
    "  INSERT INTO log VALUES (new.a);\n" +
    "  UPDATE n SET c = CASE WHEN c > 0 THEN c + 1 END;\n" +
    "END;";
  const script = `${trigger}\nSELECT 1;`;
  assert.deepEqual(splitStatements(script), [trigger, "SELECT 1;"]);
  // Fed one character at a time (tokens cut anywhere), the split is the same.
  const s = new SqlSplitter();
  const got: string[] = [];
  for (const ch of script) got.push(...s.push(ch));
  assert.deepEqual(got, [trigger, "SELECT 1;"]);
  assert.equal(s.isEmpty, true);
});

Deno.test("SqlSplitter.isEmpty tells a pending statement from blank lines and comments", () => {
  const s = new SqlSplitter();
  assert.deepEqual(s.push("-- note\n\n"), []);
  assert.equal(s.isEmpty, true);
  assert.deepEqual(s.push("SELECT 'a\n"), []);
  assert.equal(s.isEmpty, false);
  assert.deepEqual(s.push("b;';\n"), ["SELECT 'a\nb;';"]);
  assert.equal(s.isEmpty, true);
  assert.deepEqual(s.push("/* open\n"), []);
  assert.equal(s.isEmpty, false, "an open comment waits for more lines");
  s.reset();
  assert.equal(s.isEmpty, true);
});

Deno.test("isComplete() agrees with sqlite3_complete() on triggers and strings", () => {
  assert.equal(isComplete("SELECT 1"), false);
  assert.equal(isComplete("SELECT 1;"), true);
  assert.equal(isComplete("SELECT ';"), false);
  assert.equal(isComplete("CREATE TRIGGER x AFTER DELETE ON t BEGIN SELECT 1;"), false);
  assert.equal(isComplete("CREATE TRIGGER x AFTER DELETE ON t BEGIN SELECT 1; END;"), true);
  assert.equal(isComplete("EXPLAIN CREATE TRIGGER x AFTER DELETE ON t BEGIN SELECT 1;"), false);
  assert.equal(isComplete("CREATE TABLE trigger(end); SELECT 1;"), true);
});

// ---- output modes ----------------------------------------------------------------

const SAMPLE = {
  columns: ["id", "name", "data"],
  rows: [
    [1, "plain", null],
    [2n ** 62n, 'say "hi", then\nleave', new Uint8Array([0x89, 0x50, 0x4e, 0x47])],
    [-1.5, "", new Uint8Array(40)],
  ],
};

Deno.test("formatResult() table aligns columns, right-aligns numbers, shows NULL and blobs", () => {
  assert.equal(
    formatResult("table", {
      columns: ["n", "text", "b"],
      rows: [[1, "x", null], [12345, "日本", new Uint8Array([0x89, 0x50, 0x4e, 0x47])]],
    }),
    "+-------+------+-----------------------+\n" +
      "| n     | text | b                     |\n" +
      "+-------+------+-----------------------+\n" +
      "|     1 | x    | NULL                  |\n" +
      "| 12345 | 日本 | x'89504e47' (4 bytes) |\n" +
      "+-------+------+-----------------------+\n",
  );
  assert.equal(formatResult("table", { columns: ["a"], rows: [] }), "");
  const long = formatResult("table", { columns: ["b"], rows: [[new Uint8Array(40)]] });
  assert.match(long, /\| x'(00){32}\.\.\.' \(40 bytes\) \|/);
  assert.equal(displayWidth("日本a"), 5);
});

Deno.test("formatResult() csv follows RFC 4180 and keeps NULL apart from the empty string", () => {
  assert.equal(
    formatResult("csv", SAMPLE),
    "id,name,data\r\n" +
      "1,plain,\r\n" +
      `4611686018427387904,"say ""hi"", then\nleave",89504e47\r\n` +
      `-1.5,"",${"00".repeat(40)}\r\n`,
  );
  assert.equal(formatResult("csv", SAMPLE, { headers: false }).split("\r\n")[0], "1,plain,");
  assert.equal(csvField(" padded"), '" padded"');
  assert.equal(csvField(null), "");
  assert.equal(csvField(-0), "-0");
});

Deno.test("formatResult() json: an array of objects, big integers as strings, blobs as hex", () => {
  const text = formatResult("json", SAMPLE);
  assert.equal(
    text,
    '[{"id":1,"name":"plain","data":null},\n' +
      '{"id":"4611686018427387904","name":"say \\"hi\\", then\\nleave","data":"89504e47"},\n' +
      `{"id":-1.5,"name":"","data":"${"00".repeat(40)}"}]\n`,
  );
  assert.equal(JSON.parse(text)[1].id, "4611686018427387904");
  assert.equal(jsonValue(9007199254740991n), "9007199254740991");
  assert.equal(jsonValue(9007199254740992n), '"9007199254740992"');
  assert.equal(jsonValue(-9007199254740992n), '"-9007199254740992"');
  assert.equal(jsonValue(Infinity), '"Infinity"');
  assert.equal(jsonValue(-0), "-0");
  assert.equal(Object.is(JSON.parse(jsonValue(-0)), -0), true);
  assert.equal(formatResult("json", { columns: ["a"], rows: [] }), "[]\n");
});

Deno.test("formatResult() line prints one name = value line per column, rows apart", () => {
  assert.equal(
    formatResult("line", { columns: ["id", "longer"], rows: [[1, null], [2, "x"]] }),
    "    id = 1\nlonger = NULL\n\n    id = 2\nlonger = x\n",
  );
});

// ---- the command, non-interactively ------------------------------------------------

Deno.test("cli.ts shell -c runs statements and prints an aligned table", async () => {
  await using srv = await startServer();
  const sock = srv.server.addr.transport === "unix" ? srv.server.addr.path : "";
  const r = await cli([
    "shell",
    "--socket",
    sock,
    "-c",
    "CREATE TABLE t(a INTEGER, b TEXT, c BLOB); " +
    "INSERT INTO t VALUES (1, 'one', NULL), (9223372036854775807, 'big', x'cafe');\n" +
    "SELECT * FROM t ORDER BY a",
  ]);
  assert.equal(r.stderr, "");
  assert.equal(r.code, 0);
  assert.equal(
    r.stdout,
    "+---------------------+-----+-------------------+\n" +
      "| a                   | b   | c                 |\n" +
      "+---------------------+-----+-------------------+\n" +
      "|                   1 | one | NULL              |\n" +
      "| 9223372036854775807 | big | x'cafe' (2 bytes) |\n" +
      "+---------------------+-----+-------------------+\n",
  );
});

Deno.test("cli.ts shell reads a script on stdin: triggers, ; in strings, dot commands, csv", async () => {
  await using srv = await startServer();
  const sock = (srv.server.addr as { path: string }).path;
  const script = [
    "CREATE TABLE t(a UNIQUE, b);",
    "CREATE TABLE log(x);",
    "CREATE TRIGGER tr AFTER INSERT ON t BEGIN",
    "  INSERT INTO log VALUES ('saw ' || new.a || ';');",
    "END;",
    "INSERT INTO t VALUES (1, 'a;b'), -- a comment; with a semicolon",
    "  (2, 'say \"hi\"');",
    ".mode csv",
    "SELECT * FROM t ORDER BY a; SELECT x FROM log ORDER BY x;",
    ".headers off",
    "SELECT NULL, '', 3",
  ].join("\n");
  const r = await cli(["shell", "--socket", sock], script);
  assert.equal(r.stderr, "");
  assert.equal(r.code, 0);
  assert.equal(
    r.stdout,
    'a,b\r\n1,a;b\r\n2,"say ""hi"""\r\nx\r\nsaw 1;\r\nsaw 2;\r\n,"",3\r\n',
  );
});

Deno.test("cli.ts shell refuses a script that is not UTF-8 at its line, instead of storing U+FFFD", async () => {
  await using srv = await startServer();
  await using dir = await tempDir();
  const sock = (srv.server.addr as { path: string }).path;
  const latin1 = (text: string) => Uint8Array.from(text, (c) => c.charCodeAt(0));
  const script = latin1(
    "CREATE TABLE t(x);\nINSERT INTO t VALUES ('ok');\nINSERT INTO t VALUES ('caf\xe9');\n" +
      "INSERT INTO t VALUES ('never');\n",
  );
  const expected = "Error: near line 3: Cannot read the script: it is not valid UTF-8 " +
    "(convert it first, e.g. iconv -f latin1 -t utf-8)\n";
  const piped = await cli(["shell", "--socket", sock], script);
  assert.equal(piped.stderr, expected);
  assert.equal(piped.code, 1);
  await using db = await srv.client();
  assert.deepEqual(await db.values("SELECT x FROM t"), [["ok"]]);

  await db.exec("DROP TABLE t");
  await Deno.writeFile(`${dir.path}/bad.sql`, script);
  const read = await cli(["shell", "--socket", sock, "-c", `.read ${dir.path}/bad.sql`]);
  assert.equal(read.code, 1);
  assert.match(read.stderr, /near line 3: Cannot read the script: it is not valid UTF-8/);
  assert.deepEqual(await db.values("SELECT x FROM t"), [["ok"]]);

  // A byte order mark is not part of the script; text after it is read exactly.
  const bom = await cli(
    ["shell", "--socket", sock, "--mode", "csv"],
    new Uint8Array([0xef, 0xbb, 0xbf, ...new TextEncoder().encode("SELECT 'é\u{1F600}' AS v;\n")]),
  );
  assert.equal(bom.stderr, "");
  assert.equal(bom.stdout, "v\r\né\u{1F600}\r\n");
});

Deno.test("cli.ts shell stops a script at the first error with exit status 1 and the error's code", async () => {
  await using srv = await startServer();
  const sock = (srv.server.addr as { path: string }).path;
  const r = await cli(
    ["shell", "--socket", sock],
    "CREATE TABLE t(a UNIQUE);\n\nINSERT INTO t VALUES (1);\nINSERT INTO t\n  VALUES (1);\n" +
      "INSERT INTO t VALUES (2);\n",
  );
  assert.equal(r.code, 1);
  assert.equal(
    r.stderr,
    "Error: near line 4: SQLITE_CONSTRAINT_UNIQUE: UNIQUE constraint failed: t.a\n",
  );
  await using db = await srv.client();
  assert.deepEqual(await db.values("SELECT a FROM t"), [[1]], "nothing after the error ran");

  const c = await cli(["shell", "--socket", sock, "-c", "SELECT * FROM missing; SELECT 1"]);
  assert.equal(c.code, 1);
  assert.equal(c.stdout, "");
  assert.equal(c.stderr, "Error: SQLITE_ERROR: no such table: missing\n");

  const dot = await cli(["shell", "--socket", sock, "-c", ".mode xml"]);
  assert.equal(dot.code, 1);
  assert.match(dot.stderr, /^Error: Unknown mode "xml": expected one of table, csv, json, line\n$/);
});

Deno.test("cli.ts shell .read runs a file; json and line modes; .tables, .schema, .indexes", async () => {
  await using srv = await startServer();
  await using dir = await tempDir();
  const sock = (srv.server.addr as { path: string }).path;
  const file = `${dir.path}/setup.sql`;
  await Deno.writeTextFile(
    file,
    "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT UNIQUE);\n" +
      "CREATE INDEX users_by_name ON users(name);\n" +
      "CREATE VIEW names AS SELECT name FROM users;\n" +
      "INSERT INTO users VALUES (1, 'ann'), (9007199254740993, 'bob');\n" +
      ".mode json\nSELECT * FROM users ORDER BY id;\n",
  );
  const r = await cli(
    ["shell", "--socket", sock],
    `.read ${file}\n.mode line\nSELECT id, name AS who FROM users WHERE id = 1;\n` +
      ".tables\n.indexes users\n.schema users\n",
  );
  assert.equal(r.stderr, "");
  assert.equal(r.code, 0);
  assert.equal(
    r.stdout,
    '[{"id":1,"name":"ann"},\n{"id":"9007199254740993","name":"bob"}]\n' +
      " id = 1\nwho = ann\n" +
      "names  users\n" +
      "sqlite_autoindex_users_1  users_by_name\n" +
      "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT UNIQUE);\n" +
      "CREATE INDEX users_by_name ON users(name);\n",
  );

  await Deno.writeTextFile(file, "SELECT 1;\nSELECT nope;\nSELECT 3;\n");
  const bad = await cli(
    ["shell", "--socket", sock, "--mode", "csv", "--no-headers"],
    `.read ${file}\n`,
  );
  assert.equal(bad.code, 1);
  assert.equal(bad.stdout, "1\r\n");
  assert.equal(bad.stderr, "Error: near line 2: SQLITE_ERROR: no such column: nope\n");
});

Deno.test("cli.ts shell .schema prints in creation order, so its output replays", async () => {
  await using srv = await startServer();
  await using copy = await startServer();
  const sock = (srv.server.addr as { path: string }).path;
  // A trigger on "orders" and a view of it sort before the table by name and type; sqlite3
  // prints in creation order (sqlite_schema's rowid order), which a replay needs.
  const ddl = "CREATE TABLE orders(id INTEGER PRIMARY KEY, total REAL);\n" +
    "CREATE TABLE audit(msg TEXT);\n" +
    "CREATE TRIGGER orders_audit AFTER INSERT ON orders BEGIN " +
    "INSERT INTO audit VALUES ('new order'); END;\n" +
    "CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;\n";
  const made = await cli(["shell", "--socket", sock], ddl);
  assert.equal(made.code, 0, made.stderr);
  const dump = await cli(["shell", "--socket", sock, "-c", ".schema"]);
  assert.equal(dump.code, 0, dump.stderr);
  assert.equal(dump.stdout, ddl);
  const replay = await cli(
    ["shell", "--socket", (copy.server.addr as { path: string }).path],
    dump.stdout + "INSERT INTO orders VALUES (1, 250);\nSELECT msg FROM audit;\n" +
      "SELECT id FROM big_orders;\n",
  );
  assert.equal(replay.stderr, "");
  assert.equal(replay.code, 0);
  assert.match(replay.stdout, /new order[\s\S]*\b1\b/);
});

Deno.test("cli.ts shell --tcp reaches a TCP server; with no server it exits 1", async () => {
  await using srv = await startServer({ transport: "tcp" });
  const addr = srv.server.addr as { hostname: string; port: number };
  const r = await cli([
    "shell",
    "--tcp",
    `${addr.hostname}:${addr.port}`,
    "--mode",
    "json",
    "-c",
    "SELECT 41 + 1 AS n",
  ]);
  assert.equal(r.code, 0);
  assert.equal(r.stdout, '[{"n":42}]\n');
  await using dir = await tempDir();
  const none = await cli(["shell", "--socket", `${dir.path}/nobody.sock`, "-c", "SELECT 1"]);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /^Error: CONNECTION_CLOSED: Cannot connect to unix:/);
});

Deno.test("cli.ts --version, --help, unknown commands and each command's help", async () => {
  const v = await cli(["--version"]);
  assert.equal(v.stdout, `netsqlite ${VERSION}\n`);
  const help = await cli(["--help"]);
  assert.equal(help.code, 0);
  for (
    const name of [
      "serve",
      "shell",
      "bench",
      "stats",
      "backup",
      "checkpoint",
      "vacuum",
      "integrity",
    ]
  ) {
    assert.match(help.stdout, new RegExp(`\\n  ${name} `));
  }
  const shellHelp = await cli(["shell", "--help"]);
  assert.match(shellHelp.stdout, /^netsqlite shell: /);
  const serveHelp = await cli(["serve", "--help"]);
  assert.match(serveHelp.stdout, /--busy-timeout MS/);
  // Both ways to start the server, once each.
  assert.match(
    serveHelp.stdout,
    /\nUsage: deno run -A server\.ts \[options\] .*\n {7}netsqlite serve \[options\] /,
  );
  assert.equal(serveHelp.stdout.split("Usage:").length, 2, serveHelp.stdout);
  const benchHelp = await cli(["bench", "--help"]);
  assert.equal(benchHelp.code, 0);
  assert.match(benchHelp.stdout, /\nUsage: deno run -A bench\/load\.ts \[--duration S\]/);
  const unknown = await cli(["frobnicate"]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /^netsqlite: unknown command "frobnicate"/);
  const backupHelp = await cli(["backup", "--help"]);
  assert.equal(backupHelp.code, 0);
  assert.match(backupHelp.stdout, /\n\nUsage: netsqlite backup DEST /);
  const bad = await cli(["checkpoint", "--mode", "sideways"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^netsqlite checkpoint: Invalid --mode "sideways"/);
});

Deno.test("cli.ts stats, checkpoint, integrity, vacuum and backup talk to a running server", async () => {
  await using dir = await tempDir();
  await Deno.mkdir(`${dir.path}/copies`);
  await using srv = await startServer({ backupDir: `${dir.path}/copies` });
  const db = await srv.client();
  try {
    await db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3)");
  } finally {
    await db.close();
  }
  const sock = ["--socket", (srv.connectOptions as { path: string }).path];
  const stats = await cli(["stats", "--json", ...sock]);
  assert.equal(stats.code, 0, stats.stderr);
  const report = JSON.parse(stats.stdout);
  assert.equal(report.connections.open, 1);
  assert.equal(report.requests.exec, 1);
  const human = await cli(["stats", "--watch", "0.1", "--count", "2", ...sock]);
  assert.equal(human.code, 0, human.stderr);
  assert.equal(human.stdout.match(/^connections {3}1 open/gm)?.length, 2);
  const ckpt = await cli(["checkpoint", "--truncate", ...sock]);
  assert.equal(ckpt.code, 0, ckpt.stderr);
  assert.match(
    ckpt.stdout,
    /^checkpoint \(truncate\): WAL written back and reset, WAL .* -> 0 B, /,
  );
  const integrity = await cli(["integrity", ...sock]);
  assert.match(integrity.stdout, /^integrity: ok \(\d+ pages, /);
  const vacuum = await cli(["vacuum", "--into", "v.db", ...sock]);
  assert.equal(vacuum.code, 0, vacuum.stderr);
  assert.match(vacuum.stdout, /^vacuum into .*\/copies\/v\.db: \d+ -> \d+ pages, /);
  const backup = await cli(["backup", "b.db", ...sock]);
  assert.equal(backup.code, 0, backup.stderr);
  assert.match(backup.stdout, /^backup: \d+ pages, .* to .*\/copies\/b\.db in /);
  const again = await cli(["backup", "b.db", ...sock]);
  assert.equal(again.code, 1);
  assert.match(
    again.stderr,
    /^netsqlite backup: BAD_REQUEST: Cannot back up to ".*b\.db": the file exists/,
  );
});

Deno.test("runAdmin() backup that fails at once with a progress line reports the error (no unhandled rejection)", async () => {
  await using dir = await tempDir();
  await Deno.mkdir(`${dir.path}/copies`);
  await Deno.writeTextFile(`${dir.path}/copies/taken.db`, "");
  await using srv = await startServer({ backupDir: `${dir.path}/copies` });
  const sock = ["--socket", (srv.connectOptions as { path: string }).path];
  // The server refuses the backup before the progress poller's connection is open.
  for (let i = 0; i < 5; i++) {
    const errors: string[] = [];
    const io = {
      out: () => {},
      err: (line: string) => errors.push(line),
      progress: () => {},
      outIsTerminal: false,
    };
    assert.equal(await runAdmin("backup", ["taken.db", ...sock], io), 1);
    assert.equal(errors.length, 1);
    assert.match(
      errors[0],
      /^netsqlite backup: BAD_REQUEST: Cannot back up to ".*taken\.db": the file exists/,
    );
  }
});

/** Empties the root page of index `i` on `t(x)`: every row of `t` is then missing from it. */
Deno.test("runAdmin() backup at a full server goes on without a progress bar when its second admin session is refused", async () => {
  await using dir = await tempDir();
  await Deno.mkdir(`${dir.path}/copies`);
  await using srv = await startServer({ backupDir: `${dir.path}/copies`, maxConnections: 1 });
  const db = await srv.client();
  // The one ordinary slot is taken, and one admin session takes 1 of the 2 admin slots: the
  // backup's own session gets the last one, so the progress bar's session is refused.
  const other = await openAdminLink(await resolveConnectOptions(srv.connectOptions));
  try {
    await db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(100000))");
    const { io, out, errors, drawn } = capturedIO();
    const sock = ["--socket", (srv.connectOptions as { path: string }).path];
    assert.equal(await runAdmin("backup", ["copy.db", ...sock], io), 0, errors.join("\n"));
    assert.match(out.join("\n"), /^backup: \d+ pages, .* to .*\/copies\/copy\.db in /);
    assert.equal(errors.length, 1);
    assert.match(
      errors[0],
      /^netsqlite backup: No progress bar \(the backup goes on\): cannot open a second admin session for it: TOO_MANY_CONNECTIONS: Cannot start admin session on unix:\S+: /,
    );
    assert.deepEqual(drawn, [], "no bar drawn, and no line cleared");
    const copy = new DatabaseSync(`${dir.path}/copies/copy.db`, { readOnly: true });
    try {
      assert.deepEqual({ ...copy.prepare("SELECT length(x) AS n FROM t").get() }, { n: 100000 });
    } finally {
      copy.close();
    }
  } finally {
    other.fail(new Error("done"));
    await other.ended;
    await db.close();
  }
});

Deno.test("runAdmin() stats --watch clears the screen only when standard output is a terminal", async () => {
  await using srv = await startServer();
  const sock = ["--socket", (srv.connectOptions as { path: string }).path];
  const args = ["--watch", "0.05", "--count", "2", ...sock];
  for (const outIsTerminal of [false, true]) {
    const out: string[] = [];
    // A terminal on standard error (progress set) must not matter: the reports go to stdout.
    const io = {
      out: (l: string) => out.push(l),
      err: () => {},
      progress: () => {},
      outIsTerminal,
    };
    assert.equal(await runAdmin("stats", args, io), 0);
    const text = out.join("\n");
    assert.equal(text.match(/^connections /gm)?.length, 2);
    if (outIsTerminal) {
      assert.equal(text.split("\x1b[H\x1b[2J").length, 3, "cleared before each report");
    } else {
      assert.equal(text.includes("\x1b"), false, "no escape sequence into a file");
      assert.match(text, /\n\nnetsqlite /, "reports apart by a blank line");
    }
  }
});

async function corruptIndex(path: string, rows: number): Promise<void> {
  const db = new DatabaseSync(path);
  db.exec("PRAGMA journal_mode = DELETE; CREATE TABLE t(x); CREATE INDEX i ON t(x)");
  db.prepare(
    "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < ?) " +
      "INSERT INTO t SELECT n FROM c",
  ).run(rows);
  const { rootpage } = db.prepare("SELECT rootpage FROM sqlite_schema WHERE name = 'i'")
    .get() as { rootpage: number };
  const { page_size } = db.prepare("PRAGMA page_size").get() as { page_size: number };
  db.close();
  const page = new Uint8Array(8); // an empty leaf page of an index
  page[0] = 0x0a;
  new DataView(page.buffer).setUint16(5, page_size);
  using f = await Deno.open(path, { write: true });
  await f.seek((rootpage - 1) * page_size, Deno.SeekMode.Start);
  await f.write(page);
}

Deno.test("cli.ts integrity: problems exit 3 (no server: 1); past the cap it says at least", async () => {
  await using dir = await tempDir();
  await corruptIndex(`${dir.path}/bad.db`, 300);
  await using srv = await startServer({ database: `${dir.path}/bad.db` });
  const sock = ["--socket", (srv.connectOptions as { path: string }).path];
  const r = await cli(["integrity", ...sock]);
  assert.equal(r.code, 3, r.stderr);
  const lines = r.stdout.trimEnd().split("\n");
  assert.match(lines[0], /^integrity: at least 100 problems \(first 100 shown\) \(\d+ pages, /);
  assert.equal(lines.length, 101);
  // (SQLite 3.53, the node engine's, reports the index's count first.)
  assert.match(lines[1], /^ {2}(row \d+ missing from index i|wrong # of entries in index i)$/);
  const json = await cli(["integrity", "--json", ...sock]);
  assert.equal(json.code, 3);
  assert.equal(JSON.parse(json.stdout).ok, false);
  const none = await cli(["integrity", "--socket", `${dir.path}/none.sock`]);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /^netsqlite integrity: /);
});

Deno.test("cli.ts integrity counts b-tree problems one per line (SQLite reports them in one row)", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/pages.db`;
  const db = new DatabaseSync(path);
  db.exec("CREATE TABLE t (x, y); CREATE INDEX ti ON t (y)");
  const insert = db.prepare("INSERT INTO t VALUES (?, ?)");
  db.exec("BEGIN");
  for (let i = 0; i < 50000; i++) insert.run(i, `v${i}`);
  db.exec("COMMIT");
  const [{ page_count }] = db.prepare("PRAGMA page_count").all() as { page_count: number }[];
  const [{ page_size }] = db.prepare("PRAGMA page_size").all() as { page_size: number }[];
  db.close();
  {
    using f = await Deno.open(path, { write: true });
    for (let p = 3; p < page_count; p += 3) {
      await f.seek(p * page_size + 300, Deno.SeekMode.Start);
      await f.write(new Uint8Array(40).fill(0x55));
    }
  }
  await using srv = await startServer({ database: path });
  const r = await cli(["integrity", "--socket", (srv.connectOptions as { path: string }).path]);
  assert.equal(r.code, 3, r.stderr);
  const lines = r.stdout.trimEnd().split("\n");
  assert.match(lines[0], /^integrity: at least 100 problems \(first 100 shown\)/);
  assert.equal(lines.length, 101);
  assert.ok(!lines.some((l) => l.includes("*** in database")), lines.slice(0, 3).join("\n"));
});

Deno.test("describeIntegrity() counts problems below the cap exactly", () => {
  const report = { ok: false, problems: ["a", "b"], pages: 2, bytes: 8192, ms: 1 };
  assert.equal(
    describeIntegrity(report),
    "integrity: 2 problems (2 pages, 8.0 KiB, 1.0 ms):\n  a\n  b",
  );
});

Deno.test("cli.ts backup '' and vacuum --into '' say the destination is empty (exit 2)", async () => {
  const backup = await cli(["backup", ""]);
  assert.equal(backup.code, 2);
  assert.match(
    backup.stderr,
    /^netsqlite backup: Invalid DEST: it is empty; expected a file path\n/,
  );
  const vacuum = await cli(["vacuum", "--into", ""]);
  assert.equal(vacuum.code, 2);
  assert.match(
    vacuum.stderr,
    /^netsqlite vacuum: Invalid --into: it is empty; expected a file path\n/,
  );
});

Deno.test("cli.ts connection errors name the CLI's flags, not connect() options", async () => {
  await using dir = await tempDir();
  const noServer = await cli(["shell", "--db", `${dir.path}/none.db`, "-c", "SELECT 1"]);
  assert.equal(noServer.code, 1);
  assert.match(noServer.stderr, /--db with the file the server serves, or --socket with the path/);
  assert.doesNotMatch(noServer.stderr, /connect\(/);
  const stats = await cli(["stats", "--db", `${dir.path}/none.db`]);
  assert.equal(stats.code, 1);
  assert.match(stats.stderr, /--db with the file the server serves/);
  await using srv = await startServer({ token: "s3cret" });
  const sock = ["--socket", (srv.connectOptions as { path: string }).path];
  for (const args of [["shell", ...sock, "-c", "SELECT 1"], ["stats", ...sock]]) {
    const r = await cli(args);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /AUTH: .*requires a token: pass --token or set NETSQLITE_TOKEN/);
    assert.doesNotMatch(r.stderr, /connect\(/);
    // A wrong token: the server's address, and where the token comes from.
    const wrong = await cli([...args, "--token", "nope"]);
    assert.equal(wrong.code, 1);
    assert.match(
      wrong.stderr,
      /AUTH: Cannot start session on unix:\S+: wrong token: check the token given in --token \(or NETSQLITE_TOKEN\)/,
    );
    assert.doesNotMatch(wrong.stderr, /connect\(/);
  }
});

Deno.test("cli.ts serve runs the server of server.ts until SIGTERM; .timer times statements", async () => {
  await using dir = await tempDir();
  const sock = `${dir.path}/s.sock`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, "serve", "--db", `${dir.path}/s.db`, "--socket", sock],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let banner = "";
  while (!banner.includes("\n")) {
    const { value, done } = await lines.read();
    if (done) break;
    banner += value;
  }
  assert.match(banner, new RegExp(`^netsqlite ${VERSION} serving .*s\\.db on unix:${sock}\n`));
  const r = await cli([
    "shell",
    "--socket",
    sock,
    "--mode",
    "csv",
    "-c",
    ".timer on\nSELECT 6 * 7;",
  ]);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^6 \* 7\r\n42\r\nRun Time: real \d+\.\d{3}\n$/);
  child.kill("SIGTERM");
  while (!(await lines.read()).done) { /* drain */ }
  assert.equal((await child.status).code, 0);
});

// ---- the command, through a pseudo-terminal ---------------------------------------

const HAS_SCRIPT = (() => {
  try {
    return Deno.statSync("/usr/bin/script").isFile && Deno.build.os === "linux";
  } catch {
    return false;
  }
})();

/** The shell on a pseudo-terminal made by util-linux `script`, fed line by line. */
class PtyShell {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #pump: Promise<void>;
  /** Everything the terminal showed so far. */
  screen = "";

  constructor(sock: string, history: string) {
    const command = `'${Deno.execPath()}' run -A '${CLI}' shell --socket '${sock}'`;
    this.#child = new Deno.Command("script", {
      args: ["-qefc", command, "/dev/null"],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
      env: { NETSQLITE_HISTORY: history, TERM: "xterm", NO_COLOR: "1" },
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    const stdout = this.#child.stdout;
    this.#pump = (async () => {
      const dec = new TextDecoder();
      for await (const chunk of stdout) this.screen += dec.decode(chunk, { stream: true });
    })();
  }

  /** Waits until the screen, after `from`, contains `text`; returns where it ends. */
  async waitFor(text: string, from = 0): Promise<number> {
    const deadline = Date.now() + 20_000;
    while (true) {
      const at = this.screen.indexOf(text, from);
      if (at !== -1) return at + text.length;
      if (Date.now() > deadline) {
        throw new Error(
          `Timed out waiting for ${JSON.stringify(text)}; screen: ${JSON.stringify(this.screen)}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  async type(keys: string): Promise<void> {
    await this.#writer.write(new TextEncoder().encode(keys));
  }

  async close(): Promise<number> {
    await this.#writer.close().catch(() => {});
    const status = await this.#child.status;
    await this.#pump;
    return status.code;
  }
}

Deno.test({
  name: "cli.ts shell on a terminal: prompts, continuation, table output, errors, history, Ctrl-C",
  ignore: !HAS_SCRIPT,
  async fn() {
    await using srv = await startServer();
    await using dir = await tempDir();
    const sock = (srv.server.addr as { path: string }).path;
    const historyFile = `${dir.path}/history`;
    const pty = new PtyShell(sock, historyFile);
    try {
      let at = await pty.waitFor("netsqlite> ");
      await pty.type("SELECT 1 AS one,\n");
      at = await pty.waitFor("   ...> ", at);
      await pty.type("  'two' AS two;\n");
      at = await pty.waitFor(
        "+-----+-----+\r\n| one | two |\r\n+-----+-----+\r\n|   1 | two |\r\n+-----+-----+\r\n" +
          "netsqlite> ",
        at,
      );
      await pty.type("SELECT * FROM nowhere;\n");
      at = await pty.waitFor("Error: SQLITE_ERROR: no such table: nowhere\r\n", at);
      at = await pty.waitFor("netsqlite> ", at);
      // Up twice recalls the line before last; Enter runs it again.
      await pty.type("SELECT 40 + 2 AS answer;\n");
      at = await pty.waitFor("|     42 |\r\n+--------+\r\nnetsqlite> ", at);
      await pty.type("SELECT 'other';\n");
      at = await pty.waitFor("| other   |\r\n+---------+\r\nnetsqlite> ", at);
      await pty.type("\x1b[A\x1b[A\r");
      at = await pty.waitFor("|     42 |\r\n+--------+\r\nnetsqlite> ", at);
      // Ctrl-C drops the unfinished statement and returns to the first prompt.
      await pty.type("SELECT 'dropped'\n");
      at = await pty.waitFor("   ...> ", at);
      await pty.type("\x03");
      const interrupted = at = await pty.waitFor("netsqlite> ", await pty.waitFor("^C", at));
      await pty.type("SELECT 7 AS seven;\n");
      at = await pty.waitFor("|     7 |\r\n", at);
      assert.doesNotMatch(pty.screen.slice(interrupted), /Error/, "the dropped text never ran");
      await pty.type(".quit\n");
    } finally {
      assert.equal(await pty.close(), 0);
    }
    const saved = (await Deno.readTextFile(historyFile)).split("\n");
    assert.deepEqual(saved.slice(0, 3), [
      "SELECT 1 AS one,",
      "  'two' AS two;",
      "SELECT * FROM nowhere;",
    ]);
    assert.equal(saved.at(-2), ".quit");
  },
});

Deno.test({
  name:
    "cli.ts shell on a terminal: Ctrl-C while a statement waits ends the shell with 130, history kept",
  ignore: !HAS_SCRIPT,
  async fn() {
    await using srv = await startServer();
    await using dir = await tempDir();
    await using holder = await srv.client();
    await holder.exec("CREATE TABLE t(a)");
    await holder.exec("BEGIN IMMEDIATE"); // the shell's write below waits for the writer
    const sock = (srv.server.addr as { path: string }).path;
    const historyFile = `${dir.path}/history`;
    const pty = new PtyShell(sock, historyFile);
    let code: number;
    try {
      const at = await pty.waitFor("netsqlite> ");
      await pty.type("INSERT INTO t VALUES (1);\n");
      await pty.waitFor("INSERT INTO t VALUES (1);", at);
      await new Promise((resolve) => setTimeout(resolve, 200));
      await pty.type("\x03");
      await pty.waitFor("netsqlite shell: interrupted", at);
    } finally {
      code = await pty.close();
    }
    assert.equal(code, 130);
    await holder.exec("ROLLBACK");
    assert.equal(await Deno.readTextFile(historyFile), "INSERT INTO t VALUES (1);\n");
  },
});

/** A CA and a certificate it signed for 127.0.0.1 (openssl); null without openssl. */
async function certificate(
  dir: string,
): Promise<{ caFile: string; cert: string; key: string } | null> {
  const run = (args: string[]) =>
    new Deno.Command("openssl", { args, stdout: "null", stderr: "piped" }).output();
  try {
    await run(["version"]);
  } catch {
    return null;
  }
  await Deno.writeTextFile(
    `${dir}/leaf.ext`,
    "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1\n",
  );
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  for (
    const args of [
      ["req", "-x509", ...ec, "-keyout", `${dir}/ca.key`, "-out", `${dir}/ca.pem`, "-days", "1"]
        .concat(["-subj", "/CN=netsqlite test CA"]),
      ["req", ...ec, "-keyout", `${dir}/key.pem`, "-out", `${dir}/leaf.csr`, "-subj", "/CN=x"],
      ["x509", "-req", "-in", `${dir}/leaf.csr`, "-CA", `${dir}/ca.pem`, "-CAkey"]
        .concat([`${dir}/ca.key`, "-CAcreateserial", "-out", `${dir}/cert.pem`, "-days", "1"])
        .concat(["-extfile", `${dir}/leaf.ext`]),
    ]
  ) {
    const out = await run(args);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  }
  return {
    caFile: `${dir}/ca.pem`,
    cert: await Deno.readTextFile(`${dir}/cert.pem`),
    key: await Deno.readTextFile(`${dir}/key.pem`),
  };
}

Deno.test("cli.ts shell and admin commands: --token, $NETSQLITE_TOKEN, --tls-ca; without TLS against a TLS server they say so", async () => {
  await using srv = await startServer({ transport: "tcp", token: "s3cret" });
  const addr = srv.server.addr as { hostname: string; port: number };
  const tcp = ["--tcp", `${addr.hostname}:${addr.port}`];
  const sql = ["--mode", "csv", "--no-headers", "-c", "SELECT 40 + 2"];
  const shell = await cli(["shell", ...tcp, "--token", "s3cret", ...sql]);
  assert.equal(shell.code, 0, shell.stderr);
  assert.equal(shell.stdout, "42\r\n");
  const fromEnv = await cli(["shell", ...tcp, ...sql], undefined, { NETSQLITE_TOKEN: "s3cret" });
  assert.equal(fromEnv.code, 0, fromEnv.stderr);
  assert.equal(fromEnv.stdout, "42\r\n");
  const stats = await cli(["stats", "--json", ...tcp], undefined, { NETSQLITE_TOKEN: "s3cret" });
  assert.equal(stats.code, 0, stats.stderr);
  assert.equal(JSON.parse(stats.stdout).connections.open, 1);
  // --token wins over the environment.
  const wrong = await cli(["stats", ...tcp, "--token", "nope"], undefined, {
    NETSQLITE_TOKEN: "s3cret",
  });
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /^netsqlite stats: AUTH: /);
  const none = await cli(["shell", ...tcp, ...sql]);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /AUTH/);
  await using dir = await tempDir();
  const unix = await cli(["shell", "--socket", `${dir.path}/x.sock`, "--tls-ca", "x.pem"]);
  assert.equal(unix.code, 2);
  assert.match(unix.stderr, /^netsqlite shell: --tls-ca goes with --tcp HOST:PORT/);
  const cert = await certificate(dir.path);
  if (cert === null) {
    console.log("TLS part skipped: no `openssl` to make a certificate");
    return;
  }
  await using tls = await startServer({
    transport: "tcp",
    tls: { cert: cert.cert, key: cert.key },
  });
  const tlsAddr = tls.server.addr as { hostname: string; port: number };
  const tlsTcp = ["--tcp", `${tlsAddr.hostname}:${tlsAddr.port}`];
  const over = await cli(["shell", ...tlsTcp, "--tls-ca", cert.caFile, ...sql]);
  assert.equal(over.code, 0, over.stderr);
  assert.equal(over.stdout, "42\r\n");
  const integrity = await cli(["integrity", ...tlsTcp, "--tls-ca", cert.caFile]);
  assert.equal(integrity.code, 0, integrity.stderr);
  const plain = await cli(["stats", ...tlsTcp]);
  assert.equal(plain.code, 1);
  assert.match(
    plain.stderr,
    /^netsqlite stats: PROTOCOL_VERSION: Cannot connect to tcp:127\.0\.0\.1:\d+: the server speaks TLS: pass tls: \{ caCerts \} \(CLI: --tls-ca\)\n$/,
  );
});

Deno.test("cli.ts shell piped into head ends quietly with status 0", async () => {
  await using srv = await startServer();
  const sock = (srv.connectOptions as { path: string }).path;
  const sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 200000) " +
    "SELECT x FROM c";
  const out = await new Deno.Command("bash", {
    args: [
      "-c",
      `"$0" run -A "$1" shell --socket "$2" --mode csv -c "$3" | head -2; ` +
      'echo "status ${PIPESTATUS[0]}"',
      Deno.execPath(),
      CLI,
      sock,
      sql,
    ],
    env: { NETSQLITE_HISTORY: "", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  assert.equal(dec.decode(out.stdout), "x\r\n1\r\nstatus 0\n");
  assert.equal(dec.decode(out.stderr), "");
});

Deno.test("cli.ts serve names the flag whose value is out of range", async () => {
  await using dir = await tempDir();
  const base = ["serve", "--db", `${dir.path}/x.db`, "--socket", `${dir.path}/x.sock`];
  const timeout = await cli([...base, "--statement-timeout=-5"]);
  assert.equal(timeout.code, 2);
  assert.equal(
    timeout.stderr,
    "netsqlite: Invalid --statement-timeout: -5 is outside 1..2147483647\n",
  );
  const level = await cli([...base, "--log-level", "loud"]);
  assert.equal(level.code, 2);
  assert.match(level.stderr, /^netsqlite: Invalid --log-level: expected one of error, /);
  // A negative value after a blank reaches the range check (parseArgs calls it ambiguous).
  const negative = await cli([...base, "--slow-ms", "-3"]);
  assert.equal(negative.code, 2);
  assert.equal(negative.stderr, "netsqlite: Invalid --slow-ms: -3 is outside 0..2147483647\n");
  // Every value the options refuse is a bad argument (exit status 2), named by its flag.
  const refused: [string[], string][] = [
    [["--grace-ms", "-1"], "Invalid --grace-ms: -1 is outside 0..2147483647"],
    [["--engine", "foo"], 'Invalid --engine: expected "auto", "ffi" or "node", got "foo"'],
    [["--synchronous", "off"], 'Invalid --synchronous: expected "full" or "normal", got "off"'],
    [["--max-connections", "0"], "Invalid --max-connections: 0 is outside 1..1000000"],
    [["--max-frame-size", "10"], "Invalid --max-frame-size: 10 is outside 1024..2147483647"],
    [
      ["--tcp", "127.0.0.1:0"],
      "Invalid options: give either --socket (Unix socket) or --tcp (TCP) or --channel, " +
      "not several",
    ],
  ];
  for (const [flags, message] of refused) {
    const r = await cli([...base, ...flags]);
    assert.equal(r.code, 2, flags.join(" "));
    assert.equal(r.stderr, `netsqlite: ${message}\n`);
  }
  // Integer flags take decimal digits only: not hex, exponents or fractions.
  for (const value of ["0x10", "1e3", "1.5", " 7"]) {
    const r = await cli([...base, "--busy-timeout", value]);
    assert.equal(r.code, 2, value);
    assert.ok(
      r.stderr.startsWith(
        `netsqlite: Invalid --busy-timeout "${value}": expected a whole number in decimal digits\n`,
      ),
      r.stderr,
    );
  }
  // A directory as the database: one "Cannot open database", and what is wrong.
  const dirDb = await cli(["serve", "--db", dir.path, "--socket", `${dir.path}/y.sock`]);
  assert.equal(dirDb.code, 1);
  assert.match(
    dirDb.stderr,
    /^netsqlite: Cannot open database "[^"]+": [^\n]*: it is a directory; give the path of a file in it\n$/,
  );
  assert.equal(dirDb.stderr.split("Cannot open database").length, 2, dirDb.stderr);
});

Deno.test("cli.ts serve refuses a --backup-dir that is missing or not a directory", async () => {
  await using dir = await tempDir();
  await Deno.writeTextFile(`${dir.path}/file`, "");
  const base = ["serve", "--db", `${dir.path}/x.db`, "--socket", `${dir.path}/x.sock`];
  // A server that started anyway is stopped after a while (and the test fails).
  const serveCli = async (args: string[]): Promise<{ code: number; stderr: string }> => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", CLI, ...args],
      stdout: "null",
      stderr: "piped",
      signal: AbortSignal.timeout(10_000),
    }).output();
    return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
  };
  const missing = await serveCli([...base, "--backup-dir", `${dir.path}/nope`]);
  assert.equal(missing.code, 1);
  assert.equal(
    missing.stderr,
    `netsqlite: Cannot use --backup-dir "${dir.path}/nope": the directory does not exist; ` +
      "create it first\n",
  );
  const file = await serveCli([...base, "--backup-dir", `${dir.path}/file`]);
  assert.equal(file.code, 1);
  assert.equal(
    file.stderr,
    `netsqlite: Cannot use --backup-dir "${dir.path}/file": it is not a directory\n`,
  );
  // It refused before opening the database.
  await assert.rejects(Deno.lstat(`${dir.path}/x.db`), Deno.errors.NotFound);
});

Deno.test("describeCheckpoint() says when the database is not in WAL mode", () => {
  const r = {
    mode: "passive",
    busy: false,
    walFrames: -1,
    checkpointed: -1,
    walBytesBefore: 0,
    walBytesAfter: 0,
    ms: 0.1,
  } as const;
  assert.equal(
    describeCheckpoint(r),
    "checkpoint (passive): the database is not in WAL mode: there is no WAL to write back",
  );
});

Deno.test("describeCheckpoint() reads SQLite's answer when busy: could not run, or written back but not reset", () => {
  const r = {
    mode: "truncate",
    busy: true,
    walFrames: -1,
    checkpointed: -1,
    walBytesBefore: 8272,
    walBytesAfter: 8272,
    ms: 0.4,
  } as const;
  assert.equal(
    describeCheckpoint(r),
    "checkpoint (truncate): busy: another connection (another process) is checkpointing now, " +
      "so this one could not run and wrote nothing back, WAL 8.1 KiB -> 8.1 KiB, 0.4 ms; try again",
  );
  const rest =
    "but the WAL could not be reset, WAL 8.1 KiB -> 8.1 KiB, 0.4 ms; a reader (an open " +
    "cursor, another process) is reading it or another process writes: the next checkpoint resets it";
  assert.equal(
    describeCheckpoint({ ...r, walFrames: 2, checkpointed: 2 }),
    `checkpoint (truncate): busy: all 2 WAL frames written back, ${rest}`,
  );
  assert.equal(
    describeCheckpoint({ ...r, walFrames: 0, checkpointed: 0 }),
    `checkpoint (truncate): busy: no WAL frame to write back, ${rest}`,
  );
  assert.match(
    describeCheckpoint({ ...r, walFrames: 3, checkpointed: 1 }),
    /^checkpoint \(truncate\): busy: 1 of 3 WAL frames written back, .* holds an older snapshot, the rest waits for the next checkpoint$/,
  );
});
