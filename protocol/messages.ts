/**
 * The netsqlite protocol's messages, typed once (see PROTOCOL.md): one tuple
 * type per op for the request ({@link Requests}) and one for its reply
 * payload ({@link Replies}). The client encodes exactly these tuples and the
 * server decodes into them (`requests.ts`), so an argument one side sends
 * and the other ignores is a type error, not a silent drop.
 *
 * Requests are MessagePack arrays `[op, id, ...args]`; replies are
 * `[id, status, payload]`. Arrays rather than maps keep encoding cheap.
 *
 * @module
 */

/** Version of the protocol spoken by this library. */
export const PROTOCOL_VERSION = 1;

/** Operation codes: the first element of every request. */
export const Op = {
  Hello: 0,
  Exec: 1,
  Query: 2,
  Run: 3,
  Batch: 4,
  Prepare: 5,
  Finalize: 6,
  Iterate: 7,
  Next: 8,
  CloseCursor: 9,
  Cancel: 10,
  // Server administration (20+): statistics and maintenance.
  Stats: 20,
  Checkpoint: 21,
  Vacuum: 22,
  Integrity: 23,
  Backup: 24,
  Subscribe: 11,
  Unsubscribe: 12,
} as const;

/** One of the {@link Op} values. */
export type OpCode = typeof Op[keyof typeof Op];

/**
 * Reply status: bit 0 set means the payload is an error, bit 1 set means the
 * connection is inside a transaction after this request.
 */
export const Status = {
  Ok: 0,
  Error: 1,
  InTransaction: 2,
  /** Bit 2: a change-feed event frame `[0, 4, EventPayload]`, answering no request. */
  Event: 4,
  /**
   * Bit 3 (only with {@link Status.InTransaction}): a statement of an `exec`
   * script ended the connection's transaction since the previous reply and a
   * later one began the transaction open now (`COMMIT; BEGIN`): the cursors
   * opened in the one that ended are closed.
   */
  TxEnded: 8,
} as const;

/** Id used for connection-level errors that answer no particular request. */
export const CONNECTION_ERROR_ID = 0;

/** Statement parameters: positional (array) or named (object). */
export type WireParams = unknown[] | Record<string, unknown> | null;

/** SQL text, or a handle returned by `prepare` on the same connection. */
export type StatementRef = string | number;

/** Limits and settings the server reports in its handshake reply. */
export interface ServerLimits {
  /** Largest frame payload the server accepts and sends, in bytes. */
  maxFrameSize: number;
  /** How long a write waits for the writer before `BUSY_TIMEOUT`, in ms. */
  busyTimeout: number;
  /** Idle lease of an open transaction before `TX_TIMEOUT`, in ms (0 = none). */
  txIdleTimeout: number;
  /** Default deadline of statements the server can stop, in ms. */
  statementTimeout: number;
  /** Largest buffered result (`query`, `batch`), in bytes. */
  maxResultBytes: number;
  /** Cursors one connection may hold open at once. */
  maxCursors: number;
  /** Idle time allowed inside a partly received frame, in ms. */
  frameTimeout: number;
  /**
   * A cursor not advanced for this long is closed, in ms (0 = never). Absent
   * from older servers.
   */
  cursorIdleTimeout?: number;
}

/** Per-call options as sent on the wire: the last element of query/run/iterate. */
/** Options of a `batch` request. */
export interface WireBatchOptions {
  /**
   * `false`: run the batch with foreign keys off (for a table rebuild, as
   * drizzle-kit migrations do), checked with `PRAGMA foreign_key_check`
   * before the commit. Outside a transaction only.
   */
  foreignKeys?: boolean;
  /** Deadline in ms (> 0) of the whole batch, overriding the server's `statementTimeout`. */
  timeout?: number;
}

/** Options of a `query` or `run` request. */
export interface WireCallOptions {
  /** Statement deadline in ms (> 0), overriding the server's `statementTimeout`. */
  timeout?: number;
  /**
   * `query` only: return the first row alone; the statement is stepped once
   * (a write with RETURNING still makes all its changes), as `get()` needs.
   */
  first?: boolean;
}

