/**
 * What the server's cluster mode needs to know about SQL text before sending
 * it to dqlite, which reports less than SQLite's own API: how many
 * statements a text holds, what kind of statement it starts with (dqlite
 * reports `sqlite3_changes()` and the last insert rowid of the connection,
 * which after a statement that changes nothing belong to an earlier one),
 * and what must not reach a node: column types that crash dqlite 1.11 when
 * read back, files attached on the leader alone, and PRAGMAs that change a
 * connection other clients share.
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../../protocol/errors.ts";
import { CONNECTION_PRAGMAS, type PolicyConfig, UNSAFE_PRAGMAS } from "../policy.ts";
import { ACTING_PRAGMAS, QUERY_PRAGMAS } from "../pragma_use.ts";
import { scan, type Token } from "../../protocol/sql_lexer.ts";
import { nulInSql } from "./errors.ts";

/**
 * Declared column types that dqlite 1.11 maps to its own value types
 * (`BOOLEAN`; `DATETIME`, `DATE`, `TIMESTAMP`): reading a value of another
 * storage class from such a column (TEXT from a BOOLEAN column, a float or a
 * blob from a DATETIME one) aborts the node.
 */
export const HAZARDOUS_TYPES: readonly string[] = ["BOOLEAN", "DATETIME", "DATE", "TIMESTAMP"];

/** The statements of `sql`, each as its tokens (with names and punctuation); trigger bodies kept whole. */
export function splitStatements(sql: string): Token[][] {
  return split(sql).map((s) => s.tokens);
}

/** The text of each statement of `sql`, from its first token to its semicolon (if any). */
export function statementTexts(sql: string): string[] {
  return split(sql).map((s) => sql.slice(s.tokens[0].at, s.end));
}

function split(sql: string): { tokens: Token[]; end: number }[] {
  const out: { tokens: Token[]; end: number }[] = [];
  let current: Token[] = [];
  let inTrigger = false;
  scan(sql, (t) => {
    if (t.kind === "semicolon") {
      if (current.length === 0) return true;
      const words = current.filter((w) => w.kind === "word").map((w) => w.text);
      if (words[0] === "create" && words.slice(1, 4).includes("trigger") && !inTrigger) {
        inTrigger = true; // the body's statements end with semicolons, then END
      }
      const last = current[current.length - 1];
      if (inTrigger && !(last.kind === "word" && last.text === "end")) {
        current.push(t);
        return true;
      }
      inTrigger = false;
      out.push({ tokens: current, end: t.at + 1 });
      current = [];
      return true;
    }
    current.push(t);
    return true;
  });
  if (current.length > 0) out.push({ tokens: current, end: sql.length });
  return out;
}

/**
 * `sql` with every deferred `BEGIN` (`BEGIN`, `BEGIN DEFERRED`, with or
 * without `TRANSACTION`) made `BEGIN IMMEDIATE`. In cluster mode a deferred
 * transaction that read and then writes fails with `SQLITE_BUSY_SNAPSHOT`
 * when another connection committed in between; taking the writer at
 * `BEGIN`, as the single-file engine does for every transaction, makes such
 * transactions wait their turn instead.
 */
export function immediateBegins(sql: string): string {
  let out = "";
  let last = 0;
  for (const { tokens } of split(sql)) {
    const [first, second] = tokens;
    if (first.kind !== "word" || first.text !== "begin") continue;
    if (second?.kind === "word" && second.text === "deferred") {
      out += sql.slice(last, second.at) + "IMMEDIATE";
      last = second.end;
    } else if (
      !(second?.kind === "word" && (second.text === "immediate" || second.text === "exclusive"))
    ) {
      out += sql.slice(last, first.end) + " IMMEDIATE";
      last = first.end;
    }
  }
  return last === 0 ? sql : out + sql.slice(last);
}

/**
 * Refuses SQL text containing a NUL character, which dqlite would cut
 * there, as the single-file engines refuse it: before any of it runs.
 *
 * @throws {SqliteError} `BAD_REQUEST` "Cannot prepare statement: SQL text contains a NUL character".
 */
export function checkSqlText(sql: string): void {
  if (sql.includes("\0")) throw nulInSql();
}

