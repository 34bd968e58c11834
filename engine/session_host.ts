/**
 * What an {@link EngineSession} may ask of its engine, in three parts: the
 * writer (arbitrated between sessions), the readers, and the group commit.
 * The engine implements them (`engine.ts`); a session sees nothing else of
 * it, and the engine sees of a session only what {@link HostedSession} lists.
 *
 * @module
 */

import type { BufferedRoom } from "./buffered_rows.ts";
import type { Connection, Prepared } from "./connection.ts";
import type { EngineConfig } from "./engine.ts";
import type { EngineSession } from "./engine_session.ts";
import type { GroupMember } from "./group_commit.ts";
import type { PreparedBudget } from "./handles.ts";
import type { LineWaiter } from "./reader_line.ts";
import type { LeaseEnd, Waiter } from "./writer_queue.ts";

/**
 * The one writer connection and who holds it: a session takes it for a
 * write (or waits in line), keeps it while its transaction is open, and
 * gives it back after.
 */
export interface WriterAccess {
  /** The writer connection; only for a session that holds it. */
  readonly connection: Connection;
  /** True while TEMP objects exist (they live on the writer only: every statement goes there). */
  hasTemp(): boolean;
  /**
   * True while databases are attached to the writer (readers lack them: a
   * statement a reader cannot compile, or a PRAGMA read, goes to the writer).
   */
  hasAttached(): boolean;
  /** True when `s` holds the writer (its transaction is open, or its write runs). */
  owns(s: EngineSession): boolean;
  /**
   * Gives `s` the writer if it is free and `s` is first in line; otherwise
   * queues `s` (it is woken to retry) and returns false. `forGroup`: for a
   * write joining the open group commit. For `s`, which holds it already,
   * true, the writer's view of the schema brought up to date first.
   *
   * @throws {SqliteError} `BUSY_TIMEOUT` when `s` already waited too long;
   *   `SHUTTING_DOWN` once the engine closes.
   */
  acquire(s: EngineSession, forGroup?: boolean): boolean;
  /**
   * Inside the transaction of the session holding the writer, before a
   * statement whose result columns are read before it steps (a cursor's,
   * sent as it opens): reads the schema cookie when another program
   * committed since the writer last looked, whatever the binding (SQLite
   * would prepare the statement again as it steps, under other columns).
   */
  currentSchema(): void;
  /**
   * Once the writer holds the write lock (a batch's `BEGIN IMMEDIATE`): true
   * when another program changed the schema meanwhile (node:sqlite waits
   * for its lock inline), which the writer then loads.
   */
  schemaMovedUnderLock(): boolean;
  /**
   * `s` ran something on the writer: it keeps the writer while a transaction
   * is open, else the next in line gets it. `touchedTemp`: the statements may
   * have created or dropped TEMP objects.
   */
  afterWrite(s: EngineSession, touchedTemp?: boolean): void;
  /**
   * `s` used the writer: renews its transaction's lease (starts it when the
   * transaction just began, in a script), or ends it when none is open.
   */
  touch(s: EngineSession): void;
  /** Gives back a writer acquired for a grouped write that did not run. */
  release(s: EngineSession): void;
  /** `s` gives up waiting in line (its request was cancelled, or no longer needs the writer). */
  leaveQueue(s: EngineSession): void;
  /** Rolls back the transaction of `s`, if it holds the writer (close, lease). */
  abort(s: EngineSession): void;
  /** `s` closed: forgets it. */
  forget(s: EngineSession): void;
  /** The writer ran `p`: a statement that changed the schema voids the writer's cache. */
  ranOnWriter(p: Prepared): void;
  /**
   * Turns foreign keys off on the writer for its owner's batch (`on`
   * false), or back on. They are turned back on whenever the writer is
   * given up, before anyone else gets it, however its owner left.
   */
  foreignKeys(on: boolean): void;
}

