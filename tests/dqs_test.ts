// Double-quoted string literals (SQLite's DQS): refused by default on both
// engines, named at start-up when an existing schema needs them, accepted on
// every connection with allowDoubleQuotedStrings / --allow-double-quoted-strings.

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { connect, type SqliteError } from "../mod.ts";
import { parseServeArgs, serve, type Server } from "../server.ts";
import { resolveServeOptions } from "../server/options.ts";
import { loadSqlite } from "../engine/binding/load.ts";
import { findDoubleQuotedStrings } from "../engine/dqs_check.ts";

const ENGINES = ["ffi", "node"] as const;

/** A schema written with DQS on (as the sqlite3 shell, Python or better-sqlite3 allow). */
const LEGACY_SCHEMA = `
  CREATE TABLE t (id INTEGER PRIMARY KEY, status TEXT DEFAULT "new"
    CHECK (status IN ("new", "done")), n INT);
  CREATE INDEX t_done ON t(id) WHERE status = "done";
  CREATE VIEW v AS SELECT id, status = "done" AS finished FROM t;
  CREATE TABLE log (msg TEXT);
  CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN INSERT INTO log VALUES ("inserted"); END;
  CREATE TABLE other (a);
  -- Double quotes used correctly, as names: never reported.
  CREATE TABLE "my table" ("my col" TEXT DEFAULT 'x');
  CREATE VIEW "good view" AS SELECT "my col" FROM "my table" WHERE "my col" <> 'y';
  CREATE TRIGGER "good trigger" AFTER UPDATE ON "my table"
    BEGIN INSERT INTO log VALUES (new."my col"); END;
  CREATE INDEX "good index" ON "my table"("my col") WHERE "my col" IS NOT NULL;
  INSERT INTO t (n) VALUES (1);
`;

/**
 * A schema as ORMs write it (Kysely, Prisma, drizzle-kit): every name in
 * double quotes, constraint names, qualified columns, aliases, no literal.
 */
const ORM_SCHEMA = `
  CREATE TABLE "User" ("id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, "email" TEXT NOT NULL,
    "name" TEXT, "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "lower_email" TEXT GENERATED ALWAYS AS (lower("email")) VIRTUAL,
    CONSTRAINT "User_email_check" CHECK (length("email") > 3));
  CREATE TABLE "Post" ("id" INTEGER NOT NULL PRIMARY KEY, "title" TEXT NOT NULL COLLATE "NOCASE",
    "authorId" INTEGER NOT NULL, "published" BOOLEAN NOT NULL DEFAULT false,
    CONSTRAINT "Post_authorId_fkey" FOREIGN KEY ("authorId") REFERENCES "User" ("id")
      ON DELETE RESTRICT ON UPDATE CASCADE);
  CREATE TABLE "Tag" ("k" TEXT PRIMARY KEY, "v" INTEGER) WITHOUT ROWID;
  CREATE TABLE "_audit" ("at" INTEGER, "what" TEXT);
  CREATE UNIQUE INDEX "User_email_key" ON "User"("email");
  CREATE INDEX "Post_published_idx" ON "Post"("authorId") WHERE "published" = 1;
  CREATE INDEX "Post_title_lower" ON "Post"(lower("title"));
  CREATE VIEW "PublishedPost" AS SELECT "p"."id", "p"."title" AS "postTitle", "u"."email"
    FROM "Post" AS "p" JOIN "User" AS "u" ON "u"."id" = "p"."authorId" WHERE "p"."published";
  CREATE VIEW "Titles" AS SELECT "postTitle" FROM "PublishedPost";
  CREATE TRIGGER "Post_audit_insert" AFTER INSERT ON "Post" BEGIN
    INSERT INTO "_audit" ("at", "what") VALUES (NEW."id", 'insert');
    UPDATE "User" SET "name" = coalesce("name", 'author') WHERE "id" = NEW."authorId"; END;
  CREATE TRIGGER "Post_audit_update" AFTER UPDATE OF "title" ON "Post" BEGIN
    INSERT INTO "_audit" ("at", "what") SELECT "u"."id", NEW."title" FROM "main"."User" AS "u" WHERE "u"."id" = OLD."authorId"; END;
`;

