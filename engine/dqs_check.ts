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
 * database and needs no file. It reads `sqlite_schema` and works in two steps:
 *
 * 1. **Lexer.** An object is a suspect only if its SQL holds a double-quoted
 *    token that could be a literal: one that names no table, view, index,
 *    trigger or column of a table or view of the schema (ASCII
 *    case-insensitive, like SQLite), and stands neither beside a `.`
 *    (`"t"."a"`, `NEW."a"`) nor after `AS`, `CONSTRAINT` or `COLLATE`. A schema
 *    that quotes its names (as Kysely, Prisma and drizzle-kit write them)
 *    has no suspect and costs only this scan. The rule misses a literal that
 *    happens to spell the name of something in the schema (`WHERE s = "t"`
 *    with a table or column `t`): acceptable for a warning.
 * 2. **Build.** With suspects, one in-memory connection that refuses the
 *    literals creates every table (a `CREATE TABLE` that fails on a literal is
 *    reported, then created again with that literal in single quotes, as DQS
 *    would read it) and every view, then each suspect index, view and
 *    trigger, preparing (never running) a query of each suspect view and a
 *    statement that fires each suspect trigger. An object counts when it
 *    fails with `no such column: X` and its own SQL holds `"X"`.
 *
 * @module
 */

import { type Db, rowsNow, type Sqlite } from "./binding/binding.ts";
import { type Token, tokenize } from "../protocol/sql_lexer.ts";
import { foldCase } from "./_sql_text.ts";

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
  /** Why the check could not run, or `null`. */
  readonly skipped: string | null;
  /**
   * How many objects the lexer left suspect, so that the check built the
   * schema in memory to try them (0: no build at all); absent when the
   * check did not run.
   */
  readonly suspects?: number;
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
 * @param sqlite The binding, to open the in-memory connection of the build.
 * @param db A connection to the database (only `sqlite_schema` and the
 *   tables' and views' columns are read).
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
  // Without a double quote anywhere there is no such literal.
  if (!rows.some((r) => r.sql.includes('"'))) return { objects: [], skipped: null, suspects: 0 };
  const known = knownNames(db, rows);
  const suspect = new Set(rows.filter((r) => !isVirtual(r) && mayHoldLiteral(r.sql, known)));
  if (suspect.size === 0) return { objects: [], skipped: null, suspects: 0 };
  const found: DqsObject[] = [];
  const mem = sqlite.open(":memory:", {
    readOnly: false,
    busyTimeout: 0,
    doubleQuotedStrings: false,
  });
  try {
    mem.exec("BEGIN");
    for (const r of rows) if (r.type === "table") buildTable(mem, r, found);
    for (const r of rows) {
      if (r.type === "view" && !suspect.has(r)) tryExec(mem, r.sql); // others may use it
    }
    for (const type of ["index", "view", "trigger"]) {
      for (const r of rows) if (r.type === type && suspect.has(r)) checkObject(mem, r, found);
    }
  } finally {
    mem.close();
  }
  return { objects: found, skipped: null, suspects: suspect.size };
}

/** Names of the schema's objects and of its tables' and views' columns, ASCII-lowercased. */
function knownNames(db: Db, rows: SchemaRow[]): Set<string> {
  const known = new Set(["main", "temp", "rowid", "oid", "_rowid_"]);
  const add = (name: unknown): void => {
    known.add(foldCase(String(name)));
  };
  for (const r of rows) {
    add(r.name);
    add(r.table);
  }
  const columns = (name: string): void => {
    const sql = `SELECT name FROM pragma_table_xinfo(${sqlText(name)}, 'main')`;
    try {
      for (const [c] of rowsNow(db, sql)) add(c);
    } catch {
      // A view that fails here (on a literal, say) or a virtual table without its module.
    }
  };
  try {
    // One statement for all; a view that fails (on a literal) or a virtual
    // table without its module fails it: then one at a time.
    const all = rowsNow(
      db,
      "SELECT DISTINCT c.name FROM main.sqlite_schema AS s, " +
        "pragma_table_xinfo(s.name, 'main') AS c WHERE s.type IN ('table', 'view')",
    );
    for (const [c] of all) add(c);
  } catch {
    for (const r of rows) if (r.type === "table" || r.type === "view") columns(r.name);
  }
  return known;
}

/**
 * Whether `sql` holds a double-quoted token that may be a string literal:
 * not a name in `known`, not beside a `.`, not after `AS`, `CONSTRAINT` or `COLLATE`.
 */
function mayHoldLiteral(sql: string, known: ReadonlySet<string>): boolean {
  if (!sql.includes('"')) return false;
  const tokens = tokenize(sql);
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (t.kind !== "name" || sql[t.at] !== '"' || known.has(foldCase(t.text))) continue;
    const before: Token | undefined = tokens[i - 1];
    const after: Token | undefined = tokens[i + 1];
    if (before?.text === "." && before.kind === "punct") continue;
    if (after?.text === "." && after.kind === "punct") continue;
    if (before?.kind === "word" && NAME_AFTER.has(before.text)) continue;
    return true;
  }
  return false;
}

/** Words after which a double-quoted token is a name, never a literal. */
const NAME_AFTER: ReadonlySet<string> = new Set(["as", "constraint", "collate"]);

function isVirtual(r: SchemaRow): boolean {
  return r.type === "table" && /^\s*create\s+virtual\b/i.test(r.sql);
}

/**
 * Creates table `r` on `db` (literals refused). A literal that fails it is
 * reported, put in single quotes and the table created again, so that the
 * objects on it can be checked.
 */
function buildTable(db: Db, r: SchemaRow, found: DqsObject[]): void {
  let sql = r.sql;
  let noted = false;
  for (;;) {
    const err = tryExec(db, sql); // a virtual table may lack its module
    if (err === null || isVirtual(r)) return;
    const column = missingColumn(err);
    if (column === null) return;
    if (!noted && !(noted = note(r, err, found))) return;
    const next = asText(sql, column);
    if (next === sql) return;
    sql = next;
  }
}

/** `sql` with each double-quoted `"column"` token written as the string literal `'column'`. */
function asText(sql: string, column: string): string {
  let out = "";
  let from = 0;
  for (const t of tokenize(sql)) {
    if (t.kind !== "name" || sql[t.at] !== '"' || t.text !== column) continue;
    out += sql.slice(from, t.at) + sqlText(column);
    from = t.end;
  }
  return out + sql.slice(from);
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
  if (err !== null) {
    note(r, err, found);
    // It would fail the views built on it, or each later trigger's firing statement.
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
  const column = missingColumn(message);
  if (column === null) return false;
  const literal = quote(column);
  if (!r.sql.includes(literal)) return false;
  found.push({ type: r.type, name: r.name, literal });
  return true;
}

/** The column of a `no such column: X` message, or `null`. */
function missingColumn(message: string): string | null {
  const m = /no such column: (?:"((?:[^"]|"")*)"|(.*))/s.exec(message);
  if (m === null) return null;
  return m[1] !== undefined ? m[1].replaceAll('""', '"') : m[2].trim();
}

function sqlText(s: string): string {
  return `'${s.replaceAll("'", "''")}'`;
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
