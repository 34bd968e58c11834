/**
 * A client of a dqlite cluster: finds the leader, opens a database on it,
 * and runs statements there.
 *
 * ```ts ignore
 * const cluster = new DqliteCluster(["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]);
 * await using db = await cluster.open("app");
 * await db.exec("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v)");
 * const { lastInsertId } = await db.exec("INSERT INTO t(v) VALUES (?)", ["x"]);
 * const { columns, rows } = await db.query("SELECT id, v FROM t WHERE id = ?", [lastInsertId]);
 * ```
 *
 * A {@link DqliteDatabase} talks to one leader over one connection; see
 * `database.ts` for what happens when the leader changes.
 *
 * @module
 */

import { type ConnOptions, DqliteConn, expectResponse, parseAddress } from "./conn.ts";
import { DqliteDatabase } from "./database.ts";
import { DqliteErrorCode, LeaderError } from "./errors.ts";
import { ErrorCode, SqliteError } from "../../protocol/errors.ts";
import { encodeClient, encodeCluster, encodeLeader, type NodeInfo } from "./wire.ts";

export { DqliteDatabase } from "./database.ts";
export type { ExecResult, Params, QueryOptions, QueryResult } from "./database.ts";
export { DqliteStatement } from "./statement.ts";

/** Options of {@link DqliteCluster}. */
export interface DqliteClusterOptions {
  /**
   * Time allowed to find a leader (asking the nodes, again and again) before
   * failing with `NO_LEADER`, in ms.
   * @default 10000
   */
  leaderTimeout?: number;
  /**
   * Time allowed to hear from one node while looking for the leader: the TCP
   * connect, then its answer to who leads (and the leader's to the client's
   * registration), in ms. A node silent so long (hung, or behind a network
   * that drops its packets) is asked last in the searches that follow, until
   * it answers again. Searches do not wait on it meanwhile: the next node is
   * asked when one has not answered within 200 ms.
   * @default 2000
   */
  connectTimeout?: number;
  /**
   * Time allowed between a request and each message of its answer, in ms;
   * past it the connection is dropped and the request fails with `LEADER_LOST`.
   * (A leader that stops answering is left sooner: see {@link DqliteCluster}.)
   * @default 30000
   */
  requestTimeout?: number;
  /**
   * How long a statement refused with `SQLITE_BUSY` (another connection on
   * the leader holds the write lock; dqlite sets no busy timeout of its own)
   * is tried again before the error is returned, in ms. `SQLITE_BUSY` means
   * the statement did not run, so trying again cannot apply it twice. 0
   * returns the error at once.
   * @default 5000
   */
  busyTimeout?: number;
  /**
   * Largest message accepted from a node, in bytes (a row set arrives in
   * messages of about 4 KiB, but one large value makes one large message).
   * @default 268435456
   */
  maxMessageBytes?: number;
}

interface ClusterConfig extends ConnOptions {
  leaderTimeout: number;
  busyTimeout: number;
}

function resolveOptions(options: DqliteClusterOptions): ClusterConfig {
  const config: ClusterConfig = {
    leaderTimeout: options.leaderTimeout ?? 10_000,
    connectTimeout: options.connectTimeout ?? 2_000,
    requestTimeout: options.requestTimeout ?? 30_000,
    maxMessageBytes: options.maxMessageBytes ?? 256 * 1024 * 1024,
    busyTimeout: options.busyTimeout ?? 5_000,
  };
  for (const [key, value] of Object.entries(config)) {
    if (!Number.isFinite(value) || value < 0 || (value === 0 && key !== "busyTimeout")) {
      throw new RangeError(`Invalid option ${key}: ${value} (expected a positive number)`);
    }
  }
  return config;
}

/**
 * A search for the leader asks the next node when the one asked last has
 * not answered within this many ms, so that a hung node listed first (or
 * named leader by a node that has not heard of the election yet) costs
 * this, not `connectTimeout`.
 */
