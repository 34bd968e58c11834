/**
 * The SQLite side of the server. It knows nothing about sockets, nor which
 * binding (`engine/binding/`) it runs on beyond its capabilities.
 *
 * One writer connection runs every statement that writes. A session that
 * opens a transaction owns the writer until the transaction ends, its lease
 * runs out or it closes; no other session's statement runs inside it. Other
 * sessions' writes wait in a FIFO queue (`writer_queue.ts`; callers are told
 * {@link BLOCKED} and woken later), and their reads run at once on a
 * read-only connection that sees the last committed state (WAL).
 *
 * No client waits behind another client's statement (FFI binding): reads
 * run inline under a small time budget and move to the background on a
 * connection of their own when they exceed it; writes whose statement has
 * not yet proven fast, and every COMMIT, run in the background on the
 * writer. See `engine_session.ts` for the rules per request.
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import { type Db, rowsNow, type Sqlite, type Stmt } from "./binding/binding.ts";
import { isBusyInBackground } from "./binding/_errors.ts";
import { Connection, type Prepared } from "./connection.ts";
import { EngineSession } from "./engine_session.ts";
import { GroupCommit } from "./group_commit.ts";
import { DatabaseFile, ReadOnlyFileError, walPaths } from "./database_file.ts";
import { Maintenance } from "./maintenance.ts";
import { CHANGE_FEED_CAPACITY, ChangeLog, FeedQueueBudget } from "./change_log.ts";
import { PreparedBudget } from "./handles.ts";
import { createPolicy, type PolicyCheck, type PolicyConfig } from "./policy.ts";
import { WalWatch } from "./wal_watch.ts";
import { walWriteLockElsewhere } from "./file_lock.ts";
import { MAX_BACKGROUND_READS, ReaderLine } from "./reader_line.ts";
import { type DqsReport, findDoubleQuotedStrings } from "./dqs_check.ts";
import type { SessionHost } from "./session_host.ts";
import { type BufferedRoom, BufferedRows } from "./buffered_rows.ts";
import { type LeaseEnd, WriterQueue } from "./writer_queue.ts";
import { disarmTimerProbe } from "./binding/_timer_turn.ts";
import { IoTurn } from "./io_turn.ts";
import { metLock, ReadLocked } from "./run.ts";

export { BLOCKED, EngineSession } from "./engine_session.ts";

/** Settings of an {@link Engine}; every field is required. */
export interface EngineConfig {
  /** Database file path (`:memory:` gives a private in-memory database). */
  path: string;
  /** `PRAGMA synchronous`: `full` survives power loss, `normal` survives a crash. */
  synchronous: "full" | "normal";
  /** How long a write waits for the writer before `BUSY_TIMEOUT`, in ms. */
  busyTimeout: number;
  /** Idle lease of a transaction before it is rolled back, in ms (0 = none). */
  txIdleTimeout: number;
  /** Age at which an open transaction is rolled back however busy, in ms (0 = never). */
  txTimeout?: number;
  /** Statements kept prepared per connection. */
  statementCacheSize: number;
  /**
   * `PRAGMA journal_size_limit` of the writer, in bytes (-1: none): a WAL
   * file larger than this is cut back to it when the WAL next starts over
   * after a complete checkpoint. @default {JOURNAL_SIZE_LIMIT}
   */
  journalSizeLimit?: number;
  /** Default deadline of a statement, in ms. */
  statementTimeout: number;
  /** Largest buffered result, in bytes, before `RESULT_TOO_LARGE`. */
  maxResultBytes: number;
  /**
   * Largest reply frame the server sends, in bytes: a write whose RETURNING
   * rows (or a batch whose results) would not fit one fails with
   * `RESULT_TOO_LARGE` before its changes stay. @default {Infinity}
   */
  maxFrameSize?: number;
  /**
   * Largest string or BLOB a statement may build, in bytes (SQLite's
   * `SQLITE_LIMIT_LENGTH`, which bounds whole rows too; the server sets it
   * to twice `--max-frame-size`, at least 256 MiB). Default: SQLite's own
   * (1,000,000,000).
   */
  maxValueBytes?: number;
  /** Cursors one session may hold open at once. */
  maxCursors: number;
  /** Prepared statements one session may hold at once (default `MAX_HANDLES`). */
  maxStatements?: number;
  /** Prepared statements all sessions may hold at once. @default {MAX_PREPARED} */
  maxPrepared?: number;
  /** SQL text all sessions' prepared statements may hold, in UTF-16 code units. @default {MAX_PREPARED_TEXT} */
  maxPreparedText?: number;
  /** Cursors open at once on all sessions (default {@link MAX_OPEN_CURSORS}). */
  maxOpenCursors?: number;
  /**
   * Reads run in the background at once on all sessions, each on a reader
   * connection of its own; more wait in line. @default {MAX_BACKGROUND_READS}
   */
  maxBackgroundReads?: number;
  /** What clients may do: read-only, ATTACH, unsafe PRAGMAs (see `policy.ts`). */
  policy: PolicyConfig;
  /** Directory where `backup` and `vacuum` may write copies; `null`/absent refuses them. */
  backupDir?: string | null;
  /** Committed changes kept for `subscribe({ since })`. @default {CHANGE_FEED_CAPACITY} */
  changeFeedCapacity?: number;
  /** Changes queued for clients on all feeds of the server. @default {MAX_QUEUED_CHANGES} */
  maxQueuedChanges?: number;
  /**
   * Changes queued for one client on all feeds of its connection.
   * @default {MAX_QUEUED_CHANGES_PER_CONNECTION}
   */
  maxQueuedChangesPerConnection?: number;
  /**
   * Bytes of values the ring keeps for `subscribe({ since })`, and of its
   * key-value keys and table and collection names of more than 128
   * characters. @default {CHANGE_FEED_VALUE_BYTES}
   */
  changeFeedValueBytes?: number;
  /** Bytes of values queued for clients on all feeds. @default {MAX_QUEUED_VALUE_BYTES} */
  maxQueuedValueBytes?: number;
  /**
   * Bytes of values queued for one client on all feeds of its connection.
   * @default {MAX_QUEUED_VALUE_BYTES_PER_CONNECTION}
   */
  maxQueuedValueBytesPerConnection?: number;
}

/**
 * How long a statement may run on the main thread before it is stopped and
 * run again in the background, in ms (reads, and writes outside transactions).
 */
export const INLINE_BUDGET_MS = 2;

/** Cursors open at once on the server, unless configured: each holds two files open. */
export const MAX_OPEN_CURSORS = 1024;

/**
 * WAL frames below which a group's COMMIT may run inline: below
 * SQLite's automatic checkpoint threshold (1,000) by more than the frames a
 * group commit adds (groups hold only statements that ran within the 2 ms
 * budget, a few pages each).
 */
export const QUICK_COMMIT_FRAMES = 750;

/**
 * A group whose writes ran longer than this (ms) commits in the background:
 * it may have many pages to write (pages are written about as fast as the
 * statements made them).
 */
export const QUICK_GROUP_MS = 0.5;

/**
 * How often the engine looks whether its files are still at their paths
 * besides the looks writes and new snapshots take (`database_file.ts`): so
 * that a removed `-wal` is checkpointed, and reads are refused once another
 * program opened the database after a `-wal` or `-shm` went, even while no
 * write comes. Three `stat` calls a second.
 */
export const FILE_CHECK_MS = 1000;

/**
 * How long the shared reader keeps its read snapshot with no read using it
 * (see `#snapshotReader`), at most twice this: held longer, it would stop
 * another program's checkpoints short (its WAL growing without bound while
 * the server's clients merely stopped reading).
 */
export const READER_IDLE_MS = 100;

/**
 * The writer's `PRAGMA journal_size_limit` unless configured (64 MiB):
 * SQLite's default (-1) keeps the WAL file as large as it ever grew (behind
 * a long reader, without bound) after the WAL starts over; a WAL kept under
 * SQLite's checkpoint threshold (1,000 pages, 4 MiB) never reaches it.
 */
export const JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024;

