/**
 * Change feeds on the client: `db.subscribe(options)` opens a connection of
 * its own, sends `subscribe`, and yields the server's committed changes in
 * commit order as an async iterator.
 *
 * Memory stays bounded on both sides: the server ends a feed it cannot send
 * (`LAGGED`), and so does this iterator when its consumer falls `buffer`
 * changes, or {@link MAX_SUBSCRIBE_QUEUED_BYTES} of values, behind. Either way the changes already buffered are still yielded,
 * the last event is `{ type: "lagged", resumeFrom }` naming the last of them,
 * and `subscribe({ since: resumeFrom })` continues without a gap while the
 * server still holds those changes (so each resume gets at least `buffer`
 * changes further).
 *
 * @module
 */

import {
  AbortError,
  ConnectionError,
  ErrorCode,
  ProtocolError,
  SqliteError,
} from "../protocol/errors.ts";
import {
  emptySubscribeFilter,
  EventKind,
  type EventPayload,
  type HelloReply,
  Op,
  type SubscribeRequest,
  type TooLargeData,
  valueSize,
  type WireChange,
} from "../protocol/messages.ts";
import { callOptions, type CallShape } from "./_calls.ts";
import { openLink } from "./connection.ts";
import { invalidCollectionName } from "./kv.ts";
import { keyLabel, type KvKeyPart, readKey } from "./kv_key.ts";
import { decodeKvValue, KV_CORRUPT } from "./kv_value.ts";
import { abortable, type Link } from "./link.ts";
import type { ConnectConfig } from "./options.ts";

/** Options of `subscribe()`. */
export interface SubscribeOptions {
  /**
   * Tables whose row changes are wanted (all tables when neither this nor
   * `kv` is given): names of the main database's tables, unquoted, in any
   * case, or qualified by `main.`. A name of another schema (`temp.t`) is
   * refused with `INVALID_PARAM`; one matching no table is accepted, an
   * empty list refused (`INVALID_PARAM`: it selects nothing).
   */
  tables?: string[];
  /**
   * Key-value collections whose changes are wanted; `true`: every
   * collection. An empty list (or `false`) is refused with `INVALID_PARAM`.
   */
  kv?: string[] | true;
  /** Include the new row (tables) or value (key-value). @default {false} */
  values?: boolean;
  /** Resume after this sequence number (from `seq` or a `lagged` event). */
  since?: number;
  /**
   * Changes buffered, on the server and in this iterator each, before the
   * feed ends with a `lagged` event: from 1 to 100 000. With `values`, this
   * iterator also buffers at most 64 MiB of values (approximately).
   * @default {10000}
   */
  buffer?: number;
  /**
   * Aborting it ends the feed: `subscribe()` still opening rejects with
   * `AbortError` (an already aborted signal: at once, nothing is opened);
   * an open feed closes its connection (the server lets its subscription
   * go), drops the changes it buffered, and its pending `next()` (or else
   * its next one) rejects with `AbortError`, the signal's reason as its
   * `cause`; later calls find the feed done. `null`: none.
   */
  signal?: AbortSignal | null;
}

/** `Client.subscribe(options)`, for `checkArgCount` and {@link subscribeOptions}. */
export const SUBSCRIBE: CallShape = {
  name: "subscribe()",
  args: ["options"],
  options: ["tables", "kv", "values", "since", "buffer", "signal"],
};

/**
 * `subscribe()`'s options read once, refusing (as every call's, see
 * `callOptions`) options that are not a plain object and a key it does not
 * take: a misspelt `tables` would subscribe to every table. `null` is none.
 * The values are checked when the feed opens (`openSubscription`, the server).
 *
 * @throws {TypeError} naming `subscribe()` and the option meant.
 */
export function subscribeOptions(options: unknown): SubscribeOptions {
  return { ...callOptions(SUBSCRIBE, options) } as SubscribeOptions;
}