/** Per-call options of the client's query methods. */
export interface CallOptions {
  /**
   * Statement deadline in ms (> 0), overriding the server's statement
   * timeout (`--statement-timeout`) for this call.
   * @default {the server's statement timeout}
   */
  timeout?: number;
  /**
   * Aborts the call: the promise rejects at once with `AbortError` (code
   * `ABORTED`) and the client sends `cancel`, so the server drops the request
   * if it has not started and stops (undoes) a running statement; a write
   * that completed before the cancel arrived stays applied.
   */
  signal?: AbortSignal | null;
}

/** Payload of the client's `hello`. */
export interface HelloRequest {
  /** Protocol version the client speaks. */
  version: number;
  /** The server's secret, when it requires one (`--token`). */
  token?: string;
  /**
   * `true`: an admin session, as the CLI's administration commands open. It
   * may take one of the slots the server keeps for admin sessions beyond
   * `--max-connections` (so `netsqlite stats` works at a full server), and
   * it runs only {@link ADMIN_OPS}: any other request is refused `FORBIDDEN`.
   * The token rules are the same. A server older than the field ignores it
   * (the session is an ordinary one).
   */
  admin?: boolean;
}

/** Payload of the server's handshake reply. */
export interface HelloReply {
  /** Protocol version the server speaks. */
  version: number;
  /** Server software and version, e.g. `netsqlite 0.1.0`. */
  server: string;
  /** Version of the SQLite library the server runs. */
  sqliteVersion: string;
  /** Limits in force on this server. */
  limits: ServerLimits;
  /**
   * The database the server serves: the real path of its file (symbolic
   * links resolved), `:memory:`, or `dqlite:NAME` in cluster mode. A client
   * refuses to reconnect to a server that serves another database than the
   * one it first connected to. Absent from servers older than the field.
   */
  database?: string;
  /**
   * This connection's session number, as the server's log, `stats` and
   * `BUSY_TIMEOUT` messages ("held by session N") name it. Absent from
   * servers older than the field.
   */
  session?: number;
}

/** One statement of a `batch` request: `[sql, params]`. */
export type BatchItem = [sql: string, params: WireParams];

/**
 * Arguments of each request, after `[op, id]`. Trailing `params`/`options`
 * may be left out (or `null`) by a sender; the server treats them as absent.
 */
export interface Requests {
  /** The first request of a connection. */
  [Op.Hello]: [options: HelloRequest];
  /**
   * A script of zero or more statements, no parameters (`params` is always
   * nil); `options.timeout` is one deadline for the whole script.
   */
  [Op.Exec]: [sql: string, params?: null, options?: WireCallOptions | null];
  /** One statement; all rows. */
  [Op.Query]: [sql: StatementRef, params: WireParams, options: WireCallOptions | null];
  /** One statement for its effect. */
  [Op.Run]: [sql: StatementRef, params: WireParams, options: WireCallOptions | null];
  /** Statements run atomically. */
  [Op.Batch]: [items: BatchItem[], options?: WireBatchOptions | null];
  /** Prepares a statement on this connection. */
  [Op.Prepare]: [sql: string];
  /** Frees a handle from `prepare`. */
  [Op.Finalize]: [handle: number];
  /** Opens a cursor. */
  [Op.Iterate]: [sql: StatementRef, params: WireParams, options: WireCallOptions | null];
  /** Next chunk of a cursor. */
  [Op.Next]: [cursor: number];
  /** Closes a cursor early. */
  [Op.CloseCursor]: [cursor: number];
  /**
   * Cancels the request `targetId` of this connection: fire-and-forget, no
   * reply of its own. A target still queued is answered `ABORTED` unrun.
   * `unsent`: the request `[op, ...args]` itself, when the client aborted it
   * before sending it (it never runs; inside an open transaction, one that
   * would write ends the transaction when its turn comes).
   */
  [Op.Cancel]: [targetId: number, unsent?: [op: number, ...args: unknown[]]];
  /** The server's statistics. */
  [Op.Stats]: [];
  /** Checkpoints the WAL, taking the writer like a write. */
  [Op.Checkpoint]: [mode: CheckpointMode];
  /** `VACUUM` on the writer, or (with a destination) a compacted copy. */
  [Op.Vacuum]: [into: string | null];
  /** `PRAGMA integrity_check` on a connection of its own. */
  [Op.Integrity]: [];
  /** An online copy of the database with SQLite's backup API. */
  [Op.Backup]: [dest: string];
  /** Starts a change feed on this connection; event frames follow the reply. */
  [Op.Subscribe]: [options: SubscribeRequest];
  /** Ends a change feed; no event frame of it follows the reply. */
  [Op.Unsubscribe]: [subscription: number];
}

