/**
 * Writer arbitration (`engine/writer_queue.ts`) on its own: FIFO waiters,
 * their busy timeouts, and what an expiry leaves behind.
 */

import assert from "node:assert/strict";
import { WriterQueue } from "../engine/writer_queue.ts";

class Waiting {
  woken = 0;
  constructor(readonly id: number) {}
  wake(): void {
    this.woken++;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

Deno.test("WriterQueue: waiters take the writer first in, first out", () => {
  const q = new WriterQueue<Waiting>(1000, 0, () => {});
  const [a, b, c] = [new Waiting(1), new Waiting(2), new Waiting(3)];
  assert.equal(q.take(a, true), true);
  assert.equal(q.take(c, false), false);
  assert.equal(q.take(b, false), false);
  q.release();
  assert.equal(q.take(b, true), false, "c came first");
  q.drain(() => q.owner === null);
  assert.equal(c.woken, 1);
  assert.equal(q.take(c, true), true);
  q.release();
  assert.equal(q.take(b, true), true);
  q.release();
  q.close();
});

Deno.test("WriterQueue: a waiter past its busy timeout fails once, with BUSY_TIMEOUT naming the holder", async () => {
  const q = new WriterQueue<Waiting>(10, 0, () => {});
  const [a, b] = [new Waiting(1), new Waiting(2)];
  q.take(a, true);
  assert.equal(q.take(b, false), false);
  // Past the 10 ms busy timeout (its timer gives a grace when it fires late, on a loaded machine).
  for (const end = performance.now() + 5_000; b.woken === 0 && performance.now() < end;) {
    await delay(10);
  }
  assert.equal(b.woken, 1, "woken at its deadline");
  assert.throws(() => q.take(b, false), { code: "BUSY_TIMEOUT", message: /held by session 1/ });
  // Its next request waits afresh.
  assert.equal(q.take(b, false), false);
  q.close();
});

Deno.test("WriterQueue: a waiter that expired but found the writer free keeps no stale expiry", async () => {
  const q = new WriterQueue<Waiting>(10, 0, () => {});
  const [a, b] = [new Waiting(1), new Waiting(2)];
  q.take(a, true);
  assert.equal(q.take(b, false), false);
  // Past the 10 ms busy timeout (its timer gives a grace when it fires late, on a loaded machine).
  for (const end = performance.now() + 5_000; b.woken === 0 && performance.now() < end;) {
    await delay(10);
  }
  assert.equal(b.woken, 1);
  // The holder finished just as b's deadline passed: b, woken, finds the writer free.
  q.release();
  assert.equal(q.take(b, true), true);
  q.release();
  // Later, b waits behind a again: that is a new wait, not an instant timeout.
  q.take(a, true);
  assert.equal(q.take(b, false), false);
  q.release();
  q.close();
});
