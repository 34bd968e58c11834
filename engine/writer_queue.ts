/**
 * Writer arbitration: who owns the one writer connection, who waits for it
 * (first in, first out, each with its busy-timeout deadline), and the
 * lease of an open transaction (idle time, and age when bounded). It knows
 * nothing about SQLite: the engine says when the writer is free and what an
 * expired lease means.
 *
 * A waiter whose statement deadline (its call's `timeout`, else
 * `--statement-timeout`) comes before its busy timeout stops waiting at that
 * deadline (`STATEMENT_TIMEOUT`), with a timer of its own: the statement
 * never ran.
 *
 * The busy timeout and the idle lease are limits a client has to meet: their
 * timers are {@link DeadlineTimer}s, which give a grace after the server's
 * own stall. The age limit (`--tx-timeout`) is wall-clock time since BEGIN:
 * a plain timer, enforced at once however late it fires.
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import { DeadlineTimer } from "./deadline_timer.ts";

/** A session that may wait for the writer. */
export interface Waiter {
  /** Session number, for messages to other clients. */
  readonly id: number;
  /** Called (synchronously) when the waiter should retry its request. */
  wake(): void;
}

/** Why a lease ended: the transaction sat idle too long, or lasted too long. */
export type LeaseEnd = "idle" | "age";

/** Owner, FIFO waiters and lease of the writer. */
export class WriterQueue<S extends Waiter> {
  readonly #busyTimeout: number;
  readonly #leaseMs: number;
  readonly #maxAgeMs: number;
  readonly #onLeaseExpired: (owner: S, why: LeaseEnd) => void;
  readonly #waitsForFileLock: (owner: S) => boolean | null;
  #owner: S | null = null;
  readonly #waiters: S[] = [];
  /**
   * When each waiter began waiting, in arrival order: their deadlines come
   * in the same order, so one timer, armed for the oldest, serves them all
   * (a timer per waiter cost more than the write it waited for).
   */
  readonly #waitingSince = new Map<S, number>();
  #waitTimer: DeadlineTimer | undefined;
  /** Waiters past their busy timeout, and how long they waited (ms). */
  readonly #expired = new Map<S, number>();
  /** Timers of waiters whose statement deadline comes before their busy timeout. */
  readonly #deadlines = new Map<S, ReturnType<typeof setTimeout>>();
  /** Waiters past their statement deadline, and that deadline (ms). */
  readonly #pastDeadline = new Map<S, number>();
  #idleTimer: DeadlineTimer | undefined;
  #ageTimer: ReturnType<typeof setTimeout> | undefined;
  #lastActive = 0;
  /** When the owner's transaction began (its first `keep`), 0 when none is open. */
  #txSince = 0;
  #draining = false;

  /**
   * @param busyTimeout How long a waiter may wait, in ms.
   * @param leaseMs Idle time after which an owner's transaction expires (0 = never).
   * @param onLeaseExpired Called with the owner whose lease ran out, and why.
   * @param maxAgeMs Age at which an owner's transaction expires however busy (0 = never).
   * @param waitsForFileLock Whether the owner is itself waiting for a lock on
   *   the database file that another process holds (another program writing
   *   the file): true, false, or `null` when that cannot be told though its
   *   statement is running. Asked only for the message of a waiter that
   *   waited too long.
   */
  constructor(
    busyTimeout: number,
    leaseMs: number,
    onLeaseExpired: (owner: S, why: LeaseEnd) => void,
    maxAgeMs = 0,
    waitsForFileLock: (owner: S) => boolean | null = () => false,
  ) {
    this.#busyTimeout = busyTimeout;
    this.#leaseMs = leaseMs;
    this.#maxAgeMs = maxAgeMs;
    this.#onLeaseExpired = onLeaseExpired;
    this.#waitsForFileLock = waitsForFileLock;
  }

  /** The session holding the writer, or `null`. */
  get owner(): S | null {
    return this.#owner;
  }

  /** Sessions waiting. */
  get length(): number {
    return this.#waiters.length;
  }