/** A committed change to a table row. */
export interface TableChangeEvent {
  /** Discriminant. */
  type: "table";
  /** Feed position: increases by one per change (restarts with the server). */
  seq: number;
  /** Commit number: increases by one per commit; changes of one commit share it. */
  commitSeq: number;
  /** Table name. */
  table: string;
  /**
   * What happened. An UPDATE that moves a row to another rowid (of its
   * INTEGER PRIMARY KEY) is a `delete` of the old rowid, then an `update`
   * of the new one.
   */
  op: "insert" | "update" | "delete";
  /**
   * The row's rowid; `null` with `delete` for every row of the table: after
   * `DELETE FROM t` without WHERE, and after a statement that moved rows to
   * other rowids on a server whose SQLite lacks the preupdate hook (an
   * `insert` of each row the table then has follows).
   */
  rowid: number | bigint | null;
  /**
   * The row as committed (`values: true`, not for deletes); `null` if it was
   * gone by the time the feed read it, or when {@link valueOmitted} says why not.
   */
  value?: Record<string, unknown> | null;
  /**
   * Set when the row was there but is not sent: `"too_large"`, the change
   * with its row did not fit in one frame (the server's `maxFrameSize`); read
   * it with a query by `rowid`.
   */
  valueOmitted?: "too_large";
}

/** A committed change to a key-value entry. */
export interface KvChangeEvent {
  /** Discriminant. */
  type: "kv";
  /** Feed position. */
  seq: number;
  /** Commit number. */
  commitSeq: number;
  /** Always `netsqlite_kv`. */
  table: string;
  /**
   * `insert`: a key never stored before (or whose tombstone SQL removed);
   * `update`: a put over an existing entry, and also a put that re-creates
   * a deleted key (its tombstone row is updated); `delete`.
   */
  op: "insert" | "update" | "delete";
  /** The collection. */
  collection: string;
  /** The key. */
  key: KvKeyPart[];
  /** The entry's version after the change (a delete by SQL: the version the entry had; SQL gives it no new one). */
  version: number;
  /** The value as committed (`values: true`, not for deletes; absent when {@link valueOmitted}). */
  value?: unknown;
  /**
   * Set when the value is not sent: `"too_large"`, the change with its value
   * did not fit in one frame (the server's `maxFrameSize`); read it with `get()`.
   */
  valueOmitted?: "too_large";
}

/** The feed ended because its consumer fell behind; resume with `since: resumeFrom`. */
export interface LaggedEvent {
  /** Discriminant. */
  type: "lagged";
  /** The last sequence number delivered. */
  resumeFrom: number;
}

/**
 * Code of the error that ends a feed at a change too large for one frame
 * of the server's even without its value (a table name, or a key-value
 * key, of about `maxFrameSize` bytes): its `resumeFrom` resumes after it.
 */
export const CHANGE_TOO_LARGE = "CHANGE_TOO_LARGE";

/** What a subscription yields. */
export type ChangeEvent = TableChangeEvent | KvChangeEvent | LaggedEvent;

/** Largest `buffer` of a subscription (the server's bound too). */
const MAX_SUBSCRIBE_BUFFER = 100_000;

/**
 * Bytes of values and key-value keys (approximately, counted as the server
 * counts them: a blob's, key-value value's or encoded key's length, two
 * bytes per UTF-16 unit of a string, eight per column and number) a
 * subscription's iterator buffers
 * for a consumer that does not keep up before the feed ends with `lagged`,
 * as past its `buffer` (64 MiB). A single larger change is buffered when
 * nothing else is.
 */
export const MAX_SUBSCRIBE_QUEUED_BYTES = 64 * 1024 * 1024;

type Waiter = { resolve: (r: IteratorResult<ChangeEvent>) => void; reject: (e: unknown) => void };

/** An open change feed; iterate it, and `close()` it (or `await using`) when done. */
export class Subscription implements AsyncIterableIterator<ChangeEvent>, AsyncDisposable {
  readonly #link: Link;
  readonly #buffer: number;
  readonly #values: boolean;
  #queue: ChangeEvent[] = [];
  #head = 0;
  /** Bytes of values of each queued event ({@link valueSize}), as {@link #queue}. */
  #sizes: number[] = [];
  /** Bytes of values of the events queued and not yet yielded. */
  #queuedBytes = 0;
  /**
   * Calls of {@link next} waiting for a change, oldest first (the queue is
   * empty while any wait); all are settled when the feed ends.
   */
  #waiters: Waiter[] = [];
  #ended = false;
  #error: unknown = null;
  #startSeq = 0;
  readonly #onClose: (s: Subscription) => void;
  readonly #maxFrameSize: number | undefined;
  /** The `signal` option, listened to until the feed ends. */
  #signal: AbortSignal | null = null;
  readonly #onAbort = (): void => this.#abort();

