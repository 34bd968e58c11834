/**
 * Maintenance the server runs on behalf of a client: WAL checkpoint, VACUUM
 * (in place or into a copy), integrity check and online backup. Clients
 * cannot do these through SQL: the engine's policy refuses `VACUUM INTO`
 * and unsafe PRAGMAs, and a client's `PRAGMA wal_checkpoint(TRUNCATE)` would
 * find the server's own read snapshot in its way. Here the engine does them
 * itself, the way they must be done while clients stay connected:
 *
 * - `checkpoint` and in-place `vacuum` take the writer like a write (they
 *   wait their turn in the writer queue, and the shared reader lets go of
 *   its snapshot when the writer is taken). The checkpoint does not wait
 *   for readers (busy timeout 0 while it runs): a cursor holding an older
 *   snapshot makes it report `busy` instead of stalling the server. An
 *   in-place vacuum ends with a truncating checkpoint (the shared reader,
 *   which reads during the vacuum, lets go of its snapshot again first),
 *   retried briefly when busy; still busy, the vacuum reports `walBusy`.
 * - `integrity`, `backup` and `vacuum --into` run on a read connection of
 *   their own, inside one read transaction: they see one consistent
 *   snapshot, which holds every write acknowledged before they began. With
 *   the FFI binding writers and readers go on meanwhile (WAL): the long
 *   steps run off the main thread, a backup's every step (a bounded number
 *   of pages) and the sync of the copy at its last one, and the copy's
 *   switch to a rollback journal. node:sqlite runs them on the main thread
 *   (its `backup()` copies everything in one synchronous call): nothing
 *   else is served until they are done.
 * - Files are written only under the directory the server was given for
 *   them (`--backup-dir`), never over an existing file: the destination is a
 *   server-side path chosen by a client, and the server may run with more
 *   rights than that client (see README, "The netsqlite command"). A copy is
 *   written beside it and given its name when complete, by a hard link that
 *   fails should a file have appeared there meanwhile (`putInPlace`), then
 *   the directory synced; what a failed copy leaves is removed, and so is
 *   what a copy cut short (the server killed) left, by the next copy to the
 *   same destination, never a copy in progress (`holdLeftover`).
 *
 * @module
 */

import { basename, dirname, isAbsolute, join, resolve, sep } from "node:path";
import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import type {
  BackupProgress,
  BackupReport,
  CheckpointMode,
  CheckpointReport,
  IntegrityReport,
  VacuumReport,
} from "../protocol/messages.ts";
import { type Db, rowsNow, type Sqlite, type SqlValue } from "./binding/binding.ts";
import { realDatabasePath } from "./database_file.ts";
import { BLOCKED, type EngineSession, type Reply } from "./engine_session.ts";
import type { SessionHost } from "./session_host.ts";

/** Pages a backup copies per step before yielding to the event loop. */
export const BACKUP_PAGES_PER_STEP = 256;

/**
 * After `TARGET`: the name of a partial copy (`.1a2b3c4d.partial`, see
 * `createPartial`), or of a file SQLite keeps beside one.
 */
const PARTIAL_NAME = /^(\.[0-9a-f]{8}\.partial)(-journal|-wal|-shm)?$/;

/**
 * Waits before the retries of the truncating checkpoint that ends an
 * in-place vacuum, when a reader kept the first from resetting the WAL: 250
 * ms in all, the writer held (writes wait, as they did for the vacuum).
 */
const TRUNCATE_RETRY_MS = [10, 20, 40, 80, 100] as const;

/** Problems `integrity` reports at most. */
export const MAX_PROBLEMS = 100;

/**
 * One problem per line, at most {@link MAX_PROBLEMS}: SQLite reports the
 * b-tree's problems in one row, lines under a `*** in database main ***`
 * heading, and the other checks one per row.
 */
export function integrityProblems(rows: readonly string[]): string[] {
  const lines = rows.flatMap((r) => r.split("\n"))
    .filter((line) => line !== "" && !/^\*\*\* in database \S+ \*\*\*$/.test(line));
  return lines.slice(0, MAX_PROBLEMS);
}

/** One backup running. */
interface RunningBackup {
  dest: string;
  done: number;
  total: number;
  start: number;
}

/** Checkpoint, vacuum, integrity check and backup, run by the engine itself. */
export class Maintenance {
  readonly #host: SessionHost;
  readonly #sqlite: Sqlite;
  readonly #backupDir: string | null;
  readonly #releaseReaderSnapshot: () => void;
  readonly #backups = new Set<RunningBackup>();
  /** Destinations a backup or `VACUUM INTO` is writing now. */
  readonly #writing = new Set<string>();

  /**
   * @param host The engine whose database is maintained, as its sessions see it.
   * @param sqlite The binding it runs on (maintenance opens connections of its own).
   * @param backupDir Directory under which backups and `VACUUM INTO` copies
   *   may be written; `null` refuses them.
   * @param releaseReaderSnapshot Ends the shared reader's read snapshot, if
   *   it holds one (before the checkpoint that ends an in-place vacuum).
   */
  constructor(
    host: SessionHost,
    sqlite: Sqlite,
    backupDir: string | null,
    releaseReaderSnapshot: () => void,
  ) {
    this.#host = host;
    this.#sqlite = sqlite;
    this.#backupDir = backupDir;
    this.#releaseReaderSnapshot = releaseReaderSnapshot;
  }

