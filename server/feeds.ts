/**
 * The change feeds of one client connection (`subscribe`/`unsubscribe`):
 * each feed filters the engine's committed changes, queues them, and sends
 * them as event frames `[0, Status.Event, [subscription, kind, data]]`
 * while the connection's output is below its high-water mark. A feed whose
 * queue would grow past its `buffer` (a client that does not read) keeps
 * the `buffer` changes it holds, sends them, and ends with one `LAGGED`
 * event naming the last of them, so the server never buffers without bound
 * and the client, resuming with `since`, gets at least `buffer` changes
 * further each time. A feed resumed with `since` reads its backlog from the
 * change log's ring as its output has room, never more than `buffer` at a
 * time, so a backlog larger than `buffer` does not make it lag.
 *
 * Queued changes are references to the change log's shared {@link Change}
 * objects (the wire tuple is built when a frame is sent; a feed without
 * values queues a copy without the value, so as not to hold it), and their
 * number and the bytes of their values are bounded on each connection (all
 * its feeds together) and on the server ({@link FeedQueueBudget}): a feed
 * that would queue past a bound lags as one past its `buffer` does, and a
 * resuming feed replays no more than the bounds leave room for.
 *
 * When the server shuts down gracefully its connections' feeds are
 * {@link ConnectionFeeds.finish}ed: each sends what it holds before the
 * connection ends, and one past its `buffer` goes on from the ring instead
 * of ending with `LAGGED` (no feed of a restarted server could resume it).
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import { isBusyInBackground } from "../engine/binding/_errors.ts";
import { foldCase } from "../engine/_sql_text.ts";
import type { EngineInfo } from "../engine/engine_api.ts";
import {
  emptySubscribeFilter,
  EventKind,
  type EventPayload,
  type SubscribePayload,
  type SubscribeRequest,
  type TooLargeData,
  ValueOmitted,
  type WireChange,
} from "../protocol/messages.ts";
import { MsgpackWriter } from "../protocol/msgpack.ts";
import {
  type Change,
  type ChangeLog,
  type ChangeSink,
  FEED_UNSUPPORTED,
  type FeedQueueBudget,
} from "../engine/change_log.ts";

/** Changes queued per feed by default before `LAGGED`. */
export const DEFAULT_FEED_BUFFER = 10_000;
/** Largest `buffer` a client may ask for. */
export const MAX_FEED_BUFFER = 100_000;
/**
 * Feeds one connection may hold (the client opens a connection for each):
 * each may queue `buffer` changes, so their number is bounded too.
 */
export const MAX_FEEDS_PER_CONNECTION = 64;
/** Changes per event frame, at most. */
const CHANGES_PER_FRAME = 256;

/** How a connection's feeds reach its socket. */
export interface FeedOutput {
  /** Appends an event frame to the connection's output; false when it exceeds the frame size. */
  send(payload: EventPayload): boolean;
  /** True while the output is below its high-water mark. */
  room(): boolean;
  /** Writes out what was appended. */
  flush(): void;
}

/** Room for queued changes, shared by the feeds of one connection. */
interface Quota {
  /** Changes that may still be queued, on this connection and on the server. */
  room(): number;
  /** True when `bytes` more of values may be queued (always when none are). */
  fits(bytes: number): boolean;
  /** Counts `n` more changes queued (at most {@link room}), holding `bytes` of values. */
  take(n: number, bytes: number): void;
  /** Counts `n` queued changes, holding `bytes` of values, as sent or dropped. */
  give(n: number, bytes: number): void;
  /** Calls `wake` once when room frees, on any connection (see {@link FeedQueueBudget.wait}). */
  wait(wake: () => void): void;
  /** Forgets `wake` (its feed ended). */
  unwait(wake: () => void): void;
}

