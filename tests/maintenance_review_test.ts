/**
 * Maintenance findings of a review, on both engines: a copy never takes a
 * name of the database's own files (its `-journal`, `-wal`, `-shm`, lock
 * file, super-journals: `-mj`, 6 hexadecimal digits, 9, 2 more, not every
 * name that begins with `-mj`), and `integrity` on a database SQLite finds too
 * damaged to finish the check reports problems (exit status 3), not a
 * failure to run.
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import type { Link } from "../client/link.ts";
import { Op } from "../protocol/messages.ts";
import { openTestLink, rowsOf, startServer, tempDir, type TestServer } from "./_helpers.ts";
import { cli } from "./_cli.ts";

const ENGINES = ["ffi", "node"] as const;

function link(srv: Pick<TestServer, "connectOptions">): Promise<Link & AsyncDisposable> {
  return openTestLink(srv.connectOptions);
}

async function refused(req: Promise<unknown>, message: RegExp): Promise<void> {
  await assert.rejects(req, (err: Error & { code: string }) => {
    assert.equal(err.code, "FORBIDDEN", err.message);
    assert.match(err.message, message);
    return true;
  });
}

function names(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}

const SUPER_JOURNAL =
  /it is a name SQLite gives the database's super-journals \(DB-mj, 6 upper-case hexadecimal digits, 9, 2 more: DB-mjHHHHHH9HH\)/;

/** The names a copy may not take, beside database `x.db`, and why. */
const OWN_NAMES: [string, RegExp][] = [
  ["x.db", /it is the database itself/],
  ["x.db-journal", /it is the name of the database's rollback journal \(SQLite would take/],
  ["x.db-wal", /it is the name of the database's WAL \(SQLite would take the copy for its WAL\)/],
  ["x.db-shm", /it is the name of the database's WAL-index \(-shm\)/],
  ["x.db.lock", /it is the name of the server's lock file for the database/],
  ["x.db-mj0A1B2C9D3", SUPER_JOURNAL],
  ["x.db-mjFFFFFF9FF", SUPER_JOURNAL],
  ["x.db-mj000000900", SUPER_JOURNAL],
];

/**
 * Names that begin as a super-journal's but are not one (SQLite names them
 * `DB-mj`, 6 upper-case hexadecimal digits, `9`, 2 more): copies like any other.
 */
const NOT_SUPER_JOURNALS = [
  "x.db-mj",
  "x.db-mjolnir.bak",
  "x.db-mj-backup",
  "x.db-mj0A1B2C8D3", // No 9 in the middle.
  "x.db-mj0A1B2C9D", // One digit short.
  "x.db-mj0A1B2C9D3E", // One too many.
  "x.db-mj0A1B2C9D3.bak",
  "x.db-mj0A1B2G9D3", // G is no hexadecimal digit.
  "x.db-MJ0A1B2C9D3.bak",
  // SQLite writes upper-case digits: a lower-case name is another file where case matters.
  ...(Deno.build.os === "darwin" || Deno.build.os === "windows" ? [] : ["x.db-mj0a1b2c9d3"]),
];

/**
 * A database whose `PRAGMA integrity_check` reports a problem on a leaf
 * page of index `tv`, then fails with `SQLITE_CORRUPT` (as the `sqlite3`
 * command does): the page's header says its cell content starts past the
 * page.
 */
function corruptIndexLeaf(path: string): void {
  const db = new DatabaseSync(path);
  db.exec(
    "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); CREATE INDEX tv ON t(v);" +
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000) " +
      "INSERT INTO t SELECT x, hex(randomblob(20)) FROM c",
  );
  const { page } = db.prepare("SELECT max(pageno) AS page FROM dbstat WHERE name = 'tv'")
    .get() as { page: number };
  const { page_size } = db.prepare("PRAGMA page_size").get() as { page_size: number };
  db.close();
  using f = Deno.openSync(path, { write: true });
  f.seekSync((page - 1) * page_size + 1, Deno.SeekMode.Start);
  // First freeblock 0x0a00, 0 cells, cell content area at 0x5000.
  f.writeSync(new Uint8Array([0x0a, 0x00, 0x00, 0x00, 0x50, 0x00]));
}

/** Writes `bytes` at `offset` of the file at `path`. */
function overwrite(path: string, offset: number, bytes: Uint8Array): void {
  using f = Deno.openSync(path, { write: true });
  f.seekSync(offset, Deno.SeekMode.Start);
  f.writeSync(bytes);
}

const STOPPED = "SQLITE_CORRUPT: database disk image is malformed (the check stopped here)";

for (const engine of ENGINES) {
  Deno.test(`${engine}: backup and vacuum into refuse the names of the database's own files, existing or not`, async () => {
    await using dir = await tempDir();
    const real = Deno.realPathSync(dir.path);
    Deno.symlinkSync(real, `${real}/link`);
    await using srv = await startServer({
      engine,
      database: `${dir.path}/x.db`,
      backupDir: dir.path,
    });
    await using a = await link(srv);
    await a.request(Op.Exec, ["CREATE TABLE t(x); INSERT INTO t VALUES (1), (2)"]);
    const before = names(real);
    for (const [name, why] of OWN_NAMES) {
      // Relative, absolute, and through a symbolic link to the directory.
      for (const dest of [name, `${real}/${name}`, `link/${name}`]) {
        const target = RegExp.escape(`${real}/${name}`);
        await refused(
          a.request(Op.Backup, [dest]),
          new RegExp(`^Cannot back up to "${target}": ${why.source}.*; choose another name \\(`),
        );
        await refused(
          a.request(Op.Vacuum, [dest]),
          new RegExp(`^Cannot vacuum into "${target}": ${why.source}`),
        );
      }
    }
    assert.deepEqual(names(real), before, "no file was written");
    // The database stays readable, and names that only begin like them are copies like any other.
    assert.equal((await a.request(Op.Integrity, [])).ok, true);
    for (const name of ["x.db-journal.bak", "x.db-copy", "x.db2-wal"]) {
      const r = await a.request(Op.Backup, [name]);
      assert.equal(r.dest, `${real}/${name}`);
    }
    const [, rows] = await a.request(Op.Query, ["SELECT count(*) FROM t", null, null]);
    assert.deepEqual(rows, [[2]]);
  });

  Deno.test(`${engine}: names that only begin like a super-journal's (x.db-mjolnir.bak) are copies like any other`, async () => {
    await using dir = await tempDir();
    const real = Deno.realPathSync(dir.path);
    await using srv = await startServer({
      engine,
      database: `${dir.path}/x.db`,
      backupDir: dir.path,
    });
    await using a = await link(srv);
    await a.request(Op.Exec, ["CREATE TABLE t(x); INSERT INTO t VALUES (1), (2)"]);
    for (const name of NOT_SUPER_JOURNALS) {
      const copies = [
        (await a.request(Op.Backup, [name])).dest,
        (await a.request(Op.Vacuum, [`${name}.v`])).into,
      ];
      assert.deepEqual(copies, [`${real}/${name}`, `${real}/${name}.v`]);
      for (const copy of copies as string[]) {
        assert.deepEqual(rowsOf(copy, "PRAGMA integrity_check"), [["ok"]], copy);
        assert.deepEqual(rowsOf(copy, "SELECT x FROM t ORDER BY x"), [[1], [2]], copy);
      }
    }
    // The server's database is untouched, and a real super-journal's name is still refused.
    await refused(a.request(Op.Backup, ["x.db-mj5E17A09C4"]), SUPER_JOURNAL);
    const [, rows] = await a.request(Op.Query, ["SELECT count(*) FROM t", null, null]);
    assert.deepEqual(rows, [[2]]);
  });

  Deno.test(`${engine}: a --readonly server of a rollback-journal database refuses its -wal name as a destination`, async () => {
    await using dir = await tempDir();
    const real = Deno.realPathSync(dir.path);
    const db = new DatabaseSync(`${real}/x.db`);
    db.exec("PRAGMA journal_mode = DELETE; CREATE TABLE t(x); INSERT INTO t VALUES (1)");
    db.close();
    await using srv = await startServer({
      engine,
      database: `${real}/x.db`,
      backupDir: real,
      readonly: true,
    });
    await using a = await link(srv);
    for (const name of ["x.db-wal", "x.db-journal", "x.db-shm"]) {
      await refused(a.request(Op.Backup, [name]), /^Cannot back up to ".*": it is the name of/);
    }
    assert.ok(!names(real).some((n) => /-(wal|journal|shm)$/.test(n)), names(real).join(" "));
    const r = await a.request(Op.Backup, ["b.db"]);
    assert.equal(r.dest, `${real}/b.db`);
    assert.equal((await a.request(Op.Integrity, [])).ok, true);
  });

  Deno.test(`${engine}: a database served through a symbolic link: its files' names, beside the file, are refused`, async () => {
    await using dir = await tempDir();
    const real = Deno.realPathSync(dir.path);
    await Deno.mkdir(`${real}/data`);
    Deno.symlinkSync(`${real}/data/x.db`, `${real}/alias.db`);
    await using srv = await startServer({
      engine,
      database: `${real}/alias.db`,
      backupDir: real,
    });
    await using a = await link(srv);
    await a.request(Op.Exec, ["CREATE TABLE t(x)"]);
    for (const name of ["data/x.db-journal", "data/x.db-wal", "data/x.db.lock"]) {
      await refused(a.request(Op.Backup, [name]), /: it is the name of the /);
    }
    assert.deepEqual(names(`${real}/data`).filter((n) => n.endsWith("-journal")), []);
  });

  Deno.test(`${engine}: integrity that SQLite stops with SQLITE_CORRUPT reports the problems found and the error, ok false`, async () => {
    await using dir = await tempDir();
    corruptIndexLeaf(`${dir.path}/x.db`);
    await using srv = await startServer({ engine, database: `${dir.path}/x.db` });
    await using a = await link(srv);
    const r = await a.request(Op.Integrity, []);
    assert.equal(r.ok, false);
    assert.ok(r.problems.length >= 2, r.problems.join("\n"));
    assert.match(r.problems[0], /free space corruption/);
    assert.equal(r.problems.at(-1), STOPPED);
    assert.ok(r.pages > 100);
    assert.equal(r.bytes, r.pages * 4096);
    // The server goes on serving.
    const [, rows] = await a.request(Op.Query, ["SELECT count(*) FROM t", null, null]);
    assert.deepEqual(rows, [[5000]]);

    // The command: exit status 3 (problems found), not 1 (could not run), in text and JSON.
    const sock = ["--socket", (srv.connectOptions as { path: string }).path];
    const text = await cli(["integrity", ...sock]);
    assert.equal(text.code, 3, text.stderr);
    assert.equal(text.stderr, "");
    const lines = text.stdout.trimEnd().split("\n");
    assert.match(lines[0], /^integrity: \d+ problems \(\d+ pages, /);
    assert.match(lines[1], /^ {2}.*free space corruption$/);
    assert.equal(lines.at(-1), `  ${STOPPED}`);
    const json = await cli(["integrity", "--json", ...sock]);
    assert.equal(json.code, 3, json.stderr);
    const report = JSON.parse(json.stdout);
    assert.equal(report.ok, false);
    assert.equal(report.problems.at(-1), STOPPED);
  });

  Deno.test(`${engine}: integrity on a database whose header or schema SQLite cannot read reports it as a problem`, async () => {
    for (
      const [what, offset, bytes, problem] of [
        // The page type of sqlite_schema's root page.
        [
          "schema",
          100,
          new Uint8Array([0xff]),
          /^SQLITE_CORRUPT: .* \(the check could not start\)$/,
        ],
        // The header's magic string.
        [
          "header",
          0,
          new TextEncoder().encode("Not SQLite at all"),
          /^SQLITE_NOTADB: file is not a database \(the check could not start\)$/,
        ],
      ] as const
    ) {
      await using dir = await tempDir();
      const path = `${dir.path}/x.db`;
      await using srv = await startServer({ engine, database: path });
      {
        await using a = await link(srv);
        await a.request(Op.Exec, ["CREATE TABLE t(x); INSERT INTO t VALUES (1)"]);
        // Every page in the file, the WAL empty: a new connection reads them from the file.
        assert.equal((await a.request(Op.Checkpoint, ["truncate"])).walBytesAfter, 0);
      }
      overwrite(path, offset, bytes);
      const sock = ["--socket", (srv.connectOptions as { path: string }).path];
      const json = await cli(["integrity", "--json", ...sock]);
      assert.equal(json.code, 3, `${what}: ${json.stderr}`);
      const r = JSON.parse(json.stdout);
      assert.equal(r.ok, false);
      assert.equal(r.problems.length, 1, r.problems.join("\n"));
      assert.match(r.problems[0], problem, what);
      assert.equal(r.pages, 0);
      assert.equal(r.bytes, Deno.statSync(path).size);
    }
  });
}

for (const engine of ENGINES) {
  Deno.test(`${engine}: a backup never removes the database as what a copy cut short left behind`, async () => {
    // The names of a partial copy of "b.db" that a killed server leaves, and of its journal
    // (removed when its partial copy is gone).
    for (const name of ["b.db.0123abcd.partial", "b.db.0123abcd.partial-journal"]) {
      await using dir = await tempDir();
      const real = Deno.realPathSync(dir.path);
      await using srv = await startServer({ engine, database: `${real}/${name}`, backupDir: real });
      await using a = await link(srv);
      await a.request(Op.Exec, ["CREATE TABLE t(x); INSERT INTO t VALUES (1)"]);
      const r = await a.request(Op.Backup, ["b.db"]);
      assert.equal(r.dest, `${real}/b.db`);
      for (const file of [name, `${name}-wal`, `${name}-shm`]) {
        assert.ok(names(real).includes(file), `${file}: ${names(real).join(" ")}`);
      }
      const [, rows] = await a.request(Op.Query, ["SELECT count(*) FROM t", null, null]);
      assert.deepEqual(rows, [[1]]);
      assert.deepEqual(rowsOf(r.dest, "SELECT count(*) FROM t"), [[1]]);
    }
  });

  Deno.test(`${engine}: backup and vacuum --into refuse the name of a -wal or -journal of a copy beside it, which SQLite would delete when it opens that copy`, async () => {
    await using dir = await tempDir();
    await using srv = await startServer({ engine, backupDir: dir.path });
    await using a = await link(srv);
    await a.request(Op.Exec, ["CREATE TABLE t(x); INSERT INTO t VALUES (1), (2)"]);
    await a.request(Op.Backup, ["a.db"]);
    const real = Deno.realPathSync(dir.path);
    for (const [op, suffix] of [[Op.Backup, "-wal"], [Op.Vacuum, "-journal"]] as const) {
      await assert.rejects(
        a.request(op, [`a.db${suffix}`]),
        (err: Error & { code: string }) => {
          assert.equal(err.code, "BAD_REQUEST", err.message);
          assert.match(
            err.message,
            new RegExp(
              `^Cannot (back up to|vacuum into) "${real}/a\\.db${suffix}": "${real}/a\\.db" exists beside it`,
            ),
          );
          return true;
        },
      );
    }
    assert.deepEqual(names(dir.path), ["a.db"]);
    // What such a copy would have met: SQLite, opening a.db, deletes both when it closes.
    Deno.copyFileSync(`${dir.path}/a.db`, `${dir.path}/a.db-wal`);
    const opened = new DatabaseSync(`${dir.path}/a.db`);
    assert.deepEqual(Object.values(opened.prepare("SELECT count(*) FROM t").get()!), [2]);
    opened.close();
    assert.deepEqual(names(dir.path), ["a.db"]);
    // Two such copies asked for at once, on two connections: whichever comes second is
    // refused (as "exists" or "is being written"), so they are never both written.
    await using b = await link(srv);
    const results = await Promise.allSettled([
      a.request(Op.Backup, ["b.db"]),
      b.request(Op.Backup, ["b.db-journal"]),
    ]);
    const failed = results.flatMap((r) => r.status === "rejected" ? [r.reason as Error] : []);
    assert.equal(failed.length, 1, JSON.stringify(results));
    assert.match(failed[0].message, /beside it/);
    assert.equal(names(dir.path).length, 2, names(dir.path).join());
  });
}