  /** Backups in progress. */
  get backups(): BackupProgress[] {
    const now = performance.now();
    return [...this.#backups].map((b) => ({
      dest: b.dest,
      done: b.done,
      total: b.total,
      ms: Math.round(now - b.start),
    }));
  }

  /**
   * Checkpoints the WAL (`PRAGMA wal_checkpoint(MODE)`) on the writer, which
   * `s` takes like a write. Never waits for readers.
   *
   * @throws {SqliteError} `BAD_REQUEST` inside a transaction of `s`, or for an in-memory database.
   */
  checkpoint(s: EngineSession, mode: CheckpointMode): Reply<CheckpointReport> {
    const host = this.#host;
    this.#check(s, "checkpoint");
    this.#writable("checkpoint");
    if (s.awaitingCommit || !host.writer.acquire(s)) return BLOCKED;
    const start = performance.now();
    try {
      const wal = host.walPath;
      const walBytesBefore = fileSize(wal);
      const [busy, walFrames, checkpointed] = this.#checkpointNow(mode);
      return {
        mode,
        busy,
        walFrames,
        checkpointed,
        walBytesBefore,
        walBytesAfter: fileSize(wal),
        ms: elapsed(start),
      };
    } finally {
      host.writer.afterWrite(s);
    }
  }

  /**
   * `VACUUM` in place (on the writer, taken like a write), or with `into` a
   * compacted copy written from a snapshot on a connection of its own.
   *
   * @throws {SqliteError} `FORBIDDEN` for a destination the server does not permit.
   */
  vacuum(s: EngineSession, into: string | null): Reply<VacuumReport> {
    const host = this.#host;
    this.#check(s, "vacuum");
    if (into !== null) return this.#vacuumInto(this.#destination(into, "vacuum into"));
    this.#writable("vacuum");
    if (s.awaitingCommit || !host.writer.acquire(s)) return BLOCKED;
    const start = performance.now();
    const db = host.writer.connection.db;
    let before: [number, number];
    try {
      before = pageCount(db);
    } catch (err) {
      host.writer.afterWrite(s);
      throw err;
    }
    const report = (walBusy: boolean): VacuumReport => {
      const after = pageCount(db);
      return {
        into: null,
        pagesBefore: before[0],
        pagesAfter: after[0],
        bytesBefore: before[0] * before[1],
        bytesAfter: after[0] * after[1],
        walBusy,
        ms: elapsed(start),
      };
    };
    // VACUUM leaves its pages in the WAL: write them back so the file shrinks now.
    const finish = (): VacuumReport | Promise<VacuumReport> =>
      this.#truncateWal() ? this.#truncateWalAgain().then(report) : report(false);
    if (!db.inTransaction && this.#sqlite.capabilities.background) {
      s.runningOnWriter = true;
      const failed = (err: unknown): never => {
        throw this.#vacuumFailed(err);
      };
      const work = stepAll(db, "VACUUM", [], true).then(finish, failed).finally(() => {
        s.runningOnWriter = false;
        host.writer.afterWrite(s);
      });
      return host.track(work);
    }
    let done: VacuumReport | Promise<VacuumReport>;
    try {
      db.exec("VACUUM");
    } catch (err) {
      const failed = this.#vacuumFailed(err);
      host.writer.afterWrite(s);
      throw failed;
    }
    try {
      done = finish();
    } catch (err) {
      host.writer.afterWrite(s);
      throw err;
    }
    if (!(done instanceof Promise)) {
      host.writer.afterWrite(s);
      return done;
    }
    // Retrying: the writer stays taken until the checkpoint is done.
    return host.track(done.finally(() => host.writer.afterWrite(s)));
  }

  /**
   * The error of an in-place VACUUM that failed (SQLite rolled it back), on
   * the writer (held). The pages it wrote to the WAL were never committed,
   * but keep their space until a checkpoint resets the WAL: on a device the
   * vacuum filled, the device stays full (and a later checkpoint may find no
   * room to write back). A truncating checkpoint gives that space back now.
   * A full device gets a hint: VACUUM needs free space about the
   * database's size.
   */
  #vacuumFailed(err: unknown): unknown {
    let givenBack = false;
    try {
      givenBack = !this.#truncateWal();
    } catch {
      // The vacuum's error is the one to report.
    }
    if (!(err instanceof SqliteError) || !err.code.startsWith("SQLITE_FULL")) {
      return explainVacuum(err);
    }
    return new SqliteError(
      err.code,
      `Cannot vacuum: ${err.message}: VACUUM writes the whole database again into the WAL, so ` +
        "it needs free space about the database's size on its device; make room and try again" +
        (givenBack ? " (the space it took was given back)" : ""),
      err.sqliteCode,
      { cause: err },
    );
  }

  /**
   * The truncating checkpoint after an in-place VACUUM, on the writer (held):
   * true when busy. The shared reader lets go of its snapshot first (reads
   * during the vacuum took one, the engine does the same when a write takes
   * the writer), else the checkpoint would always find it in its way and
   * leave a WAL about as large as the database. A cursor, a read running in
   * the background or another process may still hold one.
   */
  #truncateWal(): boolean {
    this.#releaseReaderSnapshot();
    try {
      return this.#checkpointNow("truncate")[0];
    } catch (err) {
      if (isBusy(err)) return true;
      throw err;
    }
  }

  /**
   * Retries {@link #truncateWal} a few times, {@link TRUNCATE_RETRY_MS} apart
   * (readers in the background finish meanwhile; writes wait): true when it
   * is still busy, which the vacuum then reports (`walBusy`).
   */
  async #truncateWalAgain(): Promise<boolean> {
    for (const ms of TRUNCATE_RETRY_MS) {
      await new Promise((resolve) => setTimeout(resolve, ms));
      if (!this.#truncateWal()) return false;
    }
    return true;
  }

  /**
   * `PRAGMA integrity_check` on a snapshot, on a connection of its own.
   * SQLite's `SQLITE_CORRUPT` or `SQLITE_NOTADB` on the way (the check
   * stopped on a page it cannot read, or could not start: the header or the
   * schema unreadable) is a problem the check found, not a failure to run
   * it: the report is `ok: false`, with the problems listed before it and
   * then SQLite's error.
   *
   * @throws {SqliteError} for an in-memory database; SQLite's other errors.
   */
  integrity(): Promise<IntegrityReport> {
    this.#needsFile("check integrity");
    const start = performance.now();
    const rows: string[] = [];
    let size: [number, number] | null = null;
    const report = (problems: string[]): IntegrityReport => {
      const ok = problems.length === 1 && problems[0] === "ok";
      const [pages, pageSize] = size ?? [0, 0];
      return {
        ok,
        problems: ok ? [] : problems,
        pages,
        bytes: size === null ? fileSize(this.#host.config.path) : pages * pageSize,
        ms: elapsed(start),
      };
    };
    const check = this.#withSnapshot(async (db, background) => {
      size = pageCount(db);
      try {
        await stepInto(rows, db, `PRAGMA integrity_check(${MAX_PROBLEMS})`, background);
      } catch (err) {
        if (!isCorrupt(err) || background) throw err;
        // node:sqlite reads a PRAGMA's rows at once, and its error loses those before
        // it: read them one by one, as a query (its rows come by the statement's
        // iterator), with SQLite's default limit, 100 problems (MAX_PROBLEMS).
        rows.length = 0;
        await stepInto(rows, db, "SELECT * FROM pragma_integrity_check", false).catch(() => {});
        throw err;
      }
      return report(integrityProblems(rows));
    }).catch((err) => {
      if (!isCorrupt(err)) throw err;
      const found = integrityProblems(rows.filter((r) => r !== "ok"));
      const stopped = size === null ? "the check could not start" : "the check stopped here";
      return report([
        ...found.slice(0, MAX_PROBLEMS - 1),
        `${err.code}: ${err.message} (${stopped})`,
      ]);
    });
    return this.#host.track(check);
  }

  /**
   * Copies the database to `dest` (under the backup directory, a new file)
   * with SQLite's backup API, from one snapshot taken when it starts: writers
   * go on meanwhile, and the copy holds every write acknowledged before.
   * The copy is written beside `dest` and renamed when complete.
   *
   * @throws {SqliteError} `FORBIDDEN` for a destination the server does not permit.
   */
  backup(dest: string): Promise<BackupReport> {
    this.#needsFile("back up");
    const target = this.#destination(dest, "back up to");
    const release = this.#claim(target, "back up to");
    const state: RunningBackup = { dest: target, done: 0, total: 0, start: performance.now() };
    const work = this.#withSnapshot(async (db, background) => {
      this.#backups.add(state);
      let partial: PartialCopy | null = null;
      try {
        await this.#removeLeftovers(target, background);
        partial = await createPartial(target, fileMode(this.#host.config.path));
        await db.backup(partial.path, {
          pagesPerStep: BACKUP_PAGES_PER_STEP,
          onProgress: (remaining, total) => {
            state.total = total;
            state.done = total - remaining;
          },
        });
        await this.#standalone(partial.path, background);
        await partial.seal();
        await putInPlace(partial.path, target, "back up to", "backup");
      } catch (err) {
        if (partial !== null) await removeCopy(partial.path);
        throw destinationError(err, "back up to", target);
      } finally {
        partial?.release();
        this.#backups.delete(state);
      }
      return {
        dest: target,
        pages: state.total,
        bytes: fileSize(target),
        ms: elapsed(state.start),
      };
    }).finally(release);
    return this.#host.track(work);
  }

  #vacuumInto(target: string): Promise<VacuumReport> {
    this.#needsFile("vacuum into");
    const background = this.#sqlite.capabilities.background;
    const release = this.#claim(target, "vacuum into");
    // VACUUM INTO reads one snapshot by itself, and refuses to run inside a
    // transaction; the node:sqlite path copies a snapshot, then compacts it.
    const work = this.#withSnapshot(async (db) => {
      const start = performance.now();
      const [pages, pageSize] = pageCount(db);
      let partial: PartialCopy | null = null;
      try {
        await this.#removeLeftovers(target, background);
        partial = await createPartial(target, fileMode(this.#host.config.path));
        if (background) {
          await stepAll(db, "VACUUM INTO ?", [partial.path], true);
        } else {
          // node:sqlite refuses ATTACH (and so VACUUM INTO) without full permissions.
          await db.backup(partial.path, { pagesPerStep: BACKUP_PAGES_PER_STEP });
          await this.#standalone(partial.path, false, "VACUUM");
        }
        await partial.seal();
        await putInPlace(partial.path, target, "vacuum into", "vacuum");
      } catch (err) {
        if (partial !== null) await removeCopy(partial.path);
        throw destinationError(
          explainVacuum(err, `vacuum into "${target}"`),
          "vacuum into",
          target,
        );
      } finally {
        partial?.release();
      }
      const size = fileSize(target);
      return {
        into: target,
        pagesBefore: pages,
        pagesAfter: Math.round(size / pageSize),
        bytesBefore: pages * pageSize,
        bytesAfter: size,
        ms: elapsed(start),
      };
    }, !background).finally(release);
    return this.#host.track(work);
  }

  /**
   * Makes a copy a file that stands alone: rollback journal rather than WAL
   * (no `-wal`/`-shm` files beside it; a server that opens it turns WAL on
   * again), then runs `then` on it. The switch rewrites and syncs the
   * copy's header: on a background thread when `background`.
   */
  async #standalone(path: string, background: boolean, then = ""): Promise<void> {
    const copy = this.#sqlite.open(path, { readOnly: false, busyTimeout: 0 });
    try {
      // The copy's header says WAL (the source's). In exclusive locking mode SQLite keeps
      // the WAL index in memory: no `-shm` file, whose 32 KiB a device with just room for
      // the copy does not have (the switch failed there with SQLITE_IOERR_SHMSIZE, "disk
      // I/O error"). No other connection opens a partial copy meanwhile (the sweep of
      // leftovers leaves a locked one alone).
      copy.exec("PRAGMA locking_mode = EXCLUSIVE");
      if (!background) copy.exec(`PRAGMA journal_mode = DELETE; ${then}`);
      else {
        await stepAll(copy, "PRAGMA journal_mode = DELETE", [], true);
        if (then !== "") await stepAll(copy, then, [], true);
      }
    } finally {
      copy.close();
    }
  }

  /**
   * Removes what copies to `target` that never finished left beside it (a
   * server stopped while one ran): partial copies `TARGET.<8 hex
   * digits>.partial` that no connection is writing (SQLite's write lock on
   * them is free), with their `-journal`, `-wal` and `-shm` files, and such
   * files whose partial copy is gone. A partial copy another server is
   * writing now (same directory, same name) is left alone, and so is the
   * database, or a file of it, that has such a name.
   */
  async #removeLeftovers(target: string, background: boolean): Promise<void> {
    const name = basename(target);
    const dir = dirname(target);
    const partials = new Set<string>();
    const orphans = new Set<string>();
    for await (const entry of Deno.readDir(dir)) {
      if (!entry.name.startsWith(name + ".")) continue;
      const m = PARTIAL_NAME.exec(entry.name.slice(name.length));
      if (m === null) continue;
      const partial = join(dir, name + m[1]);
      if (m[2] === undefined) {
        partials.add(partial);
        orphans.delete(partial);
      } else if (!partials.has(partial)) {
        orphans.add(partial);
      }
    }
    // A database (or its files) with such a name is never one: it is left alone.
    const own = (partial: string) =>
      COPY_FILES.some((suffix) => this.#databaseFileName(partial + suffix) !== null);
    for (const partial of orphans) {
      if (!existsPath(partial) && !own(partial)) await removeCopy(partial);
    }
    for (const partial of partials) {
      if (own(partial)) continue;
      const letGo = holdLeftover(partial);
      if (letGo === null) continue;
      try {
        if (!(await this.#beingWritten(partial, background))) await removeCopy(partial);
      } finally {
        letGo();
      }
    }
  }

  /** True when a connection (another server's copy in progress) holds `path`'s write lock. */
  async #beingWritten(path: string, background: boolean): Promise<boolean> {
    if (!regularFile(path)) return false;
    let copy: Db;
    try {
      copy = this.#sqlite.open(path, { readOnly: false, busyTimeout: 0 });
    } catch {
      return false; // Not a database SQLite can open: not one being written.
    }
    try {
      await stepAll(copy, "BEGIN IMMEDIATE", [], background);
      return false;
    } catch (err) {
      return isBusy(err);
    } finally {
      if (copy.inTransaction) copy.exec("ROLLBACK");
      copy.close();
    }
  }

  /** `[busy, log, checkpointed]` of `PRAGMA wal_checkpoint(MODE)` on the writer, not waiting. */
  #checkpointNow(mode: CheckpointMode): [boolean, number, number] {
    const db = this.#host.writer.connection.db;
    // A connection that waits for locks on the main thread (node:sqlite)
    // stops waiting for this call; one that does not is left as it is.
    const waits = db.waitsInline;
    if (waits) db.exec("PRAGMA busy_timeout = 0");
    try {
      const row = rowsNow(db, `PRAGMA wal_checkpoint(${mode.toUpperCase()})`)[0];
      return [Number(row[0]) !== 0, Number(row[1]), Number(row[2])];
    } finally {
      if (waits) db.exec(`PRAGMA busy_timeout = ${this.#host.config.busyTimeout}`);
    }
  }

  /**
   * Runs `fn` on a fresh read-only connection, inside one read transaction
   * (one snapshot) unless `snapshot` is false, then closes it.
   *
   * @throws {SqliteError} `DATABASE_MOVED`, before anything is opened, when a
   *   path of the database no longer names the file the server opened, or
   *   the database file was truncated to 0 bytes in place: a connection
   *   opened on a 0-byte database deletes its `-wal`, with every write the
   *   WAL holds (see database_file.ts).
   */
  async #withSnapshot<T>(
    fn: (db: Db, background: boolean) => Promise<T>,
    snapshot = true,
  ): Promise<T> {
    const host = this.#host;
    host.readers.checkFiles();
    const db = this.#sqlite.open(host.config.path, {
      readOnly: true,
      busyTimeout: host.config.busyTimeout,
    });
    try {
      if (snapshot) {
        db.exec("BEGIN");
        rowsNow(db, "SELECT count(*) FROM sqlite_schema"); // starts the snapshot
      }
      return await fn(db, this.#sqlite.capabilities.background);
    } finally {
      if (db.inTransaction) {
        try {
          db.exec("COMMIT");
        } catch {
          // Closing ends it anyway.
        }
      }
      db.close();
    }
  }

  #check(s: EngineSession, what: string): void {
    this.#needsFile(what);
    if (s.inTransaction && this.#host.writer.connection.inTransaction) {
      throw new SqliteError(
        ErrorCode.BadRequest,
        `Cannot ${what} inside a transaction: commit or roll back first`,
      );
    }
  }

  /** Refuses what writes the database on a read-only server, as the policy refuses writes. */
  #writable(what: string): void {
    if (this.#host.config.policy.readonly) {
      throw new SqliteError(
        ErrorCode.ReadOnly,
        `Cannot ${what}: the server runs read-only (--readonly)`,
      );
    }
  }

  /**
   * Marks `target` as being written until the returned function is called.
   *
   * @throws {SqliteError} `BAD_REQUEST` when a backup or vacuum into it is in progress.
   */
  #claim(target: string, what: string): () => void {
    if (this.#writing.has(target)) {
      throw new SqliteError(
        ErrorCode.BadRequest,
        `Cannot ${what} "${target}": a backup or vacuum into it is in progress`,
      );
    }
    this.#writing.add(target);
    return () => this.#writing.delete(target);
  }

  /**
   * Why `target` (a real path) is one of the database's own names, whether
   * or not the file exists ({@link DATABASE_FILES}, and the super-journals
   * {@link SUPER_JOURNAL} describes), or `null` for none.
   */
  #databaseFileName(target: string): string | null {
    const path = this.#host.config.path;
    if (path === ":memory:" || path === "") return null;
    // SQLite keeps its files beside the file it opened (a symbolic link
    // resolved), the lock is beside the real path: with the directory's real
    // path both are the database's real path and a suffix, as is `target`.
    let db: string;
    try {
      db = realDatabasePath(path);
    } catch {
      db = resolve(path); // Its directory went: a destination beside it fails anyway.
    }
    // macOS and Windows file systems ignore case by default: so does the comparison there.
    const foldCase = Deno.build.os === "darwin" || Deno.build.os === "windows";
    if (foldCase) {
      target = target.toLowerCase();
      db = db.toLowerCase();
    }
    for (const [suffix, name] of DATABASE_FILES) {
      if (target === db + suffix) return name;
    }
    if (
      target.startsWith(db) &&
      (foldCase ? SUPER_JOURNAL_FOLDED : SUPER_JOURNAL).test(target.slice(db.length))
    ) {
      return "it is a name SQLite gives the database's super-journals (DB-mj, 6 upper-case " +
        "hexadecimal digits, 9, 2 more: DB-mjHHHHHH9HH)";
    }
    return null;
  }

  #needsFile(what: string): void {
    if (this.#host.config.path === ":memory:") {
      throw new SqliteError(
        ErrorCode.BadRequest,
        `Cannot ${what}: the database is in memory (":memory:"), not in a file`,
      );
    }
  }

  /**
   * Resolves a client-given destination under the backup directory.
   *
   * @throws {SqliteError} `FORBIDDEN` when the server permits no destination,
   *   the path leaves the directory (`..`, symbolic links), or it names one of
   *   the database's own files ({@link #databaseFileName}), or names by its
   *   form a symbolic link to a directory outside it (`outlink/`);
   *   `BAD_REQUEST` when the file exists or its directory does not, when the
   *   path names a directory by its form ({@link namesDirectory}: `daily/`)
   *   that does not exist, and when it names so what is no directory
   *   (`afile/`: "is not a directory"; `link/` is followed to what the link
   *   points to, "it is a directory" for a directory).
   *   Also `BAD_REQUEST` when a `-wal` or `-journal` is (or is being written) beside it,
   *   or when it is the `-wal` or `-journal` name of a database beside it (existing, or
   *   a copy being written now).
   */
  #destination(path: string, what: string): string {
    const root = this.#backupDir;
    if (root === null) {
      throw new SqliteError(
        ErrorCode.Forbidden,
        `Cannot ${what} "${path}": this server writes no files for clients; ` +
          "start it with --backup-dir DIR (serve({ backupDir })) to permit destinations under DIR",
      );
    }
    let dir: string;
    let parent: string;
    const wanted = isAbsolute(path) ? resolve(path) : resolve(root, path);
    try {
      dir = Deno.realPathSync(root);
      parent = Deno.realPathSync(dirname(wanted));
    } catch (err) {
      throw new SqliteError(
        ErrorCode.BadRequest,
        `Cannot ${what} "${path}": its directory cannot be used: ${(err as Error).message}`,
      );
    }
    let target = join(parent, basename(wanted));
    const under = (p: string) => p.startsWith(dir.endsWith(sep) ? dir : dir + sep);
    // The backup directory itself is refused below as a directory, not as a path outside it.
    if (!under(target) && (target === dir || realPathOrNull(target) === dir)) target = dir;
    if (target !== dir && !under(target)) {
      throw new SqliteError(
        ErrorCode.Forbidden,
        `Cannot ${what} "${path}": the server permits destinations under "${dir}" only ` +
          "(--backup-dir)",
      );
    }
    const own = this.#databaseFileName(target);
    if (own !== null) {
      throw new SqliteError(
        ErrorCode.Forbidden,
        `Cannot ${what} "${target}": ${own}; choose another name (the server writes no copy ` +
          "to a name of the database's own files, whether or not the file exists)",
      );
    }
    // A path that names a directory by its form (`link/`) is followed through a symbolic link,
    // as the system would: `link/` is the directory the link points to, `afile/` no directory.
    const asDirectory = namesDirectory(path);
    const kind = asDirectory ? followedKind(target) : pathKind(target);
    if (kind === "file" && asDirectory) {
      throw new SqliteError(
        ErrorCode.BadRequest,
        `Cannot ${what} "${target}${sep}": "${target}" is not a directory; name a new file ` +
          "in a directory (nothing is overwritten)",
      );
    }
    const real = kind === "directory" && asDirectory ? realPathOrNull(target) : null;
    if (real !== null && real !== dir && !under(real)) {
      // `outlink/`, a link to a directory elsewhere: no file in it could be written either.
      throw new SqliteError(
        ErrorCode.Forbidden,
        `Cannot ${what} "${path}": it is a directory outside "${dir}" (through a symbolic ` +
          `link to "${real}"), and the server permits destinations under "${dir}" only ` +
          "(--backup-dir)",
      );
    }
    if (kind === null && asDirectory) {
      // `resolve()` drops the trailing separator: without this, "daily/" would become a file.
      throw new SqliteError(
        ErrorCode.BadRequest,
        `Cannot ${what} "${target}${sep}": the directory "${target}" does not exist (the ` +
          "server creates no directories); create it first and name a new file in it " +
          `(for example "${join(target, "copy.db")}")`,
      );
    }
    if (kind !== null) {
      throw new SqliteError(
        ErrorCode.BadRequest,
        kind === "directory"
          ? `Cannot ${what} "${target}": it is a directory; name a new file in it ` +
            `(for example "${join(target, "copy.db")}")`
          : `Cannot ${what} "${target}": the file exists; choose a new name (nothing is overwritten)`,
      );
    }
    for (const [suffix, why] of BESIDE_COPY) {
      if (existsPath(target + suffix) || this.#writing.has(target + suffix)) {
        throw new SqliteError(
          ErrorCode.BadRequest,
          `Cannot ${what} "${target}": "${target}${suffix}" exists beside it, and ${why}; remove ` +
            "it (it belongs to a database that had this name) or choose another name",
        );
      }
      // The other way round: this copy would be the `-wal` or `-journal` of a database beside
      // it (an earlier copy, or one being written now), and SQLite, opening that database,
      // would take it for its own and delete it.
      if (!target.endsWith(suffix)) continue;
      const base = target.slice(0, -suffix.length);
      const writing = this.#writing.has(base);
      if (writing || isDatabaseFile(base)) {
        throw new SqliteError(
          ErrorCode.BadRequest,
          `Cannot ${what} "${target}": "${base}" ${writing ? "is being written" : "exists"} ` +
            `beside it, a database whose ${suffix} file this name is: SQLite, opening it, would ` +
            "take the copy for its own and delete it; choose another name",
        );
      }
    }
    return target;
  }
}