/** What the schema declares that keeps writes out of group commits (see `Engine`). */
interface SchemaTraits {
  /**
   * A table declares a foreign key `DEFERRABLE INITIALLY DEFERRED`: a write
   * leaving it unresolved would fail the shared COMMIT for every member, so
   * a binding that cannot tell (node:sqlite) groups no writes.
   */
  readonly defersForeignKeys: boolean;
  /**
   * A table or trigger mentions `rollback` (`ON CONFLICT ROLLBACK`,
   * `RAISE(ROLLBACK, ...)`): a write failing by it would roll back the
   * group's transaction, every other client's write with it, so no write
   * groups.
   */
  readonly rollsBack: boolean;
}

/** Owns the database connections and arbitrates the writer. */
export class Engine {
  readonly #config: EngineConfig;
  readonly #sqlite: Sqlite;
  readonly #writer: Connection;
  readonly #reader: Connection | null;
  /** True while the shared reader holds the snapshot {@link #snapshotReader} began. */
  #readerInTx = false;
  /** True once a read used the shared reader since {@link #readerIdle} was armed. */
  #readerUsed = false;
  /** Ends the shared reader's snapshot once no read used it for {@link READER_IDLE_MS}. */
  #readerIdle: ReturnType<typeof setTimeout> | undefined;
  readonly #queue: WriterQueue<EngineSession>;
  readonly #policy: PolicyCheck;
  /** Statements running in the background (awaited before closing). */
  readonly #running = new Set<Promise<unknown>>();
  #nextSessionId = 1;
  readonly #sessions = new Set<EngineSession>();
  readonly #idleReaders: Connection[] = [];
  /** The wait for another program's lock that requests share ({@link #waitForLock}), if any. */
  #lockWait: Promise<void> | null = null;
  /** Its reader, stepping in the background (interrupted at close). */
  #lockWaiter: Connection | null = null;
  /** Readers lent to cursors now. */
  #cursorReaders = 0;
  /** Cursors whose rows the server buffers ({@link #reserveBuffered}), and their bytes. */
  #bufferedCursors = 0;
  #bufferedRows: BufferedRows;
  /**
   * The connection settings clients set on the writer that readers must
   * share (`Prepared.setsPragma`, e.g. `case_sensitive_like`, permitted by
   * `--allow-unsafe-pragmas`): the last assignment of each, by PRAGMA, in
   * the order set. Every connection the engine reads on runs them before its
   * next use (`#sharePragmas`).
   */
  readonly #pragmas = new Map<string, string>();
  /** Bumped whenever {@link #pragmas} changes. */
  #pragmaGen = 0;
  /** The {@link #pragmaGen} each connection last ran {@link #pragmas} at. */
  readonly #pragmaGens = new WeakMap<Connection, number>();
  /** Readers lent to reads in the background, and the reads waiting for one. */
  readonly #readerLine: ReaderLine<Connection>;
  #writerHasTemp = false;
  /** The writer's TEMP tables, views, indexes and triggers, as `"table scratch"`. */
  #writerTemp: readonly string[] = [];
  /** True while the writer has databases attached (which readers lack). */
  #writerAttached = false;
  /** Notices commits by anyone (this server or other processes). */
  readonly #walWatch: WalWatch;
  /** Schema version of the reader's latest snapshot. */
  #schemaVersion = -1;
  /** Set when the committed schema moved since the writer last looked. */
  #writerSchemaStale = false;
  /**
   * The WAL-index header when the writer last looked at the schema: a commit
   * since (by anyone: another program may have changed the schema) makes
   * the next writer turn read the schema cookie (see `#refreshWriterSchema`).
   */
  #writerSeen: Uint32Array;
  /**
   * What the schema holds that keeps writes out of group commits
   * (`#schemaTraits`; `null`: not looked yet, or looked again since it
   * may have changed).
   */
  #traits: SchemaTraits | null = null;
  /** True when the binding tells when a write leaves a deferred foreign key unresolved. */
  readonly #tellsDeferred: boolean;
  /** Set when a statement changed the schema inside the open transaction (see `#release`). */
  #schemaChangedInTx = false;
  readonly #group: GroupCommit;
  /** Committed changes for change feeds; `null` without an update hook (node:sqlite). */
  readonly #changes: ChangeLog | null;
  #closed = false;
  #maintenance: Maintenance | null = null;
  /** Called with the session number when a transaction's lease runs out, and why (for the log). */
  onLeaseExpired: ((session: number, why: LeaseEnd) => void) | null = null;
  /**
   * Called with what the server's log should say: the database file lost
   * while serving (`error`, once), a checkpoint at shutdown that failed
   * (`warn`).
   */
  onLog: ((level: "warn" | "error", message: string) => void) | null = null;
  /**
   * The files the writer opened (database, `-wal`, `-shm`), watched for
   * removal or renaming; `null` when nothing writes to a file.
   */
  readonly #file: DatabaseFile | null;
  /** The `-wal` file's path, where SQLite keeps it (beside the file a symbolic link names). */
  readonly #walPath: string;
  /** Set once the commits of a removed `-wal` were checkpointed into the database (or tried). */
  #lostWalSaved = false;
  /** Set once reads are refused: another program opened the database since a `-wal`/`-shm` went. */
  #readsRefused = false;
  /** Runs {@link FILE_CHECK_MS} apart while files are watched. */
  #fileTimer: ReturnType<typeof setInterval> | undefined;
  readonly #isFree = (): boolean => this.#writerFree();
  /** What sessions (and maintenance) may use of this engine. */
  readonly #host: SessionHost;
  /** Scripts' turns for other connections' sockets (see `io_turn.ts`). */
  readonly #ioTurn = new IoTurn();

