/**
 * Change capture for change feeds: every row the writer connection changes
 * (`sqlite3_update_hook`) is noted as pending, and published, numbered, only
 * once its transaction committed; work that was rolled back is dropped.
 *
 * How pending changes follow the transaction:
 * - each statement on the writer is bracketed by {@link ChangeLog.mark} and
 *   {@link ChangeLog.ran} / {@link ChangeLog.failed} (in `run.ts`): a failed
 *   statement's changes are dropped when SQLite undid them, all pending ones
 *   when the failure ended the transaction, and kept (committed, in
 *   autocommit) when OR FAIL kept them;
 * - `SAVEPOINT name` / `RELEASE name` / `ROLLBACK TO name` run by clients
 *   (the name as SQLite read it, {@link Prepared.savepoint}: comments, quotes
 *   and case do not matter) keep a stack of marks, so a rollback to a
 *   savepoint drops exactly what it undid;
 * - a statement after which the writer is in autocommit committed (COMMIT,
 *   the outermost RELEASE, an autocommit write), unless it was ROLLBACK;
 * - the engine's own transaction control says so directly: the group commit
 *   ({@link ChangeLog.committed} after its COMMIT, {@link ChangeLog.discard} when
 *   it failed; a failed member is one statement, dropped by `failed`), `batch`
 *   (`truncate` to its savepoint) and rollbacks on close or lease expiry.
 *
 * Capture starts with the first subscription (until then nothing is
 * recorded). Writes run as without feeds, inline or in the background: a
 * hook that SQLite calls from a background step runs on the main thread
 * (the binding refs its callback for the step, so that it wakes an idle
 * event loop), the step waiting meanwhile; that costs a round trip between
 * the threads per row changed, paid only by writes that run long.
 *
 * Published changes are kept in a ring of the last `capacity` changes (in
 * memory, until the server stops), from which `subscribe({ since })` resumes;
 * fewer when their key-value keys and long table and collection names pass
 * `valueBytes` (the oldest are let go whole, as if the ring had moved past
 * them). For each table and collection the log remembers the last change
 * it let go whole (at most {@link LET_GO_NAMES} names, {@link LET_GO_NAME_BYTES}
 * bytes of them; past that the oldest is forgotten, its `seq` kept as a
 * floor), so that a filtered feed resumes from before the ring's oldest
 * change when none it takes was let go after its `since`.
 * The values the ring holds are bounded in bytes too (`valueBytes`): past
 * the bound the oldest held values are let go (those changes then count as
 * not read, so a resume asking for values fails with `FEED_GAP`), and all
 * of them once no feed with values is left and none may still resume (see
 * {@link ChangeLog.unsubscribe}).
 *
 * Values are read on the writer when the transaction has committed, before
 * anything else can write: a row's value is the value as committed (several
 * changes to one row in one transaction all carry the final value; a deleted
 * row carries none).
 *
 * Key-value rows (`netsqlite_kv`) are reported by collection and key, one
 * change per key per commit: its state at commit (read then) against its
 * state before the transaction (a key-value delete is an update to a
 * tombstone). Rows SQL deletes or moves to another key are gone by then:
 * while a statement that writes the table runs (itself or by a trigger,
 * {@link Prepared.writtenTables}), the preupdate hook names each row it
 * inserts, updates or deletes, REPLACE's deletes too ({@link ChangeLog.mark});
 * the update hook's reports of that table are then left aside. Rows the
 * update hook alone reported (a library without the preupdate hook, a write
 * stepped as a cursor) are named by what their rowid holds at commit, and a
 * deleted one cannot be.
 *
 * Not seen: WITHOUT ROWID tables and rows deleted by ON CONFLICT REPLACE
 * (SQLite's update hook does not report them), TEMP and attached tables,
 * schema changes; changes made by other processes on the file. A client's
 * `DELETE FROM t` without WHERE (any spelling) is reported as one delete with
 * `rowid: null` (SQLite empties the table without reporting rows); a
 * trigger's is made to delete row by row (see `Connection`).
 *
 * A row an UPDATE moves to another rowid (setting the INTEGER PRIMARY KEY
 * or `rowid`) is one the update hook reports as an update of its new rowid
 * only: the preupdate hook, set while a statement that may move rows runs
 * ({@link ChangeLog.mark}), adds a delete of the old rowid before it; a
 * library without that hook has the table reported whole instead (a
 * delete with `rowid: null`, then an insert of every row).
 *
 * @module
 */

import { SqliteError } from "../protocol/errors.ts";
import { valueSize } from "../protocol/messages.ts";
import { foldCase } from "./_sql_text.ts";
import type { RowChange, RowChanging, RowidChange, SqlValue } from "./binding/binding.ts";
import { columnsOf, type Connection, type Prepared } from "./connection.ts";

/** One committed change. */
export interface Change {
  /** Position in the feed: increases by one per change. */
  seq: number;
  /** Number of the commit that made it: increases by one per commit with changes. */
  commitSeq: number;
  /** Table changed (`netsqlite_kv` for key-value changes). */
  table: string;
  /** What happened to the row (or key). */
  op: "insert" | "update" | "delete";
  /** The row's rowid (`null`: every row, for `DELETE FROM t` without WHERE). */
  rowid: number | bigint | null;
  /** Key-value collection, for `netsqlite_kv` rows. */
  collection: string | null;
  /** Encoded key-value key, for `netsqlite_kv` rows. */
  key: Uint8Array | null;
  /** Key-value version, for `netsqlite_kv` rows. */
  version: number | null;
  /**
   * The committed row as an object (tables; read only while a subscriber
   * wants values), or the MessagePack bytes of a key-value value.
   */
  value: Record<string, unknown> | Uint8Array | null;
  /**
   * False for a change whose value was not read at commit (no feed wanted
   * values then) or was let go since (the ring's byte bound).
   */
  valueRead: boolean;
  /** Approximate bytes {@link value} holds ({@link valueSize}); 0 without one. */
  valueBytes: number;
}

/** A party that receives changes: it filters, and buffers what it cannot send yet. */
export interface ChangeSink {
  /** True when values of table rows should be read at commit. */
  readonly wantsValues: boolean;
  /** Receives every commit's changes, in commit order. */
  deliver(changes: readonly Change[]): void;
  /**
   * True when the sink takes `c` (its filter); every change when absent.
   * A resume checks only these (see {@link ChangeLog.subscribe}), which it
   * may call with the table and collection of a change let go.
   */
  matches?(c: Pick<Change, "table" | "collection">): boolean;
}