/**
 * Checks that `sql` holds exactly one statement (and no NUL: {@link checkSqlText}).
 *
 * @throws {SqliteError} `BAD_REQUEST` for an empty text, several statements, a NUL character.
 */
export function requireOneStatement(sql: string): void {
  checkSqlText(sql);
  const n = splitStatements(sql).length;
  if (n === 0) {
    throw new SqliteError(
      ErrorCode.BadRequest,
      "Cannot prepare statement: SQL text holds no statement (it is empty, or only whitespace, " +
        "comments and semicolons)",
    );
  }
  if (n > 1) {
    throw new SqliteError(
      ErrorCode.BadRequest,
      "Cannot prepare statement: SQL holds more than one statement; use exec() for scripts",
    );
  }
}

/** What a statement does, by its leading keyword (after any `WITH` clause). */
export type Verb = "insert" | "update" | "delete" | "read" | "other";

/**
 * The kind of the first statement of `sql`: `insert` (INSERT, REPLACE),
 * `update`, `delete`, `read` (SELECT, VALUES, PRAGMA, EXPLAIN: may return
 * rows) or `other` (DDL, transaction control, ...).
 */
export function verbOf(sql: string): Verb {
  const [first] = splitStatements(sql);
  if (first === undefined) return "other";
  let depth = 0;
  let sawWith = false;
  for (const t of first) {
    if (t.kind === "punct") {
      if (t.text === "(") depth++;
      else if (t.text === ")") depth--;
      continue;
    }
    if (t.kind !== "word" || depth !== 0) continue;
    switch (t.text) {
      case "with":
        sawWith = true;
        continue;
      case "insert":
      case "replace":
        return "insert";
      case "update":
        return "update";
      case "delete":
        return "delete";
      case "select":
      case "values":
      case "pragma":
      case "explain":
        return "read";
    }
    if (!sawWith) return "other";
  }
  return "other";
}

/**
 * Message of the `FORBIDDEN` refusing `VACUUM` (`VACUUM`, `VACUUM main`...)
 * in cluster mode: a dqlite 1.11 leader dies running it on a database of a
 * few hundred pages or more (its client sees `LEADER_LOST`, outcome unknown).
 */
export const VACUUM_REFUSED = "Cannot run VACUUM in cluster mode: it makes a dqlite 1.11 leader " +
  "crash (its process dies) on any database of a few hundred pages or more; `netsqlite vacuum` " +
  "is not available in cluster mode either (dqlite replicates and snapshots the database itself)";

/**
 * Refuses what cluster mode must not send to a node: a column declared with
 * one of {@link HAZARDOUS_TYPES} (CREATE TABLE, ALTER TABLE ADD COLUMN);
 * VACUUM in every form ({@link VACUUM_REFUSED}); ATTACH, DETACH and VACUUM
 * INTO (the file would exist on the leader only);
 * CREATE TEMP, or CREATE of an object named `temp.x` (connections are shared
 * between clients and replaced at a leader change); calling
 * `fts3_tokenizer()` (it reads and sets code addresses in the node) and
 * reading `sqlite_stmt` (the SQL of other clients' statements), refused as
 * the single-file engine refuses them;
 * setting a PRAGMA of the shared connections or of durability, unless
 * `allowUnsafePragmas`. First, text containing a NUL ({@link checkSqlText}).
 *
 * @throws {SqliteError} `FORBIDDEN` naming what was refused and why;
 *   `BAD_REQUEST` for a NUL character.
 */
export function checkClusterSql(
  sql: string,
  policy: Pick<PolicyConfig, "allowUnsafePragmas">,
): void {
  checkSqlText(sql);
  for (const tokens of splitStatements(sql)) {
    const words = tokens.filter((t) => t.kind === "word").map((t) => t.text);
    const head = words[0];
    if (head === "attach" || head === "detach" || (head === "vacuum" && words.includes("into"))) {
      throw forbidden(
        `Cannot run ${head === "vacuum" ? "VACUUM INTO" : head.toUpperCase()} in cluster mode: ` +
          "the file would exist on the leader only, outside Raft replication",
      );
    }
    if (head === "vacuum") throw forbidden(VACUUM_REFUSED);
    if (head === "create" && (words[1] === "temp" || words[1] === "temporary" || inTemp(tokens))) {
      throw forbidden(
        "Cannot create TEMP objects in cluster mode: connections to the leader are shared " +
          "between clients and replaced at a leader change",
      );
    }
    checkNames(tokens, head === "create" && words[1] === "virtual");
    if (head === "pragma") checkPragma(tokens, policy.allowUnsafePragmas);
    if (head === "create" || head === "alter") checkColumnTypes(tokens);
  }
}

