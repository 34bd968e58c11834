/**
 * Backups, restores and maintenance as an operator meets them while clients
 * keep working, on both engines: `netsqlite backup` while client processes
 * write (autocommit, and transfers in transactions), restoring a backup over
 * a database whose server was killed (its `-wal` left beside it), and a
 * backup to a name with an earlier database's `-wal` or `-journal` beside it,
 * the maintenance commands under load, and a vacuum that fills the device.
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { connect } from "../client.ts";
import { serve } from "../server.ts";
import { delay, rowsOf, startServerProcess, tempDir } from "./_helpers.ts";
import { cli, type Run } from "./_cli.ts";
import { type ClientProcess, spawnClientProcess } from "./_client_process.ts";
import { canMount, fill, mountedDisk } from "./_tmpfs.ts";

const ENGINES = ["ffi", "node"] as const;
const ACCOUNTS = 10;
const OPENING = 1000;

/** Accounts whose balance is not the opening one plus the ledger's transfers (none: no half transfer). */
const DRIFTED = "SELECT count(*) FROM acct a WHERE a.bal - ? " +
  "- coalesce((SELECT sum(amt) FROM ledger WHERE dst = a.id), 0) " +
  "+ coalesce((SELECT sum(amt) FROM ledger WHERE src = a.id), 0) != 0";

/** A database of about 20 MB (the backup takes many steps), with a bank and a log, in WAL mode. */
function writeBank(path: string): void {
  const db = new DatabaseSync(path);
  try {
    db.exec(
      "PRAGMA journal_mode = WAL; CREATE TABLE pad(id INTEGER PRIMARY KEY, b BLOB);" +
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000) " +
        "INSERT INTO pad(b) SELECT randomblob(1000) FROM c;" +
        "CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INTEGER NOT NULL);" +
        `WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ${ACCOUNTS}) ` +
        `INSERT INTO acct SELECT i, ${OPENING} FROM c;` +
        "CREATE TABLE ledger(id INTEGER PRIMARY KEY, src, dst, amt);" +
        "CREATE TABLE log(p INTEGER, seq INTEGER, PRIMARY KEY(p, seq));" +
        "PRAGMA wal_checkpoint(TRUNCATE)",
    );
  } finally {
    db.close();
  }
}