/** Changes kept in memory for `subscribe({ since })` by default. */
export const CHANGE_FEED_CAPACITY = 10_000;

/**
 * Tables and key-value collections whose last change let go the log
 * remembers, at most (see {@link ChangeLog.subscribe}).
 */
export const LET_GO_NAMES = 1024;
/**
 * Bytes of the names of those tables and collections (two per UTF-16 unit,
 * plus 64 each), at most (1 MiB).
 */
export const LET_GO_NAME_BYTES = 1024 * 1024;

/** Bytes of values the ring keeps for `subscribe({ since, values: true })` by default (64 MiB). */
export const CHANGE_FEED_VALUE_BYTES = 64 * 1024 * 1024;
/**
 * How long values go on being read and held after the last feed with values
 * ended without unsubscribing (it lagged, or its connection closed), so that
 * it can resume with them; in ms.
 */
export const VALUES_WINDOW_MS = 30_000;

/** Changes queued for sending on all feeds of the server, unless configured. */
export const MAX_QUEUED_CHANGES = 1_000_000;
/** Changes queued for sending on all feeds of one connection, unless configured. */
export const MAX_QUEUED_CHANGES_PER_CONNECTION = 100_000;
/** Bytes of values queued for sending on all feeds of the server, unless configured (256 MiB). */
export const MAX_QUEUED_VALUE_BYTES = 256 * 1024 * 1024;
/** Bytes of values queued on all feeds of one connection, unless configured (64 MiB). */
export const MAX_QUEUED_VALUE_BYTES_PER_CONNECTION = 64 * 1024 * 1024;

/**
 * How many changes, and bytes of their values, the server's feeds hold
 * queued for clients that have not read them yet (each queued change is a
 * reference to the log's shared {@link Change}; its value counts for a feed
 * with values, once per feed), and the most they may: a feed that would
 * queue more ends with `LAGGED` as one whose own `buffer` is full. A change
 * whose value alone exceeds a byte bound is queued when nothing else is.
 */
export class FeedQueueBudget {
  /** Most changes queued on all connections. */
  readonly max: number;
  /** Most changes queued on all feeds of one connection. */
  readonly perConnection: number;
  /** Most bytes of values queued on all connections. */
  readonly maxBytes: number;
  /** Most bytes of values queued on all feeds of one connection. */
  readonly perConnectionBytes: number;
  /** Changes queued now, on all connections. */
  used = 0;
  /** Bytes of values queued now, on all connections. */
  usedBytes = 0;
  /** Wakers of feeds waiting for room (see {@link wait}). */
  readonly #waiting = new Set<() => void>();

  /**
   * @param max Most changes queued on all connections.
   * @param perConnection Most changes queued on one connection's feeds.
   * @param maxBytes Most bytes of values queued on all connections.
   * @param perConnectionBytes Most bytes of values queued on one connection's feeds.
   */
  constructor(
    max: number = MAX_QUEUED_CHANGES,
    perConnection: number = MAX_QUEUED_CHANGES_PER_CONNECTION,
    maxBytes: number = MAX_QUEUED_VALUE_BYTES,
    perConnectionBytes: number = MAX_QUEUED_VALUE_BYTES_PER_CONNECTION,
  ) {
    this.max = max;
    this.perConnection = perConnection;
    this.maxBytes = maxBytes;
    this.perConnectionBytes = perConnectionBytes;
  }

  /**
   * Calls `wake` once, the next time queued changes are sent or dropped on
   * any connection ({@link freed}): a feed replaying the ring that found no
   * room waits so, as room may free on another connection while nothing
   * is committed.
   */
  wait(wake: () => void): void {
    this.#waiting.add(wake);
  }

  /** Forgets `wake` (its feed ended). */
  unwait(wake: () => void): void {
    this.#waiting.delete(wake);
  }

