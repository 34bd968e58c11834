/**
 * `netsqlite shell`: an SQL shell in the spirit of the sqlite3 shell, talking
 * to a running netsqlite server.
 *
 * Interactive on a terminal (prompt, multi-line statements ending at `;`,
 * history, dot commands, errors shown and the session going on); otherwise
 * it runs `-c SQL` or the SQL on standard input and stops with exit status 1
 * at the first error.
 *
 * @module
 */

import { type Client, connect, type ConnectOptions, type Statement } from "../client.ts";
import { readsOnly } from "../client/connection.ts";
import { leadingVerb, resultShape } from "../protocol/sql_lexer.ts";
import { isBrokenPipe } from "./broken_pipe.ts";
import { type FlagSpec, parseFlags } from "./args.ts";
import { VERSION } from "../server.ts";
import {
  CONNECT_FLAGS,
  CONNECT_FLAGS_HELP,
  type ConnectFlagValues,
  connectOptionsFromFlags,
  withFlagHints,
} from "./connect_flags.ts";
import { formatResult, type Mode, MODES, RowFormatter, type StreamMode } from "./format.ts";
import { defaultHistoryFile, History } from "./history.ts";
import { LineEditor } from "./line_editor.ts";
import { SqlSplitter } from "./sql_split.ts";
import { escapedControls, shownText } from "./shown_text.ts";

/** Help text of `netsqlite shell`. */
export const SHELL_HELP = `netsqlite shell: run SQL against a running netsqlite server

Usage: netsqlite shell [options]

Options:
${CONNECT_FLAGS_HELP}
  -c, --command SQL run SQL (statements and dot commands) and exit; several -c
                    run in order, stopping at the first error
  --mode MODE       output mode: table (default), csv, json, line
  --no-headers      no header row in table and csv modes
  -h, --help        show this help

Without -c, SQL is read from standard input: interactively on a terminal,
else as a script. Scripts stop at the first error with exit status 1.
Enter ".help" in the shell for its dot commands.
`;

const DOT_HELP = `.headers on|off          show column names in table and csv modes
.help                    show this message
.indexes [TABLE]         list indexes (of tables matching the LIKE pattern TABLE)
.mode [MODE]             show or set the output mode: table, csv, json, line
.quit                    exit (also .exit [CODE], or Ctrl-D)
.read FILE               run the SQL and dot commands in FILE
.schema [TABLE]          show CREATE statements (of tables matching the LIKE pattern;
                         a pattern with a dot matches main.NAME or temp.NAME: temp.%)
.tables [PATTERN]        list tables and views, TEMP ones as temp.NAME (matching the LIKE pattern)
.timer on|off            show how long each statement took
`;

/** Each dot command's usage, and how many arguments it takes at least and at most. */
const DOT_USAGE: Readonly<
  Record<string, readonly [usage: string, min: number, max: number]>
> = {
  // sqlite3 ignores words after .quit, and .exit takes an exit status.
  quit: [".quit", 0, Number.POSITIVE_INFINITY],
  exit: [".exit [CODE]", 0, 1],
  help: [".help", 0, 0],
  timer: [".timer on|off", 1, 1],
  headers: [".headers on|off", 1, 1],
  header: [".header on|off", 1, 1],
  mode: [".mode [MODE]", 0, 1],
  tables: [".tables [PATTERN]", 0, 1],
  indexes: [".indexes [TABLE]", 0, 1],
  indices: [".indices [TABLE]", 0, 1],
  schema: [".schema [TABLE]", 0, 1],
  read: [".read FILE", 1, 1],
};

const PROMPT = "netsqlite> ";
const CONTINUE = "   ...> ";
const MAX_READ_DEPTH = 16;
/** Streamed rows are written once this much text is pending (or 100 ms after the last write). */
const STREAM_FLUSH_BYTES = 64 * 1024;

/** Where shell output goes: standard output and standard error by default. */
export interface ShellIO {
  /** Writes result text. */
  out(text: string): Promise<void>;
  /** Writes an error or notice. */
  err(text: string): Promise<void>;
}