/** Checks `schema` directly with `engine`'s binding (literals refused, as the server's connections). */
function checkSchema(
  engine: "ffi" | "node",
  schema: string,
): ReturnType<typeof findDoubleQuotedStrings> {
  const dir = Deno.makeTempDirSync({ prefix: "netsqlite-dqs-" });
  try {
    const pre = new DatabaseSync(`${dir}/s.db`, { enableDoubleQuotedStringLiterals: true });
    try {
      pre.exec(schema);
    } finally {
      pre.close();
    }
    const sqlite = loadSqlite({ engine });
    try {
      const db = sqlite.open(`${dir}/s.db`, { readOnly: true, busyTimeout: 0 });
      try {
        return findDoubleQuotedStrings(sqlite, db);
      } finally {
        db.close();
      }
    } finally {
      sqlite.close();
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

async function legacyDatabase(dir: string): Promise<string> {
  const file = `${dir}/legacy.db`;
  const pre = new DatabaseSync(file, { enableDoubleQuotedStringLiterals: true });
  try {
    pre.exec(LEGACY_SCHEMA);
  } finally {
    pre.close();
  }
  return await Promise.resolve(file);
}

/** Starts a server, returning it with what it logged on standard error while starting. */
async function serveLogged(
  options: Parameters<typeof serve>[0],
): Promise<{ server: Server; lines: string[] }> {
  const lines: string[] = [];
  const original = console.error;
  console.error = (line: string) => lines.push(String(line));
  try {
    return { server: await serve(options), lines };
  } finally {
    console.error = original;
  }
}

async function failure(p: Promise<unknown>): Promise<SqliteError> {
  try {
    await p;
  } catch (err) {
    return err as SqliteError;
  }
  throw new Error("expected a failure");
}

for (const engine of ENGINES) {
  Deno.test(`dqs ${engine}: a legacy schema is named at start; its triggers, views and ALTER RENAME fail`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-dqs-" });
    try {
      const database = await legacyDatabase(dir);
      const { server, lines } = await serveLogged({ database, path: `${dir}/s.sock`, engine });
      const db = await connect({ path: `${dir}/s.sock`, max: 1 });
      try {
        const warned = lines.filter((l) => l.includes("double-quoted string literals"));
        assert.equal(warned.length, 1, lines.join("\n"));
        const w = warned[0];
        assert.match(w, / warn +netsqlite: /);
        for (
          const named of [
            'table "t" ("new")',
            'index "t_done" ("done")',
            'view "v" ("done")',
            'trigger "t_ins" ("inserted")',
          ]
        ) assert.ok(w.includes(named), `${named} missing from: ${w}`);
        for (const good of ["my table", "good view", "good trigger", "good index", '"log"']) {
          assert.ok(!w.includes(good), `${good} reported: ${w}`);
        }
        assert.ok(w.includes("--allow-double-quoted-strings"), w);

        // Reads of the table itself work (its CHECK and index were resolved at load).
        assert.deepEqual(await db.query("SELECT id, status, n FROM t"), [
          { id: 1, status: "new", n: 1 },
        ]);
        const ins = await failure(db.exec("INSERT INTO t (n) VALUES (2)"));
        assert.equal(ins.code, "SQLITE_ERROR");
        assert.match(ins.message, /no such column: "?inserted/);
        const view = await failure(db.query("SELECT * FROM v"));
        assert.match(view.message, /no such column: "?done/);
        const alter = await failure(db.exec("ALTER TABLE other RENAME TO other2"));
        assert.match(alter.message, /^error in (table|index|view|trigger) /);
        // New SQL: "x" is a name, never text; the message hints at single quotes on both engines.
        const upd = await failure(db.exec('UPDATE "my table" SET "my col" = "nmae"'));
        assert.equal(upd.code, "SQLITE_ERROR");
        assert.equal(
          upd.message,
          'no such column: "nmae" - should this be a string literal in single-quotes?',
        );
        // Only the row the schema's own INSERT logged: the failed INSERT left nothing.
        assert.deepEqual(await db.query("SELECT count(*) AS n FROM log"), [{ n: 1 }]);
      } finally {
        await db.close();
        await server.shutdown();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });

  Deno.test(`dqs ${engine}: allowDoubleQuotedStrings serves a legacy schema on every connection`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-dqs-" });
    try {
      const database = await legacyDatabase(dir);
      const { server, lines } = await serveLogged({
        database,
        path: `${dir}/s.sock`,
        engine,
        allowDoubleQuotedStrings: true,
      });
      const db = await connect({ path: `${dir}/s.sock`, max: 1 });
      try {
        assert.deepEqual(lines.filter((l) => l.includes("double-quoted")), []);
        // Writer: the trigger runs; reader: the view resolves.
        await db.exec("INSERT INTO t (n) VALUES (2)");
        assert.deepEqual(await db.query("SELECT msg FROM log"), [
          { msg: "inserted" },
          { msg: "inserted" },
        ]);
        assert.deepEqual(await db.query("SELECT id, finished FROM v ORDER BY id"), [
          { id: 1, finished: 0 },
          { id: 2, finished: 0 },
        ]);
        const rows = [];
        for await (const row of db.iterate("SELECT id FROM v ORDER BY id")) rows.push(row);
        assert.equal(rows.length, 2);
        await db.exec("ALTER TABLE other RENAME TO other2");
        await db.exec("ALTER TABLE t RENAME COLUMN n TO num");
        assert.deepEqual(await db.query('SELECT "text" AS x'), [{ x: "text" }]);
      } finally {
        await db.close();
        await server.shutdown();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });

  Deno.test(`dqs ${engine}: the single-quotes hint names only a column the failing statement double-quotes`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-dqs-" });
    try {
      const server = await serve({ database: `${dir}/h.db`, path: `${dir}/s.sock`, engine });
      const db = await connect({ path: `${dir}/s.sock`, max: 1 });
      try {
        await db.exec('CREATE TABLE t (a); CREATE TABLE u ("x")');
        // `x` written bare: SQLite's message as it is, on both engines. (The FFI
        // engine, adding the hint for older libraries, took `"x"` anywhere in
        // the text for it: in a string, a comment, the script's next statement.)
        for (
          const sql of [
            `SELECT x FROM t WHERE a = '"x"'`,
            'SELECT x FROM t -- "x"',
            'SELECT x FROM t /* "x" */',
          ]
        ) {
          const err = await failure(db.query(sql));
          assert.equal(err.code, "SQLITE_ERROR", sql);
          assert.equal(err.message, "no such column: x", sql);
        }
        const script = await failure(db.exec('SELECT x FROM t; SELECT "x" FROM u'));
        assert.equal(script.message, "no such column: x");
        // Written in double quotes: the hint, on both engines.
        const hint = 'no such column: "x" - should this be a string literal in single-quotes?';
        assert.equal((await failure(db.query('SELECT "x" FROM t'))).message, hint);
        assert.equal(
          (await failure(db.exec('SELECT a FROM t; SELECT "x" FROM t'))).message,
          `${hint} (statement 2 of the script; the 1 before it ran)`,
        );
      } finally {
        await db.close();
        await server.shutdown();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });

  Deno.test(`dqs ${engine}: a schema without such literals starts without a warning`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-dqs-" });
    try {
      const file = `${dir}/clean.db`;
      const pre = new DatabaseSync(file);
      pre.exec(
        LEGACY_SCHEMA.slice(LEGACY_SCHEMA.indexOf("-- Double quotes used")).replace(
          "INSERT INTO t (n) VALUES (1);",
          'CREATE TABLE log (msg TEXT); CREATE VIEW "q""uote" AS SELECT 1 AS "a""b"',
        ),
      );
      pre.close();
      const { server, lines } = await serveLogged({
        database: file,
        path: `${dir}/s.sock`,
        engine,
      });
      await server.shutdown();
      assert.deepEqual(lines.filter((l) => l.includes("double-quoted")), []);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });

  Deno.test(`dqs ${engine}: the binding applies the setting at load and per connection`, () => {
    const legacy = loadSqlite({ engine, doubleQuotedStrings: true });
    const strict = loadSqlite({ engine });
    try {
      assert.equal(legacy.doubleQuotedStrings, true);
      assert.equal(strict.doubleQuotedStrings, false);
      const a = legacy.open(":memory:", { readOnly: false, busyTimeout: 0 });
      const s = a.prepare('SELECT "x"')!;
      s.bind([]);
      assert.deepEqual(s.all(), [["x"]]);
      s.finalize();
      a.close();
      const b = legacy.open(":memory:", {
        readOnly: false,
        busyTimeout: 0,
        doubleQuotedStrings: false,
      });
      assert.throws(() => b.prepare('SELECT "x"'), /no such column: "x"/);
      b.close();
      const c = strict.open(":memory:", { readOnly: false, busyTimeout: 0 });
      assert.throws(() => c.exec('CREATE TABLE d (a CHECK (a <> "x"))'), /no such column/);
      // A plain typo (no double quotes) gets no hint.
      assert.throws(() => c.prepare("SELECT nmae"), (e: Error) => {
        assert.equal(e.message, "no such column: nmae");
        return true;
      });
      c.close();
    } finally {
      legacy.close();
      strict.close();
    }
  });
}

for (const engine of ENGINES) {
  Deno.test(`dqs ${engine}: an ORM schema quoting every name is cleared by the lexer, no build`, () => {
    const report = checkSchema(engine, ORM_SCHEMA);
    assert.deepEqual(report, { objects: [], skipped: null, suspects: 0 });
  });

  Deno.test(`dqs ${engine}: a legacy object among ORM-quoted names is still found`, () => {
    const report = checkSchema(
      engine,
      ORM_SCHEMA + `
        CREATE TRIGGER "Tag_log" AFTER INSERT ON "Tag" BEGIN
          INSERT INTO "_audit" ("what") VALUES ("tagged"); END;
        CREATE TABLE "Flag" ("s" TEXT CHECK ("s" IN ("on", "off")));
        CREATE VIEW "OnFlags" AS SELECT "s" FROM "Flag" WHERE "s" = "on";`,
    );
    assert.deepEqual(report, {
      objects: [
        { type: "table", name: "Flag", literal: '"on"' },
        { type: "view", name: "OnFlags", literal: '"on"' },
        { type: "trigger", name: "Tag_log", literal: '"tagged"' },
      ],
      skipped: null,
      suspects: 3,
    });
  });

  Deno.test(`dqs ${engine}: with write access to the database's directory only, start-up checks without prompting`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-dqs-" });
    try {
      const database = await legacyDatabase(dir);
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-read",
          `--allow-write=${dir}`,
          "--allow-env",
          "--allow-net",
          "--allow-sys=uid",
          "--allow-ffi",
          fileURLToPath(new URL("../server.ts", import.meta.url)),
          "--db",
          database,
          "--socket",
          `${dir}/s.sock`,
          "--engine",
          engine,
        ],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const stderr = new Response(child.stderr).text();
      let stdout = "";
      const decoder = new TextDecoder();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no "serving" line in 30 s: ${stdout}`)), 30_000);
      });
      try {
        const reader = child.stdout.getReader();
        try {
          while (!stdout.includes(" serving ")) {
            const { value, done } = await Promise.race([reader.read(), timeout]);
            if (done) break;
            stdout += decoder.decode(value, { stream: true });
          }
        } finally {
          await reader.cancel();
        }
      } finally {
        clearTimeout(timer);
        child.kill("SIGTERM");
      }
      await child.status;
      const err = await stderr;
      assert.ok(stdout.includes(" serving "), `${stdout}\n${err}`);
      assert.ok(!err.includes("could not check"), err);
      assert.ok(!/prompt|⚠️/i.test(err), err);
      const warned = err.split("\n").filter((l) => l.includes("double-quoted string literals"));
      assert.equal(warned.length, 1, err);
      assert.ok(warned[0].includes('trigger "t_ins" ("inserted")'), warned[0]);
      assert.ok(warned[0].includes('view "v" ("done")'), warned[0]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("dqs: --allow-double-quoted-strings and its option are parsed and checked", () => {
  const parsed = parseServeArgs(["--allow-double-quoted-strings"]);
  assert.ok(parsed !== "help");
  assert.equal(parsed.allowDoubleQuotedStrings, true);
  assert.equal(resolveServeOptions({}).sqlite.doubleQuotedStrings, false);
  assert.equal(
    resolveServeOptions({ allowDoubleQuotedStrings: true }).sqlite.doubleQuotedStrings,
    true,
  );
  assert.throws(
    () => resolveServeOptions({ allowDoubleQuotedStrings: "yes" as unknown as boolean }),
    /Invalid option "allowDoubleQuotedStrings": expected a boolean/,
  );
  assert.throws(
    () =>
      resolveServeOptions({
        allowDoubleQuotedStrings: true,
        dqlite: { nodes: ["127.0.0.1:9001"], database: "x" },
      }),
    /not supported in cluster mode/,
  );
});
