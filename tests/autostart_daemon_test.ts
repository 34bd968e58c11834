/**
 * A server started by `connect({ autostart })` as a daemon: it outlives the
 * process that started it, so it must not keep that process's working
 * directory (which may be removed or unmounted; on Windows it cannot be
 * deleted while in use), yet every relative path it was given means what it
 * meant to its starter. Servers run as real processes (Linux: /proc).
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { alive, exists, rowsOf, stopPid, tempDir } from "./_helpers.ts";
import { cli } from "./_cli.ts";

const CHILD_TS = fileURLToPath(new URL("./_autostart_child.ts", import.meta.url));

/** `/proc/PID/stat`'s process group and session of `pid`. */
function groupAndSession(pid: number): { pgrp: number; session: number } {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { pgrp: Number(fields[2]), session: Number(fields[3]) };
}

Deno.test({
  name:
    "a server started by autostart leaves its starter's working directory once every relative path it was given (database, socket, --backup-dir) is resolved there",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    await using dir = await tempDir();
    const root = Deno.realPathSync(dir.path);
    // The starter runs in work/start; the database and the backups lie
    // elsewhere, the socket beside the starter's directory, all named
    // relative to it (from the database's directory, the same names would
    // point elsewhere).
    const start = `${root}/work/start`;
    const data = `${root}/data`;
    for (const d of [start, data, `${root}/work/sock`, `${root}/work/backups`]) {
      Deno.mkdirSync(d, { recursive: true });
    }
    const database = `${data}/app.db`;
    const socket = `${root}/work/sock/app.sock`;
    const starter = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        CHILD_TS,
        "../sock/app.sock",
        "../../data/app.db",
        "30000",
        "--backup-dir",
        "../backups",
      ],
      cwd: start,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(starter.code, 0, new TextDecoder().decode(starter.stderr));
    assert.equal(new TextDecoder().decode(starter.stdout).trim(), "ok");
    const pid = Number(JSON.parse(Deno.readTextFileSync(`${database}.lock`)).pid);
    try {
      assert.ok(alive(pid), "the started server runs");
      // Its own session and process group: the starter's terminal (Ctrl-C,
      // a hang-up) does not reach it.
      const me = groupAndSession(Deno.pid);
      const it = groupAndSession(pid);
      assert.equal(it.session, pid);
      assert.equal(it.pgrp, pid);
      assert.notEqual(it.session, me.session);
      // stdin and stdout are /dev/null.
      assert.equal(Deno.readLinkSync(`/proc/${pid}/fd/0`), "/dev/null");
      assert.equal(Deno.readLinkSync(`/proc/${pid}/fd/1`), "/dev/null");
      // It left the starter's directory, for the database's.
      const cwd = Deno.readLinkSync(`/proc/${pid}/cwd`);
      assert.notEqual(cwd, start, "the server kept its starter's working directory");
      assert.equal(cwd, data);
      // What it prints now goes to the pipe its starter closed: dropped, the server goes on
      // (SIGUSR2 makes a serving server print a line on stderr).
      Deno.kill(pid, "SIGUSR2");
      // The starter's directory can go; the server serves on.
      Deno.removeSync(start);
      // Past the listener's check that its socket file is still there
      // (SOCKET_CHECK_MS, 1 s), with its name relative to the starter.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const r = await cli([
        "shell",
        "--socket",
        socket,
        "--mode",
        "csv",
        "-c",
        "SELECT count(*) FROM hits",
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim().split("\n").at(-1), "1");
      // --backup-dir ../backups: the starter's, not one beside the database.
      const b = await cli(["backup", "--socket", socket, "snap.db"]);
      assert.equal(b.code, 0, b.stderr);
      assert.deepEqual(rowsOf(`${root}/work/backups/snap.db`, "SELECT count(*) FROM hits"), [[1]]);
      // Nothing was made where the relative names would point from the new directory.
      assert.deepEqual([...Deno.readDirSync(root)].map((e) => e.name).sort(), ["data", "work"]);
    } finally {
      await stopPid(pid, true);
    }
    // It served the database it was given, and removed its socket file (named
    // relative to the starter) at exit.
    assert.deepEqual(rowsOf(database, "SELECT count(*) FROM hits"), [[1]]);
    assert.equal(exists(socket), false, "the socket file was left behind");
  },
});
