/**
 * Applies drizzle-kit's migration folder through a netsqlite client, with
 * the semantics of Drizzle's own SQLite migrators (the same table, rows and
 * test of what is applied), but atomically: checking what is applied and
 * applying the rest are one request, so migrators started at once by several
 * processes apply each migration exactly once. Used by `migrate()` of
 * `./drizzle.ts`.
 *
 * @module
 */

import { readFileSync } from "node:fs";
import { type MigrationMeta, readMigrationFiles } from "npm:drizzle-orm@^0.45/migrator";
import { type BatchStatement, type Client, ErrorCode, SqliteError } from "../client.ts";
import { splitStatements } from "../cli/sql_split.ts";

/** Options of `migrate()`: those of Drizzle's migrators (`MigrationConfig`). */
export interface MigrationConfig {
  /** The folder `drizzle-kit generate` writes to (with `meta/_journal.json`). */
  migrationsFolder: string;
  /** The table applied migrations are recorded in. @default {"__drizzle_migrations"} */
  migrationsTable?: string;
  /** Ignored: SQLite has no schemas (accepted for Drizzle's config). */
  migrationsSchema?: string;
  /**
   * Deadline in ms (> 0) of the run: all pending migrations are one batch,
   * under one deadline (each batch, when a table rebuild splits the run).
   * @default the server's statement timeout (`--statement-timeout`)
   */
  timeout?: number;
}

/** The table Drizzle records applied migrations in, unless `migrationsTable` names another. */
const DEFAULT_TABLE = "__drizzle_migrations";

/** How often a run starts over after another migrator applied migrations meanwhile. */
const MAX_ATTEMPTS = 10;

