/**
 * Audit of the administration commands under load (round 2): what `netsqlite backup` shows while
 * another backup runs at the same time.
 */

import assert from "node:assert/strict";
import { Op } from "../protocol/messages.ts";
import { openAdminLink, runAdmin } from "../cli/admin.ts";
import { resolveConnectOptions } from "../client/options.ts";
import { delay, startServer, tempDir } from "./_helpers.ts";
import { capturedIO, cli } from "./_cli.ts";

const INSERT_1000 =
  "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) " +
  "INSERT INTO t SELECT randomblob(4000) FROM n";

Deno.test("ffi: runAdmin() backup's progress bar shows its own backup, not another one running at once whose name ends the same", async () => {
  await using dir = await tempDir();
  await Deno.mkdir(`${dir.path}/copies`);
  await using srv = await startServer({ engine: "ffi", backupDir: `${dir.path}/copies` });
  const db = await srv.client();
  const other = await openAdminLink(await resolveConnectOptions(srv.connectOptions));
  try {
    // ~96 MiB: the other backup takes a few hundred ms at least.
    await db.exec("CREATE TABLE t(x)");
    for (let i = 0; i < 24; i++) await db.run(INSERT_1000);
    const first = other.request(Op.Backup, ["ba.db"]);
    let firstDone: number | null = null;
    first.then(() => firstDone = performance.now(), () => {});
    let drewWhileFirstRan = false;
    const { io, out, errors, drawn } = capturedIO((text) => {
      if (text !== "" && firstDone === null) drewWhileFirstRan = true;
    });
    // Once "ba.db" has its snapshot, the database grows: "a.db" copies more pages.
    await delay(20);
    await db.run(INSERT_1000);
    const sock = ["--socket", (srv.connectOptions as { path: string }).path];
    const mine = runAdmin("backup", ["a.db", ...sock], io);
    const theirs = await first;
    assert.equal(await mine, 0, errors.join("\n"));
    const pages = Number(/^backup: (\d+) pages, .* to \S+\/copies\/a\.db in /.exec(out[0])?.[1]);
    assert.ok(pages > theirs.pages, `${pages} pages, against ${theirs.pages} in ba.db`);
    assert.ok(drewWhileFirstRan, `the bar was drawn while ba.db ran: ${JSON.stringify(drawn)}`);
    for (const bar of drawn.filter((text) => text !== "")) {
      assert.match(bar, new RegExp(`^\\[[#-]+\\] \\d+/${pages} pages `), JSON.stringify(drawn));
    }
  } finally {
    other.fail(new Error("done"));
    await other.ended;
    await db.close();
  }
});

Deno.test("netsqlite stats --count refuses a number of reports that is not whole (exit status 2)", async () => {
  for (const count of ["1.5", "0.5", "2e-1"]) {
    const r = await cli([
      "stats",
      "--watch",
      "1",
      "--count",
      count,
      "--socket",
      "/nonexistent.sock",
    ]);
    assert.equal(r.code, 2, `--count ${count}: ${r.stderr}`);
    assert.equal(r.stdout, "");
    assert.match(
      r.stderr,
      new RegExp(`^netsqlite stats: Invalid --count "${count}": expected a whole number\\n`),
    );
  }
});
