/**
 * Group commit: autocommit writes from different clients that arrive while
 * the writer is free share one transaction and one fsync. Each runs inside
 * its own savepoint, so a failing statement undoes only itself (a write
 * leaving a deferred foreign key unresolved fails too, when the binding can
 * tell), and no client hears of its write before the shared COMMIT has made
 * it durable.
 *
 * The group opens with the first write and commits once the requests that
 * arrived in the same turn of the event loop have run (a microtask), or
 * earlier when anything else needs the writer. With a binding that has
 * background steps the COMMIT (and its fsync) runs off the main thread, so
 * reads go on meanwhile; the writer is busy until it is done. The engine
 * decides when a COMMIT runs inline instead (`commitInline`): when it takes
 * microseconds, or when no other client could be kept waiting.
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import { commitMayHaveWritten, commitOutcomeUnknown } from "./session_errors.ts";
import { type Connection, release } from "./connection.ts";
import { changeLogOf } from "./change_log.ts";
import { isRoomFull, LockBusy, metLock } from "./run.ts";

/** What SQLite says when an autocommit write leaves a deferred foreign key unresolved. */
function foreignKeyFailed(): SqliteError {
  return new SqliteError("SQLITE_CONSTRAINT_FOREIGNKEY", "FOREIGN KEY constraint failed", 787);
}

/**
 * True when a member's statement failed with `err` after changing rows
 * SQLite keeps (OR FAIL, a trigger's RAISE(FAIL): a constraint error, the
 * transaction still open, `changes()` their number, as the change log
 * decides), and they leave no deferred foreign key unresolved.
 */
function keptRows(db: Connection["db"], err: unknown): boolean {
  return err instanceof SqliteError && !isRoomFull(err) && err.sqliteCode !== undefined &&
    (err.sqliteCode & 0xff) === SQLITE_CONSTRAINT && err.sqliteCode !== FOREIGN_KEY_FAILED &&
    db.inTransaction && Number(db.changes()) > 0 && db.deferredViolations() !== true;
}

/**
 * Errors of members whose statement failed after changing rows the group
 * kept (see {@link keptRows}): their reply says the statement failed, and
 * that its earlier rows stay, only once the group commits.
 */
const keptErrors = new WeakSet<object>();

/**
 * The error a held reply of a group member gets when its group did not
 * commit (`groupError`: another member's write was stopped at its
 * deadline or ended the transaction by an error such as an I/O error, or
 * the COMMIT failed). A write that failed alone keeps its own error
 * (`held`); one whose earlier rows the group kept (OR FAIL, RAISE(FAIL))
 * lost them with the group, so its plain constraint error (which says those
 * rows stay) would mislead: it gets the group's error, naming its own as the
 * detail and carrying it as `cause`.
 *
 * @param held The member's own error (undefined: its write succeeded).
 * @param groupError Why the group did not commit.
 * @returns The error to answer the held reply with.
 */
export function heldReplyError(held: unknown, groupError: SqliteError): unknown {
  if (held === undefined) return groupError;
  if (!(held instanceof SqliteError) || !keptErrors.has(held)) return held;
  return new SqliteError(
    groupError.code,
    `${groupError.message} (the statement had failed with ${held.code}: "${held.message}", ` +
      "and the rows it changed before that, which SQLite keeps, were rolled back with the group)",
    groupError.sqliteCode,
    { cause: held, mayHaveRun: groupError.mayHaveRun },
  );
}

/**
 * True for a statement's error after which SQLite may roll back the whole
 * transaction it ran in: a full disk, an I/O error, no memory.
 */
function endsTransaction(err: unknown): err is SqliteError {
  const primary = err instanceof SqliteError ? (err.sqliteCode ?? 0) & 0xff : 0;
  return primary === SQLITE_FULL || primary === SQLITE_IOERR || primary === SQLITE_NOMEM;
}

/** SQLite's primary codes for no memory, an I/O error and a full disk. */
const SQLITE_NOMEM = 7;
const SQLITE_IOERR = 10;
const SQLITE_FULL = 13;

/** SQLite's primary code for a constraint error. */
const SQLITE_CONSTRAINT = 19;
/** SQLITE_CONSTRAINT_FOREIGNKEY, which {@link foreignKeyFailed} raises after the write. */
const FOREIGN_KEY_FAILED = 787;

/** A session whose write waits in the group for the commit. */
export interface GroupMember {
  /** Called when a write of the member joined the group: its reply waits for the commit. */
  joinedGroup(): void;
  /** Called once the group committed (`null`) or failed (the error). */
  groupDone(error: SqliteError | null): void;
}