/** drizzle-kit's `PRAGMA foreign_keys=OFF` / `=ON` around a table rebuild. */
const FOREIGN_KEYS = /^\s*PRAGMA\s+foreign_keys\s*=\s*['"]?(\w+)['"]?\s*(?:;\s*)?$/i;

/** What the migrations table holds: its row count and the newest row's `created_at`. */
interface Applied {
  readonly count: number;
  /** `created_at` of the row Drizzle reads as the last applied one; `undefined`: no row. */
  readonly last: unknown;
}

/** One migration of the folder: its journal tag and what Drizzle read of it. */
interface Migration extends MigrationMeta {
  readonly tag: string;
}

/**
 * Applies the pending migrations of `config.migrationsFolder`.
 *
 * As Drizzle's SQLite migrators do, it creates the migrations table when
 * missing, takes as applied every migration whose journal time (`when`) is
 * not after the newest `created_at` recorded, and runs the others, each
 * statement followed by a row of `(hash, created_at)`, all of them in one
 * transaction. A migration's text is split at `--> statement-breakpoint`,
 * then at the `;` that end statements, as `sqlite3_complete()` sees them (a
 * `CREATE TRIGGER`'s body stays whole): a journal's `breakpoints: false`
 * file of several statements runs, and a part with nothing but comments
 * (drizzle-kit's `generate --custom` template) is skipped. Unlike
 * `drizzle-orm/sqlite-proxy/migrator`, that transaction is one atomic
 * `Client.batch` whose first statement fails when the table no longer holds
 * what was read: another migrator got there first, and the run starts over
 * (and finds nothing left to do). drizzle-kit's `PRAGMA foreign_keys=OFF`
 * (a table rebuild) runs its migration in a batch with `foreignKeys: false`,
 * and the pending migrations around it in batches of their own, foreign
 * keys on (see `sameForeignKeys`).
 *
 * @param client The client to run the migrations through.
 * @param config Drizzle's migration options (`migrationsSchema` is ignored:
 *   SQLite has none), and `timeout`: the run's deadline in ms.
 * @throws {SqliteError} naming the failing migration, with the server's code
 *   (nothing of its batch applied).
 */
export async function applyMigrations(client: Client, config: MigrationConfig): Promise<void> {
  if (
    config === null || typeof config !== "object" || typeof config.migrationsFolder !== "string"
  ) {
    throw new TypeError('Invalid config: expected an object with a string "migrationsFolder"');
  }
  const tableName = config.migrationsTable ?? DEFAULT_TABLE;
  if (typeof tableName !== "string" || tableName === "") {
    throw new TypeError('Invalid option "migrationsTable": expected a non-empty string');
  }
  const timeout = config.timeout;
  if (timeout !== undefined && (typeof timeout !== "number" || !(timeout > 0))) {
    throw new TypeError(
      `Invalid option "timeout": expected a positive number of ms, got ${String(timeout)}`,
    );
  }
  const migrations = readFolder(config);
  const table = quoteIdentifier(tableName);
  // A write that found the writer held (BUSY_TIMEOUT: another instance's migrations, maybe) is
  // tried again until this run's deadline has passed since it began: a migration run by another
  // instance meanwhile, under the same deadline, has ended by then, and this run finds it applied.
  const started = performance.now();
  const deadline = timeout ?? client.serverInfo.limits.statementTimeout;
  const waitMore = (err: unknown) =>
    err instanceof SqliteError && err.code === ErrorCode.BusyTimeout &&
    performance.now() - started < deadline;
  // Created only when missing: its CREATE would wait for the writer, as a write does.
  for (let missing = !await tableExists(client, tableName); missing;) {
    try {
      await client.run(
        `CREATE TABLE IF NOT EXISTS ${table} (id SERIAL PRIMARY KEY, hash text NOT NULL, ` +
          "created_at numeric)",
      );
      missing = false;
    } catch (err) {
      if (!waitMore(err)) throw err;
    }
  }
  /** The migrations this call applied in batches before the current one. */
  const applied: Migration[] = [];
  for (let restarts = 0;;) {
    const seen = await readApplied(client, table);
    const pending = migrations.filter((m) =>
      seen.last === undefined || Number(seen.last) < m.folderMillis
    );
    if (pending.length === 0) return;
    const batch = sameForeignKeys(pending);
    const { statements, owners } = plan(table, seen, batch);
    try {
      await client.batch(statements, {
        ...(turnsForeignKeysOff(batch[0]) ? { foreignKeys: false } : {}),
        ...(timeout !== undefined ? { timeout } : {}),
      });
      if (batch.length === pending.length) return;
      applied.push(...batch); // the next batch needs the other foreign key setting
    } catch (err) {
      // Another migrator recorded migrations since we read: start over.
      const now = await readApplied(client, table).catch(() => seen);
      const changed = now.count !== seen.count || now.last !== seen.last;
      if (changed && ++restarts < MAX_ATTEMPTS) continue;
      if (!changed && waitMore(err)) continue;
      throw failure(err, owners, batch, applied);
    }
  }
}

/**
 * Whether migration `m` turns foreign keys off (drizzle-kit's
 * `PRAGMA foreign_keys=OFF` around a table rebuild): its batch then runs
 * with `foreignKeys: false`.
 */
function turnsForeignKeysOff(m: Migration): boolean {
  return m.sql.flatMap(splitStatements).some((stmt) => {
    const pragma = FOREIGN_KEYS.exec(stmt);
    return pragma !== null && /^(off|false|no|0)$/i.test(pragma[1]);
  });
}

/**
 * The first pending migrations that agree on foreign keys (see
 * {@link turnsForeignKeysOff}): one batch. Migrations that do not turn them
 * off must run with them on, so that the actions of their statements
 * (`ON DELETE CASCADE`, `SET NULL`) take place, as when each is applied by a
 * run of its own; so a rebuild and the migrations around it are batches of
 * their own, one after another. All of them when they agree (the usual case).
 */
function sameForeignKeys(pending: readonly Migration[]): Migration[] {
  const off = turnsForeignKeysOff(pending[0]);
  const end = pending.findIndex((m) => turnsForeignKeysOff(m) !== off);
  return pending.slice(0, end < 0 ? pending.length : end);
}

/** Reads the folder as Drizzle does, with each migration's journal tag (for error messages). */
function readFolder(config: MigrationConfig): Migration[] {
  const metas = readMigrationFiles(config);
  const journal = JSON.parse(
    readFileSync(`${config.migrationsFolder}/meta/_journal.json`, "utf8"),
  ) as { entries: { tag: string }[] };
  return metas.map((m, i) => ({ ...m, tag: String(journal.entries[i]?.tag) }));
}

/** Whether the database has a table named `name` (a read: it never waits for the writer). */
async function tableExists(client: Client, name: string): Promise<boolean> {
  const [[found]] = await client.values(
    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE",
    [name],
  );
  return Number(found) > 0;
}

/** What Drizzle reads as the last applied migration, and how many rows the table has. */
async function readApplied(client: Client, table: string): Promise<Applied> {
  const [[count, last]] = await client.values(
    `SELECT (SELECT count(*) FROM ${table}), ` +
      `(SELECT created_at FROM ${table} ORDER BY created_at DESC LIMIT 1)`,
  );
  return { count: Number(count), last: Number(count) === 0 ? undefined : last };
}

/**
 * The batch: a guard that fails unless the table still holds what `seen`
 * says, then each pending migration's statements and its row. `owners[i]`
 * is the index in `pending` of the migration statement `i` belongs to (-1:
 * the guard).
 */
function plan(
  table: string,
  seen: Applied,
  pending: readonly Migration[],
): { statements: BatchStatement[]; owners: number[] } {
  const statements: BatchStatement[] = [{
    // (The failing branch reads the table, so SQLite cannot evaluate it up front.)
    sql: `SELECT CASE WHEN (SELECT count(*) FROM ${table}) = ? AND ` +
      `(SELECT created_at FROM ${table} ORDER BY created_at DESC LIMIT 1) IS ? THEN 0 ` +
      `ELSE json('migrations applied meanwhile: ' || (SELECT count(*) FROM ${table})) END`,
    params: [seen.count, (seen.last ?? null) as number | bigint | string | null],
  }];
  const owners = [-1];
  pending.forEach((m, index) => {
    for (const stmt of m.sql.flatMap(splitStatements)) {
      // Ignored inside a transaction; the batch turns them off instead (see sameForeignKeys).
      if (FOREIGN_KEYS.test(stmt)) continue;
      statements.push({ sql: stmt });
      owners.push(index);
    }
    statements.push({
      sql: `INSERT INTO ${table} ("hash", "created_at") VALUES (?, ?)`,
      params: [m.hash, m.folderMillis],
    });
    owners.push(index);
  });
  return { statements, owners };
}

/**
 * The batch's error, naming the migration whose statement failed, and the
 * migrations this call applied in batches before it (`applied`).
 */
function failure(
  err: unknown,
  owners: readonly number[],
  pending: readonly Migration[],
  applied: readonly Migration[],
): unknown {
  if (!(err instanceof SqliteError)) return err;
  const at = /^Batch statement (\d+) of \d+ failed/.exec(err.message);
  const owner = at === null ? -1 : owners[Number(at[1]) - 1] ?? -1;
  let detail = err.message.replace(
    /^Batch statement \d+ of \d+ failed, nothing was applied: /,
    "",
  );
  if (err.code === ErrorCode.StatementTimeout) {
    // The deadline is the whole run's, set by migrate()'s option, not one call's.
    detail = detail.replace(
      /\(--statement-timeout or the call's timeout option\)/,
      "for the whole run (the server's --statement-timeout, or migrate()'s timeout option)",
    );
  }
  const names = pending.map((m) => `"${m.tag}"`).join(", ");
  const what = owner >= 0
    ? `Migration "${pending[owner].tag}" failed`
    : `Applying migrations ${names} failed`;
  // Earlier batches of this call (see sameForeignKeys) stay applied.
  const none = applied.length === 0
    ? "no migration of this run was applied"
    : "no migration of its batch was applied";
  const before = applied.length === 0
    ? ""
    : `; applied before it by this call, in batches of their own as they differ in foreign ` +
      `keys: ${applied.map((m) => `"${m.tag}"`).join(", ")}`;
  return new SqliteError(
    err.code,
    `${what}, ${none} (pending: ${names}${before}): ${detail}`,
    err.sqliteCode,
    { cause: err },
  );
}

/** `name` as an SQL identifier in double quotes. */
function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}