/** Payload of `subscribe`: which changes, with values or not, from where. */
export interface SubscribeRequest {
  /** Tables whose row changes are sent (names, case-insensitive); absent: see `kv`. */
  tables?: string[] | null;
  /** Key-value collections whose changes are sent; `true`: every collection. */
  kv?: string[] | boolean | null;
  /**
   * When both `tables` and `kv` are absent, every change is sent. When one
   * is given, the other absent one selects nothing.
   */
  /** Send new row values (tables) and values (key-value). @default {false} */
  values?: boolean;
  /** Resume after this change sequence number (the server must still hold it). */
  since?: number | null;
  /** Changes the server buffers for this feed before it sends `LAGGED` and ends it. */
  buffer?: number | null;
}

/**
 * Why `subscribe` options' filter is refused (`INVALID_PARAM`, by the
 * client and the server), or `undefined`: an empty `tables` or `kv` list,
 * or `kv: false`, selects nothing. Alone it gives a feed that stays empty;
 * beside the other filter it says what leaving it out says.
 */
export function emptySubscribeFilter(
  o: Pick<SubscribeRequest, "tables" | "kv">,
): string | undefined {
  const instead = (name: string, other: string) =>
    `(leave ${name} out: with ${other} given, the feed reports only what ${other} names; ` +
    "with neither, every change)";
  if (Array.isArray(o.tables) && o.tables.length === 0) {
    return `Invalid tables: expected at least one table name, got an empty list, which selects ` +
      `no table ${instead("tables", "kv")}`;
  }
  if (Array.isArray(o.kv) && o.kv.length === 0) {
    return `Invalid kv: expected at least one collection name, or true, got an empty list, ` +
      `which selects no collection ${instead("kv", "tables")}`;
  }
  if (o.kv === false) {
    return "Invalid kv: expected a list of collection names or true, got false " +
      instead("kv", "tables");
  }
  return undefined;
}

/** `subscribe` reply payload: `[subscription, head]` (head: the feed's last sequence number). */
export type SubscribePayload = [subscription: number, head: number];

/**
 * One change as sent: `[seq, commitSeq, table, op, rowid, collection, key, version, value]`,
 * plus `omitted` when the value was asked for but left out;
 * `collection`, `key` (encoded, see `client/kv_key.ts`) and `version` are
 * set for key-value changes, `value` (a row map, or a key-value value's
 * MessagePack bytes) only when asked for.
 */
export type WireChange = [
  seq: number,
  commitSeq: number,
  table: string,
  op: "insert" | "update" | "delete",
  rowid: number | bigint | null,
  collection: string | null,
  key: Uint8Array | null,
  version: number | null,
  value: Record<string, unknown> | Uint8Array | null,
  omitted?: ValueOmittedReason,
];

/** Why a change's asked-for value is `null` on the wire (absent: the row was gone, or no value). */
export const ValueOmitted = {
  /** The change with its value did not fit in one frame (`maxFrameSize`). */
  TooLarge: "too_large",
} as const;

/** A {@link ValueOmitted} reason. */
export type ValueOmittedReason = (typeof ValueOmitted)[keyof typeof ValueOmitted];

/** Kinds of event frames. */
export const EventKind = {
  /** `data`: `WireChange[]`, in commit order. */
  Changes: 0,
  /** `data`: the last sequence number sent; the feed has ended (resume with `since`). */
  Lagged: 1,
  /**
   * `data`: {@link TooLargeData}, a change that did not fit in one frame even
   * without its value; the feed has ended (`since: seq` resumes after it).
   */
  TooLarge: 2,
} as const;