/** Coalesces autocommit writes into shared transactions. */
export class GroupCommit {
  readonly #writer: Connection;
  #members = new Set<GroupMember>();
  #open = false;
  #committing = false;
  readonly #onCommitted: () => void;
  readonly #commitInline: (workMs: number) => boolean;
  readonly #lost: () => SqliteError | null;
  /** See the constructor's `schemaMoved`. */
  readonly #schemaMoved: () => boolean;
  /** Writes in the open group. */
  #size = 0;
  /** Time its writes took to run, in ms: a bound on how much its COMMIT writes. */
  #workMs = 0;
  /** Groups ended since start, writes in them, and the largest (for `stats`). */
  readonly counts: { groups: number; writes: number; largest: number } = {
    groups: 0,
    writes: 0,
    largest: 0,
  };

  /**
   * @param writer The writer connection.
   * @param onCommitted Called when a background COMMIT is done: the writer
   *   is free again.
   * @param commitInline Given how long the group's writes took to run (ms,
   *   a bound on how much its COMMIT writes), true when the COMMIT should run
   *   on the main thread, which costs far less than a trip to a background
   *   thread but holds up every other request meanwhile.
   * @param lost After a group committed, before its members hear of it: the
   *   error they get instead when the commit went into a database file the
   *   path no longer names (removed or renamed while serving), else `null`.
   * @param schemaMoved Once a group's `BEGIN IMMEDIATE` holds the write
   *   lock: true when another program changed the schema since the writer
   *   last looked (the writer then prepares with the new one).
   */
  constructor(
    writer: Connection,
    onCommitted: () => void,
    commitInline: (workMs: number) => boolean,
    lost: () => SqliteError | null = () => null,
    schemaMoved: () => boolean = () => false,
  ) {
    this.#schemaMoved = schemaMoved;
    this.#writer = writer;
    this.#onCommitted = onCommitted;
    this.#commitInline = commitInline;
    this.#lost = lost;
  }

  /** True while a group transaction is open on the writer and takes members. */
  get open(): boolean {
    return this.#open;
  }

  /**
   * True while a write of `member` waits in the open group. False while its
   * group commits, and once it committed even before `member` is told (a
   * member told earlier may open the next group meanwhile).
   */
  has(member: GroupMember): boolean {
    return this.#open && this.#members.has(member);
  }

  /** True while a group's COMMIT runs in the background: the writer is busy. */
  get committing(): boolean {
    return this.#committing;
  }

