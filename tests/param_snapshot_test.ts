/**
 * Statement parameters are read once, at the call: the values checked are
 * the values sent, on every call that takes parameters (plain calls,
 * `iterate`, `batch` items, prepared statements; on the pool, in a
 * transaction, on a reserved connection, and for a call that waits for a
 * connection). A `Uint8Array` whose bytes are gone (its `ArrayBuffer`
 * detached, or a view out of bounds of a resizable buffer that shrank) is
 * refused with `INVALID_PARAM` naming the parameter, like any other value
 * that cannot be stored.
 */

import assert from "node:assert/strict";
import type { Client, Queryable } from "../client.ts";
import type { BindParams } from "../client/_calls.ts";
import { startServer } from "./_helpers.ts";

type Row = Record<string, unknown> | undefined;
/** One way to send `SELECT <cols>` with `params`; resolves with its first row ({v, t}). */
type Surface = [name: string, send: (cols: string, params: unknown) => Promise<Row>];

/** Every call that takes parameters, on `q`. */
function surfaces(q: Queryable): Surface[] {
  const p = (params: unknown) => params as BindParams;
  const first = async (rows: AsyncIterable<unknown>): Promise<Row> => {
    for await (const row of rows) return row as Row;
    return undefined;
  };
  const last = () => q.get("SELECT v, t FROM log ORDER BY rowid DESC LIMIT 1");
  const prepared = async <T>(
    sql: string,
    use: (st: Awaited<ReturnType<Queryable["prepare"]>>) => Promise<T>,
  ) => {
    const st = await q.prepare(sql);
    try {
      return await use(st);
    } finally {
      await st.finalize();
    }
  };
  return [
    ["query", async (c, ps) => (await q.query(`SELECT ${c}`, p(ps)))[0]],
    ["get", (c, ps) => q.get(`SELECT ${c}`, p(ps))],
    ["values", async (c, ps) => {
      const [[v, t]] = await q.values(`SELECT ${c}`, p(ps));
      return { v, t };
    }],
    ["iterate", (c, ps) => first(q.iterate(`SELECT ${c}`, p(ps)))],
    ["run", async (c, ps) => {
      await q.run(`INSERT INTO log(v, t) SELECT ${c}`, p(ps));
      return await last();
    }],
    ["batch", async (c, ps) => (await q.batch([{ sql: `SELECT ${c}`, params: p(ps) }]))[0].rows[0]],
    ["statement all", (c, ps) => prepared(`SELECT ${c}`, async (st) => (await st.all(p(ps)))[0])],
    ["statement get", (c, ps) => prepared(`SELECT ${c}`, (st) => st.get(p(ps)))],
    ["statement values", (c, ps) =>
      prepared(`SELECT ${c}`, async (st) => {
        const [[v, t]] = await st.values(p(ps));
        return { v, t };
      })],
    ["statement iterate", (c, ps) => prepared(`SELECT ${c}`, (st) => first(st.iterate(p(ps))))],
    ["statement run", (c, ps) =>
      prepared(`INSERT INTO log(v, t) SELECT ${c}`, async (st) => {
        await st.run(p(ps));
        return await last();
      })],
  ];
}

/** Runs `fn` on the client, in a transaction, and on a reserved connection. */
async function inScopes(db: Client, fn: (scope: string, q: Queryable) => Promise<void>) {
  await fn("client", db);
  await db.transaction((tx) => fn("transaction", tx));
  const r = await db.reserve();
  try {
    await fn("reserved", r);
  } finally {
    r.release();
  }
}

/** A server, a client of one connection and a table `log(v, t)`. */
async function open() {
  const srv = await startServer({ logLevel: "error" });
  const db = await srv.client();
  await db.exec("CREATE TABLE log (v, t)");
  return {
    db,
    async [Symbol.asyncDispose]() {
      await db.close();
      await srv[Symbol.asyncDispose]();
    },
  };
}

/** A property getter that returns `values` in turn (the last one after), counting reads. */
function turns(...values: unknown[]): { get: () => unknown; reads: () => number } {
  let n = 0;
  return { get: () => values[Math.min(n++, values.length - 1)], reads: () => n };
}

/** `[x]` whose element 0 is `getter`. */
function arrayWith(get: () => unknown): unknown[] {
  const a: unknown[] = [];
  Object.defineProperty(a, 0, { get, enumerable: true, configurable: true });
  return a;
}

/** `{ x }` whose property `x` is `getter`. */
function objectWith(get: () => unknown): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  Object.defineProperty(o, "x", { get, enumerable: true, configurable: true });
  return o;
}

function detached(): Uint8Array {
  const u = new Uint8Array([1, 2, 3]);
  structuredClone(u.buffer, { transfer: [u.buffer] });
  return u;
}

function transferred(): Uint8Array {
  const u = new Uint8Array([1, 2, 3]);
  u.buffer.transfer();
  return u;
}