  /** Queued changes were sent or dropped: wakes every feed {@link wait}ing for room. */
  freed(): void {
    if (this.#waiting.size === 0) return;
    const waiting = [...this.#waiting];
    this.#waiting.clear();
    for (const wake of waiting) wake();
  }
}

/** Code of the error for a `since` the server no longer (or never) held. */
export const FEED_GAP = "FEED_GAP";
/** Code of the error for `subscribe` on a binding without an update hook. */
export const FEED_UNSUPPORTED = "FEED_UNSUPPORTED";

interface Raw {
  op: "insert" | "update" | "delete";
  table: string;
  rowid: number | bigint | null;
  /** A key-value row's change as the preupdate hook saw it (see {@link ChangeLog.mark}). */
  kv?: KvStep;
}

/** Where a key-value entry is: its collection and key. */
interface KvId {
  collection: string;
  key: Uint8Array;
  /** Both as one string, to compare by. */
  id: string;
}

/** A change of one `netsqlite_kv` row, its key before and after. */
interface KvStep {
  /** The entry the row was (update, delete); `null` for an insert. */
  from: KvId | null;
  /** False when it was a tombstone (value NULL). */
  live: boolean;
  /** Its version, when it is deleted or leaves its key. */
  version: number | null;
  /** The entry the row is then (insert, update); `null` for a delete. */
  to: KvId | null;
}

/** Column positions of `netsqlite_kv`. */
interface KvColumns {
  collection: number;
  key: number;
  value: number;
  version: number;
}

/** One key-value entry a commit changed: its state before, and its change once resolved. */
interface KvTouch {
  at: KvId;
  /** It existed (live or a tombstone) before the transaction. */
  existed: boolean;
  /** It was live before the transaction (when it existed). */
  live: boolean;
  /** Version and rowid it had when last deleted or moved away in the transaction. */
  version: number | null;
  rowid: number | bigint | null;
  change: Change;
}

/** The key-value table. */
const KV_TABLE = "netsqlite_kv";

/** The last change of a table or collection that the ring let go whole. */
interface LetGo {
  seq: number;
  table: string;
  collection: string | null;
}

/**
 * Names of at most this many UTF-16 units are not counted against the
 * ring's bound on keys and names (at most 256 bytes a change held): with a
 * small `changeFeedValueBytes` (0: keep no values) a table's changes are
 * still held, and a feed of it resumes, as before names were counted.
 */
const UNCOUNTED_NAME_LENGTH = 128;

/**
 * Bytes a held change counts against the ring's bound on keys: its
 * key-value key, and its table's name when longer than
 * {@link UNCOUNTED_NAME_LENGTH} (two bytes per UTF-16 unit; a key-value
 * change's collection instead, its table being `netsqlite_kv`).
 */
function nameBytes(c: Change): number {
  const name = c.collection === null ? c.table : c.collection;
  return (c.key?.length ?? 0) + (name.length > UNCOUNTED_NAME_LENGTH ? 2 * name.length : 0);
}

const logs = new WeakMap<Connection, ChangeLog>();

/** The names SQL reads a table's rowid by, unless the table declares a column of that name. */
const ROWID_NAMES = ["rowid", "oid", "_rowid_"] as const;

/** The change log capturing `conn`'s changes, if any (only the writer has one). */
export function changeLogOf(conn: Connection): ChangeLog | undefined {
  return logs.get(conn);
}

/** Captures the writer's changes and publishes committed ones to sinks. */
export class ChangeLog {
  readonly #writer: Connection;
  readonly #refusal: string | null;
  readonly #capacity: number;
  #pending: Raw[] = [];
  #savepoints: { name: string; mark: number }[] = [];
  readonly #ring: Change[] = [];
  #ringStart = 0;
  /**
   * Sequence number of the last published change. It starts from the clock
   * (microseconds since 1970 when the log was made), so that numbers given
   * out before a restart are never taken for later changes: a `since` from
   * before is older than anything held, and fails with `FEED_GAP`.
   */
  #seq = Date.now() * 1000;
  /** True while values are read at commit without a feed asking (see {@link unsubscribe}). */
  #valueWindow = false;
  /** Ends the window of {@link #valueWindow} (and lets go of held values) when it fires. */
  #valuesTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #valueWindowMs: number;
  readonly #maxValueBytes: number;
  #heldValueBytes = 0;
  /** Every change up to this `seq` holds no value (they were let go, oldest first). */
  #valuesFreedTo = -1;
  /**
   * Approximate bytes of key-value keys and table and collection names the
   * ring holds ({@link nameBytes}; bounded as its values are).
   */
  #heldKeyBytes = 0;
  /**
   * Every change up to this `seq` was let go whole, its key with it (the
   * ring's bound on keys): none is held, as if the ring had moved past it.
   */
  #keysFreedTo = -1;
  /**
   * The last change let go whole of each table (by name) and of each
   * key-value collection, in the order they were let go (oldest first), and
   * the bytes of their names; bounded by {@link LET_GO_NAMES} and
   * {@link LET_GO_NAME_BYTES}.
   */
  readonly #letGoTables = new Map<string, LetGo>();
  readonly #letGoKv = new Map<string, LetGo>();
  #letGoBytes = 0;
  /**
   * Changes let go whole up to this `seq` may be of any table or collection
   * (names forgotten past the bounds); it starts at the log's first `seq`,
   * so that a `since` from before a restart is refused.
   */
  #letGoFloor = this.#seq;
  #commitSeq = 0;
  readonly #sinks = new Set<ChangeSink>();
  /** Changes the feeds of every connection hold queued, and their limits. */
  readonly queued: FeedQueueBudget;
  #capturing = false;
  /** Set when capture started inside a transaction: that transaction is not reported. */
  #skipOpen = false;
  /**
   * True when the library reports rows moved to another rowid
   * (`Db.onRowidChange`, SQLite's preupdate hook): each is reported as a
   * delete of its old rowid. Otherwise a table whose rows a statement moved
   * is reported whole (see {@link #reportWhole}).
   */
  #seesMoves = false;
  /** True while the preupdate hook is set, for a statement that may move rows. */
  #watching = false;
  /**
   * The columns of `netsqlite_kv` while the preupdate hook reports its rows,
   * for a statement that writes it (see {@link mark}); `null` otherwise.
   */
  #kvWatch: KvColumns | null = null;
  /** Column positions of `netsqlite_kv` for each statement writing it (`null`: unreadable). */
  readonly #kvColumns = new WeakMap<Prepared, KvColumns | null>();
  /** Notes a row moved to another rowid (the update hook then reports the new one). */
  readonly #onMoved = (c: RowidChange): void => {
    if (c.db !== "main" || c.table.startsWith("sqlite_") || c.table === KV_TABLE) return;
    this.#pending.push({ op: "delete", table: c.table, rowid: c.oldRowid });
  };
  /**
   * Notes a key-value row about to change, by the entries (collection and
   * key) it was and will be: a row deleted, or moved to another key, is gone
   * by commit, when the others are read.
   */
  readonly #onKvRow = (row: RowChanging): void => {
    const k = this.#kvWatch;
    if (k === null) return;
    let step: KvStep;
    if (row.op === "insert") {
      step = {
        from: null,
        live: true,
        version: null,
        to: kvId(row.after(k.collection), row.after(k.key)),
      };
    } else {
      const from = kvId(row.before(k.collection), row.before(k.key));
      const to = row.op === "delete" ? null : kvId(row.after(k.collection), row.after(k.key));
      const leaves = to === null || to.id !== from.id;
      step = {
        from,
        live: !row.nullBefore(k.value),
        version: leaves ? row.before(k.version) as number : null,
        to,
      };
    }
    const rowid = row.op === "delete" ? row.rowid : row.newRowid;
    this.#pending.push({ op: row.op, table: KV_TABLE, rowid, kv: step });
  };

  /**
   * Starts capturing on `writer` (which must be the engine's writer).
   *
   * @param capacity Changes kept for `since` (the ring's size).
   * @param queued Bounds on the changes feeds hold queued for their clients.
   * @param valueBytes Most bytes of values the ring holds.
   * @param valueWindowMs How long values are read after the last feed with them ended.
   * @param refusal Why no feed can report anything (the writer is read-only):
   *   every {@link subscribe} then fails with `FEED_UNSUPPORTED` saying so.
   */
  constructor(
    writer: Connection,
    capacity: number,
    queued: FeedQueueBudget = new FeedQueueBudget(),
    valueBytes: number = CHANGE_FEED_VALUE_BYTES,
    valueWindowMs: number = VALUES_WINDOW_MS,
    refusal: string | null = null,
  ) {
    this.#refusal = refusal;
    this.#writer = writer;
    this.#capacity = capacity;
    this.queued = queued;
    this.#maxValueBytes = valueBytes;
    this.#valueWindowMs = valueWindowMs;
  }