/** The feeds of one connection. */
export class ConnectionFeeds {
  readonly #log: ChangeLog | null;
  readonly #out: FeedOutput;
  readonly #feeds = new Map<number, Feed>();
  #nextId = 1;
  #scheduled = false;
  #closed = false;
  /** Changes queued on all feeds of this connection. */
  #queued = 0;
  /** Bytes of values queued on all feeds of this connection. */
  #queuedBytes = 0;
  readonly #quota: Quota;
  readonly #engine: EngineInfo["engine"];

  /**
   * @param log The engine's change log; `null` when the binding cannot capture changes.
   * @param out Where event frames go.
   * @param engine The engine's kind, for the message when `log` is `null`.
   */
  constructor(log: ChangeLog | null, out: FeedOutput, engine: EngineInfo["engine"] = "ffi") {
    this.#log = log;
    this.#engine = engine;
    this.#out = out;
    const budget: FeedQueueBudget | null = log?.queued ?? null;
    this.#quota = {
      room: () =>
        budget === null
          ? 0
          : Math.max(0, Math.min(budget.perConnection - this.#queued, budget.max - budget.used)),
      fits: (bytes) =>
        budget === null || bytes === 0 ||
        ((this.#queuedBytes === 0 || this.#queuedBytes + bytes <= budget.perConnectionBytes) &&
          (budget.usedBytes === 0 || budget.usedBytes + bytes <= budget.maxBytes)),
      take: (n, bytes) => {
        this.#queued += n;
        this.#queuedBytes += bytes;
        if (budget !== null) {
          budget.used += n;
          budget.usedBytes += bytes;
        }
      },
      give: (n, bytes) => {
        this.#queued -= n;
        this.#queuedBytes -= bytes;
        if (budget !== null) {
          budget.used -= n;
          budget.usedBytes -= bytes;
          if (n > 0) budget.freed();
        }
      },
      wait: (wake) => budget?.wait(wake),
      unwait: (wake) => budget?.unwait(wake),
    };
  }

  /** Changes queued on this connection's feeds, not yet sent. */
  get queued(): number {
    return this.#queued;
  }

  /** Bytes of values queued on this connection's feeds, not yet sent. */
  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  /** Feeds open on this connection. */
  get size(): number {
    return this.#feeds.size;
  }

  /**
   * True when no feed has a change left to hand to the output: none queued,
   * none held in the log's ring after what it queued (see {@link finish}).
   */
  get sent(): boolean {
    for (const feed of this.#feeds.values()) {
      if (feed.pending > 0 || feed.replaying || feed.lagged) return false;
    }
    return true;
  }

  /**
   * For a graceful shutdown, before the connection's last frame: every
   * committed change is to be sent, since no feed of a restarted server can
   * resume these feeds (`FEED_GAP`). A feed that overflowed its queue (its
   * `buffer`, or the connection's or server's bound) then goes on from the
   * log's ring, `buffer` changes at a time as the output has room, instead
   * of ending with `LAGGED`; it still lags when the ring no longer holds its
   * next change. The caller pumps until {@link sent}, within its time bound.
   */
  finish(): void {
    for (const feed of this.#feeds.values()) feed.finish();
    this.#schedule();
  }

  /**
   * Starts a feed. Held changes after `since` (if given) are replayed from
   * the ring as the output has room; every event frame follows the reply
   * (they are sent from a microtask).
   *
   * @throws {SqliteError} `FEED_UNSUPPORTED` on node:sqlite, `FEED_GAP` for a
   *   `since` no longer held, `INVALID_PARAM` for a `buffer` over {@link MAX_FEED_BUFFER},
   *   a filter that selects nothing (`tables: []`, `kv: []`, `kv: false`:
   *   see `emptySubscribeFilter`) or a table of another schema than `main`
   *   (see {@link feedTableNames}).
   */
  subscribe(options: SubscribeRequest): SubscribePayload | Promise<SubscribePayload> {
    if (
      options.buffer !== undefined && options.buffer !== null && options.buffer > MAX_FEED_BUFFER
    ) {
      // Refused rather than lowered: the client's iterator queues `buffer` too.
      throw new SqliteError(
        ErrorCode.InvalidParam,
        `Invalid buffer: expected at most ${MAX_FEED_BUFFER}, got ${options.buffer}`,
      );
    }
    const empty = emptySubscribeFilter(options);
    if (empty !== undefined) throw new SqliteError(ErrorCode.InvalidParam, empty);
    if (options.tables !== undefined && options.tables !== null) {
      options = { ...options, tables: feedTableNames(options.tables) };
    }
    const log = this.#log;
    if (log === null) {
      throw new SqliteError(
        FEED_UNSUPPORTED,
        this.#engine === "dqlite"
          ? "Cannot subscribe: change feeds are not available in cluster mode (dqlite does " +
            "not report changes to the server in front of it)"
          : "Cannot subscribe: change feeds need SQLite's update hook, which the node:sqlite " +
            "engine lacks; run the server on the FFI engine (--engine ffi)",
      );
    }
    try {
      return this.#add(options, log);
    } catch (err) {
      // The first subscription installs the update hook on the writer; a
      // write running in the background holds it: try again once it is done.
      if (!isBusyInBackground(err)) throw err;
      return this.#addLater(options, log);
    }
  }

  #add(options: SubscribeRequest, log: ChangeLog): SubscribePayload {
    if (this.#feeds.size >= MAX_FEEDS_PER_CONNECTION) {
      throw new SqliteError(
        ErrorCode.BadRequest,
        `Too many change feeds on this connection: ${MAX_FEEDS_PER_CONNECTION}; ` +
          "unsubscribe one first",
      );
    }
    const id = this.#nextId++;
    const feed = new Feed(id, options, () => this.#schedule(), log, this.#quota);
    const head = log.subscribe(feed, options.since ?? undefined);
    this.#feeds.set(id, feed);
    this.#schedule();
    return [id, head];
  }

  async #addLater(options: SubscribeRequest, log: ChangeLog): Promise<SubscribePayload> {
    // A background write ends at its deadline at the latest (--statement-timeout).
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, 1));
      if (this.#closed) throw new SqliteError("CONNECTION_CLOSED", "Connection closed");
      try {
        return this.#add(options, log);
      } catch (err) {
        if (!isBusyInBackground(err)) throw err;
      }
    }
  }

