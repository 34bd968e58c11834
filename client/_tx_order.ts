/**
 * The order of the transactions open on one connection and of the calls
 * made beside them. Savepoints nest as a stack, so a nested transaction
 * begins only inside the innermost one open (two open side by side would
 * release or undo each other's work), and a statement runs only at the
 * innermost level: sent at an outer level while a transaction that another
 * branch of the outer function started is open, it would run inside that
 * one's savepoint, and that one's `ROLLBACK TO` would undo it after it was
 * acknowledged. Which level a caller is in is told by its async context
 * ({@link transactionContext}): a call made from inside a transaction's
 * function (followed across awaits and the timers it starts) is part of
 * that transaction.
 *
 * Used by `transaction()` and its `tx`, by plain calls that join a
 * transaction (`max: 1`, see `Pool.shared`), and by the Drizzle adapter,
 * whose transactions and savepoints are levels of the same stack.
 *
 * @module
 */

import { AsyncLocalStorage } from "node:async_hooks";
import type { PooledConnection } from "./connection.ts";
import { ErrorCode, SqliteError } from "../protocol/errors.ts";

/** A `transaction()` whose function may be running: its connection, until it settles. */
export interface TransactionScope {
  /** The transaction's connection. */
  readonly conn: PooledConnection;
  /** False once the function settled (a timer it left behind is outside it). */
  active: boolean;
  /** The transaction it is nested in (in whose function it was started), if any. */
  readonly parent: TransactionScope | undefined;
  /**
   * True once its function settled while it still ends on the connection
   * (its `RELEASE`, or its undo, in flight): see {@link nestedSettled}.
   */
  settling?: boolean;
}

/**
 * The `transaction()` whose function makes the current call, followed across awaits. Left out of
 * the npm package's type declarations (its type is node:async_hooks').
 * @internal
 */
export const transactionContext: AsyncLocalStorage<TransactionScope> = new AsyncLocalStorage();

/**
 * The transactions open on a connection, innermost last; the nested ones
 * waiting for their turn (see {@link takeTurn}); and who waits for one to end.
 * @internal
 */
export interface OpenTransactions {
  stack: TransactionScope[];
  waiting: Set<TransactionScope>;
  ended: (() => void)[];
}

const openOn = new WeakMap<PooledConnection, OpenTransactions>();

/**
 * The transactions open on `conn`, if any was ever opened there.
 * @internal
 */
export function openTransactions(conn: PooledConnection): OpenTransactions | undefined {
  return openOn.get(conn);
}

/**
 * The open transaction on `conn` whose function (or a transaction nested in
 * it, or a call it started) is the caller, if any.
 * @internal
 */
export function callerScope(conn: PooledConnection): TransactionScope | undefined {
  let s = transactionContext.getStore();
  while (s !== undefined && !(s.active && s.conn === conn)) s = s.parent;
  return s;
}

/**
 * Waits until the new transaction `scope` nests in the innermost one open
 * on `conn` (or none is open), and pushes it there. Two nested transactions
 * started side by side (`Promise.all([tx.transaction(a),
 * tx.transaction(b)])`) would release or undo each other's savepoint, so
 * the second waits for the first to end. It nests at once when started
 * through the innermost transaction's own `tx` (`parent`), or from inside
 * that transaction's function (followed across awaits: an outer `tx` used
 * from there). Resolves to `null`, pushing nothing, when `scope` ended
 * meanwhile (the transaction it was to nest in settled: see
 * {@link abandonNested}). Take it out with {@link leaveTurn}.
 * @internal
 */
export async function takeTurn(
  conn: PooledConnection,
  scope: TransactionScope,
  parent: TransactionScope | undefined,
): Promise<OpenTransactions | null> {
  let open = openOn.get(conn);
  if (open === undefined) openOn.set(conn, open = { stack: [], waiting: new Set(), ended: [] });
  for (;;) {
    if (!scope.active) return null;
    const innermost = open.stack.at(-1);
    if (innermost === undefined || innermost === parent || innermost === callerScope(conn)) {
      open.stack.push(scope); // at once: a sibling started in the same tick must wait
      return open;
    }
    open.waiting.add(scope);
    try {
      await new Promise<void>((resolve) => open.ended.push(resolve));
    } finally {
      open.waiting.delete(scope);
    }
  }
}

/**
 * Takes `scope` off the stack once its transaction has ended on the
 * connection (gone already when the transaction it nested in ended first),
 * and wakes whoever waits for a turn.
 * @internal
 */
export function leaveTurn(open: OpenTransactions, scope: TransactionScope): void {
  const at = open.stack.indexOf(scope);
  if (at !== -1) open.stack.splice(at, 1);
  for (const wake of open.ended.splice(0)) wake();
}

/**
 * When a transaction's `fn` settles (`scope`, on `open.stack`), before
 * {@link abandonNested}: waits until no transaction nested in it is
 * settling (its `fn` settled, its `RELEASE` or undo still in flight; see
 * {@link TransactionScope.settling}). Until that ends, whether it leaves
 * work this transaction must not commit is unknown (an undo that fails
 * poisons this one: see `client/_tx_undo.ts`), and it must stay on the
 * stack, where it finds the level it nests in. Its requests were sent
 * before any this transaction sends next, so nothing waits on this one.
 * `null`, without waiting, when none is settling.
 * @internal
 */
