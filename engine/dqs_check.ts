/**
 * Finds the schema objects that use SQLite's double-quoted string literals
 * (`CHECK (s <> "bad")`, a trigger's `VALUES ("inserted")`) and so stop
 * working on connections that refuse them, which netsqlite's are by
 * default. SQLite still loads such a schema, but with them refused:
 *
 * - a trigger fails every statement that fires it, a view every query of it
 *   (`no such column: inserted`);
 * - a CHECK constraint, generated column, partial index (`WHERE s = "x"`) or
 *   index expression, like any of the above anywhere in the schema, makes
 *   every `ALTER TABLE … RENAME` fail, also of unrelated tables, because
 *   ALTER resolves the whole schema again (`error in table t: no such
 *   column: bad`).
 *
 * (`DEFAULT "x"` is text in either mode.) The check never writes to the
 * database: it reads `sqlite_schema`, creates the tables in a scratch file
 * in the temporary directory with literals accepted, then creates each index,
 * view and trigger there on a connection that refuses them, preparing (never
 * running) a query of each view and a statement that fires each trigger;
 * each table's own `CREATE TABLE` is tried on a refusing in-memory database.
 * An object counts when it fails with `no such column: X` and its own SQL
 * holds `"X"`.
 *
 * @module
 */

import { type Db, rowsNow, type Sqlite } from "./binding/binding.ts";

/** One schema object that needs double-quoted string literals. */
export interface DqsObject {
  /** `table`, `index`, `view` or `trigger`. */
  readonly type: string;
  /** Its name. */
  readonly name: string;
  /** The quoted name SQLite found no column for, e.g. `"inserted"`. */
  readonly literal: string;
}

/** Result of {@link findDoubleQuotedStrings}. */
export interface DqsReport {
  /** The objects found, in schema order (tables, indexes, views, triggers). */
  readonly objects: readonly DqsObject[];
  /** Why the check could not run (e.g. no temporary directory), or `null`. */
  readonly skipped: string | null;
}

interface SchemaRow {
  type: string;
  name: string;
  table: string;
  sql: string;
}

/**
 * Checks the schema of the database `db` is open on (read only, `main`).
 *
 * @param sqlite The binding, to open the scratch connections.
 * @param db A connection to the database (only `sqlite_schema` is read).
 */
export function findDoubleQuotedStrings(sqlite: Sqlite, db: Db): DqsReport {
  const rows = rowsNow(
    db,
    "SELECT type, name, tbl_name, sql FROM main.sqlite_schema " +
      "WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid",
  ).map(([type, name, table, sql]): SchemaRow => ({
    type: String(type),
    name: String(name),
    table: String(table),
    sql: String(sql),
  }));
  // Without a double quote anywhere there is no such literal: no scratch file.
  if (!rows.some((r) => r.sql.includes('"'))) return { objects: [], skipped: null };
  const found: DqsObject[] = [];
  const tables = rows.filter((r) => r.type === "table");
  checkTables(sqlite, tables, found);
  let file: string;
  try {
    file = Deno.makeTempFileSync({ prefix: "netsqlite-dqs-", suffix: ".db" });
  } catch (err) {
    return { objects: found, skipped: `no scratch file: ${(err as Error).message}` };
  }
  try {
    const build = sqlite.open(file, { readOnly: false, busyTimeout: 0, doubleQuotedStrings: true });
    try {
      build.exec("PRAGMA journal_mode = OFF");
      build.exec("BEGIN");
      for (const t of tables) tryExec(build, t.sql); // virtual tables may lack their module
      build.exec("COMMIT");
    } finally {
      build.close();
    }
    const check = sqlite.open(file, {
      readOnly: false,
      busyTimeout: 0,
      doubleQuotedStrings: false,
    });
    try {
      check.exec("PRAGMA journal_mode = OFF");
      for (const type of ["index", "view", "trigger"]) {
        for (const r of rows) if (r.type === type) checkObject(check, r, found);
      }
    } finally {
      check.close();
    }
  } catch (err) {
    return { objects: found, skipped: (err as Error).message };
  } finally {
    for (const f of [file, `${file}-journal`]) {
      try {
        Deno.removeSync(f);
      } catch {
        // Not there.
      }
    }
  }
  return { objects: found, skipped: null };
}