/** The standard streams. */
export const STD_IO: ShellIO = {
  out: (text) => writeAll(Deno.stdout, text).catch(quietOnBrokenPipe),
  err: (text) => writeAll(Deno.stderr, text).catch(droppedOnBrokenPipe),
};

/**
 * The reader of standard output went away (`netsqlite shell ... | head`):
 * end at once and quietly, with status 0, as the reader chose to stop.
 */
function quietOnBrokenPipe(err: unknown): never {
  if (isBrokenPipe(err)) Deno.exit(0);
  throw err;
}

/**
 * The reader of standard error went away (`netsqlite shell 2>&1 >out | head -1`): the message is
 * dropped and the shell goes on as it would have after writing it (an interactive session carries
 * on, a script still stops at its first error with status 1), as sqlite3 ignores a failed write
 * of an error. Before, the failed write was thrown from where the error was being reported, and
 * ended the shell.
 */
function droppedOnBrokenPipe(err: unknown): void {
  if (!isBrokenPipe(err)) throw err;
}

const encoder = new TextEncoder();

async function writeAll(
  w: { write(p: Uint8Array): Promise<number> },
  text: string,
): Promise<void> {
  const bytes = encoder.encode(text);
  let off = 0;
  while (off < bytes.length) off += await w.write(bytes.subarray(off));
}

/** The statements that write rows (with `RETURNING`, they return them). */
const WRITES: ReadonlySet<string> = new Set(["insert", "update", "delete", "replace"]);

/** Stops a script: `.quit` was read. */
const QUIT = Symbol("quit");

/** A failure inside a script, already reported. */
class Reported extends Error {}

/** Runs statements and dot commands on one connection, printing results. */
export class Shell {
  readonly #client: Client;
  readonly #io: ShellIO;
  #mode: Mode;
  #headers: boolean;
  #timer = false;
  /** The status the shell ends with once `.exit CODE` was read (0 otherwise). */
  exitCode = 0;
  #depth = 0;

  /**
   * @param client A connected client.
   * @param io Output streams.
   * @param mode Initial output mode.
   * @param headers Initial header choice.
   */
  constructor(client: Client, io: ShellIO, mode: Mode = "table", headers = true) {
    this.#client = client;
    this.#io = io;
    this.#mode = mode;
    this.#headers = headers;
  }

  /** The current output mode. */
  get mode(): Mode {
    return this.#mode;
  }

  /**
   * Runs one statement and prints its rows.
   *
   * @throws the client's error (a `SqliteError` or `ConnectionError`).
   */
  async execute(sql: string): Promise<void> {
    const started = performance.now();
    // One request (run) for a statement that surely has no result columns; else prepare first,
    // for the column names, then read the rows (and finalize, not awaited).
    // A statement that surely has no rows (most of a script) costs one request, not a
    // prepare, a run and a finalize: the output is the same, nothing.
    if (resultShape(sql) === "changes") await this.#client.run(sql);
    else await this.#prepared(sql);
    if (this.#timer) {
      await this.#io.out(`Run Time: real ${((performance.now() - started) / 1000).toFixed(3)}\n`);
    }
  }