  /** Approximate bytes of values the ring holds now (at most its byte bound, but for one). */
  get heldValueBytes(): number {
    return this.#heldValueBytes;
  }

  /**
   * Starts capturing, once: installs the update hook. A transaction open at
   * this moment is not reported (its earlier changes were not seen).
   */
  #start(): void {
    if (this.#capturing) return;
    // Throws (nothing changed) while a write steps in the background on the
    // writer: the caller tries again once it is done.
    const skipOpen = this.#writer.db.inTransaction;
    this.#writer.db.onUpdate((c: RowChange) => {
      if (c.db !== "main" || c.table.startsWith("sqlite_")) return;
      // (Key-value rows the preupdate hook reports: it named them.)
      if (this.#kvWatch !== null && c.table === KV_TABLE) return;
      this.#pending.push({ op: c.op, table: c.table, rowid: c.rowid });
    });
    this.#capturing = true;
    this.#skipOpen = skipOpen;
    this.#seesMoves = this.#writer.db.onRowidChange(null);
    logs.set(this.#writer, this);
  }

  /** Sequence number of the last published change (its start value before any). */
  get head(): number {
    return this.#seq;
  }

  /** Sequence number of the oldest change still held (head + 1 when none). */
  get oldest(): number {
    return Math.max(this.#ringOldest, this.#keysFreedTo + 1);
  }

  /** Sequence number of the change at `#ringStart` (head + 1 when none), let go or not. */
  get #ringOldest(): number {
    return this.#ring.length === 0 ? this.#seq + 1 : this.#ring[this.#ringStart].seq;
  }

  // ---- capture ---------------------------------------------------------

  /**
   * Before a statement on the writer: where its changes begin. For a
   * statement `p` that may move rows to another rowid (an UPDATE of a
   * rowid or INTEGER PRIMARY KEY column, its own or a trigger's, as
   * SQLite's authorizer reported it when `p` was prepared), sets the
   * preupdate hook until it ends ({@link ran}, {@link failed}), where the
   * library has one: it costs a call per changed row, and only such a
   * statement needs it. So too for a statement that writes `netsqlite_kv`
   * (itself or by a trigger): each key-value row it inserts, updates or
   * deletes is noted by the entries it was and becomes (the update hook's
   * reports of that table are left aside meanwhile), since a row deleted
   * or moved to another key cannot be read at commit.
   */
  mark(p?: Prepared): number {
    if (p === undefined || !this.#seesMoves) return this.#pending.length;
    if (
      !this.#watching &&
      (p.movesRowids === undefined ? p.updatedColumns.length > 0 : p.movesRowids.length > 0)
    ) {
      this.#watching = this.#writer.db.onRowidChange(this.#onMoved);
    }
    if (this.#kvWatch === null && p.writtenTables.includes(KV_TABLE)) {
      const columns = this.#kvColumnsOf(p);
      if (columns !== null && this.#writer.db.onRowChanging(KV_TABLE, this.#onKvRow)) {
        this.#kvWatch = columns;
      }
    }
    return this.#pending.length;
  }

  /** Unsets the preupdate hook that {@link mark} set. */
  #unwatch(): void {
    if (this.#watching) {
      this.#watching = false;
      this.#writer.db.onRowidChange(null);
    }
    if (this.#kvWatch !== null) {
      this.#kvWatch = null;
      this.#writer.db.onRowChanging(KV_TABLE, null);
    }
  }

