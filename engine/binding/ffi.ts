/**
 * The FFI implementation of {@link Sqlite}: the system's libsqlite3 through
 * `Deno.dlopen` (`--allow-ffi`). Statements step on the main thread, or on
 * a background thread (`stepInBackground`, a `nonblocking` call) that
 * `interrupt()` stops; a progress handler enforces time budgets on the main
 * thread. Load it with `loadSqlite()` from `load.ts`.
 *
 * @module
 */

import { isUtf8 } from "node:buffer";
import { ErrorCode, SqliteError } from "../../protocol/errors.ts";
import { resultCodeName } from "../_result_codes.ts";
import { scan } from "../../protocol/sql_lexer.ts";
import {
  busyInBackground,
  busyMessage,
  descriptorsHint,
  invalidUtf8Message,
  missingValues,
  resultTooLarge,
  rowBytes,
  sqliteMessage,
  tooManyValues,
} from "./_errors.ts";
import {
  Auth,
  CheckpointMode,
  ColumnType,
  DbConfig,
  DbStatus,
  OpenFlag,
  Result,
} from "./_constants.ts";
import type { Symbols } from "./_ffi_symbols.ts";
import { armTimerProbe, noteWork, timerTurn } from "./_timer_turn.ts";
import { markAnonymous, NamedParams } from "./_params.ts";
import type {
  Authorizer,
  BindArgs,
  Capabilities,
  CheckpointResult,
  Db,
  OpenOptions,
  RowChange,
  RowChanging,
  RowidChange,
  RowSink,
  RunInfo,
  Sqlite,
  SqlValue,
  Stmt,
} from "./binding.ts";
import { LARGE_BOUND_BYTES } from "./binding.ts";

/** VM instructions between two budget checks of the progress handler. */
export const PROGRESS_STEPS = 4000;

/** `SQLITE_LIMIT_LENGTH`, and the largest value SQLite accepts for it. */
const LIMIT_LENGTH = 0;
const MAX_LENGTH_LIMIT = 1_000_000_000;
/** How often an interrupt is repeated while a background step has not yet stopped. */
const INTERRUPT_REPEAT_MS = 2;
/**
 * Longest a background step waits in SQLite's busy handler for a lock
 * another process holds before it returns and is resumed: the handler
 * sleeps through an interrupt, which the resumed step sees at once.
 */
export const LOCK_WAIT_SLICE_MS = 20;
/** `SQLITE_BUSY_RECOVERY`: another process is recovering the WAL. */
const BUSY_RECOVERY = 261;
/** `SQLITE_STMTSTATUS_REPREPARE`: times SQLite prepared a statement again (a schema change). */
const STMTSTATUS_REPREPARE = 5;
/** `SQLITE_TRANSIENT`: SQLite copies the bound text or blob before the call returns. */
const TRANSIENT = -1n;

const encoder = new TextEncoder();
/**
 * Refuses invalid UTF-8 instead of replacing it with U+FFFD, and keeps a
 * leading U+FEFF (a byte order mark to a decoder, but part of the value).
 */
const strictDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
/**
 * Bytes from which `Stmt.allInto` copies a TEXT or BLOB straight into its
 * sink (a view of the sink's buffer) rather than making a string or array of
 * it first: each copy of a large value costs the main thread time, most of
 * it faulting fresh memory in (4-13 ms a megabyte measured on a 2-core VM).
 * Shorter values keep the path tuned for them (short text is checked and
 * encoded by hand).
 */
const LARGE_VALUE = 1024;
/** Largest text-binding buffer a connection keeps for reuse, in bytes. */
const SCRATCH_KEPT = 64 * 1024;
const MAIN = encoder.encode("main\0");

/**
 * `text` as a NUL-terminated UTF-8 string. Encoded into a buffer of one byte
 * a unit when it fits (ASCII): `encode(text + "\0")` would first copy a long
 * text into a new string, then encode it to a buffer of its own and copy
 * that (a script of 3.6 MB: 25–40 ms against 10–25 ms, the server busy).
 */
function nulTerminated(text: string): Uint8Array {
  const bytes = new Uint8Array(text.length + 1); // its last byte stays 0
  // Every unit fits in one byte each only when all are ASCII.
  const { read } = encoder.encodeInto(text, bytes.subarray(0, text.length));
  return read === text.length ? bytes : encoder.encode(text + "\0");
}
/** A valid pointer for the empty string (a NULL pointer would bind NULL). */
const EMPTY_TEXT = new Uint8Array(1);
const FFI_CAPABILITIES: Capabilities = Object.freeze({
  interrupt: true,
  background: true,
  backup: true,
  updateHook: true,
  reprepares: true,
});

/** A loaded libsqlite3. */
export class FfiSqlite implements Sqlite {
  /** Always `"ffi"`. */
  readonly engine = "ffi" as const;
  /** The library file that was loaded. */
  readonly library: string;
  /** `sqlite3_libversion()`. */
  readonly version: string;
  /** Everything: interrupt, background steps, backup, update hook. */
  readonly capabilities: Capabilities = FFI_CAPABILITIES;
  /** Nothing is lost. */
  readonly limitations: readonly string[] = [];
  /** Whether connections accept double-quoted string literals unless told otherwise. */
  readonly doubleQuotedStrings: boolean;
  readonly #s: Symbols;
  #unload: (() => void) | null;

  /**
   * Releases the library handle. Idempotent. The code stays mapped until the
   * process exits (`_pin.ts`): a background step may still be running it.
   */
  close(): void {
    const unload = this.#unload;
    this.#unload = null;
    unload?.();
  }

  /**
   * @param unload Unloads the library (from `load.ts`).
   * @param symbols The functions of a library opened with `symbols` from `_ffi_symbols.ts`.
   * @param library The library file they came from.
   */
  constructor(
    symbols: Symbols,
    library: string,
    unload: () => void = () => {},
    doubleQuotedStrings = false,
  ) {
    this.#unload = unload;
    this.doubleQuotedStrings = doubleQuotedStrings;
    this.#s = symbols;
    this.library = library;
    this.version = cString(symbols.sqlite3_libversion());
  }