  /** Runs a statement through a prepared statement, whose columns say how to print its rows. */
  async #prepared(sql: string): Promise<void> {
    const stmt = await this.#client.prepare(sql);
    try {
      if (stmt.columns.length === 0) await stmt.run();
      else if (this.#mode !== "table" && readsOnly(sql)) await this.#stream(stmt, this.#mode);
      else {
        const rows = await stmt.values().catch((err) => {
          throw this.#shellHint(err, sql);
        });
        const text = formatResult(this.#mode, { columns: stmt.columns, rows }, {
          headers: this.#headers,
        });
        if (text !== "") await this.#io.out(text);
      }
    } finally {
      // Not awaited: requests on one connection run in order, so this saves a round trip.
      stmt.finalize().catch(() => {});
    }
  }

  /**
   * Prints a query's rows as they come, through a server cursor (`iterate()`), so that an export
   * in csv, json or line mode is not bounded by `--max-result-bytes`. Output is written in pieces
   * of up to {@link STREAM_FLUSH_BYTES}, or sooner when rows come slowly. A failure part way is
   * thrown after the rows before it are written (and an open json line ended).
   */
  async #stream(stmt: Statement, mode: StreamMode): Promise<void> {
    const rows = stmt.raw().iterate<unknown[]>();
    let f: RowFormatter | null = null;
    let pending = "";
    let flushed = performance.now();
    try {
      for await (const row of rows) {
        // The columns as the cursor opened (a `SELECT *` may have gained one since prepare).
        if (f === null) {
          f = new RowFormatter(mode, stmt.columns, { headers: this.#headers });
          pending = f.start();
        }
        pending += f.row(row);
        if (pending.length >= STREAM_FLUSH_BYTES || performance.now() - flushed > 100) {
          await this.#io.out(pending);
          pending = "";
          flushed = performance.now();
        }
      }
    } catch (err) {
      if (f !== null) pending += f.abandon();
      if (pending !== "") await this.#io.out(pending);
      throw this.#shellHint(err, null);
    }
    if (f === null) {
      f = new RowFormatter(mode, stmt.columns, { headers: this.#headers });
      pending = f.start();
    }
    pending += f.end();
    if (pending !== "") await this.#io.out(pending);
  }

  /**
   * `RESULT_TOO_LARGE` says to use `iterate()`, which a shell user cannot call: the same error
   * with what the shell user can do instead. A query's rows stream in the csv, json and line
   * modes; the rows of a statement that may write (`UPDATE ... RETURNING`) are always buffered,
   * and `LIMIT` on an `UPDATE` or `DELETE` is refused by SQLite's usual builds.
   *
   * @param err The error.
   * @param sql The statement when it was buffered; `null` when it streamed (a query).
   */
  #shellHint(err: unknown, sql: string | null): unknown {
    const e = err as { code?: unknown; message?: unknown };
    if (e?.code !== "RESULT_TOO_LARGE" || typeof e.message !== "string") return err;
    const limit = e.message.includes("maxFrameSize") ? "--max-frame-size" : "--max-result-bytes";
    const raise = `raise the server's ${limit}`;
    let hint: string;
    if (sql !== null && !readsOnly(sql)) {
      const { first, main } = leadingVerb(sql);
      hint = WRITES.has(first === "with" ? main : first)
        ? "a write's RETURNING rows are not streamed, in any mode: change fewer rows at a " +
          `time (narrow its WHERE), return fewer columns, or ${raise}`
        : `the rows of a statement that may write are not streamed, in any mode: ${raise}`;
    } else if (this.#mode === "table") {
      hint = `use .mode csv, json or line (--mode) to stream the rows, add LIMIT, or ${raise}`;
    } else {
      hint = `add LIMIT, or ${raise}`;
    }
    const message = e.message.replace(
      /: use iterate\(\) (?:to stream|for) large results$/,
      `: ${hint}`,
    );
    if (message === e.message) return err;
    return Object.assign(new Error(message, { cause: err }), { code: e.code });
  }

  /**
   * Runs a dot command.
   *
   * @param line The line, starting with `.`.
   * @returns `QUIT` for `.quit`, else nothing.
   * @throws {Error} with the message to show when the command fails.
   */
  async dot(line: string): Promise<typeof QUIT | void> {
    const [name, ...args] = splitArgs(line.trim().slice(1));
    const usage = name !== undefined && Object.hasOwn(DOT_USAGE, name) ? DOT_USAGE[name] : null;
    if (usage !== null && args.length < usage[1]) {
      // `Missing ON|OFF: usage ".headers on|off"`, `Missing FILE: usage ".read FILE"`.
      const missing = usage[0].split(" ")[args.length + 1].toUpperCase();
      throw new Error(`Missing ${missing}: usage "${usage[0]}"`);
    }
    if (usage !== null && args.length > usage[2]) {
      // As sqlite3 does, rather than run with the first argument and drop the others.
      throw new Error(
        `Unexpected argument "${args[usage[2]]}" of ".${name}": usage "${usage[0]}"` +
          (name === "read" ? " (quote a FILE with blanks: .read 'my file.sql')" : ""),
      );
    }
    // In any case (`.headers ON`), as sqlite3 reads them.
    const onOff = (value: string | undefined): boolean => {
      const word = value?.toLowerCase();
      if (word === "on" || word === "1" || word === "yes") return true;
      if (word === "off" || word === "0" || word === "no") return false;
      throw new Error(`Invalid argument "${value ?? ""}" of ".${name}": expected on or off`);
    };
    switch (name) {
      case "exit":
        if (args[0] !== undefined) {
          const code = Number(args[0]);
          if (!/^\d+$/.test(args[0]) || code > 255) {
            throw new Error(`Invalid argument "${args[0]}" of ".exit": expected a status 0 to 255`);
          }
          this.exitCode = code;
        }
        return QUIT;
      case "quit":
        return QUIT;
      case "help":
        await this.#io.out(DOT_HELP);
        return;
      case "timer":
        this.#timer = onOff(args[0]);
        return;
      case "headers":
      case "header":
        this.#headers = onOff(args[0]);
        return;
      case "mode":
        if (args[0] === undefined) {
          await this.#io.out(`current output mode: ${this.#mode}\n`);
        } else if ((MODES as readonly string[]).includes(args[0])) {
          this.#mode = args[0] as Mode;
        } else {
          throw new Error(`Unknown mode "${args[0]}": expected one of ${MODES.join(", ")}`);
        }
        return;
      case "tables":
        return await this.#listNames("tables", args[0]);
      case "indexes":
      case "indices":
        return await this.#listNames("indexes", args[0]);
      case "schema":
        return await this.#schema(args[0]);
      case "read":
        return await this.read(args[0]);
      default:
        throw new Error(`Unknown command ".${name ?? ""}": enter ".help" for the dot commands`);
    }
  }

  /**
   * Runs the statements and dot commands of a file, stopping at the first error.
   *
   * @param path The file.
   * @returns `QUIT` when the file said `.quit`.
   * @throws {Error} when a statement or command failed (already reported).
   */
  async read(path: string): Promise<typeof QUIT | void> {
    if (this.#depth >= MAX_READ_DEPTH) {
      throw new Error(`Cannot read "${path}": .read nested more than ${MAX_READ_DEPTH} deep`);
    }
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(path);
    } catch (err) {
      throw new Error(`Cannot read "${path}": ${(err as Error).message}`);
    }
    this.#depth++;
    try {
      return await this.runScript(utf8Text([bytes]), path);
    } finally {
      this.#depth--;
    }
  }

  /**
   * Runs a script: statements (run as each completes) and dot commands (on
   * lines of their own between statements). Stops at the first error, which
   * it reports as `Error: near line N: CODE: message`.
   *
   * @param chunks The script's text, in pieces of any size.
   * @param source Where the script comes from; `null` (for `-c`) leaves line numbers out of errors.
   * @returns `QUIT` when the script said `.quit`.
   * @throws {Error} when a statement or command failed (already reported).
   */
  async runScript(
    chunks: AsyncIterable<string>,
    source: string | null,
  ): Promise<typeof QUIT | void> {
    const splitter = new SqlSplitter();
    let lineNo = 0;
    let startLine = 1;
    const fail = async (err: unknown, line: number): Promise<never> => {
      if (!(err instanceof Reported)) {
        await this.#io.err(errorText(err, source === null ? null : line));
      }
      throw new Reported("failed", { cause: err });
    };
    // An error reading the script (text that is not UTF-8) is reported at the line it stopped.
    const read = async function* (): AsyncGenerator<string> {
      try {
        yield* lines(chunks);
      } catch (err) {
        await fail(err, lineNo + 1);
      }
    };
    for await (const line of read()) {
      lineNo++;
      if (splitter.isEmpty) startLine = lineNo;
      if (splitter.isEmpty && isCommentLine(line)) continue;
      if (splitter.isEmpty && line.trimStart().startsWith(".")) {
        try {
          if (await this.dot(line) === QUIT) return QUIT;
        } catch (err) {
          await fail(err, lineNo);
        }
        continue;
      }
      const done = splitter.push(line);
      for (let i = 0; i < done.length; i++) {
        try {
          await this.execute(done[i]);
        } catch (err) {
          await fail(err, i === 0 ? startLine : lineNo);
        }
      }
      if (done.length > 0) startLine = lineNo;
    }
    const rest = splitter.flush();
    if (rest !== null) {
      try {
        await this.execute(rest);
      } catch (err) {
        await fail(err, startLine);
      }
    }
  }

  /**
   * The interactive loop: reads with `editor` until `.quit` or end of input;
   * errors are shown and the session goes on.
   *
   * @param editor The terminal line editor.
   * @param history Where entered lines go.
   */
  async interact(editor: LineEditor, history: History): Promise<void> {
    const splitter = new SqlSplitter();
    while (true) {
      const got = await editor.readLine(splitter.isEmpty ? PROMPT : CONTINUE);
      if (got === "interrupt") {
        splitter.reset();
        continue;
      }
      if (got === "eof") {
        const rest = splitter.flush();
        if (rest !== null) await this.#interactively(() => this.execute(rest));
        return;
      }
      const line = got.line;
      history.add(line);
      if (splitter.isEmpty && isCommentLine(line)) continue;
      if (splitter.isEmpty && line.trimStart().startsWith(".")) {
        let quit = false;
        await this.#interactively(async () => {
          quit = await this.dot(line) === QUIT;
        });
        if (quit) return;
        continue;
      }
      for (const sql of splitter.push(line + "\n")) {
        await this.#interactively(() => this.execute(sql));
      }
    }
  }

  /** Runs `fn`; shows its error, if any, and carries on. */
  async #interactively(fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      if (!(err instanceof Reported)) await this.#io.err(errorText(err, null));
    }
  }

  /**
   * `.tables` and `.indexes`: names from the schema, in columns; TEMP objects too, as `temp.NAME`
   * (as the sqlite3 shell lists them), sorted with the others. The server keeps TEMP objects on
   * its writer and sends every statement there while one exists, so this query sees them. Any
   * client names its tables: a name with a control character is shown quoted and escaped
   * ({@link shownText}: `"a\u001b[2Jb"`), so that it sends no command to the terminal.
   */
  async #listNames(kind: "tables" | "indexes", pattern: string | undefined): Promise<void> {
    const params = pattern === undefined ? [] : [pattern];
    const where = kind === "tables"
      ? "type IN ('table', 'view') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'" +
        (pattern === undefined ? "" : " AND name LIKE ?1")
      : "type = 'index'" + (pattern === undefined ? "" : " AND tbl_name LIKE ?1");
    const sql = `SELECT name, '', name FROM sqlite_schema WHERE ${where} UNION ALL ` +
      `SELECT 'temp.' || name, 'temp.', name FROM sqlite_temp_schema WHERE ${where} ORDER BY 1`;
    const rows = await this.#client.values<[string, string, string]>(sql, params);
    await this.#io.out(columnize(rows.map(([, schema, name]) => schema + shownText(name))));
  }

  /**
   * `.schema`: the CREATE statements in creation order (sqlite_schema's rowid order, as sqlite3
   * prints them), so a trigger or view comes after the tables it needs and the output replays.
   * SQLite's own objects (`sqlite_sequence`, `sqlite_stat1`, ...) are left out: SQLite makes them
   * itself (AUTOINCREMENT, ANALYZE) and refuses a CREATE of them, which would stop a replay. So
   * are the shadow tables of virtual tables (an fts5 table's `x_data`, ...), which the virtual
   * table's CREATE makes again (newer SQLite refuses even `CREATE TABLE IF NOT EXISTS` of one,
   * `object name reserved for internal use`): a table `PRAGMA table_list` types `shadow` whose
   * CREATE has the module-written form, its name quoted (`CREATE TABLE 'x_data'(`, as sqlite3's
   * shell tells them). A user's table that only has a shadow table's name (an fts5 table's
   * external content in `x_content`) is created with a bare name, and printed.
   * TEMP objects follow, in their creation order, their names qualified with `temp.` as the
   * sqlite3 shell prints them ({@link tempCreate}), since SQLite keeps their CREATE without TEMP.
   * A pattern with a dot matches `main.NAME` or `temp.NAME` (`.schema temp.%`), as in sqlite3.
   */
  async #schema(pattern: string | undefined): Promise<void> {
    let rows: SchemaRow[];
    try {
      rows = await this.#schemaRows(pattern, true);
    } catch (err) {
      // SQLite before 3.37 has no PRAGMA table_list: its shadow tables are printed as they are.
      if (!/no such table: pragma_table_list/.test(String((err as Error)?.message))) throw err;
      rows = await this.#schemaRows(pattern, false);
    }
    const shown = rows.filter(([sql, , shadow]) => !(shadow && MODULE_MADE.test(sql)));
    await this.#io.out(shown.map(([sql, temp]) => `${temp ? tempCreate(sql) : sql};\n`).join(""));
  }

  /** `.schema`'s rows (`shadows`: shadow tables told apart, else none is). */
  async #schemaRows(pattern: string | undefined, shadows: boolean): Promise<SchemaRow[]> {
    const columns = (schema: "main" | "temp"): string =>
      shadows
        ? `name IN (SELECT name FROM pragma_table_list WHERE schema = '${schema}' AND ` +
          "type = 'shadow')"
        : "0";
    const where = (schema: "main" | "temp"): string => {
      const qualified = pattern?.includes(".") ? `'${schema}.' || ` : "";
      return "sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'" +
        (pattern === undefined
          ? ""
          : ` AND (${qualified}name LIKE ?1 OR ${qualified}tbl_name LIKE ?1)`);
    };
    return await this.#client.values<SchemaRow>(
      `SELECT sql, 0 AS temp, ${columns("main")}, rowid FROM sqlite_schema ` +
        `WHERE ${where("main")} UNION ALL ` +
        `SELECT sql, 1, ${columns("temp")}, rowid FROM sqlite_temp_schema ` +
        `WHERE ${where("temp")} ORDER BY 2, 4`,
      pattern === undefined ? [] : [pattern],
    );
  }
}

