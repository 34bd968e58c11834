/**
 * How `backup` and `vacuum --into` give a finished copy its name: never over
 * a file that appeared there meanwhile (another server's copy to the same
 * destination, or anyone's file), and durably (the directory synced after
 * the name is made). Real server processes, on both engines; the tests that
 * look at system calls (a delayed rename, the directory's fsync) use strace
 * and are skipped where it is not installed.
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { Op } from "../protocol/messages.ts";
import { openTestLink, rowsOf, startServerProcess, tempDir } from "./_helpers.ts";

const ENGINES = ["ffi", "node"] as const;

/** The system calls that can give a file its name (x86_64 numbers, for /proc/PID/task/TID/syscall). */
const NAMING_CALLS = ["rename", "renameat", "renameat2", "link", "linkat"];
const NAMING_NUMBERS = new Set([82, 86, 264, 265, 316]);

/**
 * strace is installed and may attach to a running process (a container
 * without ptrace rights, or Yama's ptrace_scope, refuses `-p`): tried on a
 * `sleep` of our own.
 */
const HAS_STRACE = await (async () => {
  let sleeper: Deno.ChildProcess;
  try {
    sleeper = new Deno.Command("sleep", { args: ["1"], stdout: "null", stderr: "null" }).spawn();
  } catch {
    return false;
  }
  try {
    // Attaches, then detaches as the sleep ends; fails at once without the right to attach.
    const { success } = await new Deno.Command("strace", {
      args: ["-qq", "-e", "trace=none", "-p", String(sleeper.pid)],
      stdout: "null",
      stderr: "null",
    }).output();
    return success;
  } catch {
    return false; // not installed
  } finally {
    try {
      sleeper.kill("SIGKILL");
    } catch {
      // ended already
    }
    await sleeper.status;
  }
})();
const STRACE_OK = HAS_STRACE && Deno.build.os === "linux" && Deno.build.arch === "x86_64";

/** A database of about 2 MB whose table `who` holds `name`. */
function writeDatabase(path: string, name: string): void {
  const db = new DatabaseSync(path);
  try {
    db.exec(
      "PRAGMA journal_mode = WAL; CREATE TABLE pad(b BLOB); CREATE TABLE who(x TEXT);" +
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 2000) " +
        "INSERT INTO pad SELECT randomblob(1000) FROM c;" +
        `INSERT INTO who VALUES ('${name}'); PRAGMA wal_checkpoint(TRUNCATE)`,
    );
  } finally {
    db.close();
  }
}