/** Read-only connections: the shared snapshot reader, and readers lent for one statement. */
export interface ReaderPool {
  /** Readers lent to reads in the background at once, at most (`maxBackgroundReads`). */
  readonly max: number;
  /**
   * The shared reader, in a read transaction that sees every commit that
   * completed before this call; `null` for `:memory:`.
   */
  snapshot(): Connection | null;
  /** The shared reader's cached statement for `sql`, if any (how it was classified). */
  classified(sql: string): Prepared | undefined;
  /**
   * A reader for one read that went to the background; give it back with
   * {@link giveBack}. `null` when the most such reads already run
   * (`maxBackgroundReads`) or others wait: {@link wait} in line then.
   * (Never asked for `:memory:`, which has no readers.)
   */
  borrow(): Connection | null;
  /**
   * Queues `w` for a reader, first come first served: `w.take` is called
   * with one as soon as one is given back. Returns the function that takes
   * `w` out of line (a deadline, a cancel, the session closing); after it,
   * `w` is called no more.
   */
  wait(w: LineWaiter<Connection>): () => void;
  /**
   * Resolves once another program's lock that kept a read out
   * (`ReadLocked`, run.ts) is released, waited for in the background up to
   * the busy timeout; rejects with SQLite's `SQLITE_BUSY` after it (or
   * `SHUTTING_DOWN`). Requests waiting at once share one wait.
   */
  waitForLock(): Promise<void>;
  /** Gives back a reader from {@link borrow} (or {@link wait}). */
  giveBack(c: Connection): void;
  /**
   * A reader for a cursor, counted against the server's open-cursor limit;
   * give it back with {@link giveBackCursor}. `null` for `:memory:`.
   *
   * @throws {SqliteError} `BAD_REQUEST` when that many cursors are open.
   */
  borrowForCursor(): Connection | null;
  /** Gives back a reader from {@link borrowForCursor}. */
  giveBackCursor(c: Connection): void;
  /**
   * Room for a cursor whose rows the server buffers (no reader to stream
   * from), counted against the server's open-cursor limit and the bytes all
   * buffered cursors may hold; give back with {@link releaseBuffered}.
   *
   * @throws {SqliteError} `BAD_REQUEST` when that many cursors are open or
   *   buffered cursors hold all the bytes they may.
   */
  reserveBuffered(): BufferedRoom;
  /** Gives back `bytes` of a {@link reserveBuffered} room; `cursor`: and its cursor (it ended). */
  releaseBuffered(bytes: number, cursor: boolean): void;
  /**
   * Call before opening a connection to the database afresh (maintenance).
   *
   * @throws {SqliteError} `DATABASE_MOVED` once a path no longer names the
   *   file the server opened (database, `-wal` or `-shm`): such a connection
   *   would not see what the server's connections see.
   */
  checkFiles(): void;
}

/** The group commit: autocommit writes of several sessions sharing one transaction and fsync. */
export interface GroupAccess {
  /** True while a group's transaction is open on the writer. */
  isOpen(): boolean;
  /**
   * True while a write of `s` waits in the open group (not in one that is
   * committing, or committed but `s` not yet told).
   */
  holds(s: EngineSession): boolean;
  /**
   * The writer while a group holding a write of `s` is open and a statement
   * there can be stopped at the inline budget (where a member's reads behind
   * its own grouped write run); `null` otherwise.
   */
  writer(s: EngineSession): Connection | null;
  /** True when an autocommit write of `p` may join a group. */
  accepts(p: Prepared, sql: string): boolean;
  /**
   * Runs one write of `s` (which acquired the writer `forGroup`) in the
   * group; the writer is free again after. `s` is told when it is durable.
   */
  run<T>(s: EngineSession, fn: () => T): T;
}

/** Everything a session may use of its engine. */
export interface SessionHost {
  /** The engine's settings. */
  readonly config: Readonly<EngineConfig>;
  /** The database's `-wal` file, where SQLite keeps it (`database_file.ts`, `walPaths`). */
  readonly walPath: string;
  readonly writer: WriterAccess;
  readonly readers: ReaderPool;
  readonly group: GroupAccess;
  /** Prepared-statement handles held by every session, and the most they may. */
  readonly prepared: PreparedBudget;
  /** Tracks work running in the background until it settles (the engine awaits it at close). */
  track<T>(work: Promise<T>): Promise<T>;
  /** Resolves once Deno polled the sockets: a script's turn for other connections (`io_turn.ts`). */
  ioTurn(): Promise<void>;
  /**
   * Reports that the lease of `s`'s transaction ended and it was rolled
   * back, once known (see {@link HostedSession.expire}).
   */
  leaseEnded(s: EngineSession, why: LeaseEnd): void;
}

/** What the engine may use of a session. */
export interface HostedSession extends Waiter, GroupMember {
  /** True while a statement of this session runs in the background on the writer. */
  runningOnWriter: boolean;
  /**
   * The engine ends this session's transaction, whose lease ended: why.
   * True when the transaction's own COMMIT (or outermost RELEASE) runs,
   * which may commit it yet: the session reports the lease's end
   * ({@link SessionHost.leaseEnded}) once it is rolled back, and not if it
   * committed.
   */
  expire(why: LeaseEnd): boolean;
  /** The engine took the writer back from this session (its transaction ended, if one was open). */
  writerReleased(): void;
}
