/**
 * Parameters a call leaves out, the value count, and what prepare() waits
 * for, through real in-process servers on both engines: an object never
 * leaves a parameter NULL silently, a wrong value count is INVALID_PARAM,
 * and preparing a write does not wait for the writer.
 */

import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { refused, startServer } from "./_helpers.ts";

const ENGINES = ["ffi", "node"] as const;

for (const engine of ENGINES) {
  Deno.test(`an object for a statement with an anonymous ? is refused, not bound NULL (${engine})`, async () => {
    await using srv = await startServer({ engine });
    await using db = await srv.client();
    await db.exec("CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT)");
    await db.run("INSERT INTO users VALUES (1, 'ada')");
    const anonymous =
      /^Cannot bind a parameters object: the statement has positional parameters "\?": pass an array$/;
    await refused(
      db.run("UPDATE users SET name = :name WHERE id = ?", { name: "bob" }),
      "INVALID_PARAM",
      anonymous,
    );
    await refused(db.get("SELECT ? AS a, :b AS b", { b: 2 }), "INVALID_PARAM", anonymous);
    await refused(db.get("SELECT ?", {}), "INVALID_PARAM", anonymous);
    const stmt = await db.prepare("UPDATE users SET name = :name WHERE id = ?");
    await refused(stmt.run({ name: "bob" }), "INVALID_PARAM", anonymous);
    assert.deepEqual(await db.get("SELECT name FROM users"), { name: "ada" });
    // An array binds it.
    assert.equal(
      (await db.run("UPDATE users SET name = :name WHERE id = ?", ["bob", 1])).changes,
      1,
    );
    assert.deepEqual(await db.get("SELECT ? AS a, :b AS b", [1, 2]), { a: 1, b: 2 });
  });

  Deno.test(`too many or too few positional values are INVALID_PARAM, naming both counts (${engine})`, async () => {
    await using srv = await startServer({ engine });
    await using db = await srv.client();
    await refused(
      db.get("SELECT ?, ?", [1, 2, 3]),
      "INVALID_PARAM",
      /^Too many parameter values: the statement has 2 parameters, 3 were given$/,
    );
    await refused(
      db.get("SELECT ?, ?", [1]),
      "INVALID_PARAM",
      /^Missing parameter values: the statement has 2 parameters, 1 was given$/,
    );
    await refused(
      db.run("SELECT 1", [1]),
      "INVALID_PARAM",
      /^Too many parameter values: the statement has no parameters, 1 was given$/,
    );
    const stmt = await db.prepare("SELECT ?1 AS a, ?3 AS b");
    await refused(
      stmt.get([1, 2, 3, 4]),
      "INVALID_PARAM",
      /^Too many parameter values: the statement has 3 parameters, 4 were given$/,
    );
    assert.deepEqual(await stmt.get([1, 2, 3]), { a: 1, b: 3 });
    await stmt.finalize();
  });

  Deno.test(`a ?NNN an object leaves out is refused; an index no parameter takes stays NULL (${engine})`, async () => {
    await using srv = await startServer({ engine });
    await using db = await srv.client();
    await refused(
      db.get("SELECT ?1 AS a, ?2 AS b", { "?1": 5 }),
      "INVALID_PARAM",
      /^Missing value for parameter "\?2": the parameters object has no "\?2"$/,
    );
    assert.deepEqual(await db.get("SELECT ?1 AS a, ?2 AS b", { "?1": 5, "?2": 6 }), { a: 5, b: 6 });
    // `?1, ?3`: index 2 has no parameter; nothing to bind, nothing to name.
    assert.deepEqual(await db.get("SELECT ?1 AS a, ?3 AS b", { "?1": 5, "?3": 6 }), { a: 5, b: 6 });
    await refused(
      db.get("SELECT ?1 AS a, ?3 AS b", { "?1": 5, "?2": 0, "?3": 6 }),
      "INVALID_PARAM",
      /"\?2": the statement has no parameter of that name/,
    );
    assert.deepEqual(await db.get("SELECT ?1 AS a, ?3 AS b", [5, 0, 6]), { a: 5, b: 6 });
    assert.deepEqual(await db.get("SELECT :x AS a, ?2 AS b", { x: 1, "?2": 2 }), { a: 1, b: 2 });
    await refused(db.get("SELECT :x AS a, ?2 AS b", { x: 1 }), "INVALID_PARAM", /"\?2"/);
  });

  Deno.test(`#a, :a$b, :a::b and @a(x) are the parameters SQLite sees, never bound NULL silently (${engine})`, async () => {
    await using srv = await startServer({ engine });
    await using db = await srv.client();
    await db.exec("CREATE TABLE fd (x, y, z)");
    // `:a$b` is one parameter: `{ a, b }` leaves it out.
    await refused(
      db.run("INSERT INTO fd VALUES (:a$b, :a, $b)", { a: 2, b: 3 }),
      "INVALID_PARAM",
      /^Missing value for parameter ":a\$b": the parameters object has no "a\$b" \(or ":a\$b"\)$/,
    );
    await db.run("INSERT INTO fd VALUES (:a$b, :a, $b)", { "a$b": 1, a: 2, b: 3 });
    await db.run("INSERT INTO fd VALUES (:a$b, :a, $b)", [4, 5, 6]);
    assert.deepEqual(await db.query("SELECT x, y, z FROM fd"), [{ x: 1, y: 2, z: 3 }, {
      x: 4,
      y: 5,
      z: 6,
    }]);
    await refused(db.get("SELECT #a AS v"), "INVALID_PARAM", /has 1 parameter, 0 were given/);
    await refused(db.get("SELECT #a AS v, :x AS w", { x: 1 }), "INVALID_PARAM", /"#a"/);
    assert.deepEqual(await db.get("SELECT #a AS v", { a: 9 }), { v: 9 });
    assert.deepEqual(await db.get("SELECT #a AS v", [9]), { v: 9 });
    await refused(
      db.get("SELECT :a::b AS v, :a AS w, :b AS z", { a: 1, b: 2 }),
      "INVALID_PARAM",
      /^Missing value for parameter ":a::b"/,
    );
    assert.deepEqual(
      await db.get("SELECT :a::b AS v, :a AS w, :b AS z", { "a::b": 0, a: 1, b: 2 }),
      { v: 0, w: 1, z: 2 },
    );
    assert.deepEqual(await db.get("SELECT @a(x) AS v", { "a(x)": 9 }), { v: 9 });
    assert.deepEqual(await db.get("SELECT @a(x) AS v", [9]), { v: 9 });
  });

  Deno.test(`prepare() of a write does not wait for the writer; its run waits once (${engine})`, async () => {
    // The write waits this once; twice (the bug) would be 5 s: a bound between
    // them leaves room for a loaded machine's stalls.
    const busyTimeout = 2500;
    await using srv = await startServer({ engine, busyTimeout });
    await using holder = await srv.client();
    await using db = await connect({ ...srv.connectOptions, max: 2 });
    await db.exec("CREATE TABLE cats(name TEXT)");
    const insert = await db.prepare("INSERT INTO cats VALUES (?)"); // on connection 1
    const tx = await holder.reserve();
    await tx.exec("BEGIN IMMEDIATE"); // another client holds the writer
    try {
      let start = performance.now();
      const late = await db.prepare("INSERT INTO cats VALUES (:name)");
      // (Waiting for the writer, it would have failed with BUSY_TIMEOUT.)
      assert.ok(
        performance.now() - start < busyTimeout / 2,
        `prepare took ${performance.now() - start} ms`,
      );
      assert.deepEqual(late.columns, []);
      // Preparing checks the statement still, against the committed schema.
      await refused(db.prepare("INSERT INTO nosuch VALUES (1)"), "SQLITE_ERROR", /no such table/);
      // Connection 1 is taken: the run goes to connection 2, which prepares it
      // (sent with the call); the write waits busyTimeout once, not twice.
      const mine = await db.reserve();
      try {
        start = performance.now();
        await refused(insert.run(["a"]), "BUSY_TIMEOUT", /waited/);
        const waited = performance.now() - start;
        assert.ok(
          waited >= busyTimeout - 100 && waited < 1.6 * busyTimeout,
          `waited ${waited} ms`,
        );
      } finally {
        mine.release();
      }
      // Once the writer is free, the run goes through.
      const run = late.run({ name: "b" });
      await tx.exec("ROLLBACK");
      assert.equal((await run).changes, 1);
    } finally {
      tx.release();
    }
    assert.deepEqual(await db.query("SELECT name FROM cats"), [{ name: "b" }]);
  });

  Deno.test(`prepare() sees its own transaction's tables and never another one's (${engine})`, async () => {
    await using srv = await startServer({ engine, busyTimeout: 5000 });
    await using other = await srv.client();
    await using db = await srv.client();
    const theirs = await other.reserve();
    await theirs.exec("BEGIN");
    await theirs.exec("CREATE TABLE hidden(x)");
    try {
      // Their uncommitted table is no business of this session: refused at
      // once (it used to wait for their transaction to end).
      const start = performance.now();
      await refused(db.prepare("INSERT INTO hidden VALUES (1)"), "SQLITE_ERROR", /no such table/);
      assert.ok(performance.now() - start < 2500, `prepare took ${performance.now() - start} ms`);
    } finally {
      await theirs.exec("ROLLBACK");
      theirs.release();
    }
    await db.transaction(async (tx) => {
      await tx.exec("CREATE TABLE mine(x)");
      const insert = await tx.prepare("INSERT INTO mine VALUES (?)");
      assert.equal((await insert.run([1])).changes, 1);
      const read = await tx.prepare("SELECT x FROM mine");
      assert.deepEqual(await read.all(), [{ x: 1 }]);
      await refused(insert.run({ x: 1 }), "INVALID_PARAM", /pass an array$/);
    });
    assert.deepEqual(await db.query("SELECT x FROM mine"), [{ x: 1 }]);
    // TEMP objects live on the writer: a statement on one prepares there.
    await db.exec("CREATE TEMP TABLE scratch(y)");
    const temp = await db.prepare("INSERT INTO scratch VALUES (?) RETURNING y");
    assert.deepEqual(temp.columns, ["y"]);
    assert.deepEqual(await temp.all([2]), [{ y: 2 }]);
    await db.exec("DROP TABLE scratch");
  });
}