/** A fixed-length view of a resizable buffer that shrank below it. */
function outOfBounds(): Uint8Array {
  const b = new ArrayBuffer(4, { maxByteLength: 8 });
  const u = new Uint8Array(b, 0, 4);
  b.resize(2);
  return u;
}

/** A length-tracking view whose offset is past the end of its shrunk buffer. */
function trackingOutOfBounds(): Uint8Array {
  const b = new ArrayBuffer(8, { maxByteLength: 8 });
  const u = new Uint8Array(b, 4);
  b.resize(2);
  return u;
}

const POSITIONAL = "?1 AS v, typeof(?1) AS t";
const NAMED = ":x AS v, typeof(:x) AS t";

/** The check for an INVALID_PARAM refusal of `label`, for `reason`. */
function refused(label: string, reason: RegExp, batch: boolean) {
  return (e: Error & { code?: string }) => {
    assert.equal(e.code, "INVALID_PARAM", e.message);
    assert.match(
      e.message,
      new RegExp(`^${batch ? "Batch statement 1: " : ""}Cannot bind parameter ${label}: `),
    );
    assert.match(e.message, reason);
    return true;
  };
}

Deno.test("a getter read once: the value checked is the value sent, on every call and scope", async () => {
  await using t = await open();
  await inScopes(t.db, async (scope, q) => {
    for (const [name, send] of surfaces(q)) {
      const where = `${scope} ${name}`;
      // Valid when read first, undefined after: 1 is sent.
      let g = turns(1, undefined);
      assert.deepEqual(await send(POSITIONAL, arrayWith(g.get)), { v: 1, t: "integer" }, where);
      assert.equal(g.reads(), 1, `${where}: read once`);
      g = turns("a", undefined);
      assert.deepEqual(await send(NAMED, objectWith(g.get)), { v: "a", t: "text" }, where);
      assert.equal(g.reads(), 1, `${where}: named, read once`);
      // Undefined when read first: refused, even though it is valid after.
      g = turns(undefined, 1);
      await assert.rejects(
        () => send(POSITIONAL, arrayWith(g.get)),
        refused("1", /undefined is not a value/, name === "batch"),
        where,
      );
      assert.equal(g.reads(), 1, `${where}: refused after one read`);
    }
  });
  // Two run() surfaces, two rows each, in three scopes.
  assert.deepEqual(await t.db.get("SELECT count(*) AS n FROM log"), { n: 12 });
});