/** Each table's `CREATE TABLE` on an in-memory database that refuses the literals. */
function checkTables(sqlite: Sqlite, tables: SchemaRow[], found: DqsObject[]): void {
  const mem = sqlite.open(":memory:", {
    readOnly: false,
    busyTimeout: 0,
    doubleQuotedStrings: false,
  });
  try {
    for (const t of tables) {
      if (!t.sql.includes('"') || /^\s*create\s+virtual\b/i.test(t.sql)) continue;
      const err = tryExec(mem, t.sql);
      if (err !== null) note(t, err, found);
    }
  } finally {
    mem.close();
  }
}

/** Creates index, view or trigger `r` on `db` (literals refused) and checks it. */
function checkObject(db: Db, r: SchemaRow, found: DqsObject[]): void {
  const created = tryExec(db, r.sql);
  if (created !== null) {
    note(r, created, found); // an index resolves its WHERE and expressions here
    return;
  }
  if (r.type === "index") return;
  const name = quote(r.name);
  let err: string | null = null;
  if (r.type === "view") {
    err = tryPrepare(db, `SELECT * FROM ${name} LIMIT 0`);
  } else {
    // A trigger's program is built when a statement that fires it is prepared.
    for (const sql of firingStatements(db, r)) err ??= tryPrepare(db, sql);
  }
  if (err !== null && note(r, err, found) || r.type === "trigger") {
    // A failing view would fail the views built on it; triggers are checked one at a time.
    tryExec(db, `DROP ${r.type.toUpperCase()} ${name}`);
  }
}

/** Statements that fire trigger `r` (prepared only): INSERT, UPDATE of every column, DELETE. */
function firingStatements(db: Db, r: SchemaRow): string[] {
  const head = r.sql.slice(0, r.sql.search(/\bON\b/i) >>> 0);
  const table = quote(r.table);
  if (/\bINSERT\b/i.test(head)) return [`INSERT INTO ${table} DEFAULT VALUES`];
  if (/\bDELETE\b/i.test(head)) return [`DELETE FROM ${table}`];
  if (!/\bUPDATE\b/i.test(head)) return [];
  let columns: string[];
  try {
    columns = rowsNow(db, `PRAGMA table_xinfo(${table})`)
      .filter((c) => Number(c[6]) === 0) // not generated or hidden
      .map((c) => quote(String(c[1])));
  } catch {
    return [];
  }
  if (columns.length === 0) return [];
  return [`UPDATE ${table} SET ${columns.map((c) => `${c} = ${c}`).join(", ")}`];
}

/**
 * Records `r` when `message` says a column is missing whose name `r`'s own
 * SQL writes in double quotes. Returns whether it did.
 */
function note(r: SchemaRow, message: string, found: DqsObject[]): boolean {
  const m = /no such column: (?:"((?:[^"]|"")*)"|(.*))/s.exec(message);
  if (m === null) return false;
  const column = m[1] !== undefined ? m[1].replaceAll('""', '"') : m[2].trim();
  const literal = quote(column);
  if (!r.sql.includes(literal)) return false;
  found.push({ type: r.type, name: r.name, literal });
  return true;
}

function quote(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

function tryExec(db: Db, sql: string): string | null {
  try {
    db.exec(sql);
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}

function tryPrepare(db: Db, sql: string): string | null {
  try {
    db.prepare(sql)?.finalize();
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}

/**
 * The start-up warning for `objects`, naming them and the option that
 * accepts the literals.
 *
 * @param objects What {@link findDoubleQuotedStrings} found (not empty).
 */
export function describeDqsObjects(objects: readonly DqsObject[]): string {
  const named = objects.map((o) => `${o.type} "${o.name}" (${o.literal})`).join(", ");
  return `the schema uses double-quoted string literals, which this server refuses: ${named}. ` +
    "Those triggers and views fail when they run, and every ALTER TABLE ... RENAME fails; " +
    "serve the database with --allow-double-quoted-strings " +
    "(serve({ allowDoubleQuotedStrings: true })), or recreate those objects with 'single quotes'";
}