for (const engine of ENGINES) {
  Deno.test(`${engine}: netsqlite backup while client processes write: the copy is one consistent snapshot holding every write acknowledged before it`, async () => {
    await using dir = await tempDir();
    const copies = `${dir.path}/copies`;
    await Deno.mkdir(copies);
    writeBank(`${dir.path}/test.db`);
    const args = ["--engine", engine, "--backup-dir", copies];
    await using srv = await startServerProcess({ dir: dir.path, args });
    const socket = (srv.connectOptions as { path: string }).path;
    const processes: ClientProcess[] = [];
    try {
      for (let i = 0; i < 4; i++) processes.push(await spawnClientProcess(srv.connectOptions));
      let stop = false;
      // Per process: autocommit inserts acknowledged (0, 1), transfers committed (2, 3).
      const acked = [0, 0, 0, 0];
      let slowest = 0;
      const loops = processes.map(async (p, i) => {
        for (let n = 1; !stop; n++) {
          const start = performance.now();
          if (i < 2) {
            await p.run("INSERT INTO log(p, seq) VALUES (?, ?)", [i, n]);
          } else {
            const a = 1 + (n * 7 + i) % ACCOUNTS;
            const b = 1 + a % ACCOUNTS;
            const amt = 1 + n % 50;
            // Sent together: BEGIN, two updates and the ledger row, COMMIT.
            await Promise.all([
              p.exec("BEGIN IMMEDIATE"),
              p.run("UPDATE acct SET bal = bal - ? WHERE id = ?", [amt, a]),
              p.run("UPDATE acct SET bal = bal + ? WHERE id = ?", [amt, b]),
              p.run("INSERT INTO ledger(src, dst, amt) VALUES (?, ?, ?)", [a, b, amt]),
              p.exec("COMMIT"),
            ]);
          }
          acked[i] = n;
          slowest = Math.max(slowest, performance.now() - start);
        }
      });
      let before: number[];
      let after: number[];
      let r;
      try {
        for (let i = 0; i < 1000 && acked.some((n) => n < 5); i++) await delay(10);
        before = [...acked];
        slowest = 0;
        r = await cli(["backup", "--socket", socket, "snap.db"]);
        after = [...acked];
        await delay(200); // and writes after it
      } finally {
        stop = true;
        await Promise.all(loops);
      }
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^backup: \d+ pages, .* to .*\/copies\/snap\.db in /);
      assert.ok(before.every((n) => n >= 5), `${before}`);
      assert.ok(after.some((n, i) => n > before[i]), "writes went on during the backup");
      // Generous: node:sqlite's backup() holds the server for the whole copy (README).
      assert.ok(slowest < 20_000, `a write waited ${slowest} ms during the backup`);
      const copy = `${copies}/snap.db`;
      assert.deepEqual(rowsOf(copy, "PRAGMA integrity_check"), [["ok"]]);
      assert.deepEqual(rowsOf(copy, "PRAGMA journal_mode"), [["delete"]]);
      assert.deepEqual(rowsOf(copy, "SELECT sum(bal) FROM acct"), [[ACCOUNTS * OPENING]]);
      assert.deepEqual(rowsOf(copy, DRIFTED.replace("?", String(OPENING))), [[0]]);
      const [[ledger]] = rowsOf(copy, "SELECT count(*) FROM ledger") as number[][];
      assert.ok(ledger >= before[2] + before[3], `${ledger} transfers, ${before} acknowledged`);
      for (const p of [0, 1]) {
        const [[count, max]] = rowsOf(copy, `SELECT count(*), max(seq) FROM log WHERE p = ${p}`);
        assert.ok((max as number) >= before[p], `log ${p}: ${max} of ${before[p]} acknowledged`);
        assert.equal(count, max, "no write missing before the last one in the copy");
      }
      assert.deepEqual([...Deno.readDirSync(copies)].map((e) => e.name), ["snap.db"]);
      // The live database lost and doubled nothing.
      const [p0] = processes;
      assert.deepEqual(await p0.values("SELECT p, count(*), max(seq) FROM log GROUP BY p"), [
        [0, acked[0], acked[0]],
        [1, acked[1], acked[1]],
      ]);
      assert.deepEqual(await p0.values("SELECT count(*) FROM ledger"), [[acked[2] + acked[3]]]);
      assert.deepEqual(await p0.values(DRIFTED, [OPENING]), [[0]]);
    } finally {
      for (const p of processes) await p[Symbol.asyncDispose]();
    }
  });

  Deno.test(`${engine}: a backup restored over a database whose server was killed is not mixed with the WAL left beside it`, async () => {
    await using dir = await tempDir();
    const copies = `${dir.path}/copies`;
    await Deno.mkdir(copies);
    const database = `${dir.path}/test.db`;
    const args = ["--engine", engine, "--backup-dir", copies];
    {
      await using first = await startServerProcess({ dir: dir.path, args });
      const db = await connect({ ...first.connectOptions, max: 1 });
      try {
        await db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
        for (let i = 1; i <= 50; i++) await db.run("INSERT INTO t(v) VALUES (?)", [`old${i}`]);
        const socket = (first.connectOptions as { path: string }).path;
        const r = await cli(["backup", "--socket", socket, "snap.db"]);
        assert.equal(r.code, 0, r.stderr);
        // Written after the backup: in the WAL only, when the server is killed.
        await db.exec("DELETE FROM t WHERE id <= 25; CREATE TABLE later(x)");
        for (let i = 1; i <= 50; i++) await db.run("INSERT INTO t(v) VALUES (?)", [`new${i}`]);
      } finally {
        await db.close();
      }
      await first.kill(); // kill -9: the -wal stays, holding those writes
    }
    assert.ok(Deno.statSync(`${database}-wal`).size > 0);
    // Restored as the README says: the server stopped, the file replaced.
    await Deno.copyFile(`${copies}/snap.db`, database);
    const path = `${dir.path}/again.sock`;
    await assert.rejects(serve({ database, path, engine }), (err: Error) => {
      assert.match(err.message, /^Cannot open database ".*\/test\.db": /);
      assert.match(err.message, /a WAL file ".*\/test\.db-wal" of \d+ bytes is beside it/);
      assert.match(err.message, /remove ".*\/test\.db-wal" and ".*\/test\.db-shm"/);
      return true;
    });
    // Nothing was changed: the restored file is the copy, the WAL still there.
    assert.deepEqual(rowsOf(`${copies}/snap.db`, "SELECT count(*) FROM t"), [[50]]);
    assert.ok(Deno.statSync(`${database}-wal`).size > 0);
    // Done as the error says, the server serves exactly the copy.
    await Deno.remove(`${database}-wal`);
    await Deno.remove(`${database}-shm`);
    const server = await serve({ database, path, engine });
    try {
      await using db = await connect({ path, max: 1 });
      assert.deepEqual(await db.values("SELECT count(*), min(v), max(v) FROM t"), [[
        50,
        "old1",
        "old9",
      ]]);
      assert.deepEqual(await db.values("SELECT name FROM sqlite_schema ORDER BY name"), [["t"]]);
      assert.deepEqual(await db.values("PRAGMA integrity_check"), [["ok"]]);
    } finally {
      await server.shutdown();
    }
  });
}