export const HEDGE_MS = 200;
/** The leader watch asks the leader who leads every this many ms (see {@link DqliteCluster}). */
export const HEARTBEAT_MS = 1_000;
/**
 * A leader that leaves the watch's question unanswered this long is
 * suspect: the other nodes are asked whether another leads.
 */
export const SILENT_MS = 1_000;

/** Resolves after `ms`, or at once when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
    if (signal.aborted) done();
  });
}

/**
 * What a node asked who leads answered, or why it did not, for `NO_LEADER`:
 * `refused the connection`, `did not answer within 2000 ms`, `named no
 * leader`, `named "10.0.0.2:9001" the leader`, or its error.
 */
function nodeOutcome(answer: Answer): string {
  if (answer.said === "") return "named no leader";
  if (answer.said !== null) return `named "${answer.said}" the leader`;
  const err = answer.error;
  if (err === undefined) return "did not answer";
  let root: unknown = err;
  while (root instanceof Error && root.cause instanceof Error) root = root.cause;
  if (root instanceof Deno.errors.ConnectionRefused) return "refused the connection";
  if (err instanceof LeaderError && /did not answer within/.test(err.message)) {
    return err.message.slice(err.message.indexOf("did not answer"));
  }
  const message = err instanceof Error ? err.message : String(err);
  return `failed: ${message}`;
}

/** What one node said when asked who leads. */
interface Answer {
  /** A connection to the node, which says it leads (registered as a client when asked to). */
  conn: DqliteConn | null;
  /** The leader the node named (`""`: none), or null when it did not answer. */
  said: string | null;
  /** Why the node did not answer, when it did not. */
  error?: unknown;
}

/** How a search asks (see {@link DqliteCluster}'s `#search`). */
interface SearchOptions {
  /** A node not to ask, nor to take for the leader (the one suspected). */
  exclude?: string;
  /** Ask a node again (after a pause) once it answered without leading. */
  again: boolean;
  /** Register as a client on the leader's connection (CLIENT request). */
  register: boolean;
  /** Ends the search (besides the deadline and {@link DqliteCluster.close}). */
  signal?: AbortSignal;
}

/** How a search ended, or how far it got. */
interface Found {
  /** A connection to the leader, or null when none was found (yet). */
  conn: DqliteConn | null;
  /** The last failure met, for the caller's error. */
  error: unknown;
  /** What the nodes that answered named as the leader (`""`: none). */
  said: Set<string>;
  /** Per node asked, what it answered last or why it did not (see {@link nodeOutcome}). */
  outcomes: Map<string, string>;
  /** The nodes being asked now, their answer not in yet. */
  running: Set<string>;
}

/** A search's deadline, which its callers may push back (see `DqliteCluster.#shared`). */
interface Deadline {
  at: number;
}

/**
 * A search for the leader that the callers of `DqliteCluster.connectLeader`
 * waiting at the same time share (see `DqliteCluster.#connectLeader`).
 */
interface SharedSearch {
  /** When it began (`performance.now()`). */
  started: number;
  /** The latest deadline of the callers that joined it: it runs until then at most. */
  deadline: Deadline;
  /**
   * True once it ended (found the leader, ran out, or {@link DqliteCluster.close}
   * ended it): not joined then, though `done`'s callback forgets it only later.
   */
  ended: () => boolean;
  /** How far it got: for a caller whose own deadline comes first. */
  progress: Found;
  /** Settles with how it ended. */
  done: Promise<Found>;
  /** The callers waiting for it now. */
  waiters: number;
  /** True once a caller took the connection it found (it is registered as one client). */
  taken: boolean;
}