/**
 * Names beside the database that SQLite or the server take as the database's
 * own files, by the suffix added to its real path. A copy written there would
 * be taken for one of them: a `-journal` as a hot journal (SQLite refuses to
 * read the database while it cannot roll it back, and the next connection
 * that can deletes it), a `-wal` as the WAL of a later connection.
 */
const DATABASE_FILES: readonly (readonly [string, string])[] = [
  ["", "it is the database itself"],
  [
    "-journal",
    "it is the name of the database's rollback journal (SQLite would take the copy for a " +
    "journal to roll back, and delete it)",
  ],
  ["-wal", "it is the name of the database's WAL (SQLite would take the copy for its WAL)"],
  ["-shm", "it is the name of the database's WAL-index (-shm), which SQLite uses in WAL mode"],
  [".lock", "it is the name of the server's lock file for the database"],
];

/**
 * Files beside a destination that SQLite would take for the copy's own when
 * it opens it, left by a database that had its name (a server killed while
 * serving an earlier copy): it applies a `-wal`'s pages to the copy, and
 * rolls a hot `-journal` back into it, so the copy would read as a mix of
 * the two. A copy is not written there.
 */
const BESIDE_COPY: readonly (readonly [string, string])[] = [
  ["-wal", "SQLite would take it for the copy's WAL and apply its pages to the copy"],
  [
    "-journal",
    "SQLite would take it for the copy's rollback journal and roll its pages back into the copy",
  ],
];