/** A row of `.schema`'s query: the CREATE, 1 for TEMP, 1 for a shadow table, its rowid. */
type SchemaRow = [sql: string, temp: number, shadow: number, rowid: number];

/** The CREATE of a table a virtual table's module made: its name quoted, as modules write it. */
const MODULE_MADE = /^CREATE TABLE ['"]/;

/**
 * The CREATE statement of a TEMP object as the sqlite3 shell's `.schema` prints it: its name
 * qualified with `temp.` (`CREATE TABLE temp.t(x)`, `CREATE INDEX temp.i ON t(x)`), so that it
 * replays as a TEMP object (there is no `CREATE TEMP INDEX`). SQLite stores it as
 * `CREATE TABLE|VIEW|INDEX|UNIQUE INDEX|TRIGGER|VIRTUAL TABLE ` and the name as written; a text
 * of another shape is left as it is.
 */
function tempCreate(sql: string): string {
  return sql.replace(
    /^(CREATE (?:TABLE|VIEW|INDEX|UNIQUE INDEX|TRIGGER|VIRTUAL TABLE) )/,
    "$1temp.",
  );
}

/** Names in columns, filled top to bottom, as the sqlite3 shell lists tables. */
function columnize(names: string[]): string {
  if (names.length === 0) return "";
  const width = Math.max(...names.map((n) => n.length)) + 2;
  const perLine = Math.max(1, Math.floor(80 / width));
  const rows = Math.ceil(names.length / perLine);
  let out = "";
  for (let r = 0; r < rows; r++) {
    const cells: string[] = [];
    for (let c = r; c < names.length; c += rows) cells.push(names[c].padEnd(width));
    out += cells.join("").trimEnd() + "\n";
  }
  return out;
}

/**
 * Whether `line` is a shell comment: `#` in its first column, read only where a statement or dot
 * command may start (nothing pending), and skipped there, as the sqlite3 shell skips it. Inside a
 * statement, or after blanks, `#` is SQL (which SQLite refuses: `unrecognized token: "#"`).
 */
function isCommentLine(line: string): boolean {
  return line.startsWith("#");
}

/** Splits a dot command's arguments at blanks; '...' and "..." group. */
function splitArgs(text: string): string[] {
  const out: string[] = [];
  const re = /'([^']*)'|"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (const m of text.matchAll(re)) out.push(m[1] ?? m[2]?.replace(/\\(.)/g, "$1") ?? m[3]);
  return out;
}