/**
 * A dqlite cluster, known by the addresses of some or all of its nodes.
 *
 * Finding the leader: the nodes are asked who leads, the leader found last
 * first and nodes that did not answer last; each question (connect, ask,
 * and the leader's registration of the client) is bounded by
 * `connectTimeout` and by what is left of `leaderTimeout`, and the next
 * node is asked as soon as one answered without leading, or has not
 * answered within {@link HEDGE_MS}; a node named leader is asked at once.
 * No leader within `leaderTimeout`: `NO_LEADER`. Callers looking for the
 * leader at the same time share one search, each waiting within its own
 * `leaderTimeout`, then each connecting to the leader it found (see
 * {@link connectLeader}).
 *
 * Watching the leader: while connections to a leader are open, a
 * connection of the cluster's own asks the leader who leads every
 * {@link HEARTBEAT_MS}. A leader that says another node leads (or none)
 * has its idle connections closed, so the next requests find the new
 * leader instead of meeting `NOT_LEADER`. A leader that leaves the
 * question unanswered for {@link SILENT_MS} (hung, stopped, behind a
 * network that drops its packets, or busy with a long statement) is
 * suspect: the other nodes are asked, again until it answers; once one of
 * them leads, the suspect's connections are all closed ({@link
 * DqliteConn.abandon}): a request waiting there fails at once with
 * `LEADER_LOST` (the node may have applied it before it stopped), a
 * transaction open there is lost, and the next requests go to the new
 * leader. A busy but healthy leader is left alone: the others still name
 * it.
 */
export class DqliteCluster {
  readonly #nodes: readonly string[];
  readonly #config: ClusterConfig;
  readonly #open = new Set<DqliteDatabase>();
  #lastLeader: string | null = null;
  #clientId = 0n;
  /** Nodes that did not answer a search's question, with when: asked last. */
  readonly #suspects = new Map<string, number>();
  /** Connections to a leader handed to databases, open: the watch watches their node. */
  readonly #leaderConns = new Set<DqliteConn>();
  /** Aborted by {@link close}: ends the searches under way. */
  #closing = new AbortController();
  /** Stops the leader watch under way, or null when none runs. */
  #watchStop: AbortController | null = null;
  /** The search for the leader under way that callers of {@link connectLeader} join, or null. */
  #shared: SharedSearch | null = null;
  /** When the leader watch last left a node (see {@link #depose}): a search's find is checked. */
  readonly #deposed = new Map<string, number>();
  /** See {@link searchStats}. */
  #searchCount = 0;
  #askCount = 0;

  /**
   * @param nodes Node addresses (`host:port`, as the nodes were started with `-d`/`--db`).
   * @param options Timeouts and limits.
   * @throws {TypeError} for an empty list or a malformed address.
   */
  constructor(nodes: readonly string[], options: DqliteClusterOptions = {}) {
    if (nodes.length === 0) throw new TypeError("Invalid dqlite node list: it is empty");
    for (const node of nodes) parseAddress(node);
    this.#nodes = [...nodes];
    this.#config = resolveOptions(options);
  }

  /** The node addresses given to the constructor. */
  get nodes(): readonly string[] {
    return this.#nodes;
  }

  /** The leader found last, or null before the first discovery. */
  get lastLeader(): string | null {
    return this.#lastLeader;
  }