/**
 * A change too large for one frame without its value, as an
 * {@link EventKind.TooLarge} event names it: its names cut to 100
 * characters (`…` marking a cut), `bytes` its size encoded without its value.
 */
export type TooLargeData = [
  seq: number,
  commitSeq: number,
  table: string,
  op: "insert" | "update" | "delete",
  rowid: number | bigint | null,
  collection: string | null,
  version: number | null,
  bytes: number,
];

/** Payload of an event frame: `[subscription, kind, data]`. */
export type EventPayload =
  | [subscription: number, kind: typeof EventKind.Changes, changes: WireChange[]]
  | [subscription: number, kind: typeof EventKind.Lagged, resumeFrom: number]
  | [subscription: number, kind: typeof EventKind.TooLarge, change: TooLargeData];

/** `run` reply payload: `[changes, lastInsertRowid]`. */
export type RunPayload = [changes: number | bigint, lastInsertRowid: number | bigint];

/** `query` reply payload: `[columns, rows]`. */
export type QueryPayload = [columns: string[], rows: unknown[][]];

/** One `batch` result: `[changes, lastInsertRowid, columns, rows]`. */
export type BatchItemPayload = [
  changes: number | bigint,
  lastInsertRowid: number | bigint,
  columns: string[],
  rows: unknown[][],
];

/** `prepare` reply payload: `[handle, columns]`. */
export type PreparePayload = [handle: number, columns: string[]];

/** `iterate` reply payload: `[cursor, columns]`. */
export type CursorPayload = [cursor: number, columns: string[]];

/** `next` reply payload: `[rows, done]`. */
export type ChunkPayload = [rows: unknown[][], done: boolean];

/** Reply payload of each op (`cancel` has none). */
export interface Replies {
  /** Versions and limits. */
  [Op.Hello]: HelloReply;
  /** Nothing. */
  [Op.Exec]: null;
  /** Columns and rows. */
  [Op.Query]: QueryPayload;
  /** Changes and rowid. */
  [Op.Run]: RunPayload;
  /** One result per statement. */
  [Op.Batch]: BatchItemPayload[];
  /** Handle and columns. */
  [Op.Prepare]: PreparePayload;
  /** Nothing. */
  [Op.Finalize]: null;
  /** Cursor id and columns. */
  [Op.Iterate]: CursorPayload;
  /** A chunk of rows. */
  [Op.Next]: ChunkPayload;
  /** Nothing. */
  [Op.CloseCursor]: null;
  /** No reply is sent. */
  [Op.Cancel]: never;
  /** A snapshot of the server's statistics. */
  [Op.Stats]: StatsReport;
  /** What the checkpoint did. */
  [Op.Checkpoint]: CheckpointReport;
  /** What the vacuum did. */
  [Op.Vacuum]: VacuumReport;
  /** The check's verdict. */
  [Op.Integrity]: IntegrityReport;
  /** What was copied. */
  [Op.Backup]: BackupReport;
  /** Subscription id and the feed's head. */
  [Op.Subscribe]: SubscribePayload;
  /** Nothing. */
  [Op.Unsubscribe]: null;
}

/** A request as sent: `[op, id, ...args]`. */
export type Request<O extends OpCode = OpCode> = {
  [K in O]: [op: K, id: number, ...args: Requests[K]];
}[O];

/**
 * Ops an admin session (hello `admin: true`) may send, besides `cancel`:
 * statistics and maintenance, no SQL.
 */
export const ADMIN_OPS: ReadonlySet<OpCode> = new Set<OpCode>([
  Op.Stats,
  Op.Checkpoint,
  Op.Vacuum,
  Op.Integrity,
  Op.Backup,
]);

/** Ops whose buffered reply is bounded by `maxResultBytes` (cursors stream instead). */
export const RESULT_LIMITED_OPS: ReadonlySet<OpCode> = new Set<OpCode>([Op.Query, Op.Batch]);

// ---- administration (ops 20+) ------------------------------------------------

/** Checkpoint modes of `PRAGMA wal_checkpoint`. */
export type CheckpointMode = "passive" | "full" | "restart" | "truncate";