/**
 * The suffix SQLite adds to the database's name for a super-journal (the
 * file a transaction writing several attached databases commits through):
 * `vdbeCommit` in `vdbeaux.c` formats `"-mj%06X9%02X"`, 6 and 2 upper-case
 * hexadecimal digits around a 9 (which keeps 8.3 names apart). Only that
 * shape: `DB-mjolnir.bak` or `DB-mj-backup` are copies like any other.
 */
const SUPER_JOURNAL = /^-mj[0-9A-F]{6}9[0-9A-F]{2}$/;
/** {@link SUPER_JOURNAL} for a name lowered to compare ignoring case (macOS, Windows). */
const SUPER_JOURNAL_FOLDED = new RegExp(SUPER_JOURNAL.source, "i");

/**
 * node:sqlite in Deno limits attached databases to 0 unless the process has
 * every permission, and VACUUM attaches a temporary one: say so.
 */
function explainVacuum(err: unknown, what = "vacuum"): unknown {
  if (!(err instanceof SqliteError) || !/too many attached databases - max 0/.test(err.message)) {
    return err;
  }
  return new SqliteError(
    err.code,
    `Cannot ${what}: ${err.message}: node:sqlite under Deno permits no attached database ` +
      "(VACUUM uses one) unless the server runs with every permission (-A); " +
      "run the server with the ffi engine (--allow-ffi) or with -A",
    err.sqliteCode,
    { cause: err },
  );
}