export function nestedSettled(
  open: OpenTransactions,
  scope: TransactionScope,
): Promise<void> | null {
  const settling = (): boolean => {
    const at = open.stack.indexOf(scope);
    return at !== -1 && open.stack.slice(at + 1).some((s) => s.settling === true);
  };
  if (!settling()) return null; // at once, in the same run of code as fn settled
  return (async () => {
    while (settling()) await new Promise<void>((resolve) => open.ended.push(resolve));
  })();
}

/**
 * When a transaction's `fn` settles (`scope`, on `open.stack`): ends the
 * transactions nested in it whose `fn` is still running, or that wait for
 * their turn (a `tx.transaction()` left un-awaited). They cannot be kept:
 * their savepoints nest in this transaction's, which ends now, and their
 * later statements would run after it, in autocommit or inside another
 * caller's transaction on the connection. Their calls are refused from now
 * on (`TX_ENDED`), they send nothing more, and the connection forgets them.
 * Returns whether one was still running or waiting: then this transaction
 * must not commit, since that `fn` could still throw.
 * @internal
 */
export function abandonNested(open: OpenTransactions, scope: TransactionScope): boolean {
  let running = false;
  const at = open.stack.indexOf(scope);
  if (at !== -1) {
    for (const nested of open.stack.splice(at + 1)) {
      if (nested.active) running = true;
      nested.active = false;
    }
  }
  for (const waiting of open.waiting) {
    for (let s = waiting.parent; s !== undefined; s = s.parent) {
      if (s !== scope) continue;
      running = true;
      waiting.active = false;
      break;
    }
  }
  return running;
}

/**
 * True when a statement sent at `level` by `caller` may run on the
 * connection now: no transaction is open there, or the innermost one is
 * `level` itself (the statement went through its own `tx`), or the caller's
 * (it is made from inside that transaction's function).
 */
function mayRun(
  open: OpenTransactions,
  level: TransactionScope | undefined,
  caller: TransactionScope | undefined,
): boolean {
  const innermost = open.stack.at(-1);
  return innermost === undefined || innermost === level || innermost === caller;
}

/**
 * For a statement about to be sent on `conn` at `level` (`undefined`: at
 * whatever level the caller is in): `null` when it may run now (see
 * {@link mayRun}); else a promise that settles once it may, or once
 * `alive()` turns false. The caller's level is taken now, from its async
 * context.
 * @internal
 */
export function turnOf(
  conn: PooledConnection,
  level: TransactionScope | undefined,
  alive: () => boolean = () => true,
): Promise<void> | null {
  const open = openOn.get(conn);
  if (open === undefined) return null;
  const caller = callerScope(conn);
  if (mayRun(open, level, caller)) return null;
  return (async () => {
    const idle = idleLease(conn);
    try {
      while (alive() && !mayRun(open, level, caller)) {
        await new Promise<void>((resolve) => {
          open.ended.push(resolve);
          idle.wake = resolve;
        });
        if (idle.failure !== null) throw idle.failure;
      }
    } finally {
      idle.stop();
    }
  })();
}

/** What {@link idleLease} tells a waiting statement. */
interface IdleLease {
  /** Set when the lease ran out (then {@link wake} was called). */
  failure: Error | null;
  /** Wakes the waiting statement (set by it each time it waits). */
  wake: () => void;
  stop: () => void;
}

/**
 * Watches, while a statement waits for its turn ({@link turnOf}), whether
 * the connection sends nothing for longer than the server's idle lease
 * (`txIdleTimeout`): the server has then rolled the transaction back, and
 * the wait would never end by itself (a nested transaction's function that
 * awaits the waiting statement: each waits for the other). It then sets
 * `failure` (`TX_TIMEOUT`) and wakes the statement; never while the
 * connection works.
 */
function idleLease(conn: PooledConnection): IdleLease {
  const state: IdleLease = { failure: null, wake: () => {}, stop: () => {} };
  const lease = conn.txIdleTimeout;
  if (lease <= 0) return state;
  let sent = conn.sent;
  let since = performance.now();
  const timer = setInterval(() => {
    if (conn.sent !== sent || conn.busy > 0) {
      sent = conn.sent;
      since = performance.now();
      return;
    }
    const idle = performance.now() - since;
    // A margin past the lease: the server's timer has fired by then.
    if (idle < lease + 100) return;
    clearInterval(timer);
    state.failure = new SqliteError(
      ErrorCode.TxTimeout,
      `Transaction timed out: this statement waited ${Math.round(idle)} ms for a transaction ` +
        "nested beside it, while the connection sent nothing, longer than the server's " +
        `--tx-idle-timeout (${lease} ms), which has rolled the transaction back. A nested ` +
        "transaction's function that awaits a statement made at the level it nests in waits " +
        "for it forever: await it outside the nested transaction",
    );
    state.wake();
  }, Math.max(10, Math.min(1000, lease / 4)));
  state.stop = () => clearInterval(timer);
  return state;
}