/**
 * Leaves at `path`-wal the WAL of a database that was at `path` (rows
 * `'stale'`, table `old`), as a server killed while serving it leaves it, and
 * removes the database file itself.
 */
function leaveStaleWal(path: string): void {
  const db = new DatabaseSync(path);
  let wal: Uint8Array;
  try {
    db.exec(
      "PRAGMA journal_mode = WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);" +
        "CREATE TABLE old(x); INSERT INTO t(v) VALUES ('stale')",
    );
    wal = Deno.readFileSync(`${path}-wal`);
  } finally {
    db.close(); // checkpoints and deletes the WAL: put it back
  }
  Deno.writeFileSync(`${path}-wal`, wal);
  Deno.removeSync(path);
}

for (const engine of ENGINES) {
  Deno.test(`${engine}: backup and vacuum --into refuse a destination with a -wal or -journal left beside it, which SQLite would apply to the copy`, async () => {
    await using dir = await tempDir();
    const copies = `${dir.path}/copies`;
    await Deno.mkdir(copies);
    const database = `${dir.path}/test.db`;
    const path = `${dir.path}/s.sock`;
    const server = await serve({ database, path, engine, backupDir: copies });
    try {
      await using db = await connect({ path, max: 1 });
      await db.exec(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('today')",
      );
      const real = Deno.realPathSync(copies);
      leaveStaleWal(`${copies}/nightly.db`);
      await Deno.writeTextFile(`${copies}/other.db-journal`, "a journal left by another database");
      const cases = [
        ["backup", "back up to", "nightly.db", "-wal"],
        ["vacuum --into", "vacuum into", "nightly.db", "-wal"],
        ["backup", "back up to", "other.db", "-journal"],
        ["vacuum --into", "vacuum into", "other.db", "-journal"],
      ] as const;
      for (const [command, what, name, suffix] of cases) {
        const args = command === "backup" ? ["backup", name] : ["vacuum", "--into", name];
        const r = await cli([...args, "--socket", path]);
        assert.equal(r.code, 1, `${command} ${name}: ${r.stdout}`);
        assert.match(
          r.stderr,
          new RegExp(
            `BAD_REQUEST: Cannot ${what} "${real}/${name}": "${real}/${name}${suffix}" ` +
              "exists beside it",
          ),
        );
      }
      // Nothing written, nothing removed.
      assert.deepEqual([...Deno.readDirSync(copies)].map((e) => e.name).sort(), [
        "nightly.db-wal",
        "other.db-journal",
      ]);
      // Once they are removed, the copy holds the database as it is.
      await Deno.remove(`${copies}/nightly.db-wal`);
      const r = await cli(["backup", "nightly.db", "--socket", path]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(rowsOf(`${copies}/nightly.db`, "SELECT v FROM t"), [["today"]]);
      assert.deepEqual(rowsOf(`${copies}/nightly.db`, "SELECT name FROM sqlite_schema"), [["t"]]);
    } finally {
      await server.shutdown();
    }
  });
}

for (const engine of ENGINES) {
  Deno.test(`${engine}: checkpoint, vacuum, integrity, vacuum --into and backup while clients write and a cursor reads: every command succeeds, nothing acknowledged is lost`, async () => {
    await using dir = await tempDir();
    const copies = `${dir.path}/copies`;
    await Deno.mkdir(copies);
    writeBank(`${dir.path}/test.db`);
    const path = `${dir.path}/s.sock`;
    const server = await serve({
      database: `${dir.path}/test.db`,
      path,
      engine,
      backupDir: copies,
    });
    try {
      await using setup = await connect({ path, max: 1 });
      await setup.exec("DELETE FROM pad WHERE id % 2 = 0"); // something for vacuum to compact
      const clients = await Promise.all([0, 1, 2].map(() => connect({ path, max: 1 })));
      let stop = false;
      const acked = [0, 0];
      let reads = 0;
      const loops = clients.map(async (c, i) => {
        try {
          for (let n = 1; !stop; n++) {
            if (i === 0) {
              await c.run("INSERT INTO log(p, seq) VALUES (0, ?)", [n]);
              acked[0] = n;
            } else if (i === 1) {
              await c.transaction(async (tx) => {
                const a = 1 + n % ACCOUNTS;
                await tx.run("UPDATE acct SET bal = bal - 3 WHERE id = ?", [a]);
                await tx.run("UPDATE acct SET bal = bal + 3 WHERE id = ?", [1 + a % ACCOUNTS]);
                await tx.run("INSERT INTO ledger(src, dst, amt) VALUES (?, ?, 3)", [
                  a,
                  1 + a % ACCOUNTS,
                ]);
              });
              acked[1] = n;
            } else {
              // A long cursor, read slowly, then the total.
              let rows = 0;
              for await (const _ of c.iterate("SELECT id FROM pad")) {
                if (++rows % 2000 === 0) await delay(1);
              }
              assert.deepEqual(await c.values("SELECT sum(bal) FROM acct"), [[
                ACCOUNTS * OPENING,
              ]]);
              reads++;
            }
          }
        } finally {
          await c.close();
        }
      });
      const commands = [
        ["checkpoint"],
        ["checkpoint", "--truncate"],
        ["vacuum"],
        ["integrity"],
        ["vacuum", "--into", "v.db"],
        ["backup", "b.db"],
      ];
      const results: Run[] = [];
      try {
        for (const args of commands) results.push(await cli([...args, "--socket", path]));
      } finally {
        stop = true;
        await Promise.all(loops);
      }
      for (const [i, r] of results.entries()) {
        assert.equal(r.code, 0, `${commands[i].join(" ")}: ${r.stdout}${r.stderr}`);
      }
      assert.match(results[3].stdout, /^integrity: ok /);
      assert.ok(acked[0] > 0 && acked[1] > 0 && reads > 0, `${acked} ${reads}`);
      assert.deepEqual(await setup.values("SELECT count(*), max(seq) FROM log"), [[
        acked[0],
        acked[0],
      ]]);
      assert.deepEqual(await setup.values("SELECT count(*) FROM ledger"), [[acked[1]]]);
      assert.deepEqual(await setup.values(DRIFTED, [OPENING]), [[0]]);
      for (const copy of ["v.db", "b.db"]) {
        const file = `${copies}/${copy}`;
        assert.deepEqual(rowsOf(file, "PRAGMA integrity_check"), [["ok"]]);
        assert.deepEqual(rowsOf(file, DRIFTED.replace("?", String(OPENING))), [[0]]);
        const [[count, max]] = rowsOf(file, "SELECT count(*), coalesce(max(seq), 0) FROM log");
        assert.equal(count, max, `${copy}: no write missing before the last one`);
      }
    } finally {
      await server.shutdown();
    }
  });
}

for (const engine of ENGINES) {
  Deno.test({
    name:
      `${engine}: a vacuum that fills the device gives the WAL's space back: the device as free as before, checkpoint --truncate works`,
    ignore: !canMount,
    async fn() {
      await using disk = await mountedDisk("8m");
      const database = `${disk.disk}/test.db`;
      const path = `${disk.path}/s.sock`;
      const server = await serve({ database, path, engine });
      try {
        await using db = await connect({ path, max: 1 });
        await db.exec(
          "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);" +
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 2500) " +
            "INSERT INTO t(b) SELECT randomblob(1000) FROM c; DELETE FROM t WHERE id % 3 = 0",
        );
        assert.equal((await cli(["checkpoint", "--truncate", "--socket", path])).code, 0);
        // 600 KiB left: too little for VACUUM, which writes the database again into the WAL.
        await fill(disk.disk);
        const filler = `${disk.disk}/filler`;
        await Deno.truncate(filler, Deno.statSync(filler).size - 600 * 1024);
        const wal = () => Deno.statSync(`${database}-wal`).size;
        const walBefore = wal();
        const r = await cli(["vacuum", "--socket", path]);
        assert.equal(r.code, 1, r.stdout);
        assert.match(r.stderr, /SQLITE_FULL: .*database or disk is full/);
        assert.match(r.stderr, /needs free space/);
        // The vacuum's pages, never committed, no longer hold the device.
        assert.ok(wal() <= walBefore, `WAL ${walBefore} -> ${wal()} bytes`);
        for (let i = 0; i < 20; i++) await db.run("INSERT INTO t(b) VALUES (randomblob(100))");
        const c = await cli(["checkpoint", "--truncate", "--socket", path]);
        assert.equal(c.code, 0, c.stderr);
        assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[1667 + 20]]);
        assert.deepEqual(await db.values("PRAGMA integrity_check"), [["ok"]]);
      } finally {
        await server.shutdown();
      }
    },
  });

  Deno.test({
    name:
      `${engine}: a backup to a device with room for the copy but not for a -shm file succeeds (it failed with a disk I/O error); with less room it fails with SQLITE_FULL and leaves nothing`,
    ignore: !canMount,
    async fn() {
      await using disk = await mountedDisk("4m");
      // The database beside the tmpfs, its copies on it.
      const database = `${disk.path}/test.db`;
      const path = `${disk.path}/s.sock`;
      await using _server = await serve({ database, path, engine, backupDir: disk.disk });
      await using db = await connect({ path, max: 1 });
      await db.exec(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);" +
          "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 2000) " +
          "INSERT INTO t(b) SELECT randomblob(1000) FROM c",
      );
      assert.equal((await cli(["checkpoint", "--truncate", "--socket", path])).code, 0);
      const size = Deno.statSync(database).size;
      await fill(disk.disk);
      const filler = `${disk.disk}/filler`;
      const full = Deno.statSync(filler).size;
      const left = () =>
        [...Deno.readDirSync(disk.disk)].map((e) => e.name).filter((n) => n !== "filler").sort();
      // (Truncating frees blocks; growing the filler again would not take them back.)
      // No room for the whole copy: the device is full, the error says so, nothing stays.
      await Deno.truncate(filler, full - Math.floor(size / 2));
      for (const args of [["backup", "tight.db"], ["vacuum", "--into", "tight.db"]]) {
        const r = await cli([...args, "--socket", path]);
        assert.equal(r.code, 1, r.stdout);
        assert.match(
          r.stderr,
          /SQLITE_FULL: Cannot (back up to|vacuum into) .*database or disk is full/,
        );
        assert.deepEqual(left(), []);
      }
      // Room for the copy and 16 KiB: a -shm file (32 KiB) does not fit, nor is one needed.
      await Deno.truncate(filler, full - size - 16 * 1024);
      const ok = await cli(["backup", "fits.db", "--socket", path]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.deepEqual(left(), ["fits.db"]);
      const copy = `${disk.disk}/fits.db`;
      assert.deepEqual(rowsOf(copy, "PRAGMA integrity_check"), [["ok"]]);
      assert.deepEqual(rowsOf(copy, "SELECT count(*) FROM t"), [[2000]]);
      assert.deepEqual(rowsOf(copy, "PRAGMA journal_mode"), [["delete"]]);
    },
  });
}