const CREATED = new Set(["table", "view", "index", "trigger"]);

/** True when a CREATE statement names its object in the `temp` schema: `temp.x`, `"temp".x`. */
function inTemp(tokens: Token[]): boolean {
  // CREATE [UNIQUE | VIRTUAL] TABLE|VIEW|INDEX|TRIGGER [IF NOT EXISTS] [schema.]name
  let i = tokens.findIndex((t) => t.kind === "word" && CREATED.has(t.text));
  if (i === -1 || i > 2) return false;
  i++;
  if (tokens[i]?.kind === "word" && tokens[i].text === "if") i += 3;
  const schema = tokens[i];
  // (SQLite takes a string where a name must be: 'temp'.x is temp.x.)
  return (schema?.kind === "word" || schema?.kind === "name" || schema?.kind === "string") &&
    schema.text.toLowerCase() === "temp" && tokens[i + 1]?.kind === "punct" &&
    tokens[i + 1].text === ".";
}

/**
 * Refuses calling `fts3_tokenizer()` and naming `sqlite_stmt`, wherever they
 * appear; in a `CREATE VIRTUAL TABLE` (`vtab`) also as a string, which a
 * module's arguments may take for a table's name (fts5's
 * `content='sqlite_stmt'`: reading the table would read sqlite_stmt).
 */
function checkNames(tokens: Token[], vtab: boolean): void {
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (t.kind !== "word" && t.kind !== "name" && (!vtab || t.kind !== "string")) continue;
    const name = t.kind === "string"
      ? t.text.trim().toLowerCase().replace(/^main\./, "")
      : t.text.toLowerCase();
    if (
      name === "fts3_tokenizer" && tokens[i + 1]?.kind === "punct" && tokens[i + 1].text === "("
    ) {
      throw forbidden(
        "Cannot call fts3_tokenizer(): it reads and sets code addresses in the server process",
      );
    }
    if (name === "sqlite_stmt") {
      throw forbidden(
        "Cannot read sqlite_stmt: it shows the SQL of other clients' statements on the " +
          "server's shared connections",
      );
    }
  }
}

/**
 * PRAGMAs that cluster mode runs in every form: they read the schema or the
 * file, or write through an ordinary replicated transaction (`user_version`,
 * `application_id`, `optimize`'s ANALYZE), or touch the connection's memory
 * alone (`shrink_memory`).
 */
export const CLUSTER_PRAGMAS: readonly string[] = [
  "application_id",
  "collation_list",
  "compile_options",
  "data_version",
  "database_list",
  "foreign_key_check",
  "foreign_key_list",
  "freelist_count",
  "function_list",
  "index_info",
  "index_list",
  "index_xinfo",
  "integrity_check",
  "module_list",
  "optimize",
  "page_count",
  "pragma_list",
  "quick_check",
  "shrink_memory",
  "table_info",
  "table_list",
  "table_xinfo",
  "user_version",
];

/**
 * PRAGMAs that touch the WAL, which dqlite 1.11 owns (it replicates WAL
 * frames and checkpoints itself): refused in cluster mode in every form
 * (`wal_checkpoint`: the leader aborts at the next write), or when setting
 * (`journal_mode`, `wal_autocheckpoint`, `locking_mode`), even with
 * `allowUnsafePragmas`.
 */
export const WAL_PRAGMAS: readonly string[] = [
  "wal_checkpoint",
  "journal_mode",
  "wal_autocheckpoint",
  "locking_mode",
];