/** Steps `sql` to the end, returning its rows: on a background thread when `background`. */
async function stepAll(
  db: Db,
  sql: string,
  params: SqlValue[],
  background: boolean,
): Promise<SqlValue[][]> {
  const stmt = db.prepare(sql);
  if (stmt === null) return [];
  try {
    stmt.bind(params);
    if (!background) return stmt.all();
    const rows: SqlValue[][] = [];
    while (await stmt.stepInBackground()) rows.push(stmt.row());
    return rows;
  } finally {
    stmt.finalize();
  }
}

/**
 * Steps `sql` to the end, adding the first column of each row to `rows` as
 * it comes (an error keeps those before it): on a background thread when
 * `background`.
 */
async function stepInto(rows: string[], db: Db, sql: string, background: boolean): Promise<void> {
  const stmt = db.prepare(sql)!;
  try {
    while (background ? await stmt.stepInBackground() : stmt.step()) {
      rows.push(String(stmt.row()[0]));
    }
  } finally {
    stmt.finalize();
  }
}

/** `[page_count, page_size]`. */
function pageCount(db: Db): [number, number] {
  return [
    Number(rowsNow(db, "PRAGMA page_count")[0][0]),
    Number(rowsNow(db, "PRAGMA page_size")[0][0]),
  ];
}