  /**
   * Opens (creating if needed) the database in WAL mode. The engine owns
   * `sqlite` from then on and unloads it when it closes.
   *
   * @throws {SqliteError} when the file cannot be opened.
   */
  constructor(config: EngineConfig, sqlite: Sqlite) {
    this.#config = config;
    this.#bufferedRows = new BufferedRows(config.maxResultBytes);
    this.#sqlite = sqlite;
    const { wal, shm } = walPaths(config.path);
    this.#walPath = wal;
    const timeout = config.busyTimeout;
    const cacheSize = config.statementCacheSize;
    const maxValueBytes = config.maxValueBytes;
    const readonly = config.policy.readonly;
    const policy = this.#policy = createPolicy(config.policy);
    this.#writer = new Connection(sqlite, config.path, {
      readOnly: readonly,
      writer: true,
      timeout,
      cacheSize,
      policy,
      maxValueBytes,
      schemaMayHaveMoved: () => this.#writerMayBeStale(),
    });
    let file: DatabaseFile | null = null;
    try {
      const w = this.#writer.db;
      if (!readonly) {
        w.exec("PRAGMA journal_mode = WAL");
        w.exec(`PRAGMA journal_size_limit = ${config.journalSizeLimit ?? JOURNAL_SIZE_LIMIT}`);
      }
      w.exec(`PRAGMA synchronous = ${config.synchronous.toUpperCase()}`);
      w.exec("PRAGMA foreign_keys = ON");
      const onFile = !readonly && config.path !== ":memory:" && config.path !== "";
      // (Its write transaction also makes SQLite create the `-wal` and
      // `-shm` files, which the watch then records.)
      if (onFile) refuseReadOnlyFile(w);
      this.#file = file = onFile ? new DatabaseFile(config.path) : null;
      this.#tellsDeferred = w.deferredViolations() !== null;
      this.#reader = config.path === ":memory:" ? null : new Connection(sqlite, config.path, {
        readOnly: true,
        timeout,
        cacheSize,
        policy,
        maxValueBytes,
      });
      // From here on, a statement on the main thread that meets a lock held
      // by another process (the sqlite3 shell, a migration tool) fails at
      // once and runs again in the background, where it waits: the lock
      // does not stop the event loop (run.ts, LockBusy).
      w.waitsInline = false;
      if (this.#reader !== null) this.#reader.db.waitsInline = false;
      this.doubleQuotedStrings = sqlite.doubleQuotedStrings || config.path === ":memory:"
        ? NO_DQS_CHECK
        : checkSchema(sqlite, w);
    } catch (err) {
      file?.close();
      this.#writer.close();
      throw err;
    }
    // Also under synchronous=normal: a commit there costs no fsync, but
    // sharing one still saves work (measured: 64 writes in flight went
    // from 25k/s to more than with synchronous=full).
    this.#changes = sqlite.capabilities.updateHook
      ? new ChangeLog(
        this.#writer,
        config.changeFeedCapacity ?? CHANGE_FEED_CAPACITY,
        new FeedQueueBudget(
          config.maxQueuedChanges,
          config.maxQueuedChangesPerConnection,
          config.maxQueuedValueBytes,
          config.maxQueuedValueBytesPerConnection,
        ),
        config.changeFeedValueBytes,
        undefined,
        // No client of a read-only server changes anything, and changes
        // other processes make are not seen: a feed would stay empty.
        readonly
          ? "Cannot subscribe: the server runs read-only (--readonly), so no client changes " +
            "anything, and changes other processes make are not reported; subscribe through a " +
            "server that is not read-only"
          : null,
      )
      : null;
    this.#walWatch = new WalWatch(config.path);
    this.#writerSeen = this.#walWatch.mark();
    this.#readerLine = new ReaderLine(config.maxBackgroundReads ?? MAX_BACKGROUND_READS);
    this.#group = new GroupCommit(
      this.#writer,
      () => this.#drain(),
      (workMs) => this.#commitInline(workMs),
      () => this.#fileLost(true),
      () => this.#refreshWriterSchema(),
    );
    this.#queue = new WriterQueue<EngineSession>(
      config.busyTimeout,
      config.txIdleTimeout,
      (owner, why) => {
        // A transaction whose statement is still running is not idle: its
        // idle clock starts again when the statement ends (afterWrite).
        if (why === "idle" && owner.runningOnWriter) return this.#queue.keep();
        if (!owner.expire(why)) this.onLeaseExpired?.(owner.id, why);
        this.#abort(owner);
      },
      config.txTimeout ?? 0,
      // Only a statement running on the writer whose step met a lock it now
      // waits for (in the background, or tried again from a timer) can be
      // waiting for another program's lock: not one merely running long
      // (a long SELECT) while another program happens to hold the lock.
      // `/proc/locks` tells whether another process holds it; where it
      // cannot be told, the step's wait is what there is to go by.
      (owner) =>
        owner.runningOnWriter && this.#file !== null && this.#writer.db.waitingForLock &&
        (walWriteLockElsewhere(shm) ?? true),
    );
    this.#host = this.#makeHost();
    if (this.#file !== null) {
      const timer = this.#fileTimer = setInterval(() => this.#filesGone(), FILE_CHECK_MS);
      Deno.unrefTimer(timer);
    }
  }

  /**
   * Schema objects found at open that need double-quoted string literals,
   * which the connections refuse (empty when they accept them: see
   * `dqs_check.ts`). The server warns of them.
   */
  readonly doubleQuotedStrings: DqsReport;

  /**
   * How the database's files are checked, for the start-up log (`info`):
   * `stat` of the paths through libc or Deno, and the WAL-index header
   * mapped or read from the file each time (both fast paths need FFI on
   * libc: see database_file.ts and wal_watch.ts); `null` for `:memory:`.
   */
  get fileChecks(): string | null {
    if (this.#config.path === ":memory:" || this.#config.path === "") return null;
    const stat = this.#file === null
      ? ""
      : this.#file.viaLibc
      ? "paths checked with stat through libc, "
      : `paths checked with Deno.statSync (${
        Deno.build.os === "linux" ? "no FFI on libc" : "libc's stat is used on Linux only"
      }), `;
    return `file checks: ${stat}WAL-index header ${this.#walWatch.describe()}`;
  }

  /** The SQLite binding this engine runs on. */
  get sqlite(): Sqlite {
    return this.#sqlite;
  }

  /** Committed changes for change feeds; `null` when the binding has no update hook. */
  get changes(): ChangeLog | null {
    return this.#changes;
  }

  /** The SQLite library version. */
  get sqliteVersion(): string {
    return this.#sqlite.version;
  }

  /** The resolved configuration. */
  get config(): Readonly<EngineConfig> {
    return this.#config;
  }

  /** Checkpoint, vacuum, integrity check and backup, done by the server (`maintenance.ts`). */
  get maintenance(): Maintenance {
    return this.#maintenance ??= new Maintenance(
      this.#host,
      this.#sqlite,
      this.#config.backupDir ?? null,
      () => this.#releaseReaderSnapshot(),
    );
  }

  /** Group commits since start: how many, writes in them, the largest. */
  get groupCommits(): { groups: number; writes: number; largest: number } {
    return { ...this.#group.counts };
  }

  /** Number of sessions waiting for the writer. */
  get waiting(): number {
    return this.#queue.length;
  }

  /**
   * Requests waiting now, before they began, for another program's lock on
   * the database file (FFI: a `--readonly` server's reads of a
   * rollback-journal database, and requests meeting it as they are given
   * the writer), which no wait for the writer counts.
   */
  get lockWaiting(): number {
    let n = 0;
    for (const s of this.#sessions) if (s.waitingForLock) n++;
    return n;
  }

  /**
   * The TEMP objects on the shared writer connection (`"table scratch"`),
   * in creation order. They outlive the session that made them, and while
   * any exists every statement, reads too, goes through the writer.
   */
  get tempObjects(): readonly string[] {
    return this.#writerTemp;
  }

  /**
   * Opens a session. `wake` is called (synchronously) when a session that
   * got {@link BLOCKED} should retry its request; `onCommit` when a write of
   * it that joined a group commit is durable (or failed).
   */
  openSession(
    wake: () => void,
    onCommit: (error: SqliteError | null) => void = () => {},
  ): EngineSession {
    const session = new EngineSession(this.#host, this.#nextSessionId++, wake, onCommit);
    this.#sessions.add(session);
    return session;
  }

  /**
   * True when no write is in progress: no transaction holds the writer, no
   * write waits for it, no group commit is open or committing, and no
   * statement runs in the background.
   */
  get idle(): boolean {
    return this.#queue.owner === null && this.#queue.length === 0 && !this.#group.open &&
      !this.#group.committing && this.#running.size === 0;
  }

  /**
   * Rolls back open transactions, stops statements running in the
   * background and waits for them, checkpoints the WAL into the database
   * (`TRUNCATE`, so the WAL file is left empty) and closes it. Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#fileTimer);
    clearTimeout(this.#readerIdle);
    this.#readerIdle = undefined;
    this.#group.commitNow();
    for (const s of [...this.#sessions]) s.close();
    this.#lockWaiter?.db.interrupt();
    // (Closing a session takes its read out of line: none should be left.)
    this.#readerLine.close(new SqliteError(ErrorCode.ShuttingDown, "Server is shutting down"));
    while (this.#running.size > 0 || this.#group.committing) {
      await Promise.allSettled([...this.#running]);
      if (this.#group.committing) await new Promise((r) => setTimeout(r, 1));
    }
    disarmTimerProbe();
    this.#ioTurn.close();
    this.#queue.close();
    for (const c of this.#idleReaders.splice(0)) c.close();
    this.#changes?.close();
    // The files as the shutdown finds them: one may have gone since the last write.
    const keepWal = this.#filesGone() && !this.#mayCheckpointLostFiles();
    if (keepWal) {
      // No checkpoint, and none by SQLite as the writer closes: that one
      // would copy pages by an index that no longer describes the WAL at
      // the path, then delete the WAL. The writer's close skips it while
      // another connection of this process holds its shared lock on the
      // database (SQLite cannot lock it exclusively); the reader closes
      // last, and a read-only connection never checkpoints.
      try {
        this.#reader?.refreshSchema();
      } catch {
        // It read the file at start (the lock is held since).
      }
      this.#writer.close();
      this.#reader?.close();
      const wal = `"${this.#walPath}"`;
      this.onLog?.(
        "error",
        `shutdown without a checkpoint: ${this.#file!.check()} while the server was serving ` +
          "it; " + (this.#file!.lostKind === "shm"
            ? `the WAL ${wal} is left as it is for the next start to read`
            : `a new WAL is at ${wal} (another program opened the database since, or the file ` +
              "was replaced), left as it is: what the removed WAL held that was not checkpointed " +
              "is lost"),
      );
    } else {
      this.#reader?.close();
      if (!this.#config.policy.readonly && this.#config.path !== ":memory:") {
        this.#checkpointAtClose();
      }
      this.#writer.close();
    }
    this.#file?.close();
    // Only once SQLite closed the file: closing the watch's descriptor of the
    // `-shm` file drops every lock this process holds on it (see wal_watch.ts).
    this.#walWatch.close();
    this.#sqlite.close();
  }

  /** The shutdown's `wal_checkpoint(TRUNCATE)`, which leaves the `-wal` file empty. */
  #checkpointAtClose(): void {
    const walLost = this.#file?.lostKind === "wal";
    try {
      const [busy, frames, done] = rowsNow(this.#writer.db, "PRAGMA wal_checkpoint(TRUNCATE)")[0];
      // Busy (another process reads the file): SQLite checkpoints at close
      // anyway, as far as readers let it.
      if (walLost && Number(busy) !== 0) {
        this.onLog?.(
          "error",
          `checkpoint at shutdown could copy only ${done} of the ${frames} frames of the removed ` +
            `WAL "${this.#walPath}" into the database (another program reads it): the ` +
            "rest is lost as the server exits",
        );
      }
    } catch (err) {
      // Anything but busy (a full disk, an I/O error) is worth a line: the
      // WAL stays, holding every commit (unless it was removed).
      if (walLost) {
        this.onLog?.(
          "error",
          `checkpoint at shutdown failed: ${(err as Error).message}: the commits of the removed ` +
            `WAL "${this.#walPath}" that were not checkpointed yet are lost`,
        );
      } else if (!isBusy(err)) {
        this.onLog?.(
          "warn",
          `checkpoint at shutdown failed: ${(err as Error).message}: the WAL ` +
            `"${this.#walPath}" is kept and nothing is lost (the next start reads it)`,
        );
      }
    }
  }

  // ---- what sessions may use (session_host.ts) ---------------------------

  #makeHost(): SessionHost {
    return {
      config: this.#config,
      walPath: this.#walPath,
      writer: {
        connection: this.#writer,
        hasTemp: () => this.#writerHasTemp,
        hasAttached: () => this.#writerAttached,
        owns: (s) => this.#queue.owner === s,
        acquire: (s, forGroup) => this.#acquire(s, forGroup),
        currentSchema: () => this.#refreshInTransaction(true),
        schemaMovedUnderLock: () => this.#refreshWriterSchema(),
        afterWrite: (s, touchedTemp) => this.#afterWrite(s, touchedTemp),
        touch: (s) => this.#touch(s),
        release: (s) => {
          if (this.#queue.owner === s) this.#release();
        },
        leaveQueue: (s) => this.#queue.withdraw(s, this.#isFree),
        abort: (s) => this.#abort(s),
        forget: (s) => {
          this.#queue.forget(s);
          this.#sessions.delete(s);
        },
        ranOnWriter: (p) => this.#ranOnWriter(p),
        foreignKeys: (on) => this.#foreignKeys(on),
      },
      readers: {
        max: this.#readerLine.max,
        snapshot: () => this.#snapshotReader(),
        classified: (sql) => this.#reader?.peek(sql),
        borrow: () => this.#borrowBackgroundReader(),
        waitForLock: () => this.#waitForLock(),
        wait: (w) => this.#readerLine.join(w),
        giveBack: (c) => this.#giveBackBackgroundReader(c),
        borrowForCursor: () => this.#borrowCursorReader(),
        checkFiles: () => this.#checkFiles(),
        giveBackCursor: (c) => {
          c.unpinSnapshot();
          this.#cursorReaders--;
          this.#returnReader(c);
        },
        reserveBuffered: () => this.#reserveBuffered(),
        releaseBuffered: (bytes, cursor) => {
          this.#bufferedRows.release(bytes);
          if (cursor) this.#bufferedCursors--;
        },
      },
      group: {
        isOpen: () => this.#group.open,
        holds: (s) => this.#group.has(s),
        writer: (s) => this.#groupWriter(s),
        accepts: (p, sql) => this.#groupable(p, sql),
        run: (s, fn) => this.#grouped(s, fn),
      },
      prepared: new PreparedBudget(this.#config.maxPrepared, this.#config.maxPreparedText),
      track: (work) => this.#track(work),
      ioTurn: () => this.#ioTurn.take(),
      leaseEnded: (s, why) => this.onLeaseExpired?.(s.id, why),
    };
  }

  /**
   * The shared reader, inside a read transaction on the latest committed
   * state. Holding one read transaction across reads saves SQLite's WAL
   * locking syscalls on every statement; it is renewed whenever the
   * WAL-index header shows a commit by anyone since it began (this server's
   * writer or another process), so every read sees every commit that
   * completed before it started.
   */
  #snapshotReader(): Connection | null {
    const reader = this.#reader;
    if (reader === null) return null;
    this.#sharePragmas(reader);
    // (The flag stands in for `reader.inTransaction`, an FFI call a read: if
    // the transaction ended unnoticed, reads run in autocommit, as fresh.)
    this.#readerUsed = true;
    if (this.#walWatch.changed() || !this.#readerInTx) this.#renewSnapshot(reader);
    return reader;
  }

  /**
   * Ends the reader's snapshot and starts a new one at once (reading the
   * schema cookie starts it), dropping cached statements when the schema
   * moved: column lists and `SELECT *` expansions are then prepared anew.
   */
  #renewSnapshot(reader: Connection): void {
    this.#readerInTx = false;
    if (reader.inTransaction) reader.runOwn("COMMIT");
    this.#checkReads(false);
    // With no WAL-index header to compare (a database not in WAL mode, as a
    // --readonly server may serve), every read renews anyway: reads run in
    // autocommit, for a read transaction held between them would hold a
    // SHARED lock on the file, failing every other program's commit.
    const hold = this.#walWatch.readable;
    if (hold) reader.runOwn("BEGIN");
    let version: number;
    try {
      version = reader.refreshSchema();
    } catch (err) {
      // Another program's lock, which the main thread does not wait for: its
      // commit's EXCLUSIVE lock on a database not in WAL mode (where readers
      // are kept out while it writes). With the schema unread, not even the
      // read's statement could be prepared: the request waits for the lock
      // in the background (#waitForLock) and runs again, while the server
      // answers its other clients.
      if (metLock(reader, err)) throw new ReadLocked();
      throw err;
    }
    if (hold) {
      this.#readerInTx = true;
      this.#armReaderIdle();
    }
    if (version !== this.#schemaVersion) {
      this.#schemaVersion = version;
      this.#writerSchemaStale = true;
    }
  }

  /**
   * A read-only connection for one statement alone (a cursor's open
   * statement pins a snapshot, which the shared reader must not; a read
   * that went to the background needs its own connection). `null` for
   * `:memory:`.
   */
  #borrowReader(): Connection | null {
    if (this.#reader === null) return null;
    this.#checkReads(this.#idleReaders.length === 0);
    const conn = this.#idleReader();
    // Another program's lock met here (a database not in WAL mode) is waited
    // for in the background, not here on the main thread: see ReadLocked.
    this.#withoutInlineWait(conn, () => conn.refreshSchema());
    this.#sharePragmas(conn);
    return conn;
  }

  /** A reader kept idle, or a new one. */
  #idleReader(): Connection {
    return this.#idleReaders.pop() ?? new Connection(this.#sqlite, this.#config.path, {
      readOnly: true,
      timeout: this.#config.busyTimeout,
      cacheSize: 32,
      policy: this.#policy,
      maxValueBytes: this.#config.maxValueBytes,
    });
  }

  /**
   * Runs `fn` on the reader `conn`, lent to a request now, without waiting
   * for another program's lock on the main thread (FFI): a lock met gives
   * `conn` back and throws {@link ReadLocked}, and the request waits for the
   * lock in the background ({@link #waitForLock}). So does any other error
   * (`conn` given back); node:sqlite waits as before.
   */
  #withoutInlineWait(conn: Connection, fn: () => void): void {
    const waits = conn.db.waitsInline;
    conn.db.waitsInline = false;
    try {
      fn();
    } catch (err) {
      const locked = metLock(conn, err);
      conn.db.waitsInline = waits;
      this.#returnReader(conn);
      throw locked ? new ReadLocked() : err;
    }
    conn.db.waitsInline = waits;
  }

  /**
   * Resolves once another program's lock that kept a read out
   * ({@link ReadLocked}) is released, waited for in the background up to
   * the busy timeout (then rejects with SQLite's `SQLITE_BUSY`): a reader
   * of its own reads the schema cookie there, which takes the same SHARED
   * lock every read takes. One wait serves every request waiting at once;
   * a request that joined it after it began, failed by it before its own
   * busy timeout passed, waits on (in another) until then.
   */
  #waitForLock(): Promise<void> {
    return this.#lockWaitUntil(performance.now() + this.#config.busyTimeout);
  }

  /** {@link #waitForLock} for a request whose busy timeout passes at `until`. */
  #lockWaitUntil(until: number): Promise<void> {
    return this.#sharedLockWait().catch((err) => {
      // (Within a few ms of it: SQLite's busy handler sleeps in steps.)
      const left = until - performance.now();
      if (!isBusy(err) || left <= 10 || this.#closed) throw err;
      const { promise, resolve, reject } = Promise.withResolvers<void>();
      const timer = setTimeout(() => reject(err), left);
      this.#lockWaitUntil(until).then(resolve, reject).finally(() => clearTimeout(timer));
      return promise;
    });
  }

  /** The wait {@link #waitForLock} requests share, begun now unless one is under way. */
  #sharedLockWait(): Promise<void> {
    if (this.#lockWait !== null) return this.#lockWait;
    if (this.#closed) return Promise.reject(shuttingDown());
    let conn: Connection;
    let stmt: Stmt;
    try {
      conn = this.#idleReader();
      // The plain PRAGMA compiles without the schema (a new reader has none
      // loaded, and loading it would wait for the lock here), and its step
      // takes the SHARED lock, waiting for it in the background.
      stmt = conn.db.prepare(LOCK_PROBE)!;
    } catch (err) {
      return Promise.reject(err);
    }
    this.#lockWaiter = conn;
    const wait = this.#track(
      stmt.stepInBackground().then(() => {}).finally(() => {
        stmt.finalize();
        this.#lockWait = null;
        this.#lockWaiter = null;
        this.#returnReader(conn);
      }),
    );
    // (Every request waiting may have given up by its deadline meanwhile.)
    wait.catch(() => {});
    return this.#lockWait = wait;
  }

  /**
   * A client set a connection setting on the writer (`sql`, see
   * `Prepared.setsPragma`): every reader runs it too before its next use,
   * so that a read answers alike on whichever connection it runs (the
   * shared reader, a background read's, a cursor's). Settings are not
   * transactional: one set inside a transaction stays when it ends.
   */
  #pragmaSet(sql: string): void {
    const key = sql.slice(0, sql.indexOf(" = "));
    this.#pragmas.delete(key);
    this.#pragmas.set(key, sql);
    this.#pragmaGens.set(this.#writer, ++this.#pragmaGen);
  }

  /**
   * Runs on `conn` the settings clients set since it last did (see
   * {@link #pragmaSet}). One that fails (a schema the reader lacks) is
   * skipped. Call while no statement of `conn` is active: SQLite refuses
   * to redefine `like` then.
   */
  #sharePragmas(conn: Connection): void {
    if (this.#pragmaGen === 0 || this.#pragmaGens.get(conn) === this.#pragmaGen) return;
    this.#pragmaGens.set(conn, this.#pragmaGen);
    for (const sql of this.#pragmas.values()) {
      try {
        conn.db.exec(sql);
      } catch {
        // (Only what the writer alone has: an attached database's setting.)
      }
    }
  }

  /**
   * A reader for a read going to the background, counted against
   * `maxBackgroundReads`; `null` when that many are lent, or reads wait for
   * one already (the read then waits in line).
   */
  #borrowBackgroundReader(): Connection | null {
    if (!this.#readerLine.enter()) return null;
    try {
      return this.#borrowReader();
    } catch (err) {
      this.#readerLine.leave();
      throw err;
    }
  }

  /**
   * Gives back a reader from `#borrowBackgroundReader`: it goes to the
   * first read waiting (its schema renewed), else back to the idle readers.
   * A reader that cannot be renewed is closed and the waiter told why; the
   * next one gets a new reader.
   */
  #giveBackBackgroundReader(c: Connection): void {
    let conn: Connection | null = c;
    for (let w = this.#readerLine.next(); w !== null; w = this.#readerLine.next()) {
      try {
        if (conn === null) conn = this.#borrowReader()!;
        else {
          this.#checkReads(false);
          const c: Connection = conn;
          conn = null; // (given back by #withoutInlineWait when it fails)
          this.#withoutInlineWait(c, () => c.refreshSchema());
          conn = c;
          this.#sharePragmas(conn);
        }
      } catch (err) {
        // (A lock met, ReadLocked: the read waits for it, then asks again.)
        conn?.close();
        conn = null;
        w.fail(err as Error);
        continue;
      }
      w.take(conn);
      return;
    }
    this.#readerLine.leave();
    if (conn !== null) this.#returnReader(conn);
  }

  /**
   * A reader for a cursor, counted against `maxOpenCursors` (each one open
   * holds two files open: the database and its WAL), its read snapshot
   * taken now and held until it is given back with `giveBackCursor`.
   * `null` for `:memory:`.
   *
   * @throws {SqliteError} `BAD_REQUEST` when that many cursors are open.
   */
  #borrowCursorReader(): Connection | null {
    this.#checkCursorCount("each holding files open");
    const conn = this.#borrowReader();
    if (conn === null) return null;
    // The cursor reads from a snapshot taken now, at its open, and its
    // statement is prepared with that snapshot's schema (the columns the
    // open reply names), however long before its first step.
    this.#withoutInlineWait(conn, () => conn.pinSnapshot());
    this.#cursorReaders++;
    return conn;
  }

  /**
   * @throws {SqliteError} `BAD_REQUEST` when `maxOpenCursors` cursors
   *   (streaming and buffered together) are open.
   */
  #checkCursorCount(holding: string): void {
    const max = this.#config.maxOpenCursors ?? MAX_OPEN_CURSORS;
    if (this.#cursorReaders + this.#bufferedCursors >= max) {
      throw new SqliteError(
        ErrorCode.BadRequest,
        `Too many open cursors on the server: ${max}, ${holding}; ` +
          "close cursors or read them to the end, or retry later",
      );
    }
  }

  /**
   * Room for a cursor whose rows the server buffers, counted against
   * `maxOpenCursors` and {@link BufferedRows}: the bytes its rows may
   * take (at most `maxResultBytes`), reserved until given back.
   *
   * @throws {SqliteError} `BAD_REQUEST` when that many cursors are open, or
   *   buffered cursors hold all the bytes they may.
   */
  #reserveBuffered(): BufferedRoom {
    this.#checkCursorCount("each holding its rows or files");
    const room = this.#bufferedRows.reserve();
    this.#bufferedCursors++;
    return room;
  }

  /**
   * Before a read starts a new snapshot (`fresh`: on a connection opened
   * for it): refuses it (`DATABASE_MOVED`) when a path lost its file and
   *
   * - the connection is opened afresh: it would not see what the server's
   *   connections see (no file, another one, or, a `-wal` gone, a new empty
   *   WAL it would create, which the index does not describe);
   * - or another program opened the database since a `-wal` or `-shm` file
   *   went (`DatabaseFile.othersOpened`): then every read is refused.
   *
   * An existing connection's new snapshot looks at the `-wal` path alone
   * (one `stat`): a new snapshot is taken when the WAL index changed, which
   * with the WAL gone is another program writing into a new one.
   */
  #checkReads(fresh: boolean): void {
    const file = this.#file;
    if (file === null) return;
    if (!file.lost) {
      if (!this.#filesGone(!fresh)) return;
    } else if (!this.#readsRefused) {
      this.#filesGone(); // looks again for another program
    }
    if (!fresh && !this.#readsRefused) return;
    throw file.readError();
  }

  /** Before a connection to the database is opened afresh (maintenance): see `#checkReads`. */
  #checkFiles(): void {
    this.#checkReads(true);
  }

  /** Gives back a reader from `#borrowReader` (kept for reuse, up to four). */
  #returnReader(c: Connection): void {
    if (!this.#closed && this.#idleReaders.length < 4) this.#idleReaders.push(c);
    else c.close();
  }

  /**
   * `s` used the writer: renews its transaction's idle lease (starting the
   * lease when the transaction just began), or ends the lease when no
   * transaction is open any more.
   */
  #touch(s: EngineSession): void {
    if (this.#queue.owner !== s) return;
    if (this.#writer.inTransaction) this.#queue.keep();
    else this.#queue.endLease();
  }

  /**
   * Gives `s` the writer if it is free and `s` is first in line; otherwise
   * queues `s` and returns false.
   *
   * @throws {SqliteError} `BUSY_TIMEOUT` when `s` already waited too long.
   */
  #acquire(s: EngineSession, forGroup = false): boolean {
    if (this.#queue.owner === s) {
      this.#refreshInTransaction();
      return true;
    }
    if (this.#closed) throw new SqliteError(ErrorCode.ShuttingDown, "Server is shutting down");
    if (this.#writerStuck !== null) throw this.#writerStuck;
    const lost = this.#fileLost(false);
    if (lost !== null) throw lost;
    // Anything but another grouped write needs the open group committed
    // first. Committing inline wakes the group's members, which may take the
    // writer themselves (e.g. a BEGIN queued behind their write), so decide
    // who gets it only afterwards; a background commit leaves the writer
    // busy until it is done.
    while (!forGroup && this.#group.open && this.#queue.owner === null) this.#group.commit();
    if (!this.#queue.take(s, this.#writerFree(), s.statementMs)) return false;
    // Let go of the reader's snapshot before writing, so that checkpoints
    // at commit are not held back by it (the WAL would grow without bound).
    this.#releaseReaderSnapshot();
    try {
      this.#refreshWriterSchema();
    } catch (err) {
      // (Another program's lock met as the schema is read, on a database not
      // in WAL mode: the request did not begin, and keeps no writer it would
      // hold idle, keeping every other client's write out.)
      this.#writerSchemaStale = true;
      if (!this.#writer.inTransaction) this.#release();
      throw err;
    }
    return true;
  }

  /**
   * Ends the shared reader's snapshot once no read used it for
   * {@link READER_IDLE_MS} (checked that often): an old snapshot held while
   * no read comes would stop other programs' checkpoints short.
   */
  #armReaderIdle(): void {
    if (this.#readerIdle !== undefined || this.#closed) return;
    this.#readerUsed = false;
    const timer = this.#readerIdle = setTimeout(() => {
      this.#readerIdle = undefined;
      if (!this.#readerInTx || this.#closed) return;
      if (this.#readerUsed) {
        this.#armReaderIdle();
        return;
      }
      try {
        this.#releaseReaderSnapshot();
      } catch {
        // (The next read ends it, renewing its snapshot.)
      }
    }, READER_IDLE_MS);
    Deno.unrefTimer(timer);
  }

  /** Ends the shared reader's snapshot, if it holds one (the next read starts a new one). */
  #releaseReaderSnapshot(): void {
    if (this.#readerInTx) {
      this.#readerInTx = false;
      if (this.#reader!.inTransaction) this.#reader!.runOwn("COMMIT");
    }
  }

  /**
   * True when a group's COMMIT may run on the main thread: it has little to
   * write (its writes ran under {@link QUICK_GROUP_MS}), cannot start
   * SQLite's automatic checkpoint (the WAL is under
   * {@link QUICK_COMMIT_FRAMES}), and either does not sync
   * (`synchronous=normal`) or nobody else could be kept waiting for its
   * fsync (only one session is open). Inline costs far less than a trip to
   * a background thread.
   */
  #commitInline(workMs: number): boolean {
    if (workMs >= QUICK_GROUP_MS) return false;
    if (this.#config.synchronous !== "normal" && this.#sessions.size > 1) return false;
    return (this.#walWatch.frames() ?? Infinity) < QUICK_COMMIT_FRAMES;
  }

  #writerFree(): boolean {
    return !this.#group.committing;
  }

  /**
   * Called after `s` ran anything on the writer: `s` keeps the writer while a
   * transaction is open, otherwise the next waiter gets it.
   */
  #afterWrite(s: EngineSession, touchedTemp = false): void {
    // A session closed meanwhile has already given the writer back (its
    // TEMP objects, made before, outlive it all the same).
    if (this.#queue.owner !== s) {
      if (!touchedTemp) return;
      try {
        this.#refreshTemp();
      } catch (err) {
        // The new owner's statement steps in the background: read them after it.
        if (!isBusyInBackground(err)) throw err;
        this.#tempStale = true;
      }
      return;
    }
    if (touchedTemp || this.#tempStale) this.#refreshTemp();
    if (this.#writer.inTransaction) {
      this.#queue.keep();
      return;
    }
    this.#release();
    // Whatever `s` ran is over, and what it wrote committed: it is
    // acknowledged only if the path still names the file it went into.
    const lost = this.#fileLost(true);
    if (lost !== null) throw lost;
  }

  /**
   * The error of a write when a path no longer names the file the writer
   * opened (the database, its `-wal` or `-shm` file removed, renamed or
   * replaced while serving: see `database_file.ts`), else `null`.
   *
   * @param afterRun The write already ran (and committed into the lost file).
   */
  #fileLost(afterRun: boolean): SqliteError | null {
    return this.#filesGone() ? this.#file!.error(afterRun) : null;
  }

  /**
   * True when a path no longer names the file the writer opened (checked
   * now; `walOnly`: the `-wal` path alone). Logs it once. Once the `-wal`
   * file went, checkpoints the commits it holds into the database as soon as
   * the writer is free; once another program opened the database after a
   * `-wal` or `-shm` file went, refuses reads too (`#checkReads`).
   */
  #filesGone(walOnly = false): boolean {
    const file = this.#file;
    if (file === null) return false;
    const known = file.lost;
    if (file.check(walOnly) === null) return false;
    if (!known) this.onLog?.("error", file.logLine()!);
    if (file.lostKind === "wal" || file.truncated) this.#saveLostWal();
    if (!this.#readsRefused && file.othersOpened()) {
      this.#readsRefused = true;
      // The next read renews its snapshot, and is refused there.
      this.#readerInTx = false;
      this.onLog?.(
        "error",
        `reads are refused from now on: ${file.check()} while the server was serving it, and ` +
          "a new one is at its path (another program opened the database since, or the file was " +
          "replaced), so the server's connections no longer see the database as it is (a read " +
          "that noticed it was answered DATABASE_MOVED)",
      );
    }
    return true;
  }

  /**
   * True when a checkpoint may copy the WAL the server holds into the
   * database although a file went: not when the `-shm` file went (the index
   * the server holds no longer describes the WAL at the path: another
   * program may have rebuilt it and written by it), nor when a new `-wal`
   * file is at the path (a connection opened since created it, so another
   * program may have written into it by the index the server shares: the
   * frames the index lists past the server's are not in the WAL the server
   * holds).
   */
  #mayCheckpointLostFiles(): boolean {
    const kind = this.#file?.lostKind ?? null;
    if (kind === "shm") return false;
    if (kind !== "wal") return true;
    try {
      Deno.statSync(this.#walPath);
      return false;
    } catch {
      return true;
    }
  }

  /**
   * Once the `-wal` file went, or the database file was truncated to 0 bytes
   * in place: copies the commits in the WAL the writer still holds into the
   * database file (a passive checkpoint, once, when the writer is free), so
   * that they survive a `kill -9` or a crash of the server, which would lose
   * that WAL (a removed one is gone with the process; the next start deletes
   * the WAL of a 0-byte database file). Logs what it did.
   */
  #saveLostWal(): void {
    if (this.#lostWalSaved || this.#closed) return;
    const free = this.#queue.owner === null && !this.#group.open && !this.#group.committing &&
      !this.#writer.inTransaction;
    if (!free) return;
    this.#lostWalSaved = true;
    const truncated = this.#file!.truncated;
    const wal = truncated ? `WAL "${this.#walPath}"` : `removed WAL "${this.#walPath}"`;
    const into = truncated ? "the truncated database file" : "the database";
    if (!this.#mayCheckpointLostFiles()) {
      this.onLog?.(
        "error",
        `the ${wal} is not checkpointed: a new one is at its path (another program ` +
          "opened the database since, or the file was replaced), which the server's index may " +
          "not describe; stop the server: what is not checkpointed yet is lost as it exits",
      );
      return;
    }
    // The shared reader lets go of its snapshot, which would hold the checkpoint back.
    if (this.#readerInTx) {
      this.#readerInTx = false;
      if (this.#reader!.inTransaction) this.#reader!.runOwn("COMMIT");
    }
    try {
      const { walFrames, checkpointed } = this.#writer.db.checkpoint("passive");
      if (checkpointed >= walFrames) {
        this.onLog?.(
          "warn",
          `checkpointed the ${walFrames} frames of the ${wal} into ${into}: ` +
            (truncated
              ? "what the WAL held is in the file again, what the file alone held is lost " +
                "(check the database, PRAGMA integrity_check, after a restart)"
              : "every write acknowledged before is in the database file"),
        );
      } else {
        this.onLog?.(
          "error",
          `could checkpoint only ${checkpointed} of the ${walFrames} frames of the ${wal} ` +
            `into ${into} (a read holds the rest back): stop the server with SIGTERM, whose ` +
            "shutdown checkpoints the rest",
        );
      }
    } catch (err) {
      this.onLog?.(
        "error",
        `checkpoint of the ${wal} failed: ${(err as Error).message}; stop the server with ` +
          "SIGTERM, whose shutdown checkpoints it",
      );
    }
  }

  /**
   * The writer, while a group commit's transaction holding a write of `s` is
   * open on it and a statement there can be stopped at the inline budget:
   * where a member's reads behind its own grouped write run. `null`
   * otherwise.
   */
  #groupWriter(s: EngineSession): Connection | null {
    const open = this.#group.has(s) && this.#queue.owner === null;
    return open && this.#writer.caps.interrupt ? this.#writer : null;
  }

  /**
   * True when a write of `p` by a session outside any transaction can join
   * the group commit: it controls no transaction, touches no TEMP object,
   * changes no schema (a read the client pipelines behind it must see the
   * change, and cannot prepare on the shared reader before the commit),
   * cannot end the group's transaction (see below), and has run within the
   * inline budget before (a statement that might run long must not hold the
   * group; the first of a group is stopped and run again alone if it turns
   * slow, later ones cannot be).
   *
   * A write whose failure rolls back the whole transaction (`OR ROLLBACK`,
   * a trigger's `RAISE(ROLLBACK)`) would undo every other client's write
   * in the group: it runs alone, as does every write while a table or
   * trigger of the schema mentions `rollback` (a conflict clause, a trigger
   * raising it), and while the schema cannot be looked at now.
   */
  #groupable(p: Prepared, sql: string): boolean {
    if (p.txOp !== null || p.touchesTemp || p.changesSchema) return false;
    p.mentionsRollback ??= /rollback/i.test(sql);
    if (p.mentionsRollback) return false;
    const traits = this.#schemaTraits();
    if (traits === null || traits.rollsBack) return false;
    if (!this.#tellsDeferred && traits.defersForeignKeys) return false;
    if (!this.#writer.caps.background) return true;
    return this.#writer.peek(sql)?.fast === true;
  }

  /**
   * What the tables and triggers of every attached schema declare that
   * keeps writes out of group commits (the text merely mentioning it is
   * enough: writes then only lose the group commit), looked at once per
   * schema version. `null` (writes do not group now) while the writer is
   * not free for a group: held by a transaction (reading there would begin
   * its snapshot early) or a write running alone, or stepping in the
   * background (no other statement may use it meanwhile). Such a write
   * waits for the writer, and asks again when woken.
   */
  #schemaTraits(): SchemaTraits | null {
    if (this.#traits !== null) return this.#traits;
    if (this.#queue.owner !== null || this.#group.committing) return null;
    const query = (sql: string) => {
      const st = this.#writer.db.prepare(sql)!;
      try {
        return st.all();
      } finally {
        st.finalize();
      }
    };
    try {
      const schemas = query("SELECT name FROM pragma_database_list").map((r) => String(r[0]));
      const any = (where: string) =>
        schemas.some((name) =>
          query(
            `SELECT 1 FROM "${name.replaceAll('"', '""')}".sqlite_schema WHERE ${where} LIMIT 1`,
          ).length > 0
        );
      return this.#traits = {
        defersForeignKeys: any("type = 'table' AND sql LIKE '%deferred%'"),
        rollsBack: any("type IN ('table', 'trigger') AND sql LIKE '%rollback%'"),
      };
    } catch (err) {
      if (isBusyInBackground(err)) return null;
      throw err;
    }
  }

  /** Tracks a statement running in the background until it settles. */
  #track<T>(work: Promise<T>): Promise<T> {
    const tracked = work.finally(() => this.#running.delete(tracked));
    this.#running.add(tracked);
    return tracked;
  }

  /**
   * Runs one autocommit write of `s` inside the group commit; `s` must have
   * acquired the writer with `forGroup`. The writer is free again after.
   */
  #grouped<T>(s: EngineSession, fn: () => T): T {
    try {
      return this.#group.run(s, fn);
    } finally {
      this.#queue.release();
      this.#drain();
    }
  }

  /** True when the writer's TEMP objects could not be read after they changed. */
  #tempStale = false;

  /**
   * Reads which TEMP objects the writer holds (they send every statement
   * through it), and whether it has databases attached.
   */
  #refreshTemp(): void {
    this.#tempStale = false;
    const p = this.#writer.prepare("SELECT type, name FROM temp.sqlite_schema ORDER BY rowid");
    p.stmt.bind([]);
    const rows = p.stmt.all();
    this.#writerHasTemp = rows.length > 0;
    this.#writerTemp = rows
      .filter((r) => !String(r[1]).startsWith("sqlite_autoindex_"))
      .map((r) => `${r[0]} ${r[1]}`);
    this.#writer.setTempObjects(rows.map((r) => [String(r[0]), String(r[1])]));
    // (Attached databases: seq 2 on, after main and temp.)
    this.#writerAttached = this.#writer.ownRows("SELECT 1 FROM pragma_database_list WHERE seq > 1")
      .length > 0;
  }

  /** True while the writer's owner has foreign keys off (a batch with `foreignKeys: false`). */
  #keysOff = false;

  #foreignKeys(on: boolean): void {
    if (on === !this.#keysOff) return;
    this.#writer.db.exec(on ? "PRAGMA foreign_keys = ON" : "PRAGMA foreign_keys = OFF");
    this.#keysOff = !on;
  }

  /** Rolls back the owner's transaction (on close or lease expiry). */
  #abort(s: EngineSession): void {
    if (this.#queue.owner !== s) return;
    if (s.runningOnWriter) {
      // Its statement runs in the background (the connection is busy):
      // stop it; the session rolls back and releases when it returns.
      this.#writer.db.interrupt();
      return;
    }
    this.#rollBack(s);
    this.#release();
  }

  /**
   * Rolls back the writer's transaction of `owner`, ending its cursors on
   * the writer first (they end with the transaction anyway): while a
   * statement is active there, an interrupt that came as a step returned
   * stays pending and would stop the ROLLBACK, leaving the transaction open
   * for the writer's next owner.
   *
   * @returns the ROLLBACK's error message, or null (none, or none needed).
   */
  #rollBack(owner: EngineSession | null): string | null {
    owner?.writerReleased();
    let failed: string | null = null;
    if (this.#writer.inTransaction) {
      try {
        this.#writer.db.exec("ROLLBACK");
      } catch (err) {
        failed = (err as Error).message; // (the transaction may already be gone)
      }
    }
    this.#changes?.discard();
    return failed;
  }

  /** The writer ran `p`: a statement that changed the schema voids its cache. */
  #ranOnWriter(p: Prepared): void {
    if (p.setsPragma !== null) this.#pragmaSet(p.setsPragma);
    if (!p.changesSchema) return;
    this.#writer.clearCache();
    this.#traits = null;
    if (this.#writer.inTransaction) this.#schemaChangedInTx = true;
  }

  /**
   * At the start of a writer turn (outside any client's transaction, or in
   * a group commit's, which holds the write lock), when anyone committed
   * since the writer last looked (this server's reader saw the schema move,
   * or the WAL-index header changed: another program, the `sqlite3` shell,
   * may have changed the schema): reads the schema cookie, dropping cached
   * statements when it moved. SQLite notices a changed schema only when a
   * statement starts its transaction, and a statement prepared against the
   * old one can fail ("table t1 has 2 columns but 3 values were supplied"),
   * or be prepared again by SQLite as it steps: its result columns then
   * change under the names read at prepare (node:sqlite even keeps the old
   * row width). Costs one header comparison, plus one cookie read after a
   * commit. Also once the writer holds the write lock (a group's or a
   * batch's `BEGIN IMMEDIATE`, which node:sqlite waits for inline after the
   * turn began, while another program may change the schema).
   *
   * @returns true when the schema version moved (cached statements dropped).
   */
  #refreshWriterSchema(): boolean {
    const moved = this.#reader !== null && this.#walWatch.changedSince(this.#writerSeen);
    if (!moved && !this.#writerSchemaStale) return false;
    this.#writerSchemaStale = false;
    const version = this.#writer.refreshSchema();
    if (version === this.#writerSchema) return false;
    this.#writerSchema = version;
    this.#traits = null;
    return true;
  }

  /**
   * Inside the owner's transaction, before a statement, where the binding
   * cannot tell that SQLite prepared a statement again (node:sqlite, which
   * then even keeps the old row width): when another program committed
   * since the writer last looked (a `BEGIN` that has read nothing yet sees
   * its schema), reads the schema cookie. That starts the transaction's
   * snapshot early, so a write after it cannot wait for another program's
   * lock (`SQLITE_BUSY` at once): only after another program committed
   * during the transaction. The next turn looks again (the cookie may have
   * been read in an older snapshot). Where the binding tells, too, while
   * the writer has TEMP tables: another program may have given a table one
   * of their names (see `Connection.setTempObjects`), which the statements
   * cached must be prepared again to see.
   */
  #refreshInTransaction(always = false): void {
    if (this.#reader === null) return;
    if (!always && this.#writer.caps.reprepares && !this.#writerHasTemp) return;
    if (!this.#walWatch.changedSince(this.#writerSeen)) return;
    this.#writerSchemaStale = true;
    this.#writer.refreshSchema();
    this.#traits = null;
  }

  /**
   * A client's statement failed to prepare on the writer: true when another
   * program committed since the writer last looked (see
   * `Connection.schemaMayHaveMoved`), which inside a transaction the FFI
   * engine does not check before each statement (SQLite prepares cached
   * statements again as they step, but compiles a new one against the
   * schema it holds). The writer then reads the cookie, which starts a
   * deferred transaction's snapshot: only when the statement failed anyway.
   * The next turn looks again.
   */
  #writerMayBeStale(): boolean {
    // (Not while the engine opens: its reader and watch do not exist yet.)
    if (!this.#reader || !this.#walWatch.changedSince(this.#writerSeen)) return false;
    this.#writerSchemaStale = true;
    this.#traits = null;
    return true;
  }

  /** The writer's schema version at its last `#refreshWriterSchema`. */
  #writerSchema = -1;

  #release(): void {
    // The writer goes to the next owner only outside any transaction but an
    // open group commit's (a grouped write's owner releases inside it).
    if (this.#writer.inTransaction && !this.#group.open && !this.#group.committing) {
      this.#endLeftTransaction();
    }
    if (this.#schemaChangedInTx) {
      // The transaction changed the schema and may have been rolled back by
      // other means than a ROLLBACK statement (OR ROLLBACK, a stopped write,
      // a lease, a disconnect): what was cached meanwhile may describe a
      // schema that no longer is.
      this.#schemaChangedInTx = false;
      this.#writer.clearCache();
      this.#traits = null;
    }
    // Keys a batch turned off are on again before anyone else writes (the
    // batch's transaction is over: the PRAGMA is a no-op inside one).
    if (this.#keysOff) this.#foreignKeys(true);
    const owner = this.#queue.owner;
    this.#queue.release();
    // Its cursors on the writer end with its transaction, before anyone else
    // uses the writer.
    owner?.writerReleased();
    this.#drain();
  }

  /**
   * Safety net: the writer's owner gives it back with a transaction still
   * open (its ROLLBACK failed, or a path forgot one). Handing the writer on
   * so would run the next owner's acknowledged writes inside that
   * transaction, and lose them with it. Rolls back ({@link #rollBack}); if
   * the transaction still cannot be ended, the writer is refused to everyone
   * from then on ({@link #writerStuck}) rather than handed on.
   */
  #endLeftTransaction(): void {
    const owner = this.#queue.owner;
    const failed = this.#rollBack(owner);
    if (!this.#writer.inTransaction) {
      this.onLog?.(
        "error",
        `internal error: connection ${owner?.id ?? "?"} gave the writer back inside a ` +
          "transaction; it was rolled back before the next client wrote (please report this)",
      );
      return;
    }
    this.#writerStuck = new SqliteError(
      ErrorCode.Internal,
      "Internal error: a transaction on the server's writer connection cannot be rolled back" +
        `${
          failed === null ? "" : `: ${failed}`
        }; writes are refused until the server restarts (nothing written since its last ` +
        "acknowledged COMMIT is kept)",
    );
    this.onLog?.("error", `${this.#writerStuck.message} (please report this)`);
  }

  /** Set once the writer holds a transaction that cannot be ended: every write is refused. */
  #writerStuck: SqliteError | null = null;

  /** Wakes waiters in order while the writer is free. */
  #drain(): void {
    this.#queue.drain(this.#isFree);
  }
}

