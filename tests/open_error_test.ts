/**
 * Open errors of the server: a WAL database that cannot be opened (read-only
 * or not) is told apart, since `--readonly` alone cannot serve it from a
 * directory the server cannot write. The failing open itself needs a
 * read-only directory, which root does not have, so the message builder is
 * tested on real database files and SQLite's own error codes.
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { SqliteError } from "../protocol/errors.ts";
import {
  isWalDatabase,
  openError,
  removeDatabaseCreated,
  removeWalFilesCreated,
  WAL_HINT,
  walFilesBefore,
} from "../server/open_error.ts";
import { tempDir } from "./_helpers.ts";

function makeDatabase(path: string, journalMode: "WAL" | "DELETE"): void {
  const db = new DatabaseSync(path);
  db.exec(`PRAGMA journal_mode = ${journalMode}; CREATE TABLE t (a); INSERT INTO t VALUES (1)`);
  db.close();
}

Deno.test("isWalDatabase() reads the header: WAL databases only", async () => {
  await using dir = await tempDir();
  makeDatabase(`${dir.path}/wal.db`, "WAL");
  makeDatabase(`${dir.path}/delete.db`, "DELETE");
  Deno.writeTextFileSync(`${dir.path}/text.db`, "SQLite format 3 is not a header\n");
  assert.equal(isWalDatabase(`${dir.path}/wal.db`), true);
  assert.equal(isWalDatabase(`${dir.path}/delete.db`), false);
  assert.equal(isWalDatabase(`${dir.path}/text.db`), false);
  assert.equal(isWalDatabase(`${dir.path}/missing.db`), false);
  assert.equal(isWalDatabase(dir.path), false);
});

Deno.test("openError() of a WAL database says that WAL needs a writable directory and how to serve it read-only", async () => {
  await using dir = await tempDir();
  const wal = `${dir.path}/wal.db`;
  makeDatabase(wal, "WAL");
  const cantOpen = new SqliteError("SQLITE_CANTOPEN", "unable to open database file", 14);
  const ro = openError(cantOpen, wal, true) as SqliteError;
  assert.ok(ro instanceof SqliteError);
  assert.equal(ro.code, "SQLITE_CANTOPEN");
  assert.equal(ro.cause, cantOpen);
  assert.equal(
    ro.message,
    `Cannot open database "${wal}": unable to open database file: ${WAL_HINT}, or make the ` +
      "directory writable by this user",
  );
  assert.match(ro.message, /PRAGMA journal_mode=DELETE/);
  assert.doesNotMatch(ro.message, /check that the file exists/);
  const readonly = new SqliteError("SQLITE_READONLY", "attempt to write a readonly database", 8);
  const rw = openError(readonly, wal, false) as SqliteError;
  assert.equal(
    rw.message,
    `Cannot open database "${wal}": attempt to write a readonly database: make the file and ` +
      `its directory writable by this user (${WAL_HINT})`,
  );
  assert.doesNotMatch(rw.message, /or serve it with --readonly/);
  // Read-only too: "attempt to write a readonly database" gets the WAL hint, not nothing.
  const roWrite = openError(readonly, wal, true) as SqliteError;
  assert.ok(roWrite.message.endsWith(`${WAL_HINT}, or make the directory writable by this user`));
});

Deno.test("openError() of a rollback-journal database keeps the plain advice", async () => {
  await using dir = await tempDir();
  const db = `${dir.path}/delete.db`;
  makeDatabase(db, "DELETE");
  const readonly = new SqliteError("SQLITE_READONLY", "attempt to write a readonly database", 8);
  assert.equal(
    (openError(readonly, db, false) as Error).message,
    `Cannot open database "${db}": attempt to write a readonly database: make the file and its ` +
      "directory writable by this user, or serve it with --readonly",
  );
  const cantOpen = new SqliteError("SQLITE_CANTOPEN", "unable to open database file", 14);
  assert.equal(
    (openError(cantOpen, db, true) as Error).message,
    `Cannot open database "${db}": unable to open database file: check that the file exists and ` +
      "this user may read it",
  );
  const other = new TypeError("not an SqliteError");
  assert.equal(openError(other, db, true), other);
});

Deno.test("walFilesBefore() and removeWalFilesCreated() of a symbolic link look beside the file it names, where SQLite puts the -wal and -shm files", async () => {
  await using dir = await tempDir();
  Deno.mkdirSync(`${dir.path}/real`);
  const real = `${dir.path}/real/x.db`, link = `${dir.path}/link.db`;
  makeDatabase(real, "WAL");
  Deno.symlinkSync(real, link);
  assert.deepEqual(walFilesBefore(link), { wal: false, shm: false });
  // What a failed open leaves: an empty WAL and its index, beside the real file.
  const other = new DatabaseSync(real);
  other.exec("SELECT * FROM t");
  assert.deepEqual(walFilesBefore(link), { wal: true, shm: true });
  other.close();
  Deno.writeFileSync(`${real}-wal`, new Uint8Array());
  Deno.writeFileSync(`${real}-shm`, new Uint8Array(32768));
  assert.deepEqual(removeWalFilesCreated(link, { wal: false, shm: false }), [
    `${real}-wal`,
    `${real}-shm`,
  ]);
  assert.deepEqual([...Deno.readDirSync(`${dir.path}/real`)].map((e) => e.name), ["x.db"]);
});

Deno.test("removeDatabaseCreated() removes a database file holding nothing (empty, or one page with an empty schema), and keeps any other", async () => {
  await using dir = await tempDir();
  const names = (): string[] => [...Deno.readDirSync(dir.path)].map((e) => e.name).sort();
  const empty = `${dir.path}/empty.db`;
  Deno.writeFileSync(empty, new Uint8Array());
  assert.equal(removeDatabaseCreated(empty), empty);
  // What turning WAL on writes to a new file: one page, the header and no schema.
  const header = `${dir.path}/header.db`;
  const h = new DatabaseSync(header);
  h.exec("PRAGMA journal_mode = WAL");
  h.close();
  assert.equal(Deno.statSync(header).size, 4096);
  Deno.mkdirSync(`${dir.path}/real`);
  Deno.renameSync(header, `${dir.path}/real/header.db`);
  Deno.symlinkSync(`${dir.path}/real/header.db`, header);
  assert.equal(removeDatabaseCreated(header), `${dir.path}/real/header.db`);
  assert.deepEqual([...Deno.readDirSync(`${dir.path}/real`)], []);
  Deno.removeSync(header);
  // Kept: a table (even empty, in one page), a WAL beside, a file that is not SQLite.
  makeDatabase(`${dir.path}/table.db`, "DELETE");
  const t = new DatabaseSync(`${dir.path}/one.db`);
  t.exec("CREATE TABLE t (x)");
  t.close();
  assert.equal(Deno.statSync(`${dir.path}/one.db`).size, 8192);
  const v = new DatabaseSync(`${dir.path}/view.db`); // a schema in one page
  v.exec("CREATE VIEW v AS SELECT 1");
  v.close();
  assert.equal(Deno.statSync(`${dir.path}/view.db`).size, 4096);
  const walled = `${dir.path}/walled.db`;
  Deno.writeFileSync(walled, new Uint8Array());
  Deno.writeFileSync(`${walled}-wal`, new Uint8Array(32));
  Deno.writeTextFileSync(`${dir.path}/text.db`, "not a database");
  for (const name of ["table.db", "one.db", "view.db", "walled.db", "text.db", "missing.db"]) {
    assert.equal(removeDatabaseCreated(`${dir.path}/${name}`), null, name);
  }
  assert.equal(removeDatabaseCreated(":memory:"), null);
  assert.deepEqual(names(), [
    "one.db",
    "real",
    "table.db",
    "text.db",
    "view.db",
    "walled.db",
    "walled.db-wal",
  ]);
});

Deno.test("openError() of a full disk at open names the device's directory", async () => {
  await using dir = await tempDir();
  const db = `${dir.path}/a.db`;
  const hint = `: the device holding "${dir.path}" is full or not writable: make room there and ` +
    "start again";
  const full = new SqliteError("SQLITE_FULL", "database or disk is full", 13);
  assert.equal(
    (openError(full, db, false) as Error).message,
    `Cannot open database "${db}": database or disk is full${hint}`,
  );
  for (const code of [10 | (19 << 8), 10 | (3 << 8)]) {
    const io = new SqliteError("SQLITE_IOERR", "disk I/O error", code);
    assert.equal(
      (openError(io, db, false) as Error).message,
      `Cannot open database "${db}": disk I/O error${hint}`,
    );
  }
  const read = new SqliteError("SQLITE_IOERR_READ", "disk I/O error", 10 | (1 << 8));
  assert.equal(
    (openError(read, db, false) as Error).message,
    `Cannot open database "${db}": disk I/O error`,
  );
});
