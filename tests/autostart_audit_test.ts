/**
 * `connect({ autostart })` as a desktop application or a CLI meets it: the
 * process that starts the server was itself started by another program (an
 * Electron main process, a shell script capturing its output, a build tool)
 * that may have handed it more open files than stdin, stdout and stderr.
 * Servers run as real processes.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { stopPid, tempDir, within } from "./_helpers.ts";

const CHILD_TS = fileURLToPath(new URL("./_autostart_child.ts", import.meta.url));

Deno.test({
  name:
    "a server started by autostart keeps no file its starter inherited: a parent reading the starter's extra pipe sees it end when the starter exits",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    await using dir = await tempDir();
    const database = `${dir.path}/app.db`;
    const socket = `${dir.path}/app.sock`;
    const marker = `${dir.path}/marker`;
    // The starter gets fd 3 on its stdout's pipe (as a Node parent's extra
    // stdio pipe would be) and fd 9 on a file, neither
    // close-on-exec: what a program hands its child on purpose.
    const starter = new Deno.Command("sh", {
      args: [
        "-c",
        'exec "$0" run -A "$1" "$2" "$3" 3>&1 9>>"$4"',
        Deno.execPath(),
        CHILD_TS,
        socket,
        database,
        marker,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    let serverPid = 0;
    try {
      // The parent reads the pipe to its end, as Node's "close" event (and
      // any output capture) does: the starter exiting ends it, unless the
      // server it started holds a copy.
      const done = await within(starter, 20000);
      serverPid = Number(JSON.parse(Deno.readTextFileSync(`${database}.lock`)).pid);
      assert.notEqual(done, "timeout", "the starter's stdout pipe stayed open after it exited");
      if (done === "timeout") return;
      assert.equal(done.code, 0, new TextDecoder().decode(done.stderr));
      assert.equal(new TextDecoder().decode(done.stdout).trim(), "ok");
      const held = [...Deno.readDirSync(`/proc/${serverPid}/fd`)]
        .map((e) => {
          try {
            return Deno.readLinkSync(`/proc/${serverPid}/fd/${e.name}`);
          } catch {
            return "";
          }
        })
        .filter((target) => target === marker);
      assert.deepEqual(held, [], "the server holds the file its starter inherited");
    } finally {
      if (serverPid !== 0) await stopPid(serverPid, true);
      await starter.catch(() => {});
    }
  },
});