/**
 * How the shell shows an error: `Error: [near line N: ]CODE: message`, the
 * client library's hints naming the CLI's flags.
 */
export function errorText(err: unknown, line: number | null): string {
  const e = err as { code?: unknown; message?: unknown };
  const where = line === null ? "" : `near line ${line}: `;
  const code = typeof e?.code === "string" ? `${e.code}: ` : "";
  // The message may name a table or value as a client wrote it: control characters are escaped.
  const message = escapedControls(withFlagHints(err instanceof Error ? err.message : String(err)));
  return `Error: ${where}${code}${message}\n`;
}

async function* oneChunk(text: string): AsyncGenerator<string> {
  yield text;
}

/**
 * Decodes a script's bytes as UTF-8, refusing bytes that are not (a lenient
 * decoder would store U+FFFD in their place). It decodes a line at a time,
 * so that the lines before a bad one are run and the error names its line.
 * A leading byte order mark is dropped.
 *
 * @throws {Error} at the first line that is not UTF-8.
 */
export async function* utf8Text(
  bytes: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
): AsyncGenerator<string> {
  const decoder = new TextDecoder("utf-8", { fatal: true });
  const decode = (piece: Uint8Array, stream: boolean): string => {
    try {
      return decoder.decode(piece, { stream });
    } catch {
      throw new Error(
        "Cannot read the script: it is not valid UTF-8 (convert it first, e.g. " +
          "iconv -f latin1 -t utf-8)",
      );
    }
  };
  for await (const chunk of bytes) {
    for (let at = 0; at < chunk.length;) {
      const nl = chunk.indexOf(0x0a, at);
      const end = nl === -1 ? chunk.length : nl + 1;
      yield decode(chunk.subarray(at, end), true);
      at = end;
    }
  }
  const tail = decode(new Uint8Array(0), false);
  if (tail !== "") yield tail;
}

