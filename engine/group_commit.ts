/**
 * Group commit: autocommit writes from different clients that arrive while
 * the writer is free share one transaction and one fsync. Each runs inside
 * its own savepoint, so a failing statement undoes only itself, and no
 * client hears of its write before the shared COMMIT has made it durable.
 *
 * The group opens with the first write and commits once the requests that
 * arrived in the same turn of the event loop have run (a microtask), or
 * earlier when anything else needs the writer. While one group's fsync
 * blocks the loop, the next group's requests gather in the sockets.
 *
 * @module
 */

import { SqliteError } from "../protocol/errors.ts";
import { toSqliteError } from "./connection.ts";
import type { Database } from "./_sqlite.ts";

/** A session whose write waits in the group for the commit. */
export interface GroupMember {
  /** Called once the group committed (`null`) or failed (the error). */
  _groupDone(error: SqliteError | null): void;
}

/** Coalesces autocommit writes into shared transactions. */
export class GroupCommit {
  readonly #db: Database;
  #members = new Set<GroupMember>();
  #open = false;

  readonly #onCommit: () => void;

  /**
   * @param db The writer connection.
   * @param onCommit Called after every COMMIT (new data is visible).
   */
  constructor(db: Database, onCommit: () => void) {
    this.#db = db;
    this.#onCommit = onCommit;
  }

  /** True while a group transaction is open on the writer. */
  get open(): boolean {
    return this.#open;
  }

  /**
   * Runs `fn` (one statement) for `member` inside the group.
   *
   * @returns `fn`'s result; the member must hold its reply until `_groupDone`.
   * @throws what `fn` throws; the statement's effects are undone.
   */
  run<T>(member: GroupMember, fn: () => T): T {
    const db = this.#db;
    // The first write of a group needs no savepoint: if it fails, the whole
    // (otherwise empty) transaction is rolled back.
    const first = !this.#open;
    if (first) {
      db.exec("BEGIN IMMEDIATE");
      this.#open = true;
      // Commit once the requests that arrived together have run: a microtask
      // runs after the reads already completed in this turn of the event
      // loop. (A 0 ms timer would add a millisecond or more to every write.)
      queueMicrotask(() => this.commit());
    } else {
      db.exec("SAVEPOINT netsqlite_group");
    }
    let result: T;
    try {
      result = fn();
    } catch (err) {
      if (first) {
        if (db.isTransaction) db.exec("ROLLBACK");
        this.#finish(null);
      } else if (db.isTransaction) {
        db.exec("ROLLBACK TO netsqlite_group; RELEASE netsqlite_group");
      } else {
        // ON CONFLICT ROLLBACK or RAISE(ROLLBACK) ended the whole group.
        this.#finish(
          new SqliteError(
            "SQLITE_ABORT",
            "Write was rolled back with its group commit by another client's statement " +
              "(ON CONFLICT ROLLBACK or RAISE(ROLLBACK)): nothing was written; retry",
            4,
          ),
        );
      }
      throw err;
    }
    if (!first) db.exec("RELEASE netsqlite_group");
    this.#members.add(member);
    return result;
  }

  /** Commits the open group (one fsync) and tells every member. */
  commit(): void {
    if (!this.#open) return;
    let error: SqliteError | null = null;
    try {
      this.#db.exec("COMMIT");
      this.#onCommit();
    } catch (err) {
      error = toSqliteError(err);
      if (this.#db.isTransaction) this.#db.exec("ROLLBACK");
    }
    this.#finish(error);
  }

  #finish(error: SqliteError | null): void {
    this.#open = false;
    const members = this.#members;
    this.#members = new Set();
    for (const m of members) m._groupDone(error);
  }
}