function fileSize(path: string): number {
  try {
    return Deno.statSync(path).size;
  } catch {
    return 0;
  }
}

/**
 * The permission bits of the file at `path` (the database), or `null` where
 * there are none (Windows) or it cannot be read: copies are then created
 * with the defaults.
 */
function fileMode(path: string): number | null {
  if (Deno.build.os === "windows") return null;
  try {
    const mode = Deno.statSync(path).mode;
    return mode === null ? null : mode & 0o777;
  } catch {
    return null;
  }
}

/**
 * Whether a client-given path names a directory by its form alone: it ends
 * with a separator (`daily/`), or its last part is `.` or `..`. Resolved, it
 * loses that form (`resolve("daily/")` is `daily`), and a destination
 * resolved so would be written as a file named after the directory.
 */
function namesDirectory(path: string): boolean {
  const separators = Deno.build.os === "windows" ? /[\\/]/ : /\//;
  const last = path.split(separators).pop();
  return last === "" || last === "." || last === "..";
}

/** True when `path` is a regular file that begins with SQLite's header (`SQLite format 3`). */
function isDatabaseFile(path: string): boolean {
  if (!regularFile(path)) return false;
  try {
    using file = Deno.openSync(path, { read: true });
    const head = new Uint8Array(16);
    const n = file.readSync(head);
    return n === 16 && new TextDecoder().decode(head) === "SQLite format 3\0";
  } catch {
    return false;
  }
}

function realPathOrNull(path: string): string | null {
  try {
    return Deno.realPathSync(path);
  } catch {
    return null;
  }
}

function existsPath(path: string): boolean {
  return pathKind(path) !== null;
}

/** What is at `path`, a symbolic link followed, or `null` for nothing (a dangling link too). */
function followedKind(path: string): "directory" | "file" | null {
  try {
    return Deno.statSync(path).isDirectory ? "directory" : "file";
  } catch {
    return null;
  }
}

/** What is at `path` (a symbolic link not followed), or `null` for nothing. */
function pathKind(path: string): "directory" | "file" | null {
  try {
    return Deno.lstatSync(path).isDirectory ? "directory" : "file";
  } catch {
    return null;
  }
}

/** Why the operating system refused to write in `dir`, by its error code (`EACCES`, ...). */
function fileReason(code: string, dir: string): string {
  switch (code) {
    case "EACCES":
    case "EPERM":
      return `the server's user may not create files in "${dir}"`;
    case "EROFS":
      return `"${dir}" is on a read-only file system`;
    case "ENOENT":
      return `the directory "${dir}" no longer exists`;
    case "ENOTDIR":
      return `a part of "${dir}" is not a directory`;
    case "ENOSPC":
      return `the device that holds "${dir}" is full`;
    case "EDQUOT":
      return "the disk quota of the server's user is used up";
    case "ENAMETOOLONG":
      return "the file name is too long (the partial copy and its journal written beside it add 25 characters)";
    default:
      return `the server cannot write in "${dir}"`;
  }
}

