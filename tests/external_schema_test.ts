/**
 * Another program (a process of its own, node:sqlite on the file) changes
 * the schema behind the server: rows read afterwards on any path (a
 * transaction's reads on the writer, `INSERT ... RETURNING *` by SQL text
 * and prepared, a prepared `SELECT *`, a batch, cursors) come back under
 * the columns SQLite returned for them, on both engines.
 */

import assert from "node:assert/strict";
import type { Client } from "../client.ts";
import { DatabaseSync } from "node:sqlite";
import { startServer, type TestServer } from "./_helpers.ts";

const ENGINES = ["ffi", "node"] as const;

/**
 * Runs SQL scripts in another process (node:sqlite, its own connection to
 * the file), one line of SQL at a time; answers `ok` or the error.
 */
const OTHER_PROGRAM = `
import { DatabaseSync } from "node:sqlite";
const db = new DatabaseSync(Deno.args[0]);
db.exec("PRAGMA busy_timeout = 5000");
const out = (s) => Deno.stdout.writeSync(new TextEncoder().encode(s + "\\n"));
let text = "";
const decoder = new TextDecoder();
for await (const chunk of Deno.stdin.readable) {
  text += decoder.decode(chunk, { stream: true });
  let at;
  while ((at = text.indexOf("\\n")) !== -1) {
    const sql = text.slice(0, at);
    text = text.slice(at + 1);
    try {
      db.exec(sql);
      out("ok");
    } catch (err) {
      out("error " + err.message);
    }
  }
}
db.close();
`;

/** A separate process writing the database file directly. */
class OtherProgram implements AsyncDisposable {
  readonly #child: Deno.ChildProcess;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly #lines: AsyncIterator<string>;

  constructor(database: string) {
    this.#child = new Deno.Command(Deno.execPath(), {
      args: ["eval", "--ext=js", OTHER_PROGRAM, database],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#stdin = this.#child.stdin.getWriter();
    this.#lines = lines(this.#child.stdout);
  }

  /** Runs `sql` (one line) there and waits until it committed. */
  async exec(sql: string): Promise<void> {
    await this.#stdin.write(new TextEncoder().encode(`${sql}\n`));
    const r = await this.#lines.next();
    assert.equal(r.value, "ok", `other program: ${sql}`);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#stdin.close();
    while (!(await this.#lines.next()).done);
    await this.#child.status;
  }
}

async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let text = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    text += chunk;
    let at;
    while ((at = text.indexOf("\n")) !== -1) {
      yield text.slice(0, at);
      text = text.slice(at + 1);
    }
  }
}

/** A server on `engine`, one client and the other program, all closed by `await using`. */
async function open(
  engine: (typeof ENGINES)[number],
): Promise<{ db: Client; srv: TestServer; other: OtherProgram } & AsyncDisposable> {
  const srv = await startServer({ engine, logLevel: "error" });
  const db = await srv.client();
  await db.exec("CREATE TABLE t (a INTEGER, b TEXT, c TEXT); INSERT INTO t VALUES (1, 'B1', 'C1')");
  const other = new OtherProgram(srv.database);
  return {
    db,
    srv,
    other,
    async [Symbol.asyncDispose]() {
      await other[Symbol.asyncDispose]();
      await db.close();
      await srv[Symbol.asyncDispose]();
    },
  };
}

const DROP_B = "ALTER TABLE t DROP COLUMN b";
const ADD_D = "ALTER TABLE t ADD COLUMN d TEXT DEFAULT 'D1'";