  /**
   * Opens a connection with extended result codes, in SQLite's defensive
   * mode (`SQLITE_DBCONFIG_DEFENSIVE`), double-quoted string literals
   * refused (`"name"` is an identifier only) unless `doubleQuotedStrings`
   * (of `options`, else of this object) accepts them, in multi-thread mode:
   * the connection has no mutex, so no column read takes a lock. One thread at a
   * time uses it: while a statement steps in the background, every call on
   * the connection or its statements throws `busyInBackground` (`#handle`,
   * `#live`, `step`), except `interrupt()` (safe from another thread) and
   * `finalize()`/`close()`, which wait for the step to return.
   *
   * @throws {SqliteError} when the file cannot be opened.
   */
  open(path: string, options: OpenOptions): Db {
    const flags = (options.readOnly ? OpenFlag.READONLY : OpenFlag.READWRITE | OpenFlag.CREATE) |
      OpenFlag.NOMUTEX | OpenFlag.EXRESCODE;
    const h = openHandle(this.#s, path, flags);
    this.#s.sqlite3_extended_result_codes(h, 1);
    this.#s.sqlite3_busy_timeout(h, options.busyTimeout);
    const dqs = options.doubleQuotedStrings ?? this.doubleQuotedStrings;
    setDoubleQuotedStrings(this.#s, h, dqs);
    // As node:sqlite's connections (defensive by default): no client's SQL may
    // corrupt the shared file, by writing a virtual table's shadow tables say.
    setDbConfig(this.#s, h, DbConfig.DEFENSIVE, true);
    return new FfiDb(this.#s, h, options.busyTimeout, dqs);
  }
}

/** A prepared script: its UTF-8 bytes and where the last statement ended. */
interface Script {
  readonly sql: string;
  readonly bytes: Uint8Array;
  readonly base: Deno.PointerObject;
  readonly baseValue: bigint;
  /** UTF-16 index and byte offset of the last statement's end. */
  char: number;
  byte: number;
}

/** One connection through FFI. */
class FfiDb implements Db {
  readonly #s: Symbols;
  #h: Deno.PointerObject | null;
  readonly #stmts = new Set<FfiStmt>();
  readonly #pStmt = new BigUint64Array(1);
  readonly #pTail = new BigUint64Array(1);
  /** `sqlite3_db_status` out-parameters: current value, high-water mark. */
  readonly #status = [new Int32Array(1), new Int32Array(1)] as const;
  #script: Script | null = null;
  /** The budget in ms (`Infinity`: none), and when it runs out (`NaN` until the first check). */
  #budgetMs = Infinity;
  #deadline = NaN;
  #progress: Deno.UnsafeCallback<{ parameters: ["pointer"]; result: "i32" }> | null = null;
  #progressOn = false;
  #authorizer: { close(): void } | null = null;
  /**
   * The error the authorizer last denied with: cleared as a statement is
   * prepared and as a step starts, so that a failed step finds the denial
   * made while it ran ({@link FfiStmt}'s `#stepError`).
   */
  denied: SqliteError | null = null;
  #updateHook: Hook | null = null;
  /**
   * The preupdate hook's callback, made once (kept while unset: setting it
   * again is cheap); it calls {@link #onMoved} and {@link #onChanging}.
   */
  #preHook: Hook | null = null;
  /**
   * The hooks' callbacks ref'd for a background step ({@link beforeBackground}):
   * called from that thread, a callback runs on the main thread, and only a
   * ref'd one wakes an idle event loop for it (else the step waits forever).
   */
  #refd: Hook[] = [];
  /** True while {@link #preHook} is set on the connection. */
  #preHookOn = false;
  /** Receives rows moved to another rowid ({@link onRowidChange}). */
  #onMoved: ((c: RowidChange) => void) | null = null;
  /** Receives changes of rows of one table ({@link onRowChanging}). */
  #onChanging: { table: string; callback: (row: RowChanging) => void } | null = null;
  /** True while a background step runs on this connection. */
  background = false;
  /** Repeats an interrupt until the background step returns (see {@link interrupt}). */
  #interrupting: ReturnType<typeof setInterval> | undefined;
  /** Statements finalized while a background step ran: finalized when it returns. */
  readonly #pendingFinalize: FfiStmt[] = [];
  /** `close()` was called while a background step ran. */
  #closeLater = false;
  /** Reused buffer for binding text. */
  scratch = new Uint8Array(256);
  /** The busy timeout in ms; it applies on the main thread only while {@link waitsInline}. */
  readonly #busyMs: number;
  #waitsInline = true;
  /** A background step set SQLite's busy timeout to a slice ({@link waitInSlices}). */
  #sliced = false;
  /**
   * True while the connection's statement waits for a file lock another
   * connection holds: its step met `SQLITE_BUSY` and waits in the background
   * ({@link FfiStmt}'s `#stepWaiting`), or failed on the main thread and has
   * not stepped since (the engine tries it again). Set false as a step starts
   * and as one returns anything else.
   */
  waitingForLock = false;
  /** Whether this connection accepts double-quoted string literals. */
  readonly #dqs: boolean;

  constructor(s: Symbols, h: Deno.PointerObject, busyMs: number, dqs: boolean) {
    this.#s = s;
    this.#h = h;
    this.#busyMs = busyMs;
    this.#dqs = dqs;
  }

  get waitsInline(): boolean {
    return this.#waitsInline;
  }

  set waitsInline(on: boolean) {
    if (on === this.#waitsInline) return;
    this.#s.sqlite3_busy_timeout(this.#handle(), on ? this.#busyMs : 0);
    this.#waitsInline = on;
  }

  /** The busy timeout given to `open`, in ms. */
  get busyMs(): number {
    return this.#busyMs;
  }

  /**
   * Sets how long the background step about to start waits for a lock
   * ({@link FfiStmt.stepInBackground}, between two of its steps, while
   * {@link background}: no step runs then); {@link afterBackground} sets
   * the busy timeout back.
   */
  waitInSlices(ms: number): void {
    if (this.#h === null) return;
    this.#s.sqlite3_busy_timeout(this.#h, ms);
    this.#sliced = true;
  }

  /** A step goes to the background: it waits for locks there. */
  beforeBackground(): void {
    // One thread at a time: the connection has no mutex.
    if (this.background) throw busyInBackground("connection");
    this.dropBudget();
    if (!this.#waitsInline) this.#s.sqlite3_busy_timeout(this.#handle(), this.#busyMs);
    for (const cb of [this.#updateHook, this.#preHookOn ? this.#preHook : null]) {
      if (cb === null) continue;
      cb.ref();
      this.#refd.push(cb);
    }
    this.background = true;
  }

  get inTransaction(): boolean {
    return this.#s.sqlite3_get_autocommit(this.#handle()) === 0;
  }

  /** True while a time budget is set. */
  get hasBudget(): boolean {
    return this.#budgetMs !== Infinity;
  }

  /** Removes the progress handler (before a background step: it must not run there). */
  dropBudget(): void {
    if (!this.#progressOn) return;
    this.#s.sqlite3_progress_handler(this.#handle(), 0, null, null);
    this.#progressOn = false;
  }

  prepare(sql: string, from = 0): Stmt | null {
    const h = this.#handle();
    this.denied = null; // (a denial while preparing is the caller's to report)
    let script = this.#script;
    if (script === null || script.sql !== sql) {
      if (sql.includes("\0")) {
        throw new SqliteError(
          ErrorCode.BadRequest,
          "Cannot prepare statement: SQL text contains a NUL character",
        );
      }
      const bytes = nulTerminated(sql);
      const base = Deno.UnsafePointer.of(bytes)!;
      script = {
        sql,
        bytes,
        base,
        baseValue: BigInt(Deno.UnsafePointer.value(base)),
        char: 0,
        byte: 0,
      };
      this.#script = script;
    }
    let char = from;
    let byte = from === script.char ? script.byte : utf8Offset(sql, from);
    const total = script.bytes.length - 1;
    const s = this.#s;
    while (byte < total) {
      this.#pStmt[0] = this.#pTail[0] = 0n;
      const rc = s.sqlite3_prepare_v3(
        h,
        Deno.UnsafePointer.offset(script.base, byte),
        total + 1 - byte,
        0,
        this.#pStmt,
        this.#pTail,
      );
      if (rc !== Result.OK) {
        const err = dbError(s, h);
        if (this.#dqs) throw err;
        // (SQLite sets the tail past the statement that failed too.)
        const failed = Number(this.#pTail[0] - script.baseValue);
        const end = failed > byte && failed <= total
          ? char + utf16Length(script.bytes, byte, failed)
          : sql.length;
        throw withQuoteHint(err, sql.slice(char, end));
      }
      const tail = Number(this.#pTail[0] - script.baseValue);
      if (tail <= byte) break; // nothing consumed: nothing left to prepare
      char += utf16Length(script.bytes, byte, tail);
      byte = tail;
      script.char = char;
      script.byte = byte;
      const stmt = Deno.UnsafePointer.create(this.#pStmt[0]);
      if (stmt !== null) {
        const wrapped = new FfiStmt(this, s, h, stmt, char);
        this.#stmts.add(wrapped);
        return wrapped;
      }
    }
    return null;
  }

  exec(sql: string): void {
    const h = this.#handle();
    if (sql.includes("\0")) {
      throw new SqliteError(
        ErrorCode.BadRequest,
        "Cannot run script: SQL text contains a NUL character",
      );
    }
    const rc = this.#s.sqlite3_exec(h, nulTerminated(sql), null, null, null);
    if (rc !== Result.OK) throw dbError(this.#s, h);
  }

  changes(): number | bigint {
    return exact(this.#s.sqlite3_changes64(this.#handle()));
  }

  lastInsertRowid(): number | bigint {
    return exact(this.#s.sqlite3_last_insert_rowid(this.#handle()));
  }

  setLastInsertRowid(rowid: number | bigint): boolean {
    this.#s.sqlite3_set_last_insert_rowid(this.#handle(), BigInt(rowid));
    return true;
  }

  totalChanges(): number | bigint {
    return exact(this.#s.sqlite3_total_changes64(this.#handle()));
  }

  deferredViolations(): boolean {
    const [current, highest] = this.#status;
    const h = this.#handle();
    const rc = this.#s.sqlite3_db_status(h, DbStatus.DEFERRED_FKS, current, highest, 0);
    if (rc !== Result.OK) throw dbError(this.#s, h);
    return current[0] !== 0;
  }

  setAuthorizer(callback: Authorizer | null): void {
    const h = this.#handle();
    const old = this.#authorizer;
    if (callback === null) {
      this.#s.sqlite3_set_authorizer(h, null, null);
      this.#authorizer = null;
    } else {
      const cb = new Deno.UnsafeCallback(
        {
          parameters: ["pointer", "i32", "pointer", "pointer", "pointer", "pointer"],
          result: "i32",
        } as const,
        (_user, action, a1, a2, a3, a4): number => {
          try {
            const result = callback(
              action,
              cStringOrNull(a1),
              cStringOrNull(a2),
              cStringOrNull(a3),
              cStringOrNull(a4),
            );
            if (typeof result === "number") return result;
            this.denied = result;
            return 1; // SQLITE_DENY, reported as `result` (see takeDenied)
          } catch {
            return 1; // SQLITE_DENY: a throwing authorizer must not let the statement through
          }
        },
      );
      this.#s.sqlite3_set_authorizer(h, cb.pointer, null);
      this.#authorizer = cb;
    }
    old?.close();
  }

  /**
   * The error the authorizer denied with (see {@link Authorizer}), once:
   * what a step that failed while it was denied throws.
   */
  takeDenied(): SqliteError | null {
    const denied = this.denied;
    this.denied = null;
    return denied;
  }

  setLengthLimit(bytes: number): void {
    this.#s.sqlite3_limit(this.#handle(), LIMIT_LENGTH, Math.min(bytes, MAX_LENGTH_LIMIT));
  }

  /**
   * Interrupts the running statement. SQLite forgets an interrupt that
   * arrives while no statement is active, as when a background step has
   * been started but its thread has not yet entered `sqlite3_step`: while a
   * step runs in the background, the interrupt is therefore repeated every
   * {@link INTERRUPT_REPEAT_MS} ms until the step returns.
   */
  interrupt(): void {
    const h = this.#h;
    if (h === null) return;
    noteWork(); // (a deadline or a cancel: timers matter now)
    if (this.settling) {
      this.#interruptLater = true;
      return;
    }
    this.#interruptNow(h);
  }

  /** `sqlite3_interrupt()`, repeated while a background step runs (see {@link interrupt}). */
  #interruptNow(h: Deno.PointerObject): void {
    this.#s.sqlite3_interrupt(h);
    if (this.background && this.#interrupting === undefined) {
      this.#interrupting = setInterval(() => {
        if (this.#h !== null) this.#s.sqlite3_interrupt(this.#h);
      }, INTERRUPT_REPEAT_MS);
    }
  }

  setBudget(ms: number | null): void {
    const h = this.#handle();
    if (ms === null) {
      // The handler stays installed (a point read is over long before it is
      // first called): removing and installing it costs two FFI calls a
      // statement. A background step removes it first (see dropBudget).
      this.#budgetMs = Infinity;
      return;
    }
    this.#budgetMs = ms;
    this.#deadline = NaN;
    if (this.#progressOn) return;
    this.#progress ??= new Deno.UnsafeCallback(
      { parameters: ["pointer"], result: "i32" } as const,
      (): number => this.#checkBudget(),
    );
    this.#s.sqlite3_progress_handler(h, PROGRESS_STEPS, this.#progress.pointer, null);
    this.#progressOn = true;
  }

  /** The progress handler: 1 (stop) once the budget ran out, counted from its first call. */
  #checkBudget(): number {
    const ms = this.#budgetMs;
    if (ms === Infinity) return 0;
    if (ms <= 0) return 1;
    const now = performance.now();
    if (this.#deadline !== this.#deadline) { // NaN: the first check of this budget
      this.#deadline = now + ms;
      return 0;
    }
    return now > this.#deadline ? 1 : 0;
  }

  onUpdate(callback: ((change: RowChange) => void) | null): void {
    const h = this.#handle();
    const old = this.#updateHook;
    if (callback === null) {
      this.#s.sqlite3_update_hook(h, null, null);
      this.#updateHook = null;
    } else {
      const cb = new Deno.UnsafeCallback(
        { parameters: ["pointer", "i32", "pointer", "pointer", "i64"], result: "void" } as const,
        (_user, op, db, table, rowid): void => {
          callback({
            op: op === Auth.INSERT ? "insert" : op === Auth.DELETE ? "delete" : "update",
            db: cString(db),
            table: cString(table),
            rowid: exact(rowid),
          });
        },
      );
      this.#s.sqlite3_update_hook(h, cb.pointer, null);
      this.#updateHook = cb;
    }
    old?.close();
  }

  onRowidChange(callback: ((change: RowidChange) => void) | null): boolean {
    if (this.#s.sqlite3_preupdate_hook === null) return false;
    this.#handle();
    this.#onMoved = callback;
    this.#setPreHook();
    return true;
  }

  onRowChanging(table: string, callback: ((row: RowChanging) => void) | null): boolean {
    if (this.#s.sqlite3_preupdate_hook === null) return false;
    this.#handle();
    this.#onChanging = callback === null ? null : { table, callback };
    this.#setPreHook();
    return true;
  }

  /** Sets the preupdate hook while a callback wants it, unsets it otherwise. */
  #setPreHook(): void {
    const set = this.#s.sqlite3_preupdate_hook!;
    const want = this.#onMoved !== null || this.#onChanging !== null;
    if (want === this.#preHookOn) return;
    const h = this.#handle();
    if (want) {
      this.#preHook ??= this.#makePreHook();
      set(h, this.#preHook.pointer, null);
    } else set(h, null, null);
    this.#preHookOn = want;
  }

  #makePreHook(): Hook {
    const s = this.#s;
    const slot = new BigUint64Array(1);
    // The value of column `i` before (`sqlite3_preupdate_old`) or after the change.
    const valueOf = (
      read: NonNullable<Symbols["sqlite3_preupdate_old"]>,
      db: Deno.PointerValue,
      i: number,
    ): Deno.PointerValue => {
      slot[0] = 0n;
      if (read(db, i, slot) !== Result.OK) return null;
      return Deno.UnsafePointer.create(slot[0]);
    };
    const cb = new Deno.UnsafeCallback(
      {
        parameters: ["pointer", "pointer", "i32", "pointer", "pointer", "i64", "i64"],
        result: "void",
      } as const,
      (_ctx, db, op, schema, table, oldRowid, newRowid): void => {
        // Called for every row changed while set: only moved rows and the
        // watched table's are reported.
        const moved = this.#onMoved;
        if (moved !== null && op === Auth.UPDATE && oldRowid !== newRowid) {
          moved({
            db: cString(schema),
            table: cString(table),
            oldRowid: exact(oldRowid),
            newRowid: exact(newRowid),
          });
        }
        const watch = this.#onChanging;
        if (watch === null || cString(table) !== watch.table || cString(schema) !== "main") return;
        // (SQLite leaves the rowid before an insert, and after a delete, undefined.)
        const rowid = exact(op === Auth.INSERT ? newRowid : oldRowid);
        watch.callback({
          op: op === Auth.INSERT ? "insert" : op === Auth.DELETE ? "delete" : "update",
          rowid,
          newRowid: op === Auth.DELETE ? rowid : exact(newRowid),
          before: (i) => sqlValue(s, valueOf(s.sqlite3_preupdate_old!, db, i)),
          nullBefore: (i) => {
            const v = valueOf(s.sqlite3_preupdate_old!, db, i);
            return v === null || s.sqlite3_value_type(v) === ColumnType.NULL;
          },
          after: (i) => sqlValue(s, valueOf(s.sqlite3_preupdate_new!, db, i)),
        });
      },
    );
    return cb;
  }

  checkpoint(mode: "passive" | "full" | "restart" | "truncate"): CheckpointResult {
    const h = this.#handle();
    const log = new Int32Array(1);
    const done = new Int32Array(1);
    const rc = this.#s.sqlite3_wal_checkpoint_v2(h, MAIN, CheckpointMode[mode], log, done);
    if (rc !== Result.OK) throw dbError(this.#s, h);
    return { walFrames: log[0], checkpointed: done[0] };
  }

  /**
   * Copies the database with SQLite's backup API, each step (and the last
   * one's sync of the copy) on a background thread (`nonblocking` calls):
   * the event loop runs between and during steps. The connection is busy
   * meanwhile, as during a background step (`busyInBackground`); closing it
   * then stops the copy after the current step. Between two steps it is
   * free: a statement stepping in the background there holds up the next step
   * until it returns (the connection has no mutex).
   */
  async backup(
    destPath: string,
    options: { pagesPerStep: number; onProgress?: (remaining: number, total: number) => void },
  ): Promise<void> {
    const s = this.#s;
    this.#handle();
    const dest = openHandle(
      s,
      destPath,
      OpenFlag.READWRITE | OpenFlag.CREATE | OpenFlag.FULLMUTEX | OpenFlag.EXRESCODE,
    );
    let stopped = false;
    try {
      const b = s.sqlite3_backup_init(dest, MAIN, this.#handle(), MAIN);
      if (b === null) throw backupError(s, dest, s.sqlite3_extended_errcode(dest));
      let rc: number = Result.OK;
      try {
        for (;;) {
          if (this.background) await this.#free();
          if (this.#h === null) {
            stopped = true; // closed meanwhile (a zombie until backup_finish)
            break;
          }
          rc = await this.#inBackground(() => s.sqlite3_backup_step_nb(b, options.pagesPerStep));
          if (
            rc !== Result.OK && rc !== Result.DONE && rc !== Result.BUSY && rc !== Result.LOCKED
          ) {
            break; // backup_finish reports the error
          }
          options.onProgress?.(s.sqlite3_backup_remaining(b), s.sqlite3_backup_pagecount(b));
          if (rc === Result.DONE) break;
          if (rc !== Result.OK) await delay(5);
        }
      } finally {
        // Unfinished, it rolls the copy back: I/O, off the main thread too.
        const finish = () => s.sqlite3_backup_finish_nb(b);
        if (this.background) await this.#free();
        rc = await (this.#h === null ? finish() : this.#inBackground(finish));
      }
      if (stopped) {
        throw new SqliteError(
          "SQLITE_MISUSE",
          "Cannot back up: the connection was closed while the backup ran",
          Result.MISUSE,
        );
      }
      if (rc !== Result.OK) throw backupError(s, dest, rc);
    } finally {
      s.sqlite3_close_v2(dest);
    }
  }

  /**
   * Resolves once no step runs in the background on this connection: the
   * backup's steps leave it free between them, where a statement may begin
   * one (the backup's next step waits for it to return).
   */
  async #free(): Promise<void> {
    while (this.background) await delay(1);
  }

  /**
   * Runs one `nonblocking` call on this connection: the connection counts as
   * busy in the background meanwhile ({@link beforeBackground}), and due
   * timers get their turn after it as after a background step.
   */
  async #inBackground<T>(call: () => Promise<T>): Promise<T> {
    this.beforeBackground();
    armTimerProbe();
    let result: T;
    try {
      result = await call();
    } finally {
      this.afterBackground();
    }
    const turn = timerTurn();
    if (turn !== null) await turn;
    return result;
  }

  close(): void {
    const h = this.#h;
    if (h === null) return;
    if (this.background) {
      // The background step uses the connection: closing now would free
      // what it uses. Stop the step and close when it returns: the interrupt
      // is repeated until then, as SQLite forgets one that comes before the
      // background thread has begun the step.
      this.#closeLater = true;
      this.#interruptNow(h);
      return;
    }
    for (const stmt of this.#stmts) stmt.finalize();
    this.#s.sqlite3_close_v2(h);
    this.#h = null;
    this.#script = null;
    this.#progress?.close();
    this.#authorizer?.close();
    this.#updateHook?.close();
    this.#preHook?.close();
    this.#progress =
      this.#authorizer =
      this.#updateHook =
      this.#preHook =
        null;
    this.#preHookOn = false;
    this.#onMoved = this.#onChanging = null;
  }

  /** Forgets a finalized statement. */
  forget(stmt: FfiStmt): void {
    this.#stmts.delete(stmt);
  }

  /**
   * Finalizes `stmt` now, or (while a statement steps in the background on
   * this connection) once that step returns.
   *
   * @returns true when it was deferred.
   */
  deferFinalize(stmt: FfiStmt): boolean {
    if (!this.background) return false;
    this.#pendingFinalize.push(stmt);
    return true;
  }

  /**
   * True while a background step's result waits for the timers to run
   * (`stepInBackground`): an interrupt meanwhile is held until it is known
   * whether the statement is still running.
   */
  settling = false;
  /** {@link interrupt} was called while {@link settling}. */
  #interruptLater = false;

  /**
   * The step's result was handed over after its wait for the timers: an
   * interrupt that came meanwhile stops the statement's next step when it
   * returned a row (`running`), as it would have without the wait; a
   * statement that is done is left alone, and so is the next one.
   */
  settled(running: boolean): void {
    this.settling = false;
    if (!this.#interruptLater) return;
    this.#interruptLater = false;
    if (running && this.#h !== null) this.#s.sqlite3_interrupt(this.#h);
  }

  /** A background step returned: run what waited for it. */
  afterBackground(): void {
    this.background = false;
    for (const cb of this.#refd.splice(0)) cb.unref();
    if (this.#interrupting !== undefined) {
      clearInterval(this.#interrupting);
      this.#interrupting = undefined;
    }
    if (this.#h !== null && (!this.#waitsInline || this.#sliced)) {
      this.#s.sqlite3_busy_timeout(this.#h, this.#waitsInline ? this.#busyMs : 0);
    }
    this.#sliced = false;
    for (const stmt of this.#pendingFinalize.splice(0)) stmt.finalize();
    if (this.#closeLater) this.close();
  }

  #handle(): Deno.PointerObject {
    if (this.#h === null) {
      throw new SqliteError("SQLITE_MISUSE", "Cannot use connection: it is closed", Result.MISUSE);
    }
    if (this.background) {
      throw busyInBackground("connection");
    }
    return this.#h;
  }
}

/** A hook's callback, as the connection keeps it. */
interface Hook {
  readonly pointer: Deno.PointerObject;
  ref(): number;
  unref(): number;
  close(): void;
}

/** A BLOB column's `len` bytes at `p` (`null`: out of memory, read as zeros), as an array of their own. */
function blobOf(p: Deno.PointerValue, len: number): Uint8Array {
  const out = new Uint8Array(len);
  if (len > 0 && p !== null) Deno.UnsafePointerView.copyInto(p, out);
  return out;
}

/** A large BLOB column's `len` bytes at `p` copied into `sink`, with no array of their own. */
function blobInto(sink: RowSink, p: Deno.PointerValue, len: number): void {
  const room = sink.blobRoom(len);
  if (p !== null) Deno.UnsafePointerView.copyInto(p, room);
  else room.fill(0); // (Out of memory: as blobOf reads it.)
}

/** One prepared statement through FFI. */
class FfiStmt implements Stmt {
  readonly end: number;
  readonly readOnly: boolean;
  readonly paramCount: number;
  readonly #db: FfiDb;
  readonly #s: Symbols;
  readonly #dbh: Deno.PointerObject;
  #h: Deno.PointerObject | null;
  #sql: string | null = null;
  /** Column count, read again on the first row after a reset (a re-prepare can change it). */
  #ncol = 0;
  #idle = true;
  /** True when `sqlite3_reset` ran since the last step (binding needs it). */
  #isReset = true;
  /** How named-parameter objects bind (made at the first one). */
  #params: NamedParams | null = null;
  /** Bytes of text and BLOBs bound since the last bind() (for {@link dropLargeValues}). */
  #boundBytes = 0;

  constructor(db: FfiDb, s: Symbols, dbh: Deno.PointerObject, h: Deno.PointerObject, end: number) {
    this.#db = db;
    this.#s = s;
    this.#dbh = dbh;
    this.#h = h;
    this.end = end;
    this.readOnly = s.sqlite3_stmt_readonly(h) !== 0;
    this.paramCount = s.sqlite3_bind_parameter_count(h);
  }

  get sql(): string {
    return this.#sql ??= this.#h === null ? "" : cString(this.#s.sqlite3_sql(this.#h));
  }

  columnNames(): string[] {
    const h = this.#live();
    const s = this.#s;
    const n = s.sqlite3_column_count(h);
    const names = new Array<string>(n);
    for (let i = 0; i < n; i++) names[i] = columnName(s.sqlite3_column_name(h, i), i);
    return names;
  }

  get reprepares(): number {
    return this.#h === null ? 0 : this.#s.sqlite3_stmt_status(this.#h, STMTSTATUS_REPREPARE, 0);
  }

  bind(args: BindArgs): void {
    const h = this.#live();
    const s = this.#s;
    if (!this.#isReset) s.sqlite3_reset(h);
    this.#isReset = true;
    this.#idle = true;
    this.#boundBytes = 0;
    if (Array.isArray(args)) {
      const values = args as readonly SqlValue[];
      if (values.length > this.paramCount) throw tooManyValues(values.length, this.paramCount);
      if (values.length < this.paramCount) throw missingValues(values.length, this.paramCount);
      // Every parameter bound anew: nothing left over to clear (one FFI call less).
      if (values.length !== this.paramCount) s.sqlite3_clear_bindings(h);
      for (let i = 0; i < values.length; i++) this.#bindOne(h, i + 1, values[i]);
      return;
    }
    s.sqlite3_clear_bindings(h);
    this.#params ??= new NamedParams(markAnonymous(this.#paramNames(h), this.sql), this.sql);
    this.#params.bind(
      args as Readonly<Record<string, SqlValue>>,
      (index, value) => this.#bindOne(h, index, value),
    );
  }

  /** SQLite's parameter names by index from 1 (`null` for `?` and unused indexes). */
  #paramNames(h: Deno.PointerObject): (string | null)[] {
    const names = new Array<string | null>(this.paramCount);
    for (let i = 0; i < names.length; i++) {
      names[i] = cStringOrNull(this.#s.sqlite3_bind_parameter_name(h, i + 1));
    }
    return names;
  }

  step(): boolean {
    const db = this.#db;
    const h = this.#h !== null && !db.background ? this.#h : this.#live();
    this.#isReset = false;
    db.denied = null;
    db.waitingForLock = false;
    // (Timed only where the step may wait for a lock: see #stepError.)
    const since = db.waitsInline ? performance.now() : NaN;
    return this.#stepped(h, this.#s.sqlite3_step(h), since);
  }

  async stepInBackground(): Promise<boolean> {
    const h = this.#live();
    const db = this.#db;
    if (db.hasBudget) {
      throw new SqliteError(
        "SQLITE_MISUSE",
        "Cannot step in the background: remove the time budget first (setBudget(null))",
        Result.MISUSE,
      );
    }
    db.beforeBackground();
    armTimerProbe();
    let rc: number;
    /** SQLite's message of a failed step. */
    let message: string | undefined;
    const since = performance.now();
    try {
      this.#isReset = false;
      db.denied = null;
      db.waitingForLock = false;
      rc = await this.#stepWaiting(h, db);
      // Read before afterBackground() finalizes the statements finalized
      // meanwhile: one that was active hands its own state (no error) to
      // the connection as it goes, and the message would read "not an error".
      if (rc !== Result.ROW && rc !== Result.DONE) {
        message = cString(this.#s.sqlite3_errmsg(this.#dbh));
      }
    } finally {
      db.afterBackground();
    }
    // Finalized (or its connection closed) while it stepped: it is done.
    if (this.#h === null) return false;
    const turn = timerTurn();
    if (turn === null) return this.#stepped(h, rc, since, message);
    // Due timers run first: completed steps are resolved before them (see
    // _timer_turn.ts). What the step left on the connection (its row's
    // width, its error message) is read now: anything may use the
    // connection while the timers run.
    let more: boolean;
    let error: unknown = null;
    try {
      more = this.#stepped(h, rc, since, message);
    } catch (err) {
      more = false;
      error = err;
    }
    db.settling = true;
    try {
      await turn;
    } finally {
      db.settled(more && this.#h !== null);
    }
    if (error !== null) throw error;
    return more && this.#h !== null;
  }

  /**
   * One step in the background that waits for a lock another process
   * holds up to the busy timeout, as SQLite's busy handler would, but in
   * slices of {@link LOCK_WAIT_SLICE_MS}: the handler sleeps through
   * `sqlite3_interrupt`, so a step that waited a slice in vain returns
   * `SQLITE_BUSY` and is resumed (SQLite resumes a statement at the lock
   * it waits for, nothing of it undone or done twice: `sqlite3_stmt_busy`
   * says it is still running), and an interrupt that came meanwhile (a
   * deadline, a cancel, `close()`) stops the resumed step at its start.
   * A step that met the lock without waiting (SQLite does not wait where
   * waiting cannot help: a read transaction's upgrade to a write) is
   * stepped once more waiting the rest of the busy timeout at once, as
   * before the slices: the same answer, and no loop of steps that do not
   * wait.
   */
  async #stepWaiting(h: Deno.PointerObject, db: FfiDb): Promise<number> {
    const s = this.#s;
    const busyMs = db.busyMs;
    if (busyMs <= LOCK_WAIT_SLICE_MS) return await s.sqlite3_step_nb(h);
    const first = performance.now();
    for (;;) {
      const left = busyMs - (performance.now() - first);
      const slice = Math.min(LOCK_WAIT_SLICE_MS, Math.max(1, Math.ceil(left)));
      db.waitInSlices(slice);
      const start = performance.now();
      const rc = await s.sqlite3_step_nb(h);
      if ((rc !== Result.BUSY && rc !== BUSY_RECOVERY) || s.sqlite3_stmt_busy(h) === 0) return rc;
      db.waitingForLock = true;
      const now = performance.now();
      if (now - first >= busyMs) return rc; // waited the whole busy timeout
      if (now - start < slice / 2) {
        db.waitInSlices(Math.max(1, Math.ceil(busyMs - (now - first))));
        return await s.sqlite3_step_nb(h);
      }
    }
  }

  /**
   * What a step's result code means: a row (true), done (false), or an
   * error; `since`: when a step that may wait for a lock began (in the
   * background, {@link #stepWaiting}, or inline while
   * {@link FfiDb.waitsInline}), else `NaN`; `message`: SQLite's message of
   * a failed step, when read already (else read now).
   */
  #stepped(h: Deno.PointerObject, rc: number, since: number, message?: string): boolean {
    this.#db.waitingForLock = rc === Result.BUSY || rc === BUSY_RECOVERY;
    if (rc === Result.ROW) {
      if (this.#idle) {
        this.#ncol = this.#s.sqlite3_column_count(h);
        this.#idle = false;
      }
      return true;
    }
    this.#idle = true;
    if (rc === Result.DONE) return false;
    throw this.#stepError(h, rc, since, message);
  }

  row(): SqlValue[] {
    const h = this.#h!;
    const s = this.#s;
    const n = this.#ncol;
    const row = new Array<SqlValue>(n);
    for (let i = 0; i < n; i++) {
      switch (s.sqlite3_column_type(h, i)) {
        case ColumnType.INTEGER:
          row[i] = this.#integer(h, i);
          break;
        case ColumnType.FLOAT:
          row[i] = s.sqlite3_column_double(h, i);
          break;
        case ColumnType.TEXT:
          row[i] = this.#text(h, i);
          break;
        case ColumnType.BLOB:
          row[i] = this.#blob(h, i);
          break;
        default:
          row[i] = null;
      }
    }
    return row;
  }

  allInto(sink: RowSink, maxBytes: number): number {
    const s = this.#s;
    const limit = sink.size + maxBytes;
    let count = 0;
    try {
      while (this.step()) {
        const h = this.#h!;
        const n = this.#ncol;
        sink.row(n);
        for (let i = 0; i < n; i++) {
          switch (s.sqlite3_column_type(h, i)) {
            case ColumnType.INTEGER:
              sink.integer(this.#integer(h, i));
              break;
            case ColumnType.FLOAT:
              sink.real(s.sqlite3_column_double(h, i));
              break;
            case ColumnType.TEXT: {
              // Text first, then its length (in UTF-8, whatever the database's encoding).
              const p = s.sqlite3_column_text(h, i);
              const len = s.sqlite3_column_bytes(h, i);
              if (len < LARGE_VALUE || p === null) sink.text(this.#textOf(p, len, h, i));
              else this.#textInto(sink, p, len, h, i);
              break;
            }
            case ColumnType.BLOB: {
              const p = s.sqlite3_column_blob(h, i);
              const len = s.sqlite3_column_bytes(h, i);
              if (len < LARGE_VALUE) sink.blob(blobOf(p, len));
              else blobInto(sink, p, len);
              break;
            }
            default:
              sink.nil();
          }
        }
        count++;
        if (sink.size > limit) throw resultTooLarge(maxBytes);
      }
    } finally {
      this.reset();
    }
    return count;
  }

  /**
   * An INTEGER column. Deno returns every `i64` result as a bigint (an
   * allocation), so it is read as a double first, which is exact below
   * 2^53 in magnitude; only larger ones are read again as int64.
   */
  #integer(h: Deno.PointerObject, i: number): number | bigint {
    const d = this.#s.sqlite3_column_double(h, i);
    if (d < TWO_53 && d > -TWO_53) return d;
    return exact(this.#s.sqlite3_column_int64(h, i));
  }

  #text(h: Deno.PointerObject, i: number): string {
    const p = this.#s.sqlite3_column_text(h, i);
    return this.#textOf(p, this.#s.sqlite3_column_bytes(h, i), h, i);
  }

  /** Column `i`'s TEXT, `len` bytes at `p` (`null`: out of memory, read as ""). */
  #textOf(p: Deno.PointerValue, len: number, h: Deno.PointerObject, i: number): string {
    if (len === 0 || p === null) return "";
    const text = readText(p, len);
    if (text !== null) return text;
    throw this.#invalidUtf8(h, i);
  }

  #invalidUtf8(h: Deno.PointerObject, i: number): SqliteError {
    const name = cString(this.#s.sqlite3_column_name(h, i));
    return new SqliteError(
      ErrorCode.InvalidUtf8,
      invalidUtf8Message(name),
    );
  }

  /**
   * A large TEXT column copied into `sink` as its bytes, with no string made
   * of them: refused as {@link #text} refuses it when not valid UTF-8 (when
   * valid, they are the bytes `#text`'s string encodes back to).
   */
  #textInto(
    sink: RowSink,
    p: Deno.PointerObject,
    len: number,
    h: Deno.PointerObject,
    i: number,
  ): void {
    const room = sink.textRoom(len);
    Deno.UnsafePointerView.copyInto(p, room);
    if (!isUtf8(room)) throw this.#invalidUtf8(h, i);
  }

  #blob(h: Deno.PointerObject, i: number): Uint8Array {
    const p = this.#s.sqlite3_column_blob(h, i);
    return blobOf(p, this.#s.sqlite3_column_bytes(h, i));
  }

  all(maxBytes?: number): SqlValue[][] {
    const rows: SqlValue[][] = [];
    try {
      if (maxBytes === undefined) {
        while (this.step()) rows.push(this.row());
      } else {
        let bytes = 0;
        while (this.step()) {
          const row = this.row();
          rows.push(row);
          bytes += rowBytes(row);
          if (bytes > maxBytes) throw resultTooLarge(maxBytes);
        }
      }
    } finally {
      // Also after a row that cannot be read (INVALID_UTF8): the next run starts afresh.
      this.reset();
    }
    return rows;
  }

  run(): RunInfo {
    while (this.step());
    const info = {
      changes: exact(this.#s.sqlite3_changes64(this.#dbh)),
      lastInsertRowid: exact(this.#s.sqlite3_last_insert_rowid(this.#dbh)),
    };
    this.reset();
    return info;
  }

  reset(): void {
    // (While the connection steps in the background, the next bind() resets.)
    if (this.#db.background) return;
    if (this.#h !== null && !this.#isReset) this.#s.sqlite3_reset(this.#h);
    this.#isReset = true;
    this.#idle = true;
  }

  dropLargeValues(): void {
    if (this.#boundBytes < LARGE_BOUND_BYTES || this.#h === null) return;
    // Not while it steps: SQLite's registers may point into the values.
    if (this.#db.background || !this.#isReset) return;
    this.#s.sqlite3_clear_bindings(this.#h);
    this.#boundBytes = 0;
  }

  finalize(): void {
    if (this.#h === null || this.#db.deferFinalize(this)) return;
    this.#sql ??= cString(this.#s.sqlite3_sql(this.#h));
    this.#s.sqlite3_finalize(this.#h);
    this.#h = null;
    this.#db.forget(this);
  }

  #bindOne(h: Deno.PointerObject, i: number, v: SqlValue): void {
    const s = this.#s;
    let rc: number;
    switch (typeof v) {
      case "number":
        if (!Number.isSafeInteger(v) || Object.is(v, -0)) rc = s.sqlite3_bind_double(h, i, v);
        // An i64 parameter is a fast call only when given a bigint: 32-bit
        // integers (most of them) go through sqlite3_bind_int instead.
        else if ((v | 0) === v) rc = s.sqlite3_bind_int(h, i, v);
        else rc = s.sqlite3_bind_int64(h, i, BigInt(v));
        break;
      case "bigint":
        rc = s.sqlite3_bind_int64(h, i, v);
        break;
      case "string": {
        if (v.length === 0) {
          rc = s.sqlite3_bind_text(h, i, EMPTY_TEXT, 0, TRANSIENT);
          break;
        }
        let buf = this.#db.scratch;
        if (buf.length < v.length * 3) {
          buf = new Uint8Array(Math.max(v.length * 3, buf.length * 2));
          // A buffer for large text is not kept on the connection (SQLite copies the text).
          if (buf.length <= SCRATCH_KEPT) this.#db.scratch = buf;
        }
        const { written } = encoder.encodeInto(v, buf);
        this.#boundBytes += written;
        rc = s.sqlite3_bind_text(h, i, buf, written, TRANSIENT);
        break;
      }
      default:
        if (v === null) {
          rc = s.sqlite3_bind_null(h, i);
        } else if (v.length === 0) {
          rc = s.sqlite3_bind_zeroblob(h, i, 0); // an empty blob stays a BLOB, not NULL
        } else {
          this.#boundBytes += v.length;
          rc = s.sqlite3_bind_blob(h, i, v, v.length, TRANSIENT);
        }
    }
    if (rc !== Result.OK) throw dbError(s, this.#dbh);
  }

  /**
   * The error of a step that failed with `rc` (see {@link #stepped}). A
   * denial of the authorizer while it ran (a statement SQLite prepared
   * again, or one a virtual table prepared itself: an FTS table reading its
   * content table) is the authorizer's error, whatever code the step failed
   * with (FTS5's `'rebuild'` reports it as a bare `SQL logic error`), but
   * `SQLITE_INTERRUPT`. A
   * plain `SQLITE_BUSY` of a step that may wait for a lock (begun at
   * `since`, see {@link #stepped}) says whether it waited the busy timeout
   * or failed at once, as SQLite does where waiting cannot help
   * ({@link busyMessage}). `errmsg`: SQLite's message, when read already.
   */
  #stepError(h: Deno.PointerObject, rc: number, since: number, errmsg?: string): SqliteError {
    let message = sqliteMessage(rc, errmsg ?? cString(this.#s.sqlite3_errmsg(this.#dbh)));
    const elapsed = performance.now() - since;
    const inTransaction = this.#db.inTransaction;
    this.#s.sqlite3_reset(h);
    this.#isReset = true;
    const denied = this.#db.takeDenied();
    // (Not when it was stopped: the engine tells a deadline or a budget by SQLITE_INTERRUPT.)
    if (denied !== null && (rc & 0xff) !== Result.INTERRUPT) return denied;
    if (rc === Result.BUSY && !Number.isNaN(since)) {
      message = busyMessage(message, this.#db.busyMs, elapsed, inTransaction);
    }
    return new SqliteError(resultCodeName(rc), message, rc);
  }

  #live(): Deno.PointerObject {
    if (this.#h === null) {
      throw new SqliteError(
        "SQLITE_MISUSE",
        "Cannot use statement: it is finalized",
        Result.MISUSE,
      );
    }
    if (this.#db.background) {
      // The connection is in use on the background thread (it has no mutex).
      throw busyInBackground("statement");
    }
    return this.#h;
  }
}

/** Opens a `sqlite3 *` handle or throws SQLite's reason. */
function openHandle(s: Symbols, path: string, flags: number): Deno.PointerObject {
  if (path.includes("\0")) {
    throw new SqliteError(
      ErrorCode.BadRequest,
      "Cannot open database: its path contains a NUL character",
    );
  }
  const out = new BigUint64Array(1);
  const rc = s.sqlite3_open_v2(encoder.encode(path + "\0"), out, flags, null);
  const h = Deno.UnsafePointer.create(out[0]);
  if (rc !== Result.OK || h === null) {
    const detail = h !== null ? cString(s.sqlite3_errmsg(h)) : cString(s.sqlite3_errstr(rc));
    const code = h !== null ? s.sqlite3_extended_errcode(h) : rc;
    const hint = h !== null && (code & 0xff) === 14 // SQLITE_CANTOPEN
      ? descriptorsHint(s.sqlite3_system_errno(h))
      : "";
    if (h !== null) s.sqlite3_close_v2(h);
    throw new SqliteError(
      resultCodeName(code),
      `Cannot open database "${path}": ${detail}${hint}`,
      code,
    );
  }
  return h;
}

/**
 * Turns SQLite's double-quoted string literals in DML and DDL off (so that
 * `"nmae"` is a column that does not exist rather than the text 'nmae') or,
 * with `on`, on (SQLITE_DBCONFIG_DQS_DML / DQS_DDL, SQLite 3.29+). Closes the
 * handle and throws when SQLite refuses.
 */
function setDoubleQuotedStrings(s: Symbols, h: Deno.PointerObject, on: boolean): void {
  for (const op of [DbConfig.DQS_DML, DbConfig.DQS_DDL]) setDbConfig(s, h, op, on);
}

/**
 * Sets the on/off option `op` of `sqlite3_db_config()`. Closes the handle and
 * throws when SQLite refuses.
 */
function setDbConfig(s: Symbols, h: Deno.PointerObject, op: number, on: boolean): void {
  const v = on ? 1n : 0n;
  const rc = s.sqlite3_db_config_int(h, op, v, null, null, null, null, null, v, null);
  if (rc !== Result.OK) {
    s.sqlite3_close_v2(h);
    throw new SqliteError(
      resultCodeName(rc),
      `Cannot open database: sqlite3_db_config(${op}) failed: ${cString(s.sqlite3_errstr(rc))}`,
      rc,
    );
  }
}

/**
 * `err` with the hint newer SQLite releases give themselves when a double-quoted name is
 * not a column (`no such column: "x" - should this be a string literal in
 * single-quotes?`), for older libraries: added when `statement`, the one that
 * failed, writes the name in double quotes (not in a string or a comment). A
 * name only a trigger or view of the schema quotes gets no hint (the server's
 * start-up warning names those objects).
 */
function withQuoteHint(err: SqliteError, statement: string): SqliteError {
  const m = /^(.*no such column: )(.+)$/s.exec(err.message);
  if (m === null || m[2].startsWith('"') || !doubleQuotes(statement, m[2])) return err;
  const quoted = `"${m[2].replaceAll('"', '""')}"`;
  return new SqliteError(
    err.code,
    `${m[1]}${quoted} - should this be a string literal in single-quotes?`,
    err.sqliteCode,
  );
}

/** True when `sql` writes the name `name` in double quotes (`"x"`, a name token). */
function doubleQuotes(sql: string, name: string): boolean {
  let found = false;
  scan(sql, (t) => {
    found = t.kind === "name" && t.text === name && sql[t.at] === '"';
    return !found;
  });
  return found;
}

/** A failed backup: SQLite's code and message about the copy (`database or disk is full`). */
function backupError(s: Symbols, dest: Deno.PointerObject, rc: number): SqliteError {
  return new SqliteError(resultCodeName(rc), cString(s.sqlite3_errmsg(dest)), rc);
}

/** The connection's current error as a {@link SqliteError}. */
function dbError(s: Symbols, h: Deno.PointerObject): SqliteError {
  const code = s.sqlite3_extended_errcode(h);
  return new SqliteError(
    resultCodeName(code),
    sqliteMessage(code, cString(s.sqlite3_errmsg(h))),
    code,
  );
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const TWO_53 = 2 ** 53;

/** A number when `v` is a safe integer, else the bigint itself. */
export function exact(v: number | bigint): number | bigint {
  return typeof v === "bigint" && v <= MAX_SAFE && v >= -MAX_SAFE ? Number(v) : v;
}

/**
 * Text of `len` UTF-8 bytes at `p`, or `null` when they are not valid UTF-8
 * (a TEXT value SQL made from bytes, `CAST(x'ff' AS TEXT)`, or another
 * program wrote): replaced by U+FFFD, it would come back changed.
 * `getCString` is 5x faster than copying and decoding, but stops at a NUL,
 * which SQL can put in text (`char(0)`), and replaces invalid bytes with
 * U+FFFD: its result is used when it is whole and has no U+FFFD.
 */
function readText(p: Deno.PointerObject, len: number): string | null {
  const text = Deno.UnsafePointerView.getCString(p);
  // Whole when as long as the bytes (each unit comes from at least one
  // byte, so a cut at a NUL would leave fewer): then every byte gave one
  // unit, which is ASCII unless a byte was invalid (U+FFFD). Or whole when
  // it encodes back to as many bytes, unless invalid bytes were replaced:
  // one U+FFFD stands for 1 to 3 bytes, which could hide a cut.
  if (text.length === len || utf8Length(text) === len) {
    if (!text.includes("\ufffd")) return text;
  }
  const bytes = new Uint8Array(len);
  Deno.UnsafePointerView.copyInto(p, bytes);
  try {
    return strictDecoder.decode(bytes);
  } catch {
    return null;
  }
}

/** UTF-8 length of `s` (lone surrogates count 3, as TextEncoder writes them). */
function utf8Length(s: string): number {
  return utf8Offset(s, s.length);
}

/**
 * Result column `index`'s name at `p`, NUL-terminated UTF-8 (a name made
 * of bytes that are not UTF-8, which another program can write into the
 * schema): refused with `INVALID_UTF8` rather than returned with U+FFFD in
 * their place. `getCString` replaces them so: its result stands when it
 * holds no U+FFFD.
 */
function columnName(p: Deno.PointerValue, index: number): string {
  const name = cString(p);
  if (p === null || !name.includes("\ufffd")) return name;
  const view = new Deno.UnsafePointerView(p);
  let len = 0;
  while (view.getUint8(len) !== 0) len++;
  const bytes = new Uint8Array(len);
  view.copyInto(bytes);
  return decodeColumnName(bytes, index);
}

/**
 * The name of result column `index` (from 0) from its UTF-8 `bytes`.
 *
 * @throws {SqliteError} `INVALID_UTF8` naming the column's position when
 *   they are not valid UTF-8.
 */
export function decodeColumnName(bytes: Uint8Array, index: number): string {
  try {
    return strictDecoder.decode(bytes);
  } catch {
    throw new SqliteError(
      ErrorCode.InvalidUtf8,
      `Cannot read the name of result column ${index + 1}: it is not valid UTF-8 and would ` +
        "come back changed; name it with AS, or by position in a column list: " +
        "WITH r(a, b) AS (SELECT ...) SELECT * FROM r",
    );
  }
}

/**
 * The value of a `sqlite3_value` (`null` for none). Text that is not valid
 * UTF-8 comes back as its bytes rather than changed.
 */
function sqlValue(s: Symbols, v: Deno.PointerValue): SqlValue {
  if (v === null) return null;
  switch (s.sqlite3_value_type(v)) {
    case ColumnType.INTEGER: {
      const d = s.sqlite3_value_double(v);
      return d < TWO_53 && d > -TWO_53 ? d : exact(s.sqlite3_value_int64(v));
    }
    case ColumnType.FLOAT:
      return s.sqlite3_value_double(v);
    case ColumnType.TEXT: {
      const p = s.sqlite3_value_text(v);
      const len = s.sqlite3_value_bytes(v);
      if (p === null || len === 0) return "";
      const text = readText(p, len);
      if (text !== null) return text;
      const bytes = new Uint8Array(len);
      Deno.UnsafePointerView.copyInto(p, bytes);
      return bytes;
    }
    case ColumnType.BLOB: {
      const p = s.sqlite3_value_blob(v);
      const len = s.sqlite3_value_bytes(v);
      const out = new Uint8Array(len);
      if (len > 0 && p !== null) Deno.UnsafePointerView.copyInto(p, out);
      return out;
    }
    default:
      return null;
  }
}

function cString(p: Deno.PointerValue): string {
  return p === null ? "" : Deno.UnsafePointerView.getCString(p);
}

function cStringOrNull(p: Deno.PointerValue): string | null {
  return p === null ? null : Deno.UnsafePointerView.getCString(p);
}

/** Byte offset in UTF-8 of UTF-16 index `at` in `s`. */
function utf8Offset(s: string, at: number): number {
  let bytes = 0;
  for (let i = 0; i < at; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c < 0xdc00 && i + 1 < at) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d < 0xe000) {
        bytes += 4;
        i++;
      } else bytes += 3;
    } else bytes += 3;
  }
  return bytes;
}

/** UTF-16 length of the UTF-8 bytes `[from, to)`. */
function utf16Length(bytes: Uint8Array, from: number, to: number): number {
  let n = 0;
  for (let i = from; i < to; i++) {
    const b = bytes[i];
    if ((b & 0xc0) !== 0x80) n += b >= 0xf0 ? 2 : 1;
  }
  return n;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