/**
 * A failure to write the copy at `target`, as a typed error that names the
 * destination (never the partial copy beside it): the operating system's
 * refusals (permission, read-only file system, no space, a directory
 * removed meanwhile) and Deno's permissions become `BAD_REQUEST` with the
 * reason; SQLite's own errors (`SQLITE_CANTOPEN`, `SQLITE_FULL`, ...) keep
 * their code and gain the destination, as do the binding's and the
 * server's other errors (`Cannot use connection: ...`). Errors that name
 * the destination already, and errors of other kinds, pass through.
 */
function destinationError(err: unknown, what: string, target: string): unknown {
  if (err instanceof SqliteError) {
    const named = `Cannot ${what} "${target}"`;
    if (err.message.startsWith(named)) return err;
    // The binding names the file it could not open: the partial copy.
    let detail = err.message.replace(/^Cannot open database "[^"]*": /, "");
    if (detail.startsWith("Cannot ")) detail = "c" + detail.slice(1);
    return new SqliteError(
      err.code,
      `Cannot ${what} "${target}": ${detail}`,
      err.sqliteCode,
      { cause: err },
    );
  }
  let reason: string;
  if (err instanceof Deno.errors.NotCapable) {
    reason = "the server's Deno permissions (--allow-write) do not cover it";
  } else {
    const code = (err as { code?: unknown })?.code;
    if (!(err instanceof Error) || typeof code !== "string") return err;
    // "Permission denied (os error 13): open '/x/y.db.1a2b3c4d.partial'" -> up to the colon
    const os = err.message.replace(/: \w+ '.*'$/s, "");
    reason = `${fileReason(code, dirname(target))}: ${os}`;
  }
  return new SqliteError(
    ErrorCode.BadRequest,
    `Cannot ${what} "${target}": ${reason}`,
    undefined,
    { cause: err },
  );
}

/**
 * Whether copies in progress are marked with an advisory lock (`flock`) on
 * their partial file: only where `flock` locks are apart from the POSIX
 * (`fcntl`) locks SQLite takes on the same file in this process (Linux).
 * Not on macOS and the BSDs, where the two share one list per file and the
 * `flock` would make SQLite's own locks on the copy fail (`SQLITE_BUSY`);
 * not on Windows, where a lock on a file also stops the process's own writes
 * to it through another handle (SQLite's), and where an open file (the copy
 * SQLite writes) cannot be removed anyway. Unmarked, a copy in progress is
 * told by SQLite's lock on it alone, as before marks were used.
 */
const MARKS_COPIES = Deno.build.os === "linux" || Deno.build.os === "android";

/** A partial copy being written, and the hold that marks it as in progress. */
interface PartialCopy {
  /** `TARGET.1a2b3c4d.partial`. */
  readonly path: string;
  /** Ends the mark: once SQLite is done with the file, and it is renamed or removed. */
  release(): void;
  /** Gives the complete copy its final permission bits (SQLite is done with it). */
  seal(): Promise<void>;
}

/**
 * Creates, exclusively, an empty file beside `target` with a name of its own
 * (`TARGET.1a2b3c4d.partial`), so the server only ever removes a file it made,
 * and holds an exclusive `flock` on it until released: another server that
 * copies to the same destination (a `--backup-dir` shared by several) then
 * does not take it for a copy cut short ({@link holdLeftover}) between the
 * steps in which SQLite holds no lock on it. Where another server's sweep of
 * leftovers holds that lock already (it looked at the file before it was
 * locked, and removes it), another file is made under a new name.
 * It gets `mode`, the database file's permission bits (see {@link fileMode}):
 * a copy of a database only its owner may read is no more readable than it
 * (SQLite writes into the file as it is, and the rename keeps its mode).
 * While it is written the owner may write it too (SQLite opens it to write:
 * the copy of a read-only `0444` database failed with `SQLITE_READONLY`);
 * {@link PartialCopy.seal} then takes that bit away again.
 */
async function createPartial(target: string, mode: number | null): Promise<PartialCopy> {
  const options: Deno.OpenOptions = { write: true, createNew: true };
  const writable = mode === null ? null : mode | 0o200;
  if (writable !== null) options.mode = writable; // the umask may take bits away: chmod below
  for (let attempt = 0;; attempt++) {
    const tag = crypto.getRandomValues(new Uint32Array(1))[0].toString(16).padStart(8, "0");
    const path = `${target}.${tag}.partial`;
    let hold: Deno.FsFile;
    try {
      hold = Deno.openSync(path, options);
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists) || attempt >= 8) throw err;
      continue;
    }
    // Kept open until released: closing a descriptor of the file would also drop the POSIX
    // locks SQLite holds on it meanwhile.
    const partial: PartialCopy = {
      path,
      release: () => {
        try {
          hold.close();
        } catch {
          // Closed already.
        }
      },
      seal: async () => {
        if (mode !== null && mode !== writable) await Deno.chmod(path, mode);
      },
    };
    let marked = true;
    try {
      // Not waiting: a lock held now is another server's sweep of leftovers, checking this
      // file before it was marked (holdLeftover), and it removes the file.
      if (MARKS_COPIES) marked = hold.tryLockSync(true);
    } catch {
      // No advisory locks here (some network file systems): the copy is not marked.
    }
    if (!marked) {
      partial.release();
      if (attempt < 8) continue;
      throw new SqliteError(
        ErrorCode.BadRequest,
        "copies to the same destination by other servers kept taking this copy for a " +
          "leftover; try again",
      );
    }
    // Another server's copy to this destination may have removed the file as a leftover
    // just before it was locked: then it is made again under a new name.
    if (attempt < 8 && !sameFile(hold, path)) {
      partial.release();
      continue;
    }
    if (writable !== null) {
      try {
        await Deno.chmod(path, writable);
      } catch (err) {
        await removeIfExists(path);
        partial.release();
        throw err;
      }
    }
    // SQLite writes PARTIAL-journal beside it: a name too long for that fails
    // here, with the operating system's reason, not later as SQLITE_CANTOPEN.
    try {
      (await Deno.open(`${path}-journal`, options)).close();
      await Deno.remove(`${path}-journal`);
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) {
        await removeIfExists(path);
        partial.release();
        throw err;
      }
    }
    return partial;
  }
}