Deno.test("a Uint8Array whose bytes are gone is refused with INVALID_PARAM naming it, on every call and scope", async () => {
  await using t = await open();
  const kinds: [string, () => Uint8Array, RegExp][] = [
    ["detached (structuredClone transfer)", detached, /Uint8Array's ArrayBuffer is detached/],
    ["detached (ArrayBuffer.prototype.transfer)", transferred, /ArrayBuffer is detached/],
    ["out of bounds of a resized buffer", outOfBounds, /out of bounds of its ArrayBuffer/],
    ["length-tracking, out of bounds", trackingOutOfBounds, /out of bounds of its ArrayBuffer/],
  ];
  await inScopes(t.db, async (scope, q) => {
    for (const [name, send] of surfaces(q)) {
      for (const [kind, make, reason] of kinds) {
        const where = `${scope} ${name}, ${kind}`;
        const batch = name === "batch";
        await assert.rejects(() => send(POSITIONAL, [make()]), refused("1", reason, batch), where);
        await assert.rejects(
          () => send(NAMED, { x: make() }),
          refused('"x"', reason, batch),
          where,
        );
      }
      // A getter that detaches an element already read: that element is refused.
      const u = new Uint8Array([7]);
      const later = () => {
        structuredClone(u.buffer, { transfer: [u.buffer] });
        return 2;
      };
      await assert.rejects(
        () => send("?1 AS v, typeof(?2) AS t", withGetter(u, later)),
        refused("1", /detached/, name === "batch"),
        `${scope} ${name}, detached by a later getter`,
      );
    }
  });
  // Nothing was stored; the connection carries on.
  assert.deepEqual(await t.db.get("SELECT count(*) AS n FROM log"), { n: 0 });
  assert.deepEqual(await t.db.get("SELECT 1 AS one"), { one: 1 });
});

/** `[u, <getter>]`. */
function withGetter(u: Uint8Array, get: () => unknown): unknown[] {
  const a: unknown[] = [u, 0];
  Object.defineProperty(a, 1, { get, enumerable: true, configurable: true });
  return a;
}

Deno.test("Uint8Arrays with their bytes still there are sent: empty, and views of resizable buffers", async () => {
  await using t = await open();
  const b = new ArrayBuffer(8, { maxByteLength: 16 });
  new Uint8Array(b).set([1, 2, 3, 4, 5, 6, 7, 8]);
  const tracking = new Uint8Array(b, 2);
  b.resize(4);
  assert.deepEqual(await t.db.get(`SELECT ${POSITIONAL}`, [tracking]), {
    v: new Uint8Array([3, 4]),
    t: "blob",
  });
  const emptyTracking = new Uint8Array(b, 4);
  assert.deepEqual(await t.db.get(`SELECT ${POSITIONAL}`, [emptyTracking]), {
    v: new Uint8Array(0),
    t: "blob",
  });
  assert.deepEqual(await t.db.get(`SELECT ${POSITIONAL}`, [new Uint8Array(0)]), {
    v: new Uint8Array(0),
    t: "blob",
  });
  const fixed = new Uint8Array(b, 1, 2);
  assert.deepEqual(await t.db.get(`SELECT ${POSITIONAL}`, [fixed]), {
    v: new Uint8Array([2, 3]),
    t: "blob",
  });
});

Deno.test("a call that waits for a connection sends the values read at the call, read once", async () => {
  await using t = await open();
  const db = t.db;
  const st = await db.prepare(`SELECT ${POSITIONAL}`);
  const sts = await db.prepare(`INSERT INTO log(v, t) SELECT ${POSITIONAL}`);
  // The one connection is reserved: every call below waits for it.
  const r = await db.reserve();
  const gs = Array.from({ length: 7 }, () => turns(1, undefined));
  const bytes = new Uint8Array([1, 2, 3]);
  const pending = [
    db.get(`SELECT ${POSITIONAL}`, arrayWith(gs[0].get) as never),
    db.query(`SELECT ${NAMED}`, objectWith(gs[1].get) as never).then((rows) => rows[0]),
    db.batch([{ sql: `SELECT ${POSITIONAL}`, params: arrayWith(gs[2].get) as never }]).then((
      res,
    ) => res[0].rows[0]),
    st.get(arrayWith(gs[3].get) as never),
    sts.run(arrayWith(gs[4].get) as never).then(() => undefined),
    (async () => {
      for await (const row of db.iterate(`SELECT ${POSITIONAL}`, arrayWith(gs[5].get) as never)) {
        return row;
      }
    })(),
    (async () => {
      for await (const row of st.iterate(arrayWith(gs[6].get) as never)) return row;
    })(),
    db.get(`SELECT ${POSITIONAL}`, [bytes]),
  ];
  // Settled whatever happens below (a failed assertion closes the client).
  const settled = Promise.allSettled(pending);
  try {
    // Refused at the call, without waiting for the connection.
    await assert.rejects(
      () => db.get(`SELECT ${POSITIONAL}`, [detached()]),
      refused("1", /detached/, false),
    );
    await assert.rejects(() => st.get([detached()]), refused("1", /detached/, false));
    await assert.rejects(
      () =>
        db.batch([{ sql: "SELECT 1" }, { sql: `SELECT ${POSITIONAL}`, params: [outOfBounds()] }]),
      (e: Error & { code?: string }) =>
        e.code === "INVALID_PARAM" &&
        /^Batch statement 2: Cannot bind parameter 1: /.test(e.message),
    );
    // The bytes were copied at the call: detaching them now changes nothing sent.
    bytes.buffer.transfer();
    for (const g of gs) assert.equal(g.reads(), 1);
  } finally {
    r.release();
  }
  const rows = (await settled).map((s) => s.status === "fulfilled" ? s.value : s.reason);
  const one = { v: 1, t: "integer" };
  assert.deepEqual(rows, [one, one, one, one, undefined, one, one, {
    v: new Uint8Array([1, 2, 3]),
    t: "blob",
  }]);
  for (const g of gs) assert.equal(g.reads(), 1);
  assert.deepEqual(await db.query("SELECT v, t FROM log"), [one]);
  await st.finalize();
  await sts.finalize();
});

Deno.test("iterate() does not throw for a detached Uint8Array: its first next() is refused", async () => {
  await using t = await open();
  const st = await t.db.prepare(`SELECT ${POSITIONAL}`);
  const its = [t.db.iterate(`SELECT ${POSITIONAL}`, [detached()]), st.iterate([detached()])];
  for (const it of its) await assert.rejects(() => it.next(), refused("1", /detached/, false));
  await st.finalize();
});

Deno.test("a batch item's sql and params are read once", async () => {
  await using t = await open();
  const sql = turns(`SELECT ${POSITIONAL}`, 1);
  const params = turns([1], [undefined]);
  const item = {};
  Object.defineProperty(item, "sql", { get: sql.get, enumerable: true });
  Object.defineProperty(item, "params", { get: params.get, enumerable: true });
  const [res] = await t.db.batch([item as never]);
  assert.deepEqual(res.rows, [{ v: 1, t: "integer" }]);
  assert.equal(sql.reads(), 1);
  assert.equal(params.reads(), 1);
});