/** strace attached to every thread of `pid` (it waits until they all are traced). */
async function straceOn(
  pid: number,
  args: string[],
): Promise<{ stop(): Promise<string> } & AsyncDisposable> {
  const out = await Deno.makeTempFile({ prefix: "netsqlite-strace-" });
  const child = new Deno.Command("strace", {
    args: ["-f", "-qq", "-o", out, ...args, "-p", String(pid)],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const deadline = performance.now() + 20000;
  const traced = () =>
    [...Deno.readDirSync(`/proc/${pid}/task`)].every((t) => {
      try {
        return !/^TracerPid:\s+0$/m.test(
          Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/status`),
        );
      } catch {
        return true; // the thread ended
      }
    });
  while (!traced()) {
    if (performance.now() > deadline) {
      child.kill("SIGKILL");
      const err = new TextDecoder().decode((await child.output()).stderr);
      throw new Error(`strace did not attach: ${err}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  let stopped: Promise<string> | null = null;
  const stop = () =>
    stopped ??= (async () => {
      child.kill("SIGTERM"); // strace detaches on it, the server goes on
      await child.output();
      const text = await Deno.readTextFile(out);
      await Deno.remove(out).catch(() => {});
      return text;
    })();
  return { stop, [Symbol.asyncDispose]: async () => void await stop() };
}

/** True once a thread of `pid` is held at the entry of a system call that names a file. */
function naming(pid: number): boolean {
  for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      const call = Number(
        Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/syscall`).split(" ")[0],
      );
      if (NAMING_NUMBERS.has(call)) return true;
    } catch {
      // The thread ended.
    }
  }
  return false;
}

/** The `Error` a promise rejected with, or `null` when it resolved. */
function outcome(p: Promise<unknown>): Promise<(Error & { code?: string }) | null> {
  return p.then(() => null, (err: Error) => err);
}

for (const engine of ENGINES) {
  Deno.test({
    name:
      `${engine}: backup and vacuum --into never replace a file that appears at the destination as the copy is given its name: the copy fails, the file stays`,
    ignore: !STRACE_OK,
    fn: async () => {
      await using dir = await tempDir();
      const copies = `${dir.path}/copies`;
      Deno.mkdirSync(copies);
      writeDatabase(`${dir.path}/test.db`, "server");
      await using srv = await startServerProcess({
        dir: dir.path,
        args: ["--engine", engine, "--backup-dir", copies],
      });
      await using admin = await openTestLink(srv.connectOptions);
      // Every rename or link of the server waits 3 s at its entry: past the
      // check that the destination is free, before the name is made.
      const delayed = NAMING_CALLS.join(",");
      await using strace = await straceOn(srv.child.pid, [
        "-e",
        `trace=${delayed}`,
        "-e",
        `inject=${delayed}:delay_enter=3000000`,
      ]);
      for (
        const [op, name, args] of [[Op.Backup, "b.db", ["b.db"]], [Op.Vacuum, "v.db", [
          "v.db",
        ]]] as const
      ) {
        const copy = outcome(admin.request(op, [...args]));
        const deadline = performance.now() + 30000;
        while (!naming(srv.child.pid)) {
          if (performance.now() > deadline) {
            throw new Error(`The ${name} copy never got to its name`);
          }
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        Deno.writeTextFileSync(`${copies}/${name}`, "someone else's file");
        const err = await copy;
        assert.ok(
          err !== null,
          `the ${name} copy replaced a file that appeared at its destination`,
        );
        assert.equal(err.code, "BAD_REQUEST");
        assert.match(
          err.message,
          new RegExp(
            `^Cannot (back up to|vacuum into) ".*/copies/${name.replace(".", "\\.")}": the file ` +
              "appeared while the (backup|vacuum) ran \\(nothing is overwritten\\); choose a new name$",
          ),
        );
        assert.equal(Deno.readTextFileSync(`${copies}/${name}`), "someone else's file");
      }
      await strace.stop();
      // No partial copy is left behind.
      assert.deepEqual([...Deno.readDirSync(copies)].map((e) => e.name).sort(), ["b.db", "v.db"]);
    },
  });

  Deno.test({
    name:
      `${engine}: backup and vacuum --into sync the directory after giving the copy its name (fsync of the directory)`,
    ignore: !STRACE_OK,
    fn: async () => {
      await using dir = await tempDir();
      const copies = `${dir.path}/copies`;
      Deno.mkdirSync(copies);
      writeDatabase(`${dir.path}/test.db`, "server");
      await using srv = await startServerProcess({
        dir: dir.path,
        args: ["--engine", engine, "--backup-dir", copies],
      });
      await using admin = await openTestLink(srv.connectOptions);
      const real = Deno.realPathSync(copies);
      await using strace = await straceOn(srv.child.pid, [
        "-y",
        "-e",
        `trace=fsync,fdatasync,${NAMING_CALLS.join(",")}`,
      ]);
      await admin.request(Op.Backup, ["b.db"]);
      await admin.request(Op.Vacuum, ["v.db"]);
      const lines = (await strace.stop()).split("\n");
      for (const name of ["b.db", "v.db"]) {
        const named = lines.findIndex((l) =>
          new RegExp(`\\b(${NAMING_CALLS.join("|")})\\(.*"${real}/${name.replace(".", "\\.")}"`)
            .test(l)
        );
        assert.ok(named >= 0, `no rename or link to ${name} in:\n${lines.join("\n")}`);
        const synced = lines.slice(named + 1).some((l) =>
          l.includes(`fsync(`) && l.includes(`<${real}>`)
        );
        assert.ok(
          synced,
          `the directory was not synced after ${name} got its name:\n${lines.join("\n")}`,
        );
      }
      assert.deepEqual(rowsOf(`${copies}/b.db`, "SELECT x FROM who"), [["server"]]);
      assert.deepEqual(rowsOf(`${copies}/v.db`, "SELECT x FROM who"), [["server"]]);
    },
  });

  Deno.test(`${engine}: backups to one destination at once, by one server and by two sharing --backup-dir: one copy wins whole, the others fail saying why`, async () => {
    await using dir = await tempDir();
    const copies = `${dir.path}/copies`;
    Deno.mkdirSync(copies);
    writeDatabase(`${dir.path}/a.db`, "a");
    writeDatabase(`${dir.path}/b.db`, "b");
    const args = ["--engine", engine, "--backup-dir", copies];
    await using a = await startServerProcess({ dir: dir.path, database: `${dir.path}/a.db`, args });
    await using bDir = await tempDir();
    await using b = await startServerProcess({
      dir: bDir.path,
      database: `${dir.path}/b.db`,
      args,
    });
    await using la = await openTestLink(a.connectOptions);
    await using la2 = await openTestLink(a.connectOptions);
    await using lb = await openTestLink(b.connectOptions);
    const NAMES = 8;
    for (let i = 0; i < NAMES; i++) {
      const name = `n${i}.db`;
      const [fromA, againA, fromB] = await Promise.all([
        outcome(la.request(Op.Backup, [name])),
        outcome(la2.request(i % 2 === 0 ? Op.Backup : Op.Vacuum, [name])),
        outcome(lb.request(i % 2 === 0 ? Op.Backup : Op.Vacuum, [name])),
      ]);
      const won = [fromA, againA, fromB].filter((e) => e === null).length;
      assert.equal(won, 1, `${name}: ${won} copies reported success (${[fromA, againA, fromB]})`);
      for (const err of [fromA, againA, fromB]) {
        if (err === null) continue;
        assert.equal(err.code, "BAD_REQUEST", String(err));
        assert.match(
          err.message,
          /: (a backup or vacuum into it is in progress|the file exists; choose a new name \(nothing is overwritten\)|the file appeared while the (backup|vacuum) ran \(nothing is overwritten\); choose a new name|the finished copy was removed before it got its name \(by another (backup|vacuum) to the same destination\?\); try again)$/,
        );
      }
      const winner = fromB === null ? "b" : "a";
      assert.deepEqual(rowsOf(`${copies}/${name}`, "SELECT x FROM who"), [[winner]]);
      assert.deepEqual(
        rowsOf(`${copies}/${name}`, "PRAGMA integrity_check"),
        [["ok"]],
      );
    }
    const left = [...Deno.readDirSync(copies)].map((e) => e.name).sort();
    assert.deepEqual(left, Array.from({ length: NAMES }, (_, i) => `n${i}.db`).sort());
  });
}

/** x86_64 numbers of the calls the test below holds or waits for. */
const FLOCK = 73;
const PREAD64 = 17;
const UNLINK_NUMBERS = new Set([87, 263]);

/** The threads of `pid` held at the entry of one of the system calls `numbers`: their arguments. */
function atCall(pid: number, numbers: Set<number>): string[][] {
  const held: string[][] = [];
  for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      const fields = Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/syscall`).trim().split(" ");
      if (numbers.has(Number(fields[0]))) held.push(fields.slice(1));
    } catch {
      // The thread ended.
    }
  }
  return held;
}

/** The partial copy a thread of `pid` is reading (`pread64`) at the entry of the call, if any. */
function readingPartial(pid: number): string | null {
  for (const [fd] of atCall(pid, new Set([PREAD64]))) {
    try {
      const path = Deno.readLinkSync(`/proc/${pid}/fd/${parseInt(fd, 16)}`);
      if (path.endsWith(".partial")) return path;
    } catch {
      // Closed meanwhile.
    }
  }
  return null;
}

async function until(what: string, ready: () => boolean, ms = 20000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!ready()) {
    if (performance.now() > deadline) throw new Error(`Timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

for (const engine of ENGINES) {
  Deno.test({
    name:
      `${engine}: a server's sweep of leftovers never removes another server's copy in progress, even one it looked at just before the copy was marked: one copy wins, the other fails with BAD_REQUEST (not a disk I/O error)`,
    ignore: !STRACE_OK,
    fn: async () => {
      await using dir = await tempDir();
      const copies = `${dir.path}/copies`;
      Deno.mkdirSync(copies);
      writeDatabase(`${dir.path}/a.db`, "a");
      writeDatabase(`${dir.path}/b.db`, "b");
      const args = ["--engine", engine, "--backup-dir", copies];
      await using a = await startServerProcess({
        dir: dir.path,
        database: `${dir.path}/a.db`,
        args,
      });
      await using bDir = await tempDir();
      await using b = await startServerProcess({
        dir: bDir.path,
        database: `${dir.path}/b.db`,
        args,
      });
      await using la = await openTestLink(a.connectOptions);
      await using lb = await openTestLink(b.connectOptions);
      // A: the flock that marks its partial copy waits 3 s at its entry (B looks at the copy
      // meanwhile), and every read 1 s (the copy's header, read as SQLite opens it, among them).
      await using straceA = await straceOn(a.child.pid, [
        "-e",
        "trace=flock,pread64",
        "-e",
        "inject=flock:delay_enter=3000000",
        "-e",
        "inject=pread64:delay_enter=1000000",
      ]);
      // B: every unlink waits at its entry until its strace detaches.
      await using straceB = await straceOn(b.child.pid, [
        "-e",
        "trace=unlink,unlinkat",
        "-e",
        "inject=unlink,unlinkat:delay_enter=60000000",
      ]);
      const fromA = outcome(la.request(Op.Backup, ["n.db"]));
      await until(
        "A marks its partial copy",
        () => atCall(a.child.pid, new Set([FLOCK])).length > 0,
      );
      const fromB = outcome(lb.request(Op.Backup, ["n.db"]));
      // B found A's partial copy not marked yet, took it for a leftover, and removes it now.
      await until("B removes a file", () => atCall(b.child.pid, UNLINK_NUMBERS).length > 0);
      assert.ok(
        atCall(a.child.pid, new Set([FLOCK])).length > 0,
        "B was too slow: A marked its copy before B looked at it (the test proves nothing)",
      );
      // A marks its copy (or, seeing it taken, makes another) and SQLite opens it: B's removal
      // lands then, before SQLite opens the copy's journal beside it.
      await until("SQLite opens A's copy", () => readingPartial(a.child.pid) !== null);
      await straceB.stop();
      await straceA.stop();
      const [errA, errB] = [await fromA, await fromB];
      const won = [errA, errB].filter((e) => e === null).length;
      assert.equal(won, 1, `${won} copies reported success (A: ${errA}, B: ${errB})`);
      const err = errA ?? errB!;
      assert.equal(err.code, "BAD_REQUEST", String(err));
      assert.match(
        err.message,
        /: the file appeared while the backup ran \(nothing is overwritten\); choose a new name$/,
      );
      const winner = errA === null ? "a" : "b";
      assert.deepEqual(rowsOf(`${copies}/n.db`, "SELECT x FROM who"), [[winner]]);
      assert.deepEqual(rowsOf(`${copies}/n.db`, "PRAGMA integrity_check"), [["ok"]]);
      assert.deepEqual([...Deno.readDirSync(copies)].map((e) => e.name), ["n.db"]);
    },
  });
}