/**
 * Refuses a PRAGMA that cluster mode cannot run: one of {@link WAL_PRAGMAS}
 * (always, `wal_checkpoint` even read), or, unless `allowUnsafe`, setting
 * one of the shared connections or of durability, and any PRAGMA outside
 * {@link CLUSTER_PRAGMAS} and those lists (`incremental_vacuum`,
 * `parser_trace`, unknown names).
 */
function checkPragma(tokens: Token[], allowUnsafe: boolean): void {
  // PRAGMA [schema.]name [= value | (value)]
  let i = 1;
  if (tokens[i + 1]?.text === ".") i += 2;
  const name = pragmaName(tokens[i]);
  const next = tokens[i + 1];
  const sets = next?.kind === "punct" && (next.text === "=" || next.text === "(");
  if (CLUSTER_PRAGMAS.includes(name)) return;
  if (name === "wal_checkpoint" || (sets && WAL_PRAGMAS.includes(name))) {
    throw forbidden(
      `Cannot run PRAGMA ${name}${sets ? " with a value" : ""} in cluster mode: dqlite owns the ` +
        "WAL (it replicates its frames and checkpoints itself), and this would abort the leader",
    );
  }
  if (allowUnsafe) return;
  const known = UNSAFE_PRAGMAS.includes(name) || CONNECTION_PRAGMAS.includes(name);
  if (known && !sets) return; // reading a setting
  if (known) {
    throw forbidden(
      `Cannot set PRAGMA ${name} in cluster mode: it changes the leader's connections, which ` +
        "clients share, or its durability (--allow-unsafe-pragmas permits it)",
    );
  }
  throw forbidden(
    `Cannot run PRAGMA ${name || "(no name)"} in cluster mode: it is not among the PRAGMAs known ` +
      "to be safe on a dqlite node (schema and file introspection, user_version, " +
      "application_id, optimize; --allow-unsafe-pragmas permits it)",
  );
}

/** A PRAGMA's name, lower case (the lexer has dequoted `"name"`, `'name'`, `[name]`). */
function pragmaName(t: Token | undefined): string {
  return t?.text.toLowerCase() ?? "";
}

const CONSTRAINT_WORDS = new Set([
  "constraint",
  "primary",
  "not",
  "null",
  "unique",
  "check",
  "default",
  "collate",
  "references",
  "generated",
  "as",
]);

const TABLE_CONSTRAINTS = new Set(["constraint", "primary", "unique", "check", "foreign"]);

/** Refuses a hazardous declared type in CREATE TABLE (...) or ALTER TABLE ... ADD [COLUMN]. */
function checkColumnTypes(tokens: Token[]): void {
  const words = tokens.filter((t) => t.kind === "word").map((t) => t.text);
  if (words[0] === "alter") {
    const add = tokens.findIndex((t) => t.kind === "word" && t.text === "add");
    if (add === -1) return;
    let at = add + 1;
    if (tokens[at]?.kind === "word" && tokens[at].text === "column") at++;
    checkColumnDef(tokens, at);
    return;
  }
  const table = tokens.findIndex((t) => t.kind === "word" && t.text === "table");
  if (table === -1 || !words.slice(1, 3).includes("table")) return;
  const open = tokens.findIndex((t, i) => i > table && t.kind === "punct" && t.text === "(");
  if (open === -1) return;
  const as = tokens.findIndex((t, i) =>
    i > table && i < open && t.kind === "word" && t.text === "as"
  );
  if (as !== -1) return; // CREATE TABLE ... AS SELECT: types come from expressions
  let depth = 0;
  let defStart = open + 1;
  for (let i = open; i < tokens.length; i++) {
    const t = tokens[i];
    if (t.kind !== "punct") continue;
    if (t.text === "(") depth++;
    else if (t.text === ")") depth--;
    if ((t.text === "," && depth === 1) || depth === 0) {
      checkColumnDef(tokens, defStart);
      defStart = i + 1;
      if (depth === 0) return;
    }
  }
}

/**
 * Checks one column definition starting at `at`: its name, then the type
 * name, compared as dqlite 1.11 compares `sqlite3_column_decltype()` (see
 * {@link declaredType}).
 */