/**
 * Throws SQLite's `SQLITE_READONLY` when it opened the main database
 * read-only: the file is not writable by this user (SQLite then falls back
 * to reading it, and in WAL mode even `BEGIN IMMEDIATE` succeeds: only a
 * page write fails). A write to page 1 inside a transaction rolled back at
 * once tells, changing nothing. Another process holding the write lock
 * (`SQLITE_BUSY` after the busy timeout) leaves the question open.
 */
function refuseReadOnlyFile(db: Db): void {
  try {
    db.exec("BEGIN IMMEDIATE");
  } catch (err) {
    if (isBusy(err)) return;
    throw err;
  }
  try {
    db.exec("PRAGMA user_version = 0");
  } catch (err) {
    const code = err instanceof SqliteError ? err.code : "";
    throw code.startsWith("SQLITE_READONLY") ? new ReadOnlyFileError(err as SqliteError) : err;
  } finally {
    if (db.inTransaction) db.exec("ROLLBACK");
  }
}

/** True for `SQLITE_BUSY` (and its extended codes) or `SQLITE_LOCKED`. */
function isBusy(err: unknown): boolean {
  const code = err instanceof SqliteError ? err.code : "";
  return code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED");
}

/** What {@link Engine}'s wait for a lock steps: it takes the SHARED lock every read takes. */
const LOCK_PROBE = "PRAGMA schema_version";

function shuttingDown(): SqliteError {
  return new SqliteError(ErrorCode.ShuttingDown, "Server is shutting down");
}

const NO_DQS_CHECK: DqsReport = Object.freeze({ objects: Object.freeze([]), skipped: null });

/** {@link findDoubleQuotedStrings}, whose failure only skips the check. */
function checkSchema(sqlite: Sqlite, db: Db): DqsReport {
  try {
    return findDoubleQuotedStrings(sqlite, db);
  } catch (err) {
    return { objects: [], skipped: (err as Error).message };
  }
}