  /**
   * @internal Use `Client.subscribe()`.
   * @param maxFrameSize The server's, for messages.
   */
  constructor(
    link: Link,
    options: SubscribeOptions,
    onClose: (s: Subscription) => void,
    maxFrameSize?: number,
  ) {
    this.#link = link;
    this.#buffer = options.buffer ?? 10_000;
    this.#values = options.values === true;
    this.#onClose = onClose;
    this.#maxFrameSize = maxFrameSize;
    link.onEvent = (payload) => this.#onEvent(payload as EventPayload);
    link.ended.then(() => {
      if (this.#ended) return;
      this.#fail(link.failure ?? new ConnectionError("Change feed connection was closed"));
    });
  }

  /** The feed's sequence number when the subscription started (with `since`: that value). */
  get startSeq(): number {
    return this.#startSeq;
  }

  /**
   * @internal The feed is open: `signal` (aborted already or later) ends it
   * (see {@link SubscribeOptions.signal}).
   */
  _started(head: number, since: number | undefined, signal?: AbortSignal): void {
    this.#startSeq = since ?? head;
    if (signal === undefined || this.#ended) return;
    if (signal.aborted) return this.#abort(signal);
    this.#signal = signal;
    signal.addEventListener("abort", this.#onAbort, { once: true });
  }

  /**
   * The feed's signal aborted: the feed ends as {@link close} ends it,
   * without yielding what it buffered, and the next `next()` rejects with
   * `AbortError`.
   */
  #abort(signal = this.#signal): void {
    if (this.#ended || signal === null) return;
    this.#clearQueue();
    this.#fail(new AbortError("Change feed was aborted by its signal", { cause: signal.reason }));
    this.#link.fail(new ConnectionError("Change feed was aborted by its signal"));
  }

  /** Empties the changes buffered and not yet yielded. */
  #clearQueue(): void {
    this.#queue = [];
    this.#sizes = [];
    this.#head = 0;
    this.#queuedBytes = 0;
  }

  /** Stops listening to the `signal` option (the feed ended). */
  #unlisten(): void {
    this.#signal?.removeEventListener("abort", this.#onAbort);
    this.#signal = null;
  }

  /**
   * Next change. Rejects with `ConnectionError` when the connection is lost,
   * `AbortError` when the `signal` option aborted, and with the error that
   * ended the feed at a change it could not deliver (`CHANGE_TOO_LARGE`,
   * `KV_CORRUPT`: see their `resumeFrom`), after the changes before it.
   */
  next(): Promise<IteratorResult<ChangeEvent>> {
    if (this.#head < this.#queue.length) {
      this.#queuedBytes -= this.#sizes[this.#head];
      const value = this.#queue[this.#head++];
      if (this.#head === this.#queue.length) this.#clearQueue();
      return Promise.resolve({ value, done: false });
    }
    if (this.#error !== null) {
      const err = this.#error;
      this.#error = null;
      return Promise.reject(err);
    }
    if (this.#ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** Ends the feed (closes its connection). */
  return(): Promise<IteratorResult<ChangeEvent>> {
    this.close();
    return Promise.resolve({ value: undefined, done: true });
  }

  /** This subscription is its own iterator. */
  [Symbol.asyncIterator](): this {
    return this;
  }

  /** Ends the feed and closes its connection. Idempotent. */
  close(): void {
    if (this.#ended && this.#link.failure !== null) return;
    this.#end();
    this.#link.fail(new ConnectionError("Change feed was closed by the client"));
  }

  /** Same as {@link close}, waiting for the connection to end. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await this.#link.ended;
  }

  #onEvent(payload: EventPayload): void {
    if (this.#ended) return;
    if (!Array.isArray(payload)) return;
    if (payload[1] === EventKind.Lagged) {
      this.#push({ type: "lagged", resumeFrom: payload[2] as number }, 0);
      this.close();
      return;
    }
    if (payload[1] === EventKind.TooLarge) {
      // The server ended the feed at a change it could not send: so does
      // this iterator, after the changes before it, saying how to go on.
      this.#fail(changeTooLarge(payload[2] as TooLargeData, this.#maxFrameSize));
      this.close();
      return;
    }
    if (payload[1] !== EventKind.Changes) {
      // A kind of a newer server: whatever it says, changes may be missing
      // from here on. The feed ends, after the changes before it.
      this.#fail(
        new ProtocolError(
          ErrorCode.ProtocolVersion,
          `Change feed ended: the server sent an event of kind ${
            String(payload[1])
          } that this client does not know (a newer server); update the client`,
        ),
      );
      this.close();
      return;
    }
    for (const w of payload[2] as WireChange[]) {
      // Its value, and its key-value key (always sent): both held until yielded.
      const bytes = (this.#values ? valueSize(w[8]) : 0) + (w[6]?.length ?? 0);
      const queued = this.#queue.length - this.#head;
      if (
        queued >= this.#buffer ||
        (queued > 0 && this.#queuedBytes + bytes > MAX_SUBSCRIBE_QUEUED_BYTES)
      ) {
        // The consumer fell behind: the changes queued are still yielded,
        // then `lagged`, resumable after the last of them (the queue is not
        // empty, so that is a change).
        const last = this.#queue[this.#queue.length - 1] as TableChangeEvent | KvChangeEvent;
        this.#push({ type: "lagged", resumeFrom: last.seq }, 0);
        this.close();
        return;
      }
      let e: ChangeEvent;
      try {
        e = this.#decode(w);
      } catch (err) {
        // An entry that cannot be read (KV_CORRUPT): the feed ends with that
        // error, after the changes before it, saying how to resume past it.
        this.#fail(feedEndedAt(err, w[0]));
        this.close();
        return;
      }
      this.#push(e, bytes);
    }
  }

  #decode(w: WireChange): ChangeEvent {
    const [seq, commitSeq, table, op, rowid, collection, key, version, value, omitted] = w;
    if (collection !== null && key !== null) {
      const e: KvChangeEvent = {
        type: "kv",
        seq,
        commitSeq,
        table,
        op,
        collection,
        // The event names its key, with or without values: a key written by
        // SQL directly that does not decode is KV_CORRUPT, as in list().
        key: readKey(key, collection),
        version: version!,
      };
      if (this.#values && op !== "delete" && omitted === undefined && value !== null) {
        // A value written by SQL directly may not decode (or be TEXT):
        // KV_CORRUPT, as for get().
        const where = () =>
          `in collection ${JSON.stringify(collection)} under key ${keyLabel(e.key)}`;
        e.value = decodeKvValue(value, where);
      }
      if (omitted !== undefined && this.#values) e.valueOmitted = omitted;
      return e;
    }
    const e: TableChangeEvent = { type: "table", seq, commitSeq, table, op, rowid };
    if (this.#values && op !== "delete") e.value = value as Record<string, unknown> | null;
    if (omitted !== undefined && this.#values) e.valueOmitted = omitted;
    return e;
  }

  #push(e: ChangeEvent, bytes: number): void {
    const w = this.#waiters.shift();
    if (w !== undefined) w.resolve({ value: e, done: false });
    else {
      this.#queue.push(e);
      this.#sizes.push(bytes);
      this.#queuedBytes += bytes;
    }
  }

  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#unlisten();
    this.#onClose(this);
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w.resolve({ value: undefined, done: true });
  }

  #fail(err: unknown): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#unlisten();
    this.#onClose(this);
    const [first, ...rest] = this.#waiters;
    this.#waiters = [];
    if (first === undefined) {
      this.#error = err;
      return;
    }
    // The oldest call gets the error; later ones find the feed ended.
    first.reject(err);
    for (const w of rest) w.resolve({ value: undefined, done: true });
  }
}

/**
 * The error that ends a feed at the change `seq` it could not read: a
 * `KV_CORRUPT` says how to resume past that change; other errors as they are.
 */
function feedEndedAt(err: unknown, seq: number): unknown {
  if (!(err instanceof SqliteError) || err.code !== KV_CORRUPT) return err;
  return new SqliteError(
    KV_CORRUPT,
    `${err.message} (the change feed ended at that change, seq ${seq}: ` +
      `subscribe with since: ${seq} to resume after it)`,
    undefined,
    err.cause === undefined ? { resumeFrom: seq } : { cause: err.cause, resumeFrom: seq },
  );
}

/**
 * The error that ends a feed at a change the server could not send (an
 * {@link EventKind.TooLarge} event): `CHANGE_TOO_LARGE`, naming the change
 * and how to resume past it.
 */
function changeTooLarge(data: TooLargeData, maxFrameSize: number | undefined): SqliteError {
  const [seq, commitSeq, table, op, rowid, collection, version, bytes] = data;
  const what = collection === null
    ? `${op} of rowid ${rowid ?? "null (every row)"} in table ${JSON.stringify(table)}`
    : `${op} in key-value collection ${JSON.stringify(collection)} (version ${version})`;
  const limit = maxFrameSize === undefined ? "" : ` (${maxFrameSize})`;
  const article = op === "delete" ? "a" : "an";
  return new SqliteError(
    CHANGE_TOO_LARGE,
    `Change seq ${seq} (commit ${commitSeq}), ${article} ${what}, is ${bytes} bytes without ` +
      `its value, more than one event frame holds (the server's maxFrameSize${limit}): the ` +
      `change feed ended at that change; subscribe with since: ${seq} to resume after it ` +
      `(read that ${collection === null ? "table" : "collection"} to see it)`,
    undefined,
    { resumeFrom: seq },
  );
}

/**
 * Opens a connection, subscribes, and returns the subscription.
 *
 * @param refuses The client's check of the server's hello: an error when
 *   the server serves another database than the client's.
 * @param signal Aborting it (the client closing) fails the opening at once,
 *   and later the feed's connection, with its reason.
 * @throws {SqliteError} `FEED_UNSUPPORTED` (node:sqlite server), `FEED_GAP`
 *   (`since` no longer held), `BAD_REQUEST`, `INVALID_PARAM` (a `buffer`
 *   out of range, a bad collection name, a filter that selects nothing:
 *   `tables: []`, `kv: []`, `kv: false`).
 * @throws {ConnectionError} what `refuses` returned.
 */
export async function openSubscription(
  config: ConnectConfig,
  options: SubscribeOptions,
  onClose: (s: Subscription) => void,
  refuses: (info: HelloReply) => ConnectionError | null = () => null,
  signal?: AbortSignal,
): Promise<Subscription> {
  const own = options.signal ?? undefined;
  if (own?.aborted) throw aborted(own);
  const wire: SubscribeRequest = {};
  // (The server refuses these too.)
  const empty = emptySubscribeFilter(options as Pick<SubscribeRequest, "tables" | "kv">);
  if (empty !== undefined) throw new SqliteError("INVALID_PARAM", empty);
  if (options.tables !== undefined) wire.tables = options.tables;
  if (Array.isArray(options.kv)) {
    for (const name of options.kv) {
      const reason = invalidCollectionName(name);
      if (reason !== undefined) {
        throw new SqliteError(
          "INVALID_PARAM",
          `Invalid key-value collection name in kv: ${reason}`,
        );
      }
    }
  }
  if (options.kv !== undefined) wire.kv = options.kv;
  if (options.values !== undefined) wire.values = options.values;
  if (options.since !== undefined) wire.since = options.since;
  if (options.buffer !== undefined) {
    if (!Number.isSafeInteger(options.buffer) || options.buffer < 1) {
      throw new SqliteError(
        "INVALID_PARAM",
        `Invalid buffer: expected a positive integer, got ${options.buffer}`,
      );
    }
    if (options.buffer > MAX_SUBSCRIBE_BUFFER) {
      // (The server refuses it too: this iterator would queue that many.)
      throw new SqliteError(
        "INVALID_PARAM",
        `Invalid buffer: expected at most ${MAX_SUBSCRIBE_BUFFER}, got ${options.buffer}`,
      );
    }
    wire.buffer = options.buffer;
  }
  let opened: [Link, HelloReply];
  try {
    opened = await openLink(
      config,
      {},
      own === undefined ? signal : signal === undefined ? own : AbortSignal.any([signal, own]),
    );
  } catch (err) {
    // (The client closing meanwhile is its caller's to say.)
    if (own?.aborted && !signal?.aborted) throw aborted(own);
    throw err;
  }
  const [link, info] = opened;
  const refusal = refuses(info);
  if (refusal !== null) {
    link.fail(refusal);
    await link.ended;
    throw refusal;
  }
  const sub = new Subscription(link, options, onClose, info.limits.maxFrameSize);
  try {
    const [, head] = await abortable(link.request(Op.Subscribe, [wire]), own);
    sub._started(head, options.since, own);
  } catch (err) {
    sub.close();
    await link.ended;
    throw err;
  }
  return sub;
}

/** The `AbortError` of a `subscribe()` whose signal aborted before the feed opened. */
function aborted(signal: AbortSignal): AbortError {
  return new AbortError("subscribe() was aborted by its signal", { cause: signal.reason });
}