function checkColumnDef(tokens: Token[], at: number): void {
  const name = tokens[at];
  if (name === undefined || (name.kind === "word" && TABLE_CONSTRAINTS.has(name.text))) return;
  const declared = declaredType(tokens, at + 1)?.toUpperCase();
  if (declared !== undefined && HAZARDOUS_TYPES.includes(declared)) {
    const column = name.text;
    throw forbidden(
      `Cannot declare column "${column}" as ${declared} in cluster mode: dqlite 1.11 aborts the ` +
        `node when such a column holds a value of another type; declare it INTEGER, TEXT or NUMERIC`,
    );
  }
}

/**
 * The declared type SQLite stores for a column whose type name starts at
 * token `at` (null when it has none), as far as it can be one of
 * {@link HAZARDOUS_TYPES}. SQLite's type name is one or more names or
 * string literals (`typename ::= ids`, `ids ::= ID|STRING`), then maybe
 * `(n)` or `(n, m)`; it keeps the text as written from the first to the
 * last token, then dequotes it when it starts with a quote, up to that
 * quote's end: `'DATETIME'`, `"DATE" "TIME"`, `[DATE](10)` are all declared
 * `DATETIME` or `DATE`, while `DATE(10)` and `DATE TIME` are kept whole.
 */
function declaredType(tokens: Token[], at: number): string | null {
  let i = at;
  for (; i < tokens.length; i++) {
    const t = tokens[i];
    const isName = t.kind === "name" || t.kind === "string" ||
      (t.kind === "word" && !CONSTRAINT_WORDS.has(t.text));
    if (!isName) break;
  }
  const n = i - at;
  if (n === 0) return null;
  const first = tokens[at];
  // Quoted: SQLite dequotes up to the first token's closing quote, dropping the rest.
  if (first.kind === "name" || first.kind === "string") return first.text;
  // Unquoted: the text as written; only a single word without "(n)" can be hazardous.
  if (n > 1 || tokens[i]?.text === "(") return null;
  return first.text;
}

function forbidden(message: string): SqliteError {
  return new SqliteError(ErrorCode.Forbidden, message);
}

/** PRAGMAs that only report, even when given an argument in parentheses (as on a single node). */
const READING_PRAGMAS = new Set(QUERY_PRAGMAS);

/** Words that begin a transaction-control statement. */
const TX_CONTROL = new Set(["begin", "commit", "end", "rollback", "savepoint", "release"]);

/**
 * True when the first statement of `sql` may write: neither a read
 * (`SELECT`, `VALUES`, `EXPLAIN`, a PRAGMA that reports) nor transaction
 * control. A PRAGMA that sets a value (`= v`, or `(v)` unless it is one of
 * those that report on an object) counts as a write, as does one that acts
 * without a value (`optimize`, which may run ANALYZE; `incremental_vacuum`),
 * plainly or read as a table (`pragma_optimize`). Unsure cases count as
 * writes: the caller ends a transaction on them.
 *
 * @example
 * ```ts
 * import { mayWrite } from "./_sql_shape.ts";
 * if (!mayWrite("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x")) throw new Error("insert");
 * if (mayWrite("PRAGMA table_info(t)") || !mayWrite("PRAGMA user_version = 1")) {
 *   throw new Error("pragma");
 * }
 * if (mayWrite("ROLLBACK TO sp") || mayWrite("SELECT 1")) throw new Error("no write");
 * if (!mayWrite("PRAGMA optimize") || !mayWrite("SELECT * FROM pragma_optimize")) {
 *   throw new Error("optimize may run ANALYZE");
 * }
 * ```
 */
export function mayWrite(sql: string): boolean {
  const [first] = splitStatements(sql);
  if (first === undefined) return false;
  const words = first.filter((t) => t.kind === "word");
  if (words.length > 0 && TX_CONTROL.has(words[0].text)) return false;
  if (verbOf(sql) !== "read") return true;
  // A PRAGMA that acts, read as a table (`SELECT * FROM pragma_optimize`): it runs as it is read.
  const names = first.filter((t) => t.kind === "word" || t.kind === "name");
  if (names.some((t) => ACTING_TABLES.has(t.text.toLowerCase()))) return true;
  if (words[0]?.text !== "pragma") return false;
  const setter = first.find((t) => t.kind === "punct" && (t.text === "=" || t.text === "("));
  if (setter === undefined) {
    // `PRAGMA [schema.]name`: one that acts may write without a value (optimize's ANALYZE).
    return WRITING_PRAGMAS.has(pragmaName(names.at(-1)));
  }
  if (setter.text === "=") return true;
  // `PRAGMA [schema.]name(arg)`: the name is the last word before the parenthesis.
  const name = words.filter((w) => w.at < setter.at).at(-1)?.text ?? "";
  return !READING_PRAGMAS.has(name);
}