  /**
   * Gives `s` the writer when `free` and `s` is first in line; otherwise
   * queues `s` (once) and returns false.
   *
   * @param deadlineMs The statement's time limit: when shorter than the busy
   *   timeout, `s` waits that long at most.
   * @throws {SqliteError} `BUSY_TIMEOUT` when `s` already waited too long,
   *   `STATEMENT_TIMEOUT` when it waited past its statement's deadline.
   */
  take(s: S, free: boolean, deadlineMs = Infinity): boolean {
    if (this.#owner === s) return true;
    if (free && this.#owner === null && (this.#waiters.length === 0 || this.#waiters[0] === s)) {
      if (this.#waiters[0] === s) this.#waiters.shift();
      this.#stopWaiting(s);
      // Past its deadline but the writer is free (the holder ended as it
      // expired): it writes, and its next wait starts afresh.
      this.#expired.delete(s);
      this.#pastDeadline.delete(s);
      this.#owner = s;
      return true;
    }
    const waited = this.#expired.get(s);
    if (waited !== undefined) {
      this.#expired.delete(s);
      throw this.#timedOut(ErrorCode.BusyTimeout, waited);
    }
    const deadline = this.#pastDeadline.get(s);
    if (deadline !== undefined) {
      this.#pastDeadline.delete(s);
      throw this.#timedOut(ErrorCode.StatementTimeout, deadline);
    }
    if (!this.#waitingSince.has(s)) {
      this.#waiters.push(s);
      this.#waitingSince.set(s, performance.now());
      this.#armWaitTimer();
      if (deadlineMs < this.#busyTimeout) {
        const ms = Math.max(0, deadlineMs);
        this.#deadlines.set(s, setTimeout(() => this.#pastStatementDeadline(s, ms), ms));
      }
    }
    return false;
  }

  /** A waiter's statement deadline came before the writer did: it fails when woken. */
  #pastStatementDeadline(s: S, deadlineMs: number): void {
    this.#deadlines.delete(s);
    if (!this.#waitingSince.has(s)) return;
    this.#pastDeadline.set(s, deadlineMs);
    this.leave(s);
    s.wake();
  }

  /**
   * The error of a waiter that waited too long, naming the holder (the
   * phrase "held by session N: " is what clients look for), and when the
   * holder is itself waiting for another program's lock on the file, saying
   * so: that program, not the holder, is what to see to.
   */
  #timedOut(
    code: typeof ErrorCode.BusyTimeout | typeof ErrorCode.StatementTimeout,
    ms: number,
  ): SqliteError {
    const owner = this.#owner;
    const holder = owner === null ? "earlier writes in the queue" : `session ${owner.id}`;
    const limit = code === ErrorCode.BusyTimeout
      ? "busy timeout (--busy-timeout) exceeded"
      : "statement timeout (--statement-timeout or the call's timeout option) reached before " +
        "it could run, and nothing of it ran";
    const waited = `Write waited ${Math.round(ms)} ms for the writer, held by ${holder}: ${limit}`;
    const locked = owner === null ? false : this.#waitsForFileLock(owner);
    let rest = "; retry, or keep transactions short";
    if (locked === true) {
      rest = `; session ${owner!.id} is itself waiting for a lock on the database file that ` +
        "another process holds (a program writing the file directly, not through this " +
        "server): retry once that program ends its transaction, or close it";
    } else if (locked === null) {
      rest += ` (session ${owner!.id}'s statement is still running: it may itself be waiting ` +
        "for a lock on the database file held by another process)";
    }
    return new SqliteError(code, waited + rest);
  }

  /** Arms the one wait timer for the oldest waiter, unless it is armed. */
  #armWaitTimer(): void {
    if (this.#waitTimer !== undefined) return;
    const oldest = this.#waitingSince.values().next();
    if (oldest.done) return;
    const ms = Math.max(0, oldest.value + this.#busyTimeout - performance.now());
    this.#waitTimer = new DeadlineTimer(() => this.#expireWaiters(), ms, this.#busyTimeout);
  }

  /** Expires every waiter past its busy timeout (they fail when woken), then re-arms. */
  #expireWaiters(): void {
    this.#waitTimer = undefined;
    const now = performance.now();
    for (const [s, since] of this.#waitingSince) {
      if (since + this.#busyTimeout > now) break; // the rest arrived later
      this.#waitingSince.delete(s);
      this.#expired.set(s, this.#busyTimeout);
      this.leave(s);
      s.wake();
    }
    this.#armWaitTimer();
  }

  /** The owner keeps the writer (a transaction is open): renews its lease. */
  keep(): void {
    const now = this.#lastActive = performance.now();
    if (this.#txSince === 0) {
      this.#txSince = now;
      if (this.#maxAgeMs > 0) this.#ageTimer = setTimeout(() => this.#aged(), this.#maxAgeMs);
    }
    if (this.#idleTimer === undefined && this.#leaseMs > 0) this.#armIdle(now);
  }

  /**
   * The owner keeps the writer with no transaction open (a script goes on
   * in autocommit after its COMMIT): its lease ends.
   */
  endLease(): void {
    this.#txSince = 0;
    this.#idleTimer?.clear();
    this.#idleTimer = undefined;
    clearTimeout(this.#ageTimer);
    this.#ageTimer = undefined;
  }

  /** The owner gives the writer back (the lease ends); call {@link drain} when it is free. */
  release(): void {
    this.#owner = null;
    this.endLease();
  }

  /** Removes `s` from the queue (its request went away, or it closed). */
  leave(s: S, isFree: () => boolean = () => false): void {
    this.#stopWaiting(s);
    const i = this.#waiters.indexOf(s);
    if (i !== -1) this.#waiters.splice(i, 1);
    if (i === 0) this.drain(isFree);
  }

  /**
   * `s` no longer waits: its request was cancelled, or was answered without
   * the writer (it needs it no more). Leaves the line as {@link leave}
   * does, and drops a busy timeout (or statement deadline) that expired
   * meanwhile, which belonged to that request, not to the next one of `s`.
   */
  withdraw(s: S, isFree: () => boolean): void {
    this.#expired.delete(s);
    this.#pastDeadline.delete(s);
    this.leave(s, isFree);
  }

  /** Forgets `s` entirely (it closed). */
  forget(s: S): void {
    this.#expired.delete(s);
    this.#pastDeadline.delete(s);
    this.#stopWaiting(s);
  }

  /** Wakes waiters in order while `isFree()` says the writer is free. */
  drain(isFree: () => boolean): void {
    if (this.#draining) return;
    this.#draining = true;
    try {
      while (this.#owner === null && this.#waiters.length > 0 && isFree()) {
        const s = this.#waiters[0];
        s.wake();
        if (this.#waiters[0] === s && this.#owner === null && isFree()) {
          // It did not take the writer (its request went away): skip it.
          this.#waiters.shift();
          this.#stopWaiting(s);
        }
      }
    } finally {
      this.#draining = false;
    }
  }

  /** Stops every timer. */
  close(): void {
    this.release();
    this.#waitTimer?.clear();
    this.#waitTimer = undefined;
    this.#waitingSince.clear();
    this.#waiters.length = 0;
    for (const timer of this.#deadlines.values()) clearTimeout(timer);
    this.#deadlines.clear();
  }

  #stopWaiting(s: S): void {
    // (The busy timer stays armed: when it fires it finds the next oldest.)
    this.#waitingSince.delete(s);
    const deadline = this.#deadlines.get(s);
    if (deadline !== undefined) {
      clearTimeout(deadline);
      this.#deadlines.delete(s);
    }
  }

  /** Arms the idle lease's timer for `leaseMs` after the owner's last activity. */
  #armIdle(now: number): void {
    const ms = Math.max(0, this.#lastActive + this.#leaseMs - now);
    this.#idleTimer = new DeadlineTimer(
      () => {
        this.#idleTimer = undefined;
        const owner = this.#owner;
        if (owner === null) return;
        // The owner may have been active since: its lease may end later now.
        const now = performance.now();
        if (this.#lastActive + this.#leaseMs > now + 1) return this.#armIdle(now);
        // The age deadline may have passed too (a statement held the event loop past both): then
        // it is the age limit, which a running statement does not renew, as the idle one it does.
        const aged = this.#maxAgeMs > 0 && this.#txSince > 0 &&
          this.#txSince + this.#maxAgeMs <= now + 1;
        this.#onLeaseExpired(owner, aged ? "age" : "idle");
      },
      ms,
      this.#leaseMs,
    );
  }

  /** The owner's transaction reached `maxAgeMs`. */
  #aged(): void {
    this.#ageTimer = undefined;
    const owner = this.#owner;
    if (owner !== null && this.#txSince > 0) this.#onLeaseExpired(owner, "age");
  }
}