  /**
   * The positions of the columns of `netsqlite_kv` as `p` was prepared
   * against (read by preparing a statement, which reads no row: no
   * transaction begins), cached on `p` (a schema change drops it from the
   * cache); `null` when one is missing.
   */
  #kvColumnsOf(p: Prepared): KvColumns | null {
    let columns = this.#kvColumns.get(p);
    if (columns !== undefined) return columns;
    columns = null;
    try {
      const stmt = this.#writer.db.prepare(`SELECT * FROM main."${KV_TABLE}"`);
      if (stmt !== null) {
        const names = stmt.columnNames().map(foldCase);
        stmt.finalize();
        const [collection, key, value, version] = ["collection", "key", "value", "version"]
          .map((n) => names.indexOf(n));
        if (Math.min(collection, key, value, version) >= 0) {
          columns = { collection, key, value, version };
        }
      }
    } catch {
      // (No such table: nothing to watch.)
    }
    this.#kvColumns.set(p, columns);
    return columns;
  }

  /** A statement begun at `mark` succeeded. */
  ran(p: Prepared, mark: number): void {
    this.#unwatch();
    const inTx = this.#writer.db.inTransaction;
    if (p.deleteTargets.length > 0) this.#noteDeleteAll(p, mark);
    if (p.updatedColumns.length > 0) {
      if (this.#seesMoves) this.#movesRowids(p); // (read once: the next runs set the hook only if needed)
      else this.#reportMoved(p, mark);
    }
    if (!inTx) {
      if (p.txOp === "ROLLBACK") this.discard();
      else this.committed();
      return;
    }
    if (p.txOp === "SAVEPOINT") {
      this.#savepoints.push({ name: foldCase(p.savepoint ?? ""), mark });
    } else if (p.txOp === "RELEASE") {
      const i = this.#find(p.savepoint ?? "");
      if (i >= 0) this.#savepoints.length = i;
    } else if (p.txOp === "ROLLBACK TO") {
      const i = this.#find(p.savepoint ?? "");
      if (i >= 0) {
        this.#pending.length = this.#savepoints[i].mark;
        this.#savepoints.length = i + 1;
      }
    } else if (p.txOp === "BEGIN") {
      this.#savepoints = [];
    }
  }

  /**
   * A statement begun at `mark` failed. SQLite undid it (OR ABORT, the
   * default, and errors), or its whole transaction (OR ROLLBACK,
   * RAISE(ROLLBACK)), and then set `changes()` to 0; or, under OR FAIL or a
   * trigger's RAISE(FAIL), kept the rows it changed before the failure, set
   * `changes()` to their number and, in autocommit, committed them. (A
   * statement the hook saw change rows is an INSERT, UPDATE or DELETE, which
   * always sets `changes()` when it ends.) Known gap: under OR FAIL, rows
   * changed by triggers before the statement changed any of its own are
   * kept by SQLite but dropped here (`changes()` is 0 then, as when undone).
   * `p`, the statement, is needed to report rows it moved and kept (see
   * {@link ran}).
   */
  failed(mark: number, p?: Prepared): void {
    this.#unwatch();
    const kept = this.#pending.length > mark && Number(this.#writer.db.changes()) > 0;
    if (kept && p !== undefined && p.updatedColumns.length > 0 && !this.#seesMoves) {
      this.#reportMoved(p, mark);
    }
    if (!this.#writer.db.inTransaction) {
      if (kept) this.committed();
      else this.discard();
    } else if (!kept) this.truncate(mark);
  }

  /** Drops changes after `mark` (a savepoint of the engine's was rolled back to). */
  truncate(mark: number): void {
    if (this.#pending.length > mark) this.#pending.length = mark;
  }

  /** The transaction was rolled back: drops every pending change. */
  discard(): void {
    this.#unwatch();
    this.#skipOpen = false;
    this.#pending = [];
    this.#savepoints = [];
  }

  /** The transaction committed: numbers, resolves and publishes its changes. */
  committed(): void {
    this.#unwatch();
    const raw = this.#pending;
    this.#pending = [];
    this.#savepoints = [];
    const skip = this.#skipOpen;
    this.#skipOpen = false;
    if (raw.length === 0 || skip) return;
    const wantValues = this.#valueWindow || this.#valueSinks();
    const commitSeq = ++this.#commitSeq;
    const listed: Change[] = [];
    // Key-value entries, one change each, placed where the commit first changed them.
    const kv = new Map<string, KvTouch>();
    const touch = (at: KvId, existed: boolean, live: boolean): KvTouch => {
      let t = kv.get(at.id);
      if (t === undefined) {
        const change = newChange(commitSeq, KV_TABLE, "update", null);
        t = { at, existed, live, version: null, rowid: null, change };
        kv.set(at.id, t);
        listed.push(change);
      }
      return t;
    };
    for (const r of raw) {
      if (r.table === KV_TABLE && r.rowid !== null) {
        const step = r.kv ?? this.#kvStepOf(r);
        if (step === null) continue;
        if (step.from !== null) {
          const t = touch(step.from, true, step.live);
          if (step.to === null || step.to.id !== step.from.id) {
            t.version = step.version;
            t.rowid = r.rowid;
          }
        }
        if (step.to !== null) touch(step.to, false, true); // (made here, unless touched before)
        continue;
      }
      const c = newChange(commitSeq, r.table, r.op, r.rowid);
      if (r.op !== "delete" && r.rowid !== null) {
        if (wantValues) c.value = this.#readRow(r.table, r.rowid);
        else c.valueRead = false;
      }
      listed.push(c);
    }
    const dropped = new Set<Change>();
    for (const t of kv.values()) {
      if (!this.#resolveKv(t)) dropped.add(t.change);
      else if (!wantValues && t.change.value !== null) {
        t.change.value = null;
        t.change.valueRead = false;
      }
    }
    const out: Change[] = [];
    for (const c of listed) {
      if (dropped.has(c)) continue;
      c.valueBytes = valueSize(c.value);
      c.seq = ++this.#seq;
      out.push(c);
    }
    if (out.length === 0) {
      this.#commitSeq--; // (only entries that lived and died in it, or tombstones purged)
      return;
    }
    this.#remember(out);
    for (const sink of this.#sinks) sink.deliver(out);
  }

  /**
   * The entry a key-value row the update hook alone reported is at commit
   * (a statement the preupdate hook did not follow: a library without it,
   * or a write stepped as a cursor): an insert made it, an update changed
   * it. A deleted row cannot be named (it is gone, or its rowid reused).
   */
  #kvStepOf(r: Raw): KvStep | null {
    if (r.op === "delete") return null;
    const rows = this.#query(`SELECT collection, key FROM "${KV_TABLE}" WHERE rowid = ?1`, [
      r.rowid,
    ]);
    if (rows === null || rows.rows.length === 0) return null;
    const at = kvId(rows.rows[0][0], rows.rows[0][1]);
    return r.op === "insert"
      ? { from: null, live: true, version: null, to: at }
      : { from: at, live: true, version: null, to: at };
  }

  // ---- feed ------------------------------------------------------------

  /**
   * Adds `sink`, which then receives every commit's changes. With `since`,
   * the held changes after `since` are checked (`FEED_GAP` when they are
   * no longer all held, or, for a sink that wants values, when one it
   * {@link ChangeSink.matches} lacks its value) but not handed over: the sink reads them itself
   * with {@link after} as it has room (a backlog larger than its buffer is
   * replayed gradually) and ignores deliveries until it has caught up.
   *
   * @returns the feed's head when it was added.
   * @throws {SqliteError} `FEED_GAP` when changes after `since` are no longer held,
   *   `FEED_UNSUPPORTED` when the log was made with a refusal (a read-only writer).
   */
  subscribe(sink: ChangeSink, since?: number): number {
    if (this.#refusal !== null) throw new SqliteError(FEED_UNSUPPORTED, this.#refusal);
    this.#start();
    if (since !== undefined) {
      if (since > this.#seq) {
        throw new SqliteError(
          FEED_GAP,
          `Cannot resume change feed after ${since}: the server's feed is only at ${this.#seq}`,
        );
      }
      const lost = this.#lostAfter(since, sink);
      if (lost !== null) {
        const held = `(the server keeps the last ${this.#capacity}, fewer when their ` +
          `key-value keys and names pass ${this.#maxValueBytes} bytes, and none from before ` +
          "its restart)";
        throw new SqliteError(
          FEED_GAP,
          lost === true
            ? `Cannot resume change feed after ${since}: the oldest change held is ` +
              `${this.oldest} ${held}`
            : `Cannot resume change feed after ${since}: change ${lost.seq} of ` +
              `${
                lost.collection === null
                  ? `table ${JSON.stringify(lost.table)}`
                  : `key-value collection ${JSON.stringify(lost.collection)}`
              }, which this feed takes, was let go; the oldest change held is ${this.oldest} ` +
              held,
        );
      }
      // Only the changes the sink takes: another table's values, let go or
      // never read, are none of its concern.
      const unread = sink.wantsValues
        ? this.#held(since).find((c) => !c.valueRead && (sink.matches?.(c) ?? true))
        : undefined;
      if (unread !== undefined) {
        throw new SqliteError(
          FEED_GAP,
          `Cannot resume change feed after ${since} with values: change ${unread.seq} and ` +
            "others were published while no feed asked for values, or their values were let " +
            "go to keep the server's memory bounded (resume without values, or read the rows " +
            "again)",
        );
      }
    }
    this.#sinks.add(sink);
    return this.#seq;
  }

  /**
   * Up to `limit` held changes after `since`, oldest first (`[]` when
   * `since` is the head); `null` when changes after `since` are no longer
   * held (the ring moved past them), unless `sink` takes none of those let
   * go (see {@link subscribe}): then the held ones.
   */
  after(since: number, limit: number, sink?: ChangeSink): Change[] | null {
    if (since > this.#seq) return null;
    if (since < this.oldest - 1) {
      if (sink === undefined || this.#lostAfter(since, sink) !== null) return null;
      since = this.oldest - 1;
    }
    const ring = this.#ring;
    const out: Change[] = [];
    // Held sequence numbers are consecutive: `#ringOldest` is at `#ringStart`.
    for (let i = since + 1 - this.#ringOldest; i < ring.length && out.length < limit; i++) {
      out.push(ring[(this.#ringStart + i) % ring.length]);
    }
    return out;
  }

  /**
   * Removes `sink`. After the last feed with values ends without asking to
   * (`resumable`: a consumer that lagged, a client that lost its
   * connection), values go on being read and held for the value window
   * (30 s by default), so that it can resume with `since` and get them,
   * however many changes were made meanwhile (a filtered feed resumes past
   * the ring's `capacity`, see {@link subscribe}); then, or at once when it
   * unsubscribed, the ring lets go of every value it holds.
   */
  unsubscribe(sink: ChangeSink, resumable = true): void {
    if (!this.#sinks.delete(sink) || !sink.wantsValues || this.#valueSinks()) return;
    if (resumable) {
      this.#valueWindow = true;
      clearTimeout(this.#valuesTimer);
      const timer = setTimeout(() => this.#endValueWindow(), this.#valueWindowMs);
      Deno.unrefTimer(timer);
      this.#valuesTimer = timer;
    } else if (this.#valuesTimer === undefined) {
      this.#valueWindow = false;
      this.#freeValues(0);
    }
  }

  /** Stops capturing (before the writer closes). */
  close(): void {
    clearTimeout(this.#valuesTimer);
    this.#valuesTimer = undefined;
    this.#sinks.clear();
    logs.delete(this.#writer);
    this.#unwatch();
    if (this.#capturing) this.#writer.db.onUpdate(null);
    this.#capturing = false;
  }

  #held(since: number): Change[] {
    const ring = this.#ring;
    const out: Change[] = [];
    const oldest = this.oldest; // (those before were let go whole)
    for (let i = 0; i < ring.length; i++) {
      const c = ring[(this.#ringStart + i) % ring.length];
      if (c.seq > since && c.seq >= oldest) out.push(c);
    }
    return out;
  }

  /**
   * Whether a change after `since` that `sink` takes ({@link ChangeSink.matches};
   * every change without it) was let go whole: `null` when none was, else
   * the last one of its table or collection let go, or `true` when which
   * is not known (`since` is before {@link #letGoFloor}, or `sink` takes
   * every change).
   */
  #lostAfter(since: number, sink: ChangeSink): LetGo | true | null {
    if (since >= this.oldest - 1) return null; // (none let go after it)
    if (since < this.#letGoFloor || sink.matches === undefined) return true;
    let lost: LetGo | null = null;
    for (const names of [this.#letGoTables, this.#letGoKv]) {
      for (const g of names.values()) {
        if (g.seq > since && (lost === null || g.seq > lost.seq) && sink.matches(g)) {
          lost = g;
        }
      }
    }
    return lost;
  }

  /**
   * Notes `c` let go whole (changes are let go in `seq` order): it is now
   * the last of its table or collection, and the oldest names are
   * forgotten past {@link LET_GO_NAMES} or {@link LET_GO_NAME_BYTES}, their
   * `seq` raising {@link #letGoFloor}.
   */
  #letGo(c: Change): void {
    const kv = c.collection !== null;
    const names = kv ? this.#letGoKv : this.#letGoTables;
    const name = kv ? c.collection! : c.table;
    const bytes = 64 + 2 * name.length;
    if (names.delete(name)) this.#letGoBytes -= bytes;
    if (bytes > LET_GO_NAME_BYTES) {
      this.#letGoFloor = c.seq;
      return;
    }
    // (Deleted and set again: each map stays in the order the changes were let go.)
    names.set(name, { seq: c.seq, table: c.table, collection: c.collection });
    this.#letGoBytes += bytes;
    while (
      this.#letGoTables.size + this.#letGoKv.size > LET_GO_NAMES ||
      this.#letGoBytes > LET_GO_NAME_BYTES
    ) {
      const t = this.#letGoTables.entries().next().value;
      const k = this.#letGoKv.entries().next().value;
      const [from, [n, g]] = k === undefined || (t !== undefined && t[1].seq < k[1].seq)
        ? [this.#letGoTables, t!]
        : [this.#letGoKv, k];
      from.delete(n);
      this.#letGoBytes -= 64 + 2 * n.length;
      this.#letGoFloor = Math.max(this.#letGoFloor, g.seq);
    }
  }

  #remember(changes: Change[]): void {
    const ring = this.#ring;
    for (const c of changes) {
      if (ring.length < this.#capacity) {
        ring.push(c);
      } else {
        const gone = ring[this.#ringStart];
        this.#heldValueBytes -= gone.valueBytes;
        this.#heldKeyBytes -= nameBytes(gone);
        if (gone.seq > this.#keysFreedTo) this.#letGo(gone); // (else let go already)
        ring[this.#ringStart] = c;
        this.#ringStart = (this.#ringStart + 1) % this.#capacity;
      }
      this.#heldValueBytes += c.valueBytes;
      this.#heldKeyBytes += nameBytes(c);
    }
    if (this.#heldValueBytes > this.#maxValueBytes) this.#freeValues(this.#maxValueBytes);
    if (this.#heldKeyBytes > this.#maxValueBytes) this.#freeKeys(this.#maxValueBytes);
  }

  /**
   * Lets go of the oldest held changes whole (an event must name its key
   * and table, so they cannot be let go as a value is) until at most
   * `budget` bytes of keys and names remain, keeping the newest change
   * whatever its size: a resume from before them fails with `FEED_GAP`
   * (when the feed takes one of them), as past the ring's `capacity`.
   * The ring's change is replaced by a copy without names, key and value
   * (feeds that queued the original still send it; nothing reads the copy).
   */
  #freeKeys(budget: number): void {
    const ring = this.#ring;
    let i = Math.max(0, this.#keysFreedTo + 1 - this.#ringOldest);
    for (; i < ring.length - 1 && this.#heldKeyBytes > budget; i++) {
      const at = (this.#ringStart + i) % ring.length;
      const c = ring[at];
      ring[at] = {
        ...c,
        table: "",
        collection: null,
        key: null,
        value: null,
        valueRead: false,
        valueBytes: 0,
      };
      this.#heldKeyBytes -= nameBytes(c);
      this.#heldValueBytes -= c.valueBytes;
      this.#keysFreedTo = c.seq;
      this.#letGo(c);
    }
  }

  #valueSinks(): boolean {
    for (const s of this.#sinks) if (s.wantsValues) return true;
    return false;
  }

  /** The window after the last feed with values ended is over. */
  #endValueWindow(): void {
    this.#valuesTimer = undefined;
    if (this.#valueSinks()) return;
    this.#valueWindow = false;
    this.#freeValues(0);
  }

  /**
   * Lets go of held values, oldest first, until at most `budget` bytes
   * remain. The ring's change is replaced by a copy without its value
   * (feeds that queued the original still send it), marked not read.
   */
  #freeValues(budget: number): void {
    const ring = this.#ring;
    let i = Math.max(0, this.#valuesFreedTo + 1 - this.#ringOldest);
    for (; i < ring.length && this.#heldValueBytes > budget; i++) {
      const at = (this.#ringStart + i) % ring.length;
      const c = ring[at];
      if (c.valueBytes === 0) continue;
      ring[at] = { ...c, value: null, valueRead: false, valueBytes: 0 };
      this.#heldValueBytes -= c.valueBytes;
      this.#valuesFreedTo = c.seq;
    }
  }

  #find(name: string): number {
    const n = foldCase(name);
    for (let i = this.#savepoints.length - 1; i >= 0; i--) {
      if (this.#savepoints[i].name === n) return i;
    }
    return -1;
  }

  /**
   * After a `DELETE` statement begun at `mark`: when it deleted rows
   * (`changes()`, its own rows only) from a table of the main database but
   * the update hook saw none of that table, SQLite emptied the table at once
   * (`DELETE FROM t` without WHERE, in any spelling), and one delete with
   * `rowid: null` stands for every row. (A DELETE with WHERE, or on a table
   * with triggers or foreign keys, reports each row; a trigger's DELETE is
   * made to, see `Connection`; WITHOUT ROWID and virtual tables, and views,
   * report none and are left out.)
   */
  #noteDeleteAll(p: Prepared, mark: number): void {
    if (Number(this.#writer.db.changes()) === 0) return;
    for (const [schema, table] of p.deleteTargets) {
      if (foldCase(schema) !== "main" || foldCase(table).startsWith("sqlite_")) continue;
      const t = foldCase(table);
      let seen = false;
      for (let i = mark; i < this.#pending.length && !seen; i++) {
        seen = foldCase(this.#pending[i].table) === t;
      }
      if (!seen && this.#plainTable(table)) {
        this.#pending.push({ op: "delete", table, rowid: null });
      }
    }
  }

  /**
   * Without the preupdate hook, after a statement begun at `mark` that may
   * move rows to another rowid: for each table whose rows it may move and
   * did update, the update hook reported the new rowids only, so the whole
   * table is reported instead: one delete with `rowid: null` (every row, as
   * for `DELETE FROM t`), then an insert of each row it has now (in rowid
   * order), whose values are read at commit as any change's.
   */
  #reportMoved(p: Prepared, mark: number): void {
    for (const table of this.#movesRowids(p)) {
      const t = foldCase(table);
      let updated = false;
      for (let i = mark; i < this.#pending.length && !updated; i++) {
        const r = this.#pending[i];
        updated = r.op === "update" && foldCase(r.table) === t;
      }
      if (updated) this.#reportWhole(table);
    }
  }

  #reportWhole(table: string): void {
    let rowids: unknown[][];
    try {
      const columns = new Set(
        this.#writer.ownRows("SELECT name FROM pragma_table_info(?1, 'main')", [table])
          .map((r) => foldCase(String(r[0]))),
      );
      const name = ROWID_NAMES.find((n) => !columns.has(n));
      if (name === undefined) return; // (every name of the rowid is a column's: it cannot be read)
      rowids = this.#writer.ownRows(
        `SELECT ${name} FROM main."${table.replaceAll('"', '""')}" ORDER BY ${name}`,
      );
    } catch {
      return; // the table cannot be read: left as the update hook reported it
    }
    this.#pending.push({ op: "delete", table, rowid: null });
    for (const [rowid] of rowids) {
      this.#pending.push({ op: "insert", table, rowid: rowid as number | bigint });
    }
  }

  /**
   * The tables whose rows `p` may move to another rowid: those of its
   * updated columns that are the rowid (`ROWID` to the authorizer) or the
   * table's INTEGER PRIMARY KEY. Read from the schema after `p` ran (never
   * before: inside a deferred transaction a read then would make the
   * client's write fail with `SQLITE_BUSY` when another process writes),
   * and cached on `p` (a schema change drops it from the cache). Key-value
   * rows are reported by key, whatever their rowid.
   */
  #movesRowids(p: Prepared): readonly string[] {
    if (p.movesRowids !== undefined) return p.movesRowids;
    const tables: string[] = [];
    const aliases = new Map<string, string | boolean | null>();
    for (const [table, column] of p.updatedColumns) {
      const t = foldCase(table);
      if (
        t.startsWith("sqlite_") || t === "netsqlite_kv" || tables.some((n) => foldCase(n) === t)
      ) {
        continue;
      }
      let alias = aliases.get(t);
      if (alias === undefined) aliases.set(t, alias = this.#rowidAlias(table));
      if (
        alias === true || column === "ROWID" && alias !== false ||
        typeof alias === "string" && foldCase(column) === alias
      ) tables.push(table);
    }
    return p.movesRowids = tables;
  }

  /**
   * The name (lower case) of the INTEGER PRIMARY KEY column of `table` in
   * the main database, `null` for a rowid table without one, `false` for
   * no rowid table (WITHOUT ROWID, a view, a virtual table). A column
   * declared `INTEGER PRIMARY KEY DESC`, which SQLite does not make the
   * rowid, counts as one. `true` when the schema cannot be read: any
   * column may then be the rowid.
   */
  #rowidAlias(table: string): string | boolean | null {
    try {
      if (!this.#plainTable(table)) return false;
      const key = this.#writer.ownRows(
        "SELECT name, type FROM pragma_table_info(?1, 'main') WHERE pk > 0",
        [table],
      );
      return key.length === 1 && foldCase(String(key[0][1])) === "integer"
        ? foldCase(String(key[0][0]))
        : null;
    } catch {
      return true;
    }
  }

  /** True when `table` of the main database is an ordinary rowid table. */
  #plainTable(table: string): boolean {
    try {
      const rows = this.#writer.ownRows(
        "SELECT type, wr FROM pragma_table_list(?1) WHERE schema = 'main'",
        [table],
      );
      return rows.length === 1 && rows[0][0] === "table" && Number(rows[0][1]) === 0;
    } catch {
      return true; // as before the check: reported
    }
  }

  /**
   * Fills the change of a key-value entry the commit touched from its
   * committed state: a live entry is an `insert` (it did not exist before
   * the transaction) or an `update` (it did, maybe as a tombstone), with
   * its value; a tombstone a `delete`; an entry gone (deleted by SQL, or
   * moved to another key) a `delete` with the version it had, when it was
   * live before the transaction.
   *
   * @returns false when there is nothing to report: an entry that neither
   *   was nor is live (made and removed in the transaction, a tombstone SQL
   *   removed, updated in place or moved to another key).
   */
  #resolveKv(t: KvTouch): boolean {
    const c = t.change;
    c.collection = t.at.collection;
    c.key = t.at.key;
    const rows = this.#query(
      `SELECT rowid, value, version FROM "${KV_TABLE}" WHERE collection = ?1 AND key = ?2`,
      [t.at.collection, t.at.key],
    );
    if (rows === null || rows.rows.length === 0) {
      if (!t.existed || !t.live) return false;
      c.op = "delete";
      c.rowid = t.rowid;
      c.version = t.version;
      return true;
    }
    const [rowid, value, version] = rows.rows[0];
    // A tombstone now that was none or a tombstone before: never live, nothing to report.
    if (value === null && !(t.existed && t.live)) return false;
    c.rowid = rowid as number | bigint;
    c.version = version as number;
    c.value = value as Uint8Array | null;
    c.op = value === null ? "delete" : t.existed ? "update" : "insert";
    return true;
  }

  /**
   * The committed row of `table` with `rowid`, or `null` when it is gone (or
   * cannot be read). The rowid is named by the first of `rowid`, `oid` and
   * `_rowid_` the table does not declare as a column of its own (which
   * would hide the rowid); a table declaring all three has rows whose value
   * is `null`.
   */
  #readRow(table: string, rowid: number | bigint): Record<string, unknown> | null {
    const from = `SELECT * FROM "${table.replaceAll('"', '""')}" WHERE `;
    for (const name of ROWID_NAMES) {
      const r = this.#query(`${from}${name} = ?`, [rowid]);
      if (r === null) return null;
      if (r.columns.some((c) => c.length === name.length && c.toLowerCase() === name)) continue;
      return r.rows.length === 0 ? null : this.#toRow(r);
    }
    return null;
  }

  #toRow(r: { columns: string[]; rows: unknown[][] }): Record<string, unknown> {
    const row: Record<string, unknown> = {};
    const values = r.rows[0];
    r.columns.forEach((col, i) => {
      // Assigned, `__proto__` would set the prototype (or be dropped) instead of a property.
      if (col === "__proto__") {
        Object.defineProperty(row, col, {
          value: values[i],
          writable: true,
          enumerable: true,
          configurable: true,
        });
      } else row[col] = values[i];
    });
    return row;
  }

  #query(sql: string, args: SqlValue[]): { columns: string[]; rows: unknown[][] } | null {
    try {
      const p = this.#writer.prepare(sql);
      p.stmt.bind(args);
      const rows = p.stmt.all();
      // (Names read after stepping: SQLite prepares a cached statement again
      // when another program changed the schema, and its rows follow.)
      return { columns: columnsOf(p), rows };
    } catch {
      return null; // the table was dropped meanwhile
    }
  }
}

/** A change not yet numbered nor resolved. */
function newChange(
  commitSeq: number,
  table: string,
  op: Change["op"],
  rowid: number | bigint | null,
): Change {
  return {
    seq: 0,
    commitSeq,
    table,
    op,
    rowid,
    collection: null,
    key: null,
    version: null,
    value: null,
    valueRead: true,
    valueBytes: 0,
  };
}

/** The entry a key-value row names (values SQL wrote as other types compare as such). */
function kvId(collection: unknown, key: unknown): KvId {
  let id = `${typeof collection}:${String(collection)}\u0000${typeof key}:`;
  if (key instanceof Uint8Array) {
    // One character per byte (a string made a byte at a time took about
    // 0.2 s for a 1 MiB key, on the main thread, at each of its changes).
    for (let i = 0; i < key.length; i += 8192) {
      id += String.fromCharCode(...key.subarray(i, i + 8192));
    }
  } else id += String(key);
  return { collection: collection as string, key: key as Uint8Array, id };
}