/** True when `path` names the file `file` has open (not removed, nor replaced). */
function sameFile(file: Deno.FsFile, path: string): boolean {
  try {
    const open = file.statSync();
    const named = Deno.statSync(path);
    return open.ino === null || (open.ino === named.ino && open.dev === named.dev);
  } catch {
    return false;
  }
}

/**
 * True when `path` is a regular file, not followed if a link. A copy is always
 * one ({@link createPartial}); anything else with a copy's name is no copy
 * in progress, and is not opened: reading a FIFO waits for a writer (the
 * server stopped), a device may act on an open.
 */
function regularFile(path: string): boolean {
  try {
    return Deno.lstatSync(path).isFile;
  } catch {
    return false;
  }
}

/**
 * Takes `partial`'s `flock` for a sweep of leftovers, to hold until the sweep
 * has checked and removed it: `null` when a copy in progress holds it
 * ({@link createPartial}'s mark; it is not a leftover, though SQLite may hold
 * no lock on it now), else the function that lets go. Held, the copy that
 * made the file cannot mark it meanwhile (it makes another instead): were the
 * lock let go before the removal, a copy that created the file just before
 * the sweep looked would mark it, and SQLite begin writing it, and the
 * removal would land in the middle (SQLite, opening the copy's journal, then
 * finds no copy: `SQLITE_IOERR_FSTAT`). Without marks (not Linux, no advisory
 * locks), or for what is no regular file, SQLite's own lock alone decides.
 */
function holdLeftover(partial: string): (() => void) | null {
  const none = () => {};
  if (!MARKS_COPIES || !regularFile(partial)) return none;
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(partial, { read: true });
  } catch (err) {
    return err instanceof Deno.errors.NotFound ? null : none; // gone: nothing to remove
  }
  let held: boolean;
  try {
    held = file.tryLockSync(true);
  } catch {
    file.close();
    return none; // no advisory locks here: as before, SQLite's own lock decides
  }
  if (!held) {
    file.close();
    return null;
  }
  return () => file.close(); // closing lets go of the lock
}

/**
 * Gives the complete copy `partial` its name `target`, never over a file
 * there, and makes the name durable. A hard link is made (`link` fails when
 * the name exists, in one atomic step, where a check before a rename leaves
 * a moment in which a file that appears, another server's copy to the same
 * destination or anyone's file, is replaced), then the partial name removed;
 * on a file system without hard links (FAT, some network shares), a check
 * and a rename. Then the directory is synced: until its entry is on disk, a
 * power loss may leave no file under the name the client was told of
 * (Windows, where a directory cannot be opened, relies on NTFS's journal).
 *
 * @throws {SqliteError} `BAD_REQUEST` when a file appeared at `target`, or
 *   the copy was removed before it got its name.
 */
async function putInPlace(
  partial: string,
  target: string,
  what: string,
  noun: "backup" | "vacuum",
): Promise<void> {
  const appeared = () =>
    new SqliteError(
      ErrorCode.BadRequest,
      `Cannot ${what} "${target}": the file appeared while the ${noun} ran (nothing is ` +
        "overwritten); choose a new name",
    );
  try {
    await Deno.link(partial, target);
    await removeIfExists(partial); // its other name; the next copy to `target` removes one left
  } catch (err) {
    if (err instanceof Deno.errors.AlreadyExists) throw appeared();
    if (err instanceof Deno.errors.NotFound && existsPath(dirname(target))) {
      // Another server's copy to the same destination took it for a leftover: possible only
      // where the copy could not be marked as in progress (no advisory locks; holdLeftover).
      throw new SqliteError(
        ErrorCode.BadRequest,
        `Cannot ${what} "${target}": the finished copy was removed before it got its name ` +
          `(by another ${noun} to the same destination?); try again`,
      );
    }
    if (!noHardLinks(err)) throw err;
    if (existsPath(target)) throw appeared();
    await Deno.rename(partial, target);
  }
  await syncDirectory(dirname(target));
}

/** True when `err` of `link()` says the file system has no hard links (or not for this file). */
function noHardLinks(err: unknown): boolean {
  if (err instanceof Deno.errors.NotSupported) return true;
  const code = (err as { code?: unknown })?.code;
  // vfat answers EPERM; others EOPNOTSUPP (ENOTSUP), or EMLINK at a file's limit of links.
  return code === "EPERM" || code === "EOPNOTSUPP" || code === "ENOTSUP" || code === "EMLINK";
}

/**
 * Syncs `dir`'s entries to disk (`fsync` of the directory opened read-only),
 * so that a file just renamed or linked into it keeps its name after a power
 * loss. Not on Windows, where a directory cannot be opened as a file; a file
 * system that cannot sync a directory (`EINVAL`) is left as it is.
 */
async function syncDirectory(dir: string): Promise<void> {
  if (Deno.build.os === "windows") return;
  const file = await Deno.open(dir, { read: true });
  try {
    await file.sync();
  } catch (err) {
    const code = (err as { code?: unknown })?.code;
    if (code !== "EINVAL" && code !== "ENOTSUP" && code !== "EOPNOTSUPP") throw err;
  } finally {
    file.close();
  }
}

async function removeIfExists(path: string): Promise<void> {
  await Deno.remove(path).catch(() => {});
}

/** A partial copy's files: itself, and those SQLite may leave beside it. */
const COPY_FILES = ["", "-journal", "-wal", "-shm"] as const;

/** Removes a partial copy and the files SQLite may have left beside it. */
async function removeCopy(partial: string): Promise<void> {
  for (const suffix of COPY_FILES) await removeIfExists(partial + suffix);
}

/** `SQLITE_CORRUPT` (with any extended code) or `SQLITE_NOTADB`: the database is damaged. */
function isCorrupt(err: unknown): err is SqliteError {
  return err instanceof SqliteError && /^SQLITE_(CORRUPT|NOTADB)/.test(err.code);
}

/** `SQLITE_BUSY` or `SQLITE_LOCKED` (with any extended code). */
function isBusy(err: unknown): boolean {
  return err instanceof SqliteError && /^SQLITE_(BUSY|LOCKED)/.test(err.code);
}

function elapsed(start: number): number {
  return Math.round((performance.now() - start) * 100) / 100;
}