for (const engine of ENGINES) {
  Deno.test(`${engine}: a transaction's SELECT * after another program changed the schema`, async () => {
    await using t = await open(engine);
    const read = () => t.db.transaction((tx) => tx.query("SELECT * FROM t"));
    assert.deepEqual(await read(), [{ a: 1, b: "B1", c: "C1" }]);
    await t.other.exec(DROP_B);
    assert.deepEqual(await read(), [{ a: 1, c: "C1" }]);
    await t.other.exec(ADD_D);
    assert.deepEqual(await read(), [{ a: 1, c: "C1", d: "D1" }]);
    await t.other.exec("ALTER TABLE t RENAME COLUMN c TO cc");
    assert.deepEqual(
      await t.db.transaction((tx) => tx.values("SELECT * FROM t")),
      [[1, "C1", "D1"]],
    );
    assert.deepEqual(await read(), [{ a: 1, cc: "C1", d: "D1" }]);
  });

  Deno.test(`${engine}: a schema change made while a transaction is open shows at its first read`, async () => {
    await using t = await open(engine);
    assert.deepEqual(await t.db.query("SELECT * FROM t"), [{ a: 1, b: "B1", c: "C1" }]);
    const rows = await t.db.transaction(async (tx) => {
      // BEGIN ran (deferred: no snapshot yet); the other program commits now.
      await t.other.exec(DROP_B);
      return await tx.query("SELECT * FROM t");
    });
    assert.deepEqual(rows, [{ a: 1, c: "C1" }]);
  });

  Deno.test(`${engine}: INSERT ... RETURNING * by SQL text after another program changed the schema`, async () => {
    await using t = await open(engine);
    const q = "INSERT INTO t (a, c) VALUES (?, ?) RETURNING *";
    assert.deepEqual(await t.db.query(q, [2, "C2"]), [{ a: 2, b: null, c: "C2" }]);
    await t.other.exec(DROP_B);
    assert.deepEqual(await t.db.query(q, [3, "C3"]), [{ a: 3, c: "C3" }]);
    assert.deepEqual(await t.db.values(q, [4, "C4"]), [[4, "C4"]]);
    await t.other.exec(ADD_D);
    assert.deepEqual(await t.db.query(q, [5, "C5"]), [{ a: 5, c: "C5", d: "D1" }]);
    assert.deepEqual(await t.db.values(q, [6, "C6"]), [[6, "C6", "D1"]]);
  });

  Deno.test(`${engine}: prepared INSERT ... RETURNING * and SELECT * after another program changed the schema`, async () => {
    await using t = await open(engine);
    const insert = await t.db.prepare("INSERT INTO t (a, c) VALUES (?, ?) RETURNING *");
    const select = await t.db.prepare("SELECT * FROM t ORDER BY a");
    assert.deepEqual(await insert.all([2, "C2"]), [{ a: 2, b: null, c: "C2" }]);
    assert.deepEqual(await select.all(), [{ a: 1, b: "B1", c: "C1" }, { a: 2, b: null, c: "C2" }]);
    await t.other.exec(DROP_B);
    assert.deepEqual(await insert.all([3, "C3"]), [{ a: 3, c: "C3" }]);
    assert.deepEqual(insert.columns, ["a", "c"]);
    await t.other.exec(ADD_D);
    assert.deepEqual(await insert.get([4, "C4"]), { a: 4, c: "C4", d: "D1" });
    assert.deepEqual(await select.all(), [
      { a: 1, c: "C1", d: "D1" },
      { a: 2, c: "C2", d: "D1" },
      { a: 3, c: "C3", d: "D1" },
      { a: 4, c: "C4", d: "D1" },
    ]);
    assert.deepEqual(select.columns, ["a", "c", "d"]);
    await insert.finalize();
    await select.finalize();
  });

  Deno.test(`${engine}: a batch after another program changed the schema`, async () => {
    await using t = await open(engine);
    const batch = () =>
      t.db.batch([
        { sql: "SELECT * FROM t" },
        { sql: "INSERT INTO t (a) VALUES (?) RETURNING *", params: [2] },
        { sql: "DELETE FROM t WHERE a = 2" },
      ]);
    assert.deepEqual((await batch()).map((r) => r.rows), [
      [{ a: 1, b: "B1", c: "C1" }],
      [{ a: 2, b: null, c: null }],
      [],
    ]);
    await t.other.exec(DROP_B);
    assert.deepEqual((await batch()).map((r) => r.rows), [
      [{ a: 1, c: "C1" }],
      [{ a: 2, c: null }],
      [],
    ]);
    await t.other.exec(ADD_D);
    assert.deepEqual((await batch()).map((r) => r.rows), [
      [{ a: 1, c: "C1", d: "D1" }],
      [{ a: 2, c: null, d: "D1" }],
      [],
    ]);
  });

  Deno.test(`${engine}: iterate() after another program changed the schema`, async () => {
    await using t = await open(engine);
    const all = async <T>(it: AsyncGenerator<T>): Promise<T[]> => {
      const rows: T[] = [];
      for await (const r of it) rows.push(r);
      return rows;
    };
    const select = await t.db.prepare("SELECT * FROM t");
    assert.deepEqual(await all(t.db.iterate("SELECT * FROM t")), [{ a: 1, b: "B1", c: "C1" }]);
    assert.deepEqual(
      await t.db.transaction((tx) => all(tx.iterate("SELECT * FROM t"))),
      [{ a: 1, b: "B1", c: "C1" }],
    );
    await t.other.exec(DROP_B);
    assert.deepEqual(await all(t.db.iterate("SELECT * FROM t")), [{ a: 1, c: "C1" }]);
    assert.deepEqual(
      await t.db.transaction((tx) => all(tx.iterate("SELECT * FROM t"))),
      [{ a: 1, c: "C1" }],
    );
    await t.other.exec(ADD_D);
    assert.deepEqual(
      await t.db.transaction((tx) => all(tx.iterate("SELECT * FROM t"))),
      [{ a: 1, c: "C1", d: "D1" }],
    );
    assert.deepEqual(await all(select.iterate()), [{ a: 1, c: "C1", d: "D1" }]);
    assert.deepEqual(select.columns, ["a", "c", "d"]);
    await select.finalize();
  });
}