/** Lines of a stream of text, each with its `\n` (the last may have none). */
async function* lines(chunks: AsyncIterable<string>): AsyncGenerator<string> {
  // Pieces of the line not ended yet: joined once, so a long line costs its length, not its square.
  let pending: string[] = [];
  for await (const chunk of chunks) {
    let start = 0;
    for (let nl; (nl = chunk.indexOf("\n", start)) !== -1; start = nl + 1) {
      pending.push(chunk.slice(start, nl + 1));
      yield pending.length === 1 ? pending[0] : pending.join("");
      pending = [];
    }
    if (start < chunk.length) pending.push(chunk.slice(start));
  }
  if (pending.length > 0) yield pending.join("");
}

interface ShellArgs {
  connect: ConnectOptions;
  /** The SQL of each `-c`, in order (none: `[]`). */
  commands: string[];
  mode: Mode;
  headers: boolean;
}

/** The options of `netsqlite shell`, by long name. */
export const SHELL_FLAGS: Readonly<Record<string, FlagSpec>> = {
  ...CONNECT_FLAGS,
  command: { type: "string", short: "c", multiple: true },
  mode: { type: "string" },
  "no-headers": { type: "boolean" },
  help: { type: "boolean", short: "h" },
};

/**
 * Parses `netsqlite shell` arguments; `"help"` for `--help` or `-h` where an option stands (not
 * as the value of one: `--token -h` is a token).
 */