/** `checkpoint` reply: what the checkpoint did. */
export interface CheckpointReport {
  /** The mode run. */
  mode: CheckpointMode;
  /**
   * True when it could not finish: a reader (a cursor, another process) on an
   * older snapshot, or, for `restart`/`truncate`, on the last commit or
   * another process writing (every frame written back, the WAL not reset);
   * or another connection was checkpointing (`walFrames` -1).
   */
  busy: boolean;
  /**
   * Frames in the WAL, as SQLite answers (`PRAGMA wal_checkpoint`'s `log`):
   * 0 after a completed `restart` or `truncate`, which reset the WAL; -1 when
   * it could not run (busy: another connection was checkpointing; otherwise
   * the database is not in WAL mode).
   */
  walFrames: number;
  /** Frames written back into the database file (`checkpointed`), in the same terms. */
  checkpointed: number;
  /** WAL file size before, in bytes. */
  walBytesBefore: number;
  /** WAL file size after, in bytes. */
  walBytesAfter: number;
  /** Time taken, writer wait excluded, in ms. */
  ms: number;
}

/** `vacuum` reply. */
export interface VacuumReport {
  /** Destination file (server-side path), or `null` for an in-place VACUUM. */
  into: string | null;
  /** Pages before (`page_count`). */
  pagesBefore: number;
  /** Pages after, of the database or of the copy. */
  pagesAfter: number;
  /** Database size before, in bytes. */
  bytesBefore: number;
  /** Size after, of the database or of the copy, in bytes. */
  bytesAfter: number;
  /**
   * In place only: true when the truncating checkpoint that ends the vacuum
   * was still busy after brief retries (a cursor, a read running in the
   * background or another process held an older snapshot): the vacuumed
   * pages stay in the WAL, and the database file keeps its size, until a
   * later checkpoint (`checkpoint` with mode `truncate`) writes them back
   * (`netsqlite vacuum` says so).
   * Absent for `into`.
   */
  walBusy?: boolean;
  /** Time taken, in ms. */
  ms: number;
}

/** `integrity` reply. */
export interface IntegrityReport {
  /** True when `PRAGMA integrity_check` answered `ok`. */
  ok: boolean;
  /**
   * Its messages (at most 100) when not ok; when SQLite stopped the check
   * with `SQLITE_CORRUPT` or `SQLITE_NOTADB`, that error is the last
   * (`SQLITE_CORRUPT: database disk image is malformed (the check stopped here)`).
   */
  problems: string[];
  /** Pages checked. */
  pages: number;
  /** Database size, in bytes. */
  bytes: number;
  /** Time taken, in ms. */
  ms: number;
}

/** `backup` reply. */
export interface BackupReport {
  /** Destination file (server-side path, resolved). */
  dest: string;
  /** Pages copied. */
  pages: number;
  /** Bytes written. */
  bytes: number;
  /** Time taken, in ms. */
  ms: number;
}

/** A backup in progress, as `stats` reports it. */
export interface BackupProgress {
  /** Destination file (server-side path). */
  dest: string;
  /** Pages copied so far. */
  done: number;
  /** Pages in all (0 before the first step). */
  total: number;
  /** Time since it began, in ms. */
  ms: number;
}

/** Latency over the last minute, in ms. */
export interface LatencySummary {
  /** Requests measured. */
  count: number;
  /** Median. */
  p50: number;
  /** 99th percentile. */
  p99: number;
  /** Largest. */
  max: number;
}