/** The refusal of a bare name a TEMP table shares with one another program made. */
const bareTemp = (name: string) => ({
  code: "FORBIDDEN",
  message: new RegExp(
    `^Cannot use "${name}" by its bare name: the server's shared connection has a TEMP table ` +
      `of that name, and the database now has a table or view of it too .*` +
      `Qualify it \\(main\\."${name}" or temp\\."${name}"\\), or drop the TEMP one: ` +
      `DROP TABLE temp\\."${name}"`,
  ),
});

for (const engine of ENGINES) {
  Deno.test(`${engine}: a TEMP table's name given by another program to a table of the database`, async () => {
    await using t = await open(engine);
    const { db, other } = t;
    await db.exec("CREATE TEMP TABLE staging (a)");
    await db.run("INSERT INTO staging VALUES ('temp 1')"); // (cached: prepared again after)
    await other.exec("CREATE TABLE staging (a)");
    // The bare name would mean the TEMP table: refused, whatever the statement.
    for (
      const sql of [
        "INSERT INTO staging VALUES ('temp 1')",
        "SELECT * FROM staging",
        "UPDATE staging SET a = 1",
        "DELETE FROM staging",
        "INSERT INTO main.staging SELECT * FROM staging",
        "SELECT a FROM temp.staging WHERE staging.a IS NOT NULL",
        "DROP TABLE staging",
        "CREATE INDEX temp.i ON staging (a)",
        "ALTER TABLE staging RENAME TO other_name",
      ]
    ) {
      await assert.rejects(db.run(sql), bareTemp("staging"), sql);
    }
    // (A script's later statement too, however spelled.)
    await assert.rejects(db.exec("SELECT 1; INSERT INTO STAGING VALUES (2)"), bareTemp("staging"));
    // Inside a transaction, and prepared.
    await assert.rejects(db.prepare("INSERT INTO staging VALUES (?)"), bareTemp("staging"));
    await assert.rejects(
      db.transaction((tx) => tx.run("INSERT INTO staging VALUES ('in tx')")),
      bareTemp("staging"),
    );
    // Qualified names work: the rows of the TEMP table can be kept.
    await db.run("INSERT INTO main.staging VALUES ('main 1')");
    await db.run("INSERT INTO main.staging SELECT * FROM temp.staging");
    assert.deepEqual(await db.values("SELECT a FROM temp.staging"), [["temp 1"]]);
    assert.deepEqual(await db.values(`SELECT a FROM "main"."staging" ORDER BY a`), [
      ["main 1"],
      ["temp 1"],
    ]);
    // Dropping the TEMP table ends it: the bare name is the database's again.
    await db.run("DROP TABLE temp.staging");
    const insert = await db.prepare("INSERT INTO staging VALUES (?)");
    await insert.run(["main 2"]);
    assert.deepEqual(await db.values("SELECT a FROM staging ORDER BY a"), [
      ["main 1"],
      ["main 2"],
      ["temp 1"],
    ]);
    await insert.finalize();
  });

  Deno.test(`${engine}: another program makes the clash inside a transaction, or by a rename, or ends it`, async () => {
    await using t = await open(engine);
    const { db, other } = t;
    await db.exec("CREATE TEMP TABLE staging (a); CREATE TEMP VIEW seen AS SELECT 1 AS one");
    const insert = "INSERT INTO staging VALUES (1)";
    await db.run(insert);
    // BEGIN ran (deferred: no snapshot yet); the other program commits now.
    await assert.rejects(
      db.transaction(async (tx) => {
        await other.exec("CREATE TABLE staging (a)");
        await tx.run(insert);
      }),
      bareTemp("staging"),
    );
    await other.exec("DROP TABLE staging");
    await db.run(insert);
    assert.deepEqual(await db.values("SELECT count(*) FROM staging"), [[2]]);
    await other.exec("CREATE TABLE y (a); ALTER TABLE y RENAME TO Staging");
    await assert.rejects(db.run(insert), bareTemp("staging"));
    await db.run("ALTER TABLE temp.staging RENAME TO kept");
    await db.run(insert);
    assert.deepEqual(await db.values("SELECT count(*) FROM main.staging"), [[1]]);
    assert.deepEqual(await db.values("SELECT count(*) FROM kept"), [[2]]);
    // A TEMP view too.
    await other.exec("CREATE VIEW seen AS SELECT 2 AS one");
    await assert.rejects(db.values("SELECT * FROM seen"), {
      code: "FORBIDDEN",
      message: /TEMP view of that name.*DROP VIEW temp\."seen"$/,
    });
    assert.deepEqual(await db.values("SELECT * FROM main.seen, temp.seen"), [[2, 1]]);
    await db.run("DROP VIEW temp.seen");
    assert.deepEqual(await db.values("SELECT * FROM seen"), [[2]]);
  });

  Deno.test(`${engine}: a clashing TEMP table read for no column is refused too; a CTE or TEMP view naming it qualified is not`, async () => {
    await using t = await open(engine);
    const { db, other } = t;
    await db.exec(
      "CREATE TEMP TABLE staging (a); INSERT INTO staging VALUES (1), (2), (3); " +
        "CREATE TEMP VIEW tv AS SELECT a FROM temp.staging; " +
        "CREATE TEMP VIEW tv_bare AS SELECT a FROM staging; CREATE TABLE flags (f)",
    );
    const counting = await db.prepare("SELECT count(*) FROM staging"); // prepared before the clash
    await other.exec(
      "CREATE TABLE staging (a); CREATE VIEW mv AS SELECT count(*) AS n FROM staging",
    );
    // No column of it is read (SQLite names no schema then): the bare name is refused all the same.
    for (
      const sql of [
        "SELECT count(*) FROM staging",
        "SELECT EXISTS (SELECT 1 FROM staging)",
        "UPDATE flags SET f = (SELECT count(*) FROM staging)",
        "INSERT INTO flags SELECT count(*) FROM (SELECT 1) JOIN staging",
        "WITH c AS (SELECT a FROM staging) SELECT a FROM c",
      ]
    ) {
      await assert.rejects(db.run(sql), bareTemp("staging"), sql);
    }
    await assert.rejects(counting.all(), bareTemp("staging"));
    await counting.finalize();
    assert.deepEqual(await db.values("SELECT count(*) FROM flags"), [[0]]);
    // Qualified inside a CTE, or through the server's own TEMP views: allowed.
    assert.deepEqual(
      await db.values("WITH c AS (SELECT a FROM temp.staging) SELECT count(*) FROM c"),
      [[3]],
    );
    await db.run(
      "INSERT INTO main.staging WITH c AS (SELECT a FROM temp.staging) SELECT a FROM c",
    );
    assert.deepEqual(await db.values("SELECT count(*) FROM tv"), [[3]]);
    assert.deepEqual(await db.values("SELECT count(*) FROM tv_bare"), [[3]]);
    assert.deepEqual(await db.values("SELECT count(*) FROM main.staging"), [[3]]);
    // A view of the database naming it bare never reads the TEMP one: it reads its own
    // schema's table, or (where SQLite does not tell the authorizer which, as 3.40.1 for
    // count(*)) is refused.
    await db.run("INSERT INTO main.staging VALUES (4)");
    const viaView = await db.values("SELECT n FROM mv").catch((e) => e);
    if (viaView instanceof Error) {
      assert.match(viaView.message, /^Cannot use "staging" by its bare name/);
    } else assert.deepEqual(viaView, [[4]]);
  });

  Deno.test(`${engine}: a TEMP table's name held by an attached database`, async () => {
    await using srv = await startServer({ engine, logLevel: "error", allowAttach: true });
    await using db = await srv.client();
    const file = `${srv.dir}/other.db`;
    const other = new DatabaseSync(file);
    other.exec("CREATE TABLE staging (a)");
    other.close();
    await db.exec("CREATE TEMP TABLE staging (a); INSERT INTO staging VALUES (1)");
    await db.run("ATTACH ? AS other", [file]);
    await assert.rejects(db.run("INSERT INTO staging VALUES (2)"), {
      code: "FORBIDDEN",
      message: /attached database "other" has a table or view of it too.*other\."staging"/,
    });
    await db.run("INSERT INTO other.staging SELECT * FROM temp.staging");
    await db.run("DETACH other");
    await db.run("INSERT INTO staging VALUES (2)");
    assert.deepEqual(await db.values("SELECT a FROM staging"), [[1], [2]]);
  });
}

Deno.test("Statement.columns follows iterate() after a schema change", async () => {
  await using srv = await startServer({ logLevel: "error" });
  const a = await srv.client();
  const b = await srv.client();
  try {
    await a.exec("CREATE TABLE t (a, b); INSERT INTO t VALUES (1, 2)");
    const select = await a.prepare("SELECT * FROM t");
    assert.deepEqual(select.columns, ["a", "b"]);
    await b.exec("ALTER TABLE t ADD COLUMN c DEFAULT 3");
    const rows = [];
    for await (const r of select.iterate()) rows.push(r);
    assert.deepEqual(rows, [{ a: 1, b: 2, c: 3 }]);
    assert.deepEqual(select.columns, ["a", "b", "c"]);
    await select.finalize();
  } finally {
    await a.close();
    await b.close();
  }
});
