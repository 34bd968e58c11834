/**
 * The `tables` filter of change feeds: a name qualified by `main.` is the
 * table it names, one qualified by another schema (TEMP, an attached
 * database: the update hook reports neither) is refused with
 * `INVALID_PARAM` rather than giving a feed that stays empty, a name
 * matching no table yet is accepted, and names fold ASCII case only, as
 * SQLite's do. The feed needs the FFI engine; the refusal is checked
 * before that, so it is tested on both engines.
 */

import assert from "node:assert/strict";
import type { ChangeEvent } from "../client.ts";
import type { SqliteError } from "../protocol/errors.ts";
import { startServer, takeEvents } from "./_helpers.ts";

const ffi = Deno.env.get("NETSQLITE_ENGINE") !== "node";

Deno.test({
  name: "subscribe() tables: main.-qualified names match their table, in any case",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await db.exec(
      'CREATE TABLE items (id INTEGER PRIMARY KEY); CREATE TABLE "Mixed" (id INTEGER PRIMARY KEY); ' +
        'CREATE TABLE "a.b" (id INTEGER PRIMARY KEY); CREATE TABLE other (id INTEGER PRIMARY KEY); ' +
        "CREATE TABLE marker (id INTEGER PRIMARY KEY)",
    );
    await using feed = await db.subscribe({
      // "later" matches no table yet: accepted, it is created below.
      tables: ["main.items", "MAIN.mixed", "main.a.b", "later", "marker"],
    });
    await db.run("INSERT INTO other DEFAULT VALUES");
    await db.run("INSERT INTO items DEFAULT VALUES");
    await db.run("INSERT INTO main.mixed DEFAULT VALUES");
    await db.run('INSERT INTO "a.b" DEFAULT VALUES');
    await db.exec("CREATE TABLE later (id INTEGER PRIMARY KEY); INSERT INTO later DEFAULT VALUES");
    await db.run("INSERT INTO marker DEFAULT VALUES");
    const events = await takeEvents(feed, 5);
    assert.deepEqual(
      events.map((e) => e.type === "table" ? `${e.op} ${e.table} ${e.rowid}` : e.type),
      ["insert items 1", "insert Mixed 1", "insert a.b 1", "insert later 1", "insert marker 1"],
    );
  },
});

Deno.test({
  name: "subscribe() tables: a table of another schema than main is refused with INVALID_PARAM",
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    for (const name of ["temp.t", "TEMP.t", "aux.t", "a.b", '"main".t']) {
      await assert.rejects(
        db.subscribe({ tables: ["t", name] }),
        (e: SqliteError) =>
          e.code === "INVALID_PARAM" &&
          e.message.includes(JSON.stringify(name)) &&
          /change feeds report the tables of the main database only/.test(e.message),
        name,
      );
    }
    // The client carries on.
    assert.deepEqual(await db.values("SELECT 1"), [[1]]);
  },
});

Deno.test({
  name: "subscribe() tables: names fold ASCII letters only, as SQLite's: Ä and ä are two tables",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    // SQLite folds only ASCII case in names: these are four tables.
    await db.exec(
      'CREATE TABLE "Äpfel" (id INTEGER PRIMARY KEY); CREATE TABLE "äpfel" (id INTEGER PRIMARY KEY); ' +
        'CREATE TABLE "k" (id INTEGER PRIMARY KEY); CREATE TABLE "\u212A" (id INTEGER PRIMARY KEY)',
    );
    await using upper = await db.subscribe({ tables: ["ÄPFEL", "\u212A"] });
    await using lower = await db.subscribe({ tables: ["main.äpfel", "K"] });
    await db.run('INSERT INTO "Äpfel" DEFAULT VALUES');
    await db.run('INSERT INTO "äpfel" DEFAULT VALUES');
    await db.run('INSERT INTO "k" DEFAULT VALUES');
    await db.run('INSERT INTO "\u212A" DEFAULT VALUES');
    const show = (events: ChangeEvent[]) =>
      events.map((e) => e.type === "table" ? `${e.table} ${e.commitSeq}` : e.type);
    const [a, b] = [await takeEvents(upper, 2), await takeEvents(lower, 2)];
    const first = a[0].type === "table" ? a[0].commitSeq : 0;
    assert.deepEqual(show(a), [`Äpfel ${first}`, `\u212A ${first + 3}`]);
    assert.deepEqual(show(b), [`äpfel ${first + 1}`, `k ${first + 2}`]);
  },
});