/**
 * PRAGMAs that may write the database without a value (see
 * `ACTING_PRAGMAS` in `pragma_use.ts`; `shrink_memory` frees memory alone).
 */
const WRITING_PRAGMAS = new Set(ACTING_PRAGMAS.filter((name) => name !== "shrink_memory"));

/** Their table-valued names (`pragma_optimize`), lower case. */
const ACTING_TABLES = new Set([...WRITING_PRAGMAS].map((name) => `pragma_${name}`));

/**
 * The read `sql` (one `SELECT`, `VALUES` or `WITH ... SELECT`) made to
 * return no rows, keeping its result columns, named as SQLite names them
 * (duplicates kept: `SELECT 1 AS x, 2 AS x` stays `x`, `x`, where a
 * subquery, `SELECT * FROM (sql) LIMIT 0`, would give `x`, `x:1`), and its
 * parameters, numbered as before: `LIMIT 0` appended, or, when it has a
 * LIMIT clause, its row count made `0 AND (count)` (0, whatever the count
 * is bound to). A statement that starts with `VALUES`, which takes no LIMIT,
 * is read as a subquery: its columns, `column1`, `column2`..., are unique.
 *
 * @example
 * ```ts
 * import { withoutRows } from "./_sql_shape.ts";
 * if (withoutRows("SELECT 1 AS x, 2 AS x; -- two") !== "SELECT 1 AS x, 2 AS x\nLIMIT 0") {
 *   throw new Error("appended");
 * }
 * if (withoutRows("SELECT x FROM t LIMIT ? OFFSET ?") !== "SELECT x FROM t LIMIT 0 AND (?) OFFSET ?") {
 *   throw new Error("rewritten");
 * }
 * ```
 */
export function withoutRows(sql: string): string {
  const [tokens] = splitStatements(sql);
  if (tokens === undefined) return sql;
  const end = tokens[tokens.length - 1].end;
  if (isWord(tokens[0], "values")) return `SELECT * FROM (${sql.slice(0, end)}\n) LIMIT 0`;
  // The statement's own LIMIT: the last at depth 0 (those of subqueries and CTEs are in parentheses).
  let depth = 0;
  let limit = -1;
  for (let i = 0; i < tokens.length; i++) {
    depth += nesting(tokens[i]);
    if (depth === 0 && isWord(tokens[i], "limit")) limit = i;
  }
  if (limit === -1) return `${sql.slice(0, end)}\nLIMIT 0`;
  // LIMIT count [OFFSET skip] | LIMIT skip, count
  let from = limit + 1;
  let to = tokens.length;
  depth = 0;
  for (let i = limit + 1; i < tokens.length; i++) {
    const t = tokens[i];
    depth += nesting(t);
    if (depth !== 0) continue;
    if (isWord(t, "offset")) {
      to = i;
      break;
    }
    if (t.kind === "punct" && t.text === ",") {
      from = i + 1;
      break;
    }
  }
  if (from >= to) return `${sql.slice(0, end)}\nLIMIT 0`; // malformed: SQLite says how
  const a = tokens[from].at;
  const b = tokens[to - 1].end;
  return `${sql.slice(0, a)}0 AND (${sql.slice(a, b)})${sql.slice(b, end)}`;
}

/** +1 for an opening parenthesis, -1 for a closing one, else 0. */
function nesting(t: Token): number {
  if (t.kind !== "punct") return 0;
  return t.text === "(" ? 1 : t.text === ")" ? -1 : 0;
}

function isWord(t: Token, word: string): boolean {
  return t.kind === "word" && t.text === word;
}