/** `stats` reply: a snapshot of the server. */
export interface StatsReport {
  /** Server software and version. */
  server: string;
  /** Seconds since the server started. */
  uptime: number;
  /**
   * The server's process id (to stop it with SIGTERM, an autostarted
   * `:memory:` one too, which has no lock file naming it); absent from
   * older servers.
   */
  pid?: number;
  /** SQLite binding: `ffi` or `node`. */
  engine: string;
  /** Library file, or `node:sqlite`. */
  library: string;
  /** SQLite version. */
  sqliteVersion: string;
  /** Database file; in cluster mode `dqlite:NAME` (as the hello's `database`). */
  database: string;
  /**
   * Cluster mode: the dqlite database name, the nodes the server was given,
   * the leader its connections go to (the one found last; null while none is
   * known), the connections to it open now and the most it opens
   * (`dqlite.poolSize`). `null` on the single-file engine; absent from older
   * servers.
   */
  cluster?: {
    database: string;
    nodes: string[];
    leader: string | null;
    connections: number;
    poolSize: number;
  } | null;
  /**
   * Connections served now (hello accepted), waiting for their hello now
   * (`handshaking`; absent from older servers), accepted since start, served
   * at once at most, refused since start for being past that
   * (`TOO_MANY_CONNECTIONS`), and closed at once since start because too
   * many were waiting for their hello (`dropped`; absent from older servers).
   * `admin`: of the `open` ones, the admin sessions (hello `admin: true`);
   * `reserved`: the slots kept beyond `max` for admin sessions (both absent
   * from older servers).
   */
  connections: {
    open: number;
    handshaking?: number;
    total: number;
    max: number;
    refused: number;
    dropped?: number;
    admin?: number;
    reserved?: number;
  };
  /** Requests answered since start, by op name. */
  requests: Record<string, number>;
  /** Requests per second over the last minute (or since start, if shorter), by op name. */
  rates: Record<string, number>;
  /** Request latency over the last minute, all ops: from the start of its turn to its reply. */
  latency: LatencySummary;
  /** Errors answered since start. */
  errors: number;
  /**
   * Sessions waiting for the writer, and the longest wait now, in ms; the
   * TEMP objects on the writer (`"table scratch"`): while any exists, every
   * statement, reads too, goes through the writer. Always 0, 0 and none in
   * cluster mode (no local writer: the leader's dqlite node arbitrates).
   * `temp` lists the first 1,000, each entry cut to 256 characters (with
   * `…`); `tempCount` counts them all (absent from servers before
   * 2026-12-06, which listed all, whole).
   */
  writer: { waiting: number; longestWaitMs: number; temp: string[]; tempCount?: number };
  /**
   * Requests waiting now, before they began, for another program's lock on
   * the database file, which no wait for the writer counts (FFI engine: a
   * `--readonly` server's reads of a rollback-journal database, and requests
   * meeting the lock as they are given the writer; always 0 on the node
   * engine, where the wait holds the whole server, and in cluster mode).
   * Absent from servers before 2026-12-07.
   */
  lockWaiting?: number;
  /** Open transactions: session number and age in ms. */
  transactions: { session: number; ageMs: number }[];
  /**
   * Group commits since start: count, writes in them, largest. Always 0 in
   * cluster mode (every write is its own Raft commit).
   */
  groupCommit: { groups: number; writes: number; largest: number };
  /** Cursors open now. */
  cursors: number;
  /** Bytes received and sent since start (frames, prefixes included). */
  bytes: { in: number; out: number };
  /** WAL file size, in bytes (0 when absent); null in cluster mode (no local file). */
  walBytes: number | null;
  /** Database file size, in bytes; null in cluster mode (no local file). */
  dbBytes: number | null;
  /** Server process memory, in bytes. */
  memory: { rss: number; heapUsed: number; heapTotal: number; external: number };
  /**
   * Change feeds (absent where the engine has none): approximate bytes of
   * values the server keeps for resuming, and changes and bytes of values
   * queued for clients.
   */
  feeds?: { heldValueBytes: number; queuedChanges: number; queuedValueBytes: number };
  /** Backups running now. */
  backups: BackupProgress[];
}

/**
 * Approximate bytes a change's value holds, counted alike by the server's
 * change log and the client's feed queue: a key-value value's (or blob's)
 * length, two per UTF-16 unit of a string, eight per column plus two per
 * unit of its name.
 */
export function valueSize(value: unknown): number {
  if (value === null || value === undefined) return 0;
  if (value instanceof Uint8Array) return value.byteLength;
  if (typeof value !== "object") return 0;
  let n = 0;
  for (const [k, v] of Object.entries(value)) {
    n += 8 + 2 * k.length;
    if (typeof v === "string") n += 2 * v.length;
    else if (v instanceof Uint8Array) n += v.byteLength;
  }
  return n;
}