  /**
   * @internal For tests: how many searches for the leader {@link
   * connectLeader} (and {@link leader}, {@link members}) began, and how many
   * times a node was asked who leads over a TCP connection opened for it
   * (by those searches, and by each caller's own connection to the leader
   * found; the leader watch's questions are not counted).
   */
  get searchStats(): { searches: number; asks: number } {
    return { searches: this.#searchCount, asks: this.#askCount };
  }

  /**
   * Connects to the leader and registers as a client (see the class doc:
   * finding the leader). Concurrent calls share one search for the leader;
   * each gets a connection of its own, and `NO_LEADER` at its own
   * `leaderTimeout`. The connection is watched while it is open (see the
   * class doc: watching the leader).
   *
   * @throws {LeaderError} `NO_LEADER` when no leader was found in time.
   * @throws {SqliteError} `CONNECTION_CLOSED` when {@link close} ran meanwhile.
   */
  async connectLeader(): Promise<DqliteConn> {
    const conn = await this.#connectLeader();
    this.#leaderConns.add(conn);
    conn.whenClosed(() => {
      this.#leaderConns.delete(conn);
      if (this.#leaderConns.size === 0) this.#stopWatch();
    });
    if (!conn.closed) this.#startWatch();
    return conn;
  }

  /**
   * Finds the leader for one caller, within `leaderTimeout` of the call.
   *
   * Callers share the search: one under way is joined (its deadline pushed
   * back to the caller's own), and only when none is under way does a
   * caller begin one. Each caller waits for it within its own deadline (one
   * whose deadline comes first meets `NO_LEADER` with what the nodes said
   * so far, and the search goes on for the others; a caller that stops
   * waiting for another reason, as a request's deadline or cancel above,
   * leaves it running for the others too). A search that found the leader
   * hands its connection, registered, to the first caller; every other
   * caller opens its own to that node and registers there (connect, ask who
   * leads, CLIENT: no other node is asked). So with 64 requests waiting
   * through an election, the nodes are asked who leads as by one request,
   * plus one connection per request, instead of 64 searches each asking
   * every node again and again.
   *
   * A caller joins a search under way whenever it began, even one that
   * began before the caller lost its own connection to the leader: a lost
   * connection is no evidence against its node (a stopped request closes
   * its connection too), so a caller brings no suspicion of its own, and
   * the suspicion that counts is the cluster's: nodes that did not answer a
   * question ({@link #suspects}) and leaders the watch left ({@link
   * #deposed}). A search cannot return a node dead before it asked it (the
   * node must answer that it leads), but the node may be lost between its
   * answer and a caller's use of it: so a leader found by a search that
   * began before its node came under suspicion is not trusted (its
   * connection, if the caller got it, is closed), and each caller's own
   * connection asks the node who leads again (a dead node refuses it at
   * once, a hung one does not answer within `connectTimeout`). Either way
   * the caller then searches again, in a search that begins after that
   * failure (the one that found the node is over), with the node asked last.
   */
  async #connectLeader(): Promise<DqliteConn> {
    const deadline = performance.now() + this.#config.leaderTimeout;
    const closing = this.#closing.signal;
    for (;;) {
      const search = this.#join(deadline);
      const found = await this.#wait(search, deadline);
      /** The leader found, when the caller could not use it: what came of it. */
      let own: { address: string; outcome: string; error?: unknown } | null = null;
      if (found !== null && found.conn !== null) {
        const leader = found.conn.address;
        let conn = search.taken ? null : found.conn;
        search.taken = true;
        const lastDoubt = Math.max(
          this.#suspects.get(leader) ?? -1,
          this.#deposed.get(leader) ?? -1,
        );
        if (lastDoubt > search.started || conn?.closed) {
          conn?.close();
          conn = null;
        }
        if (lastDoubt > search.started) {
          own = { address: leader, outcome: "led, but stopped answering or leading since" };
        } else if (conn === null && !closing.aborted) {
          const answer = await this.#ask(leader, deadline, closing, true);
          conn = answer.conn;
          own = { address: leader, outcome: nodeOutcome(answer), error: answer.error };
        }
        if (conn !== null) {
          this.#lastLeader = leader;
          return conn;
        }
        if (!closing.aborted && performance.now() < deadline) continue; // search again
      }
      let { error, outcomes, running } = found ?? search.progress;
      if (own !== null) { // (the search's own maps are shared with its other callers)
        outcomes = new Map(outcomes).set(own.address, own.outcome);
        if (own.error !== undefined) error = own.error;
      }
      this.#lastLeader = null;
      if (closing.aborted) {
        throw error instanceof SqliteError && error.code === ErrorCode.ConnectionClosed
          ? error
          : new SqliteError(
            ErrorCode.ConnectionClosed,
            "The dqlite cluster was closed while looking for the leader",
          );
      }
      if (error instanceof SqliteError && error.code === ErrorCode.ConnectionClosed) throw error;
      const said = new Map(outcomes);
      for (const a of running) {
        if (!said.has(a)) said.set(a, "had not answered when leaderTimeout ran out");
      }
      const nodes = [...new Set([...this.#nodes, ...said.keys()])];
      throw new LeaderError(
        DqliteErrorCode.NoLeader,
        `No dqlite leader found among ${nodes.map((n) => `"${n}"`).join(", ")} within ` +
          `leaderTimeout ${this.#config.leaderTimeout} ms (dqlite.leaderTimeout): ` +
          nodes.map((n) => `"${n}" ${said.get(n) ?? "was not asked in time"}`).join("; "),
        false,
        undefined,
        error === undefined ? undefined : { cause: error },
      );
    }
  }

  /**
   * The search for the leader under way, its deadline pushed back to
   * `deadline` when that is later; or a new one, when none is under way.
   */
  #join(deadline: number): SharedSearch {
    const current = this.#shared;
    if (current !== null && !current.ended()) {
      current.deadline.at = Math.max(current.deadline.at, deadline);
      return current;
    }
    this.#searchCount++;
    const started = performance.now();
    const limit: Deadline = { at: deadline };
    const { progress, done, ended } = this.#begin(this.#order(), limit, {
      again: true,
      register: true,
    });
    const search: SharedSearch = {
      started,
      deadline: limit,
      ended,
      progress,
      done,
      waiters: 0,
      taken: false,
    };
    this.#shared = search;
    done.then((found) => {
      if (this.#shared === search) this.#shared = null;
      // Every caller left before it found the leader: nobody takes the connection.
      if (search.waiters === 0) found.conn?.close();
    });
    return search;
  }

  /**
   * How `search` ended, or null when `deadline` came first (the search goes
   * on for the other callers).
   */
  #wait(search: SharedSearch, deadline: number): Promise<Found | null> {
    search.waiters++;
    return new Promise((resolve) => {
      let left = false;
      const leave = (found: Found | null): void => {
        if (left) return;
        left = true;
        clearTimeout(timer);
        search.waiters--;
        resolve(found);
      };
      const timer = setTimeout(() => leave(null), Math.max(0, deadline - performance.now()));
      search.done.then(leave);
    });
  }

  /**
   * The nodes in the order a search asks them: the leader found last, the
   * others as listed, then those that did not answer (longest silent first).
   */
  #order(): string[] {
    const lead = this.#lastLeader;
    const known = lead !== null && !this.#nodes.includes(lead)
      ? [lead, ...this.#nodes]
      : [...this.#nodes];
    const fresh = known.filter((n) => !this.#suspects.has(n));
    if (lead !== null && fresh.includes(lead)) {
      fresh.unshift(...fresh.splice(fresh.indexOf(lead), 1));
    }
    const silent = [...this.#suspects].filter(([a]) => known.includes(a))
      .sort((a, b) => a[1] - b[1]).map(([a]) => a);
    return [...fresh, ...silent];
  }

  /**
   * Asks nodes who leads (`order` first; see the class doc), until one says
   * it leads (its connection is returned) or `deadline`. Without
   * `options.again`, each node is asked once, and the search ends when all
   * answered.
   */
  #search(order: readonly string[], deadline: number, options: SearchOptions): Promise<Found> {
    return this.#begin(order, { at: deadline }, options).done;
  }

  /**
   * {@link #search}, its `progress` readable while it runs; `deadline.at`
   * may be pushed back meanwhile. `ended()` turns true as it ends (before
   * `done` settles): a deadline already past ends it before this returns.
   */
  #begin(
    order: readonly string[],
    deadline: Deadline,
    options: SearchOptions,
  ): { progress: Found; done: Promise<Found>; ended: () => boolean } {
    const progress: Found = {
      conn: null,
      error: undefined,
      said: new Set(),
      outcomes: new Map(),
      running: new Set(),
    };
    let over = false;
    const done = new Promise<Found>((resolve) => {
      const stop = new AbortController(); // ends the questions under way once the search is over
      const closing = this.#closing.signal;
      const { said, outcomes, running } = progress;
      const queue = order.filter((a) => a !== options.exclude);
      const retries = new Map<string, ReturnType<typeof setTimeout>>();
      const tries = new Map<string, number>();
      let hedge: ReturnType<typeof setTimeout> | undefined;
      let limit: ReturnType<typeof setTimeout> | undefined;
      const end = (conn: DqliteConn | null): void => {
        if (over) return;
        over = true;
        clearTimeout(hedge);
        clearTimeout(limit);
        for (const t of retries.values()) clearTimeout(t);
        closing.removeEventListener("abort", closed);
        options.signal?.removeEventListener("abort", closed);
        stop.abort();
        for (const a of running) {
          if (!outcomes.has(a)) outcomes.set(a, "had not answered when leaderTimeout ran out");
        }
        progress.conn = conn;
        resolve({ ...progress, running: new Set() });
      };
      const closed = (): void => {
        progress.error = new SqliteError(
          ErrorCode.ConnectionClosed,
          "The dqlite cluster was closed while looking for the leader",
        );
        end(null);
      };
      // Runs out at deadline.at, as pushed back meanwhile.
      const arm = (): void => {
        const left = deadline.at - performance.now();
        limit = left > 0 ? setTimeout(arm, left) : undefined;
        if (left <= 0) end(null);
      };
      // (Listening first: a deadline already past ends the search at once, removing them.)
      closing.addEventListener("abort", closed);
      options.signal?.addEventListener("abort", closed);
      arm();
      const ask = (address: string): void => {
        if (over || running.has(address) || address === options.exclude) return;
        clearTimeout(retries.get(address));
        retries.delete(address);
        running.add(address);
        this.#ask(address, deadline.at, stop.signal, options.register).then((answer) => {
          running.delete(address);
          if (over) {
            answer.conn?.close();
            return;
          }
          if (answer.conn !== null) return end(answer.conn);
          if (answer.error !== undefined) progress.error = answer.error;
          outcomes.set(address, nodeOutcome(answer));
          if (answer.said !== null) said.add(answer.said);
          if (answer.said) ask(answer.said); // the leader it names, at once
          askNext(); // and the next node not asked yet
          if (options.again) {
            const n = (tries.get(address) ?? 0) + 1;
            tries.set(address, n);
            retries.set(address, setTimeout(() => ask(address), Math.min(50 * n, 250)));
          } else if (running.size === 0 && queue.length === 0) {
            end(null);
          }
        });
      };
      const askNext = (): void => {
        clearTimeout(hedge);
        while (queue.length > 0 && !over) {
          const address = queue.shift()!;
          if (running.has(address) || tries.has(address)) continue;
          ask(address);
          if (queue.length > 0) hedge = setTimeout(askNext, HEDGE_MS);
          return;
        }
      };
      if (closing.aborted || options.signal?.aborted) return closed();
      askNext();
      if (running.size === 0) end(null); // nothing to ask
    });
    return { progress, done, ended: () => over };
  }