  /** Ends feed `id` (unknown ids are ignored: the feed may have lagged). */
  unsubscribe(id: number): null {
    const feed = this.#feeds.get(id);
    if (feed !== undefined) {
      this.#log?.unsubscribe(feed, false);
      this.#feeds.delete(id);
      feed.drop();
    }
    return null;
  }

  /** Sends queued changes while the output has room. */
  pump(): void {
    if (this.#closed || this.#feeds.size === 0) return;
    let sent = false;
    for (const feed of [...this.#feeds.values()]) {
      let n = CHANGES_PER_FRAME;
      for (;;) {
        if (feed.pending === 0) feed.fill();
        if (feed.pending === 0) {
          // Everything held was sent: a feed that overflowed ends here.
          if (feed.lagged) {
            this.#end(feed, [feed.id, EventKind.Lagged, feed.lastSent]);
            sent = true;
          }
          break;
        }
        if (!this.#out.room()) break;
        const batch = feed.peek(n);
        if (!this.#out.send([feed.id, EventKind.Changes, batch])) {
          if (n > 1) {
            n = Math.max(1, n >> 1);
            continue;
          }
          // One change whose value does not fit in a frame: sent without its
          // value, saying why (a `null` value alone means the row was gone).
          batch[0][8] = null;
          batch[0][9] = ValueOmitted.TooLarge;
          if (!this.#out.send([feed.id, EventKind.Changes, batch])) {
            // Too large even without its value (a table's name, a key-value
            // key longer than the frame holds): never skipped silently. The
            // feed ends naming it; `since: seq` resumes after it.
            feed.advance(1);
            this.#end(feed, [feed.id, EventKind.TooLarge, tooLargeData(batch[0])]);
            sent = true;
            break;
          }
        }
        feed.advance(batch.length);
        sent = true;
      }
    }
    if (sent) this.#out.flush();
  }

  /** Ends `feed` from the server's side, its last event `last` saying why. */
  #end(feed: Feed, last: EventPayload): void {
    feed.drop();
    this.#log?.unsubscribe(feed);
    this.#feeds.delete(feed.id);
    this.#out.send(last);
  }

  /** Ends every feed of this connection. */
  close(): void {
    this.#closed = true;
    for (const feed of this.#feeds.values()) {
      this.#log?.unsubscribe(feed);
      feed.drop();
    }
    this.#feeds.clear();
  }

  #schedule(): void {
    if (this.#scheduled || this.#closed) return;
    this.#scheduled = true;
    queueMicrotask(() => {
      this.#scheduled = false;
      this.pump();
    });
  }
}

/** Characters of a name an {@link EventKind.TooLarge} event keeps (`…` marks a cut). */
const NAME_KEPT = 100;

/**
 * The data of an {@link EventKind.TooLarge} event for `c` (as sent, with
 * its value if any): its position, its names cut to {@link NAME_KEPT}
 * characters (so that it fits the smallest frame), and its size without
 * its value.
 */
function tooLargeData(c: WireChange): TooLargeData {
  const [seq, commitSeq, table, op, rowid, collection, key, version] = c;
  const w = new MsgpackWriter(1024);
  w.write([
    seq,
    commitSeq,
    table,
    op,
    rowid,
    collection,
    key,
    version,
    null,
    ValueOmitted.TooLarge,
  ]);
  return [
    seq,
    commitSeq,
    cutName(table),
    op,
    rowid,
    collection === null ? null : cutName(collection),
    version,
    w.pos,
  ];
}

/** `name`, or its first {@link NAME_KEPT} characters and `…` (a surrogate pair kept whole). */
function cutName(name: string): string {
  if (name.length <= NAME_KEPT) return name;
  let end = NAME_KEPT;
  const c = name.charCodeAt(end - 1);
  if (c >= 0xd800 && c <= 0xdbff) end--;
  return `${name.slice(0, end)}\u2026`;
}

/**
 * The tables of a `tables` filter as the feed matches them (ASCII letters in
 * lower case, as SQLite folds names: `Ä` and `ä` are two tables; unquoted,
 * as the update hook names them): `main.t`
 * is `t` (`main.a.b` the table `a.b`). A name matching no table is kept
 * (the table may be created later).
 *
 * @throws {SqliteError} `INVALID_PARAM` for a name qualified by another
 *   schema (`temp.t`, an attached database's `aux.t`): the update hook
 *   reports the tables of `main` only, so such a feed would stay empty.
 */
function feedTableNames(names: readonly string[]): string[] {
  return names.map((name) => {
    const dot = name.indexOf(".");
    if (dot === -1) return foldCase(name);
    const schema = name.slice(0, dot);
    if (foldCase(schema) === "main") return foldCase(name.slice(dot + 1));
    throw new SqliteError(
      ErrorCode.InvalidParam,
      `Invalid table in tables: ${JSON.stringify(name)} names schema ${JSON.stringify(schema)}, ` +
        "but change feeds report the tables of the main database only (not TEMP or attached " +
        `ones); write "main.${name}" for a table of main whose name contains a dot`,
    );
  });
}

/**
 * One feed: its filter and its queue (at most `buffer` changes, within the
 * connection's and the server's {@link Quota}). A feed
 * resumed with `since` first replays the log's ring from there, a queue
 * at a time ({@link fill}), and takes deliveries once it has caught up.
 */
class Feed implements ChangeSink {
  readonly id: number;
  readonly wantsValues: boolean;
  #tables: Set<string> | null;
  readonly #kv: Set<string> | true | null;
  readonly #buffer: number;
  readonly #wake: () => void;
  readonly #log: ChangeLog;
  readonly #quota: Quota;
  /** Changes queued, shared with the log's ring and other feeds (not copied). */
  queue: Change[] = [];
  #head = 0;
  /** Bytes of values and key-value keys of the changes queued and not yet sent. */
  #pendingBytes = 0;
  /** Sequence number of the last change handed to the output. */
  lastSent: number;
  /** While replaying the ring: the last change read from it; `null` once caught up. */
  #replayed: number | null;
  /**
   * Set when the queue overflowed (or the ring moved past a replay): the
   * feed sends what it queued, then ends with `LAGGED` at {@link lastSent}.
   */
  lagged = false;
  /**
   * Set by {@link deliver} when the feed overflowed: the changes after this
   * `seq` are in the log's ring, not queued; a {@link finish} goes on from
   * there. `null` otherwise.
   */
  #overflowAt: number | null = null;
  /** Set by {@link finish}: the server stops, and an overflow replays from the ring. */
  #finishing = false;

  constructor(id: number, o: SubscribeRequest, wake: () => void, log: ChangeLog, quota: Quota) {
    this.id = id;
    this.wantsValues = o.values === true;
    const everything = (o.tables === undefined || o.tables === null) &&
      (o.kv === undefined || o.kv === null);
    this.#tables = o.tables ? new Set(o.tables) : null; // (case folded: see subscribe)
    this.#kv = everything || o.kv === true ? true : Array.isArray(o.kv) ? new Set(o.kv) : null;
    if (everything) this.#tables = ALL;
    this.#buffer = o.buffer ?? DEFAULT_FEED_BUFFER; // (at most MAX_FEED_BUFFER: see subscribe)
    this.#wake = wake;
    this.#log = log;
    this.#quota = quota;
    this.lastSent = o.since ?? log.head;
    this.#replayed = o.since ?? null;
  }

  /** Changes queued and not yet sent. */
  get pending(): number {
    return this.queue.length - this.#head;
  }

  /** True while the feed reads changes from the log's ring (see {@link fill}). */
  get replaying(): boolean {
    return this.#replayed !== null;
  }

  /**
   * The server stops: an overflow no longer ends the feed (see
   * {@link ConnectionFeeds.finish}); one that overflowed goes on from the ring
   * once its queue is sent.
   */
  finish(): void {
    this.#finishing = true;
    if (this.lagged && this.#overflowAt !== null) {
      this.lagged = false;
      this.#replayed = this.#overflowAt;
      this.#overflowAt = null;
      this.#wake();
    }
  }

  deliver(changes: readonly Change[]): void {
    if (this.lagged) return;
    if (this.#replayed !== null) {
      // Still replaying: these are in the ring too, and read from there.
      this.#wake();
      return;
    }
    let added = 0;
    let room = Math.min(this.#buffer - this.pending, this.#quota.room());
    for (const c of changes) {
      if (!this.matches(c)) continue;
      if (room <= 0 || !this.#enqueue(c)) {
        // Overflow (of the feed's buffer, or of its connection's or the
        // server's queue): the changes queued are kept and sent, then LAGGED;
        // while the server stops, the rest is read from the ring instead.
        if (this.#finishing) this.#replayed = c.seq - 1;
        else {
          this.lagged = true;
          this.#overflowAt = c.seq - 1;
        }
        this.#wake();
        return;
      }
      room--;
      added++;
    }
    if (added > 0) this.#wake();
  }

  /**
   * While replaying: queues the ring's next matching changes, up to
   * `buffer`; once the ring's head is reached, takes deliveries instead.
   * Lags when the ring no longer holds the next change.
   */
  fill(): void {
    while (this.#replayed !== null && !this.lagged) {
      // When the connection's or the server's queue is full, the replay
      // waits: its own drained output, or changes sent or dropped on any
      // connection (which free room), wake the feed again.
      const room = Math.min(this.#buffer - this.pending, this.#quota.room());
      if (room <= 0) {
        if (this.pending === 0) this.#quota.wait(this.#wake);
        return;
      }
      const held = this.#log.after(this.#replayed, room, this);
      if (held === null) {
        this.lagged = true;
        return;
      }
      if (held.length === 0) {
        this.#replayed = null; // caught up: later commits are delivered
        return;
      }
      for (const c of held) {
        if (this.matches(c)) {
          if (this.wantsValues && !c.valueRead) {
            // Its value was let go since the replay began (the ring's byte
            // bound): end here; resuming with values fails with FEED_GAP.
            this.lagged = true;
            return;
          }
          // No room for its value now: waits as for room above.
          if (!this.#enqueue(c)) {
            if (this.pending === 0) this.#quota.wait(this.#wake);
            return;
          }
        }
        this.#replayed = c.seq;
      }
    }
  }

  /**
   * Bytes `c` holds queued on this feed, counted against the byte bounds:
   * its value (for a feed with values) and its key-value key (always sent).
   */
  #bytesOf(c: Change): number {
    return (this.wantsValues ? c.valueBytes : 0) + (c.key?.length ?? 0);
  }

  /**
   * Queues `c` (without its value for a feed without values) if its value
   * and key fit the byte bounds; false when they do not.
   */
  #enqueue(c: Change): boolean {
    const bytes = this.#bytesOf(c);
    if (!this.#quota.fits(bytes)) return false;
    this.queue.push(
      !this.wantsValues && c.valueBytes > 0 ? { ...c, value: null, valueBytes: 0 } : c,
    );
    this.#pendingBytes += bytes;
    this.#quota.take(1, bytes);
    return true;
  }

  /** The next `n` queued changes (at most) as sent on the wire, still queued. */
  peek(n: number): WireChange[] {
    const end = Math.min(this.queue.length, this.#head + n);
    const out: WireChange[] = [];
    for (let i = this.#head; i < end; i++) {
      const c = this.queue[i];
      out.push([
        c.seq,
        c.commitSeq,
        c.table,
        c.op,
        c.rowid,
        c.collection,
        c.key,
        c.version,
        this.wantsValues ? c.value : null,
      ]);
    }
    return out;
  }

  /** Marks the next `n` queued changes as sent. */
  advance(n: number): void {
    let bytes = 0;
    for (let i = this.#head; i < this.#head + n; i++) bytes += this.#bytesOf(this.queue[i]);
    this.#head += n;
    this.#pendingBytes -= bytes;
    this.#quota.give(n, bytes);
    this.lastSent = this.queue[this.#head - 1].seq;
    if (this.#head >= this.queue.length) {
      this.queue = [];
      this.#head = 0;
    } else if (this.#head >= 4096 && this.#head * 2 >= this.queue.length) {
      // Let go of the sent changes, so that they can be collected.
      this.queue = this.queue.slice(this.#head);
      this.#head = 0;
    }
  }

  /** Forgets the queued changes (the feed ends). */
  drop(): void {
    this.#quota.unwait(this.#wake);
    this.#quota.give(this.pending, this.#pendingBytes);
    this.#pendingBytes = 0;
    this.queue = [];
    this.#head = 0;
  }

  /** True when `c` passes this feed's filter (`tables`, `kv`). */
  matches(c: Pick<Change, "table" | "collection">): boolean {
    if (c.collection !== null) {
      return this.#kv === true || (this.#kv !== null && this.#kv.has(c.collection));
    }
    return this.#tables === ALL ||
      (this.#tables !== null && this.#tables.has(foldCase(c.table)));
  }
}

const ALL = new Set<string>();