export function parseShellArgs(args: string[]): ShellArgs | "help" {
  const { values, lists, positionals } = parseFlags(args, SHELL_FLAGS);
  if (values.help) return "help";
  if (positionals.length > 0) {
    throw new TypeError(`Unexpected argument "${positionals[0]}": SQL goes after -c`);
  }
  const connectOptions = connectOptionsFromFlags(values as ConnectFlagValues);
  const mode = String(values.mode ?? "table");
  if (!(MODES as readonly string[]).includes(mode)) {
    throw new TypeError(`Invalid --mode "${mode}": expected one of ${MODES.join(", ")}`);
  }
  return {
    connect: connectOptions,
    commands: lists.command,
    mode: mode as Mode,
    headers: !values["no-headers"],
  };
}

/**
 * Runs `netsqlite shell` with command-line arguments.
 *
 * @param args Arguments after `shell`.
 * @param io Output streams.
 * @returns the exit status: 0, 1 after an error in a script or no server, 2 on bad arguments.
 */
export async function runShell(args: string[], io: ShellIO = STD_IO): Promise<number> {
  let parsed: ShellArgs | "help";
  try {
    parsed = parseShellArgs(args);
  } catch (err) {
    await io.err(`netsqlite shell: ${(err as Error).message}\n\n${SHELL_HELP}`);
    return 2;
  }
  if (parsed === "help") {
    await io.out(SHELL_HELP);
    return 0;
  }
  let client: Client;
  try {
    // One connection: a shell session is one SQLite session (BEGIN ... COMMIT as typed).
    client = await connect({ ...parsed.connect, max: 1 });
  } catch (err) {
    await io.err(errorText(err, null));
    return 1;
  }
  try {
    const shell = new Shell(client, io, parsed.mode, parsed.headers);
    if (parsed.commands.length > 0) return await commands(shell, parsed.commands);
    if (!Deno.stdin.isTerminal()) {
      return await script(shell, utf8Text(Deno.stdin.readable), "stdin");
    }
    const history = new History(defaultHistoryFile());
    await history.load();
    const info = client.serverInfo;
    await io.out(
      `netsqlite shell ${VERSION}, server ${info.server}, SQLite ${info.sqliteVersion}\n` +
        `Enter ".help" for usage hints.\n`,
    );
    // Ctrl-C at the prompt is read as a key (raw mode); while a statement
    // runs it is a signal: keep the history, then end like an interrupted program.
    const interrupted = async (): Promise<void> => {
      await history.save();
      await io.err("\nnetsqlite shell: interrupted\n");
      Deno.exit(130);
    };
    Deno.addSignalListener("SIGINT", interrupted);
    try {
      await shell.interact(new LineEditor(history), history);
    } catch (err) {
      // The prompt could not be written: the reader of standard output went away.
      if (!isBrokenPipe(err)) throw err;
    } finally {
      Deno.removeSignalListener("SIGINT", interrupted);
    }
    const problem = await history.save();
    if (problem !== null) await io.err(`netsqlite shell: ${problem}\n`);
    return shell.exitCode;
  } finally {
    await client.close();
  }
}

async function script(
  shell: Shell,
  chunks: AsyncIterable<string>,
  source: string | null,
): Promise<number> {
  try {
    await shell.runScript(chunks, source);
    return shell.exitCode;
  } catch (err) {
    if (err instanceof Reported) return 1;
    throw err;
  }
}

/**
 * Runs the SQL of each `-c` in order, each as a script of its own (a statement left open at the
 * end of one runs there, as a last statement without `;` does), as `psql -c A -c B` does. Stops
 * at the first error (exit status 1) or at `.quit` or `.exit [CODE]`, as a single `-c` does.
 */
async function commands(shell: Shell, sql: readonly string[]): Promise<number> {
  try {
    for (const text of sql) {
      if (await shell.runScript(oneChunk(text), null) === QUIT) break;
    }
    return shell.exitCode;
  } catch (err) {
    if (err instanceof Reported) return 1;
    throw err;
  }
}