  /**
   * Asks node `address` who leads, within `connectTimeout` and `deadline`;
   * `signal` ends the question. A node that does not answer is suspect
   * (asked last) until it answers.
   */
  async #ask(
    address: string,
    deadline: number,
    signal: AbortSignal,
    register: boolean,
  ): Promise<Answer> {
    const bound = Math.min(this.#config.connectTimeout, deadline - performance.now());
    if (bound <= 0) return { conn: null, said: null };
    if (register) this.#askCount++;
    const stop = new AbortController();
    let conn: DqliteConn | null = null;
    const abort = (): void => {
      stop.abort();
      conn?.close();
    };
    const timer = setTimeout(abort, bound);
    signal.addEventListener("abort", abort);
    try {
      if (signal.aborted) abort();
      conn = await DqliteConn.connect(
        address,
        { ...this.#config, connectTimeout: bound },
        stop.signal,
      );
      if (stop.signal.aborted) conn.close();
      const answer = expectResponse(await conn.call(encodeLeader(), bound), "server", address);
      this.#suspects.delete(address);
      if (answer.address !== address) {
        conn.close();
        return { conn: null, said: answer.address };
      }
      if (register) {
        expectResponse(await conn.call(encodeClient(++this.#clientId), bound), "welcome", address);
      }
      return { conn, said: address };
    } catch (err) {
      conn?.close();
      if (signal.aborted) return { conn: null, said: null };
      const silent = stop.signal.aborted;
      this.#suspects.set(address, performance.now());
      const error = silent
        ? new LeaderError(
          DqliteErrorCode.LeaderLost,
          `dqlite node "${address}" did not answer within ${Math.round(bound)} ms`,
          false,
          undefined,
          { cause: err },
        )
        : err;
      return { conn: null, said: null, error };
    } finally {
      clearTimeout(timer);
      signal.removeEventListener("abort", abort);
    }
  }

  #startWatch(): void {
    if (this.#watchStop !== null) return;
    const stop = this.#watchStop = new AbortController();
    this.#watch(stop.signal).catch(() => {}).finally(() => {
      if (this.#watchStop === stop) this.#watchStop = null;
    });
  }

  #stopWatch(): void {
    this.#watchStop?.abort();
    this.#watchStop = null;
  }

  /** The node most open leader connections point at, or null when there is none. */
  #watched(): string | null {
    const count = new Map<string, number>();
    let best: string | null = null;
    for (const conn of this.#leaderConns) {
      if (conn.closed) continue;
      const n = (count.get(conn.address) ?? 0) + 1;
      count.set(conn.address, n);
      if (best === null || n > count.get(best)!) best = conn.address;
    }
    return best;
  }

  /** True while an open leader connection points at `address`. */
  #watching(address: string): boolean {
    for (const conn of this.#leaderConns) if (!conn.closed && conn.address === address) return true;
    return false;
  }

  /** The leader watch (see the class doc), until `signal` aborts. */
  async #watch(signal: AbortSignal): Promise<void> {
    const beat: { conn: DqliteConn | null } = { conn: null }; // the watch's own connection
    const closeBeat = (): void => beat.conn?.close();
    signal.addEventListener("abort", closeBeat);
    try {
      while (!signal.aborted) {
        await sleep(HEARTBEAT_MS, signal);
        const leader = this.#watched();
        if (signal.aborted || leader === null) return;
        const asked = performance.now();
        let answer: string | null = null;
        const beating = this.#beat(beat, leader, signal).then((a) => answer = a);
        beating.catch(() => {}); // (a node that fails to answer is as one that is silent)
        await Promise.race([beating.catch(() => {}), sleep(SILENT_MS, signal)]);
        if (signal.aborted) return;
        if (answer !== null) {
          // It answers: when it says it does not lead, its idle connections are no use.
          if (answer !== leader) this.#depose(leader, answer, false);
          continue;
        }
        await this.#suspect(leader, asked, () => answer !== null, beat, signal);
      }
    } finally {
      signal.removeEventListener("abort", closeBeat);
      closeBeat();
    }
  }

  /**
   * `leader` left the watch's question (asked at `asked`) unanswered: asks
   * the other nodes who leads, again and again while it stays silent
   * (`answered` turns true when it answers) and connections to it are open.
   * Another node leads: `leader` is deposed. None, and the others answer
   * without naming `leader` (they hold an election they cannot win) until
   * `leaderTimeout` passed: it is deposed too (requests then meet
   * `NO_LEADER`). While another node still names it, it is left alone:
   * busy, or cut off from this server alone. Its searches are its own, not
   * shared with {@link connectLeader}'s (see {@link #connectLeader}): they
   * leave `leader` out, and register no client.
   */
  async #suspect(
    leader: string,
    asked: number,
    answered: () => boolean,
    beat: { conn: DqliteConn | null },
    signal: AbortSignal,
  ): Promise<void> {
    for (let i = 0; !signal.aborted && !answered() && this.#watching(leader); i++) {
      const { conn, said } = await this.#search(
        this.#order(),
        performance.now() + this.#config.connectTimeout,
        { exclude: leader, again: false, register: false, signal },
      );
      conn?.close();
      if (signal.aborted || answered()) return;
      const silentMs = performance.now() - asked;
      if (
        conn !== null ||
        (silentMs >= this.#config.leaderTimeout && said.size > 0 && !said.has(leader))
      ) {
        beat.conn?.close();
        this.#depose(leader, conn?.address ?? "", true, silentMs);
        return;
      }
      await sleep(Math.min(250 * (i + 1), 500), signal);
    }
  }

  /**
   * Asks `leader` who leads over the watch's own connection `beat` (made
   * anew when it is closed or to another node), within `requestTimeout`.
   */
  async #beat(
    beat: { conn: DqliteConn | null },
    leader: string,
    signal: AbortSignal,
  ): Promise<string> {
    let conn = beat.conn;
    if (conn === null || conn.closed || conn.address !== leader) {
      conn?.close();
      beat.conn = null;
      conn = await DqliteConn.connect(leader, this.#config, signal);
      if (signal.aborted) conn.close();
      beat.conn = conn;
    }
    return expectResponse(await conn.call(encodeLeader()), "server", leader).address;
  }

  /**
   * `address` no longer leads; `leader` does (`""`: none yet). Closes the
   * connections to `address`: all of them when it stopped answering
   * (`hung`, for `silentMs`: a request waiting there fails with
   * `LEADER_LOST`), else the idle ones (it answers the others itself).
   */
  #depose(address: string, leader: string, hung: boolean, silentMs = 0): void {
    const now = leader === "" ? "no node leads now" : `"${leader}" leads now`;
    const reason = hung
      ? `the node stopped answering (nothing for ${Math.round(silentMs)} ms) and ${now}`
      : `the node no longer leads (${now})`;
    if (hung) this.#suspects.set(address, performance.now());
    this.#deposed.set(address, performance.now());
    if (leader !== "") this.#lastLeader = leader;
    else if (this.#lastLeader === address) this.#lastLeader = null;
    for (const conn of [...this.#leaderConns]) {
      if (conn.address === address && (hung || conn.idle)) conn.abandon(reason);
    }
  }

  /**
   * The current leader's address (discovery as in {@link connectLeader}).
   *
   * @throws {LeaderError} `NO_LEADER`.
   */
  async leader(): Promise<string> {
    const conn = await this.#connectLeader();
    conn.close();
    return conn.address;
  }

  /**
   * The cluster's members as the leader knows them (id, address, role).
   *
   * @throws {LeaderError} `NO_LEADER`, or `LEADER_LOST` if the leader fails meanwhile.
   */
  async members(): Promise<NodeInfo[]> {
    const conn = await this.#connectLeader();
    try {
      return expectResponse(await conn.call(encodeCluster(1)), "servers", conn.address).nodes;
    } finally {
      conn.close();
    }
  }

  /**
   * Opens database `name` on the leader (created on first use), over a
   * connection of its own.
   *
   * @throws {LeaderError} `NO_LEADER` when no leader is found in time.
   * @throws {SqliteError} `CONNECTION_CLOSED` when {@link close} ran meanwhile.
   */
  async open(name: string): Promise<DqliteDatabase> {
    if (name === "" || name.includes("\0") || name.includes("/")) {
      throw new TypeError(`Invalid dqlite database name "${name}"`);
    }
    const db = new DqliteDatabase(
      () => this.connectLeader(),
      name,
      this.#config.busyTimeout,
      () => this.#open.delete(db),
    );
    // Registered before connecting, so that close() meanwhile closes it (its
    // connection, once made, is closed too, and open() rejects).
    this.#open.add(db);
    try {
      await db.connect();
    } catch (err) {
      db.close();
      throw err;
    }
    return db;
  }

  /**
   * Closes every database opened through this cluster and ends the searches
   * for the leader under way (they fail with `CONNECTION_CLOSED`), and the
   * leader watch. Idempotent; the cluster can be used again afterwards.
   */
  close(): void {
    for (const db of [...this.#open]) db.close();
    this.#closing.abort();
    this.#closing = new AbortController();
    this.#stopWatch();
  }
}