  /**
   * Runs `fn` (one statement) for `member` inside the group.
   *
   * @returns `fn`'s result; the member must hold its reply until `groupDone`.
   * @throws what `fn` throws; the statement's effects are undone.
   */
  run<T>(member: GroupMember, fn: () => T): T {
    const db = this.#writer.db;
    // The first write of a group needs no savepoint: if it fails, the whole
    // (otherwise empty) transaction is rolled back.
    const first = !this.#open;
    const writer = this.#writer;
    if (first) {
      try {
        writer.runOwn("BEGIN IMMEDIATE");
      } catch (err) {
        // Another process holds the file's write lock: the write runs alone
        // in the background, where it waits for the lock.
        if (metLock(writer, err)) throw new LockBusy();
        throw err;
      }
      if (this.#schemaMoved()) {
        // The BEGIN waited for another program's lock (node:sqlite waits
        // inline) while that program changed the schema: the member's
        // statement, prepared before, would step under its old columns.
        // Nothing ran: it runs again, alone, prepared anew.
        writer.runOwn("ROLLBACK");
        throw new LockBusy();
      }
      this.#open = true;
      // Commit once the requests that arrived together have run: a microtask
      // runs after the reads already completed in this turn of the event
      // loop. (A 0 ms timer would add a millisecond or more to every write.)
      queueMicrotask(() => this.commit());
    } else {
      writer.runOwn("SAVEPOINT netsqlite_group");
    }
    const log = changeLogOf(this.#writer);
    const mark = log?.mark() ?? 0;
    let result: T;
    const start = performance.now();
    try {
      result = fn();
      // A deferred foreign key this write left unresolved would fail the
      // shared COMMIT, and every other member's write with it: fail this
      // one alone, as SQLite fails it in autocommit.
      if (db.deferredViolations() === true) throw foreignKeyFailed();
    } catch (err) {
      if (keptRows(db, err)) {
        // Failed under OR FAIL (or RAISE(FAIL)) after changing rows: SQLite
        // keeps them in autocommit, and so does the group (the change log
        // kept them too). The failure is answered once they are committed.
        if (!first) writer.runOwn("RELEASE netsqlite_group");
        this.#joined(member, start);
        keptErrors.add(err as SqliteError);
        throw err;
      }
      log?.truncate(mark); // this member's changes were undone
      if (first) {
        if (db.inTransaction) db.exec("ROLLBACK");
        this.#finish(null);
      } else if (db.inTransaction) {
        db.exec("ROLLBACK TO netsqlite_group; RELEASE netsqlite_group");
      } else {
        // A write stopped at its deadline ended the whole group (SQLite
        // undoes the whole transaction around a stopped write), or an error
        // that ends the transaction (an I/O error, a full disk). (Writes
        // that may fail by ON CONFLICT ROLLBACK or RAISE(ROLLBACK) run
        // alone: the engine does not group them.)
        const stopped = err instanceof SqliteError && err.code === ErrorCode.StatementTimeout;
        if (!stopped && endsTransaction(err)) {
          // A full disk or an I/O error (a write spilling pages to the WAL):
          // SQLite rolled back the whole group. The others get that cause.
          this.#finish(
            new SqliteError(
              err.code,
              `Write was rolled back with its group commit: a later write in it failed with ` +
                `${err.code} (${err.message}), and SQLite rolled back the whole group: ` +
                "nothing of this write was written; retry",
              err.sqliteCode,
              { cause: err, mayHaveRun: false },
            ),
          );
          throw err;
        }
        const code = err instanceof SqliteError ? ` (${err.code})` : "";
        const why = stopped
          ? "stopped at its deadline (a write stopped inside a transaction undoes all of it)"
          : `whose error${code} ended the transaction`;
        this.#finish(
          new SqliteError(
            "SQLITE_ABORT",
            `Write was rolled back with its group commit by another client's statement ${why}: ` +
              "nothing was written; retry",
            4,
          ),
        );
      }
      throw err;
    }
    if (!first) writer.runOwn("RELEASE netsqlite_group");
    this.#joined(member, start);
    return result;
  }

  /** A write of `member`, begun at `start`, stays in the group: its reply waits for the commit. */
  #joined(member: GroupMember, start: number): void {
    this.#workMs += performance.now() - start;
    this.#members.add(member);
    this.#size++;
    member.joinedGroup();
  }

  /**
   * Commits the open group (one fsync) and tells every member: at once, or
   * when the background COMMIT is done. No-op when no group is open.
   */
  commit(): void {
    if (!this.#open) return;
    this.#open = false;
    const writer = this.#writer;
    if (!writer.caps.background || this.#commitInline(this.#workMs)) {
      this.#finish(this.#commitNow(writer));
      return;
    }
    this.#committing = true;
    const p = writer.prepare("COMMIT");
    p.busy++;
    p.stmt.bind([]);
    p.stmt.stepInBackground().then(
      () => {
        changeLogOf(writer)?.committed();
        this.#finish(null);
      },
      (err) => this.#finish(this.#failed(err)),
    ).finally(() => {
      p.stmt.reset();
      release(p);
      this.#onCommitted();
    });
  }

  /** Commits inline, even with a binding that could do it in the background (shutdown). */
  commitNow(): void {
    if (!this.#open) return;
    this.#open = false;
    this.#finish(this.#commitNow(this.#writer));
  }

  #commitNow(writer: Connection): SqliteError | null {
    try {
      writer.runOwn("COMMIT");
      changeLogOf(writer)?.committed();
      return null;
    } catch (err) {
      return this.#failed(err);
    }
  }

  #failed(err: unknown): SqliteError {
    const db = this.#writer.db;
    try {
      if (db.inTransaction) db.exec("ROLLBACK");
    } catch {
      // (As the engine's own rollback: the COMMIT's error is what the members
      // are told, and they must be told, or their sessions would wait forever.)
    }
    changeLogOf(this.#writer)?.discard();
    if (!(err instanceof SqliteError)) return new SqliteError("INTERNAL", String(err));
    if (commitMayHaveWritten(err)) return commitOutcomeUnknown(err, "the group holding this write");
    return new SqliteError(
      err.code,
      `${err.message}; the group commit holding this write was rolled back, nothing of it was ` +
        "written: retry",
      err.sqliteCode,
      { cause: err, mayHaveRun: false },
    );
  }

  #finish(error: SqliteError | null): void {
    // A group committed into a file the path no longer names is not acknowledged.
    if (error === null && this.#members.size > 0) error = this.#lost();
    this.#open = false;
    this.#committing = false;
    const members = this.#members;
    this.#members = new Set();
    if (this.#size > 0 && error === null) {
      const c = this.counts;
      c.groups++;
      c.writes += this.#size;
      if (this.#size > c.largest) c.largest = this.#size;
    }
    this.#size = 0;
    this.#workMs = 0;
    for (const m of members) m.groupDone(error);
  }
}
