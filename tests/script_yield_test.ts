/**
 * Long scripts (`exec`) and batches against a real in-process server, on raw
 * connections: other connections are served between their statements, a
 * script stops when its client is gone (not when it only half-closed), and a
 * half-closed client's autocommit writes run and are answered truthfully.
 */

import assert from "node:assert/strict";
import { Decoder, encode } from "npm:@msgpack/msgpack@^3.1.3";
import { startServer, type TestServer } from "./_helpers.ts";

const Op = { Hello: 0, Exec: 1, Query: 2, Run: 3, Batch: 4 } as const;
type Reply = [number, number, unknown];
const NODE = Deno.env.get("NETSQLITE_ENGINE") === "node";

function frame(value: unknown): Uint8Array {
  const payload = encode(value);
  const out = new Uint8Array(4 + payload.length);
  new DataView(out.buffer).setUint32(0, payload.length);
  out.set(payload, 4);
  return out;
}

/** A raw protocol connection whose replies are read as they come. */
class Raw implements AsyncDisposable {
  readonly conn: Deno.UnixConn;
  readonly #decoder = new Decoder();
  #buf = new Uint8Array(0);
  #replies: Reply[] = [];
  #wake: (() => void) | null = null;
  #eof = false;
  readonly #loop: Promise<void>;

  private constructor(conn: Deno.UnixConn) {
    this.conn = conn;
    this.#loop = this.#read();
  }

  static async open(path: string): Promise<Raw> {
    const raw = new Raw(await Deno.connect({ transport: "unix", path }));
    await raw.send([Op.Hello, 1, { version: 1 }]);
    const hello = await raw.reply();
    assert.equal(hello[1], 0, JSON.stringify(hello));
    return raw;
  }

  async #read(): Promise<void> {
    const chunk = new Uint8Array(64 * 1024);
    for (;;) {
      let n: number | null;
      try {
        n = await this.conn.read(chunk);
      } catch {
        n = null;
      }
      if (n === null) break;
      const joined = new Uint8Array(this.#buf.length + n);
      joined.set(this.#buf);
      joined.set(chunk.subarray(0, n), this.#buf.length);
      this.#buf = joined;
      for (;;) {
        if (this.#buf.length < 4) break;
        const len = new DataView(this.#buf.buffer, this.#buf.byteOffset).getUint32(0);
        if (this.#buf.length < 4 + len) break;
        this.#replies.push(this.#decoder.decode(this.#buf.subarray(4, 4 + len)) as Reply);
        this.#buf = this.#buf.slice(4 + len);
      }
      this.#wake?.();
    }
    this.#eof = true;
    this.#wake?.();
  }

  async send(...msgs: unknown[]): Promise<void> {
    const bytes = msgs.map(frame);
    for (const b of bytes) {
      for (let off = 0; off < b.length;) off += await this.conn.write(b.subarray(off));
    }
  }

  /** The next reply; throws at EOF or after `ms`. */
  async reply(ms = 30_000): Promise<Reply> {
    const until = performance.now() + ms;
    while (this.#replies.length === 0) {
      if (this.#eof) throw new Error("EOF before a reply");
      const left = until - performance.now();
      if (left <= 0) throw new Error(`no reply within ${ms} ms`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
      this.#wake = null;
    }
    return this.#replies.shift()!;
  }

  /** Replies received and not yet taken. */
  get waiting(): number {
    return this.#replies.length;
  }

  /** Every reply until EOF. */
  async rest(ms = 30_000): Promise<Reply[]> {
    const out: Reply[] = [];
    for (;;) {
      try {
        out.push(await this.reply(ms));
      } catch (err) {
        if (this.#eof) return out;
        throw err;
      }
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.conn.close();
    } catch {
      // Closed already.
    }
    await this.#loop;
  }
}

async function count(srv: TestServer, sql: string): Promise<number> {
  await using db = await srv.client();
  const [[n]] = await db.values<[number]>(sql);
  return n;
}

Deno.test({
  name: "EngineSession.exec() of a long script serves other connections between its statements",
  async fn() {
    await using srv = await startServer({ synchronous: "normal" });
    await using db = await srv.client();
    await db.exec("CREATE TABLE s (x INTEGER PRIMARY KEY)");
    // Statements that run inline (reads), enough for a second or more
    // (node:sqlite prepares a script's statements more slowly).
    const n = NODE ? 20_000 : 300_000;
    await using raw = await Raw.open(srv.connectOptions.path!);
    const script = "SELECT 1;".repeat(n) + "INSERT INTO s VALUES (1); INSERT INTO s VALUES (1)";
    await raw.send([Op.Exec, 2, script]);
    // While the script runs, another connection reads: answered first.
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(await count(srv, "SELECT count(*) FROM s"), 0);
    assert.equal(raw.waiting, 0, "the script was answered before the reader");
    const [id, status, error] = await raw.reply();
    // The last statement failed: the error names it, the statements before it ran.
    assert.equal(id, 2);
    assert.equal(status, 1, JSON.stringify(error));
    assert.match(
      (error as { message: string }).message,
      new RegExp(
        `UNIQUE constraint failed: s\\.x \\(statement ${n + 2} of the script; ` +
          `the ${n + 1} before it ran\\)`,
      ),
    );
    assert.equal(await count(srv, "SELECT count(*) FROM s"), 1);
  },
});

Deno.test({
  name:
    "EngineSession.batch() of many statements serves other connections meanwhile and stays atomic",
  async fn() {
    await using srv = await startServer({ synchronous: "normal" });
    await using db = await srv.client();
    await db.exec("CREATE TABLE s (x INTEGER PRIMARY KEY)");
    await db.exec(
      "CREATE TABLE w AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c " +
        "WHERE x < 1000) SELECT x FROM c",
    );
    // Statements that run inline (the same text, known fast), tens of µs
    // each: seconds together.
    const n = 120_000;
    const insert = "INSERT INTO s SELECT ? FROM w LIMIT 1 OFFSET 999";
    const items = (first: number): unknown[][] =>
      Array.from({ length: n }, (_, i) => [insert, [first + i]]);
    await using raw = await Raw.open(srv.connectOptions.path!);
    for (const [id, fails] of [[2, false], [3, true]] as const) {
      // The second batch fails at its last statement.
      const batch = fails ? [...items(n), ["INSERT INTO s VALUES (0)"]] : items(0);
      await raw.send([Op.Batch, id, batch]);
      await new Promise((r) => setTimeout(r, 100));
      // Answered while the batch runs, which it does not see.
      const start = performance.now();
      const seen = await count(srv, "SELECT count(*) FROM s");
      const ms = performance.now() - start;
      assert.equal(raw.waiting, 0, "the batch was answered before the reader");
      assert.ok(ms < 500, `the reader waited ${ms.toFixed(0)} ms`);
      assert.equal(seen, fails ? n : 0, "a batch is not seen before it commits");
      const [replyId, status, payload] = await raw.reply();
      assert.equal(replyId, id);
      if (fails) {
        assert.equal(status, 1);
        assert.match(
          (payload as { message: string }).message,
          new RegExp(`^Batch statement ${n + 1} of ${n + 1} failed, nothing was applied`),
        );
      } else {
        assert.deepEqual([status, (payload as unknown[]).length], [0, n]);
      }
      assert.equal(await count(srv, "SELECT count(*) FROM s"), n);
    }
  },
});

/** A statement of about a millisecond. */
const SLOW_INSERT = "INSERT INTO s SELECT count(*) FROM (WITH RECURSIVE c(x) AS " +
  "(SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000) SELECT x FROM c);";

Deno.test({
  name:
    "Session: a client gone during a long exec script frees the writer: the script stops between statements, what ran stays",
  async fn() {
    await using srv = await startServer({ synchronous: "normal" });
    await using db = await srv.client();
    await db.exec("CREATE TABLE s (x)");
    const n = 10_000; // seconds of work
    {
      await using raw = await Raw.open(srv.connectOptions.path!);
      await raw.send([Op.Exec, 2, SLOW_INSERT.repeat(n)]);
      await new Promise((r) => setTimeout(r, 200));
    } // closed both ways: the client is gone
    const start = performance.now();
    await db.run("INSERT INTO s VALUES (-1)", [], { timeout: 60_000 });
    const waited = performance.now() - start;
    assert.ok(waited < 1000, `the writer was free only after ${waited.toFixed(0)} ms`);
    const ran = await count(srv, "SELECT count(*) FROM s WHERE x >= 0");
    assert.ok(ran > 0 && ran < n, `${ran} of ${n} statements ran`);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(await count(srv, "SELECT count(*) FROM s WHERE x >= 0"), ran, "stopped for good");
  },
});

Deno.test({
  name: "Session: a client that half-closed during a long exec script still gets its reply",
  async fn() {
    await using srv = await startServer({ synchronous: "normal" });
    await using db = await srv.client();
    await db.exec("CREATE TABLE s (x)");
    const n = 300; // several slices
    await using raw = await Raw.open(srv.connectOptions.path!);
    await raw.send([Op.Exec, 2, SLOW_INSERT.repeat(n)], [Op.Query, 3, "SELECT count(*) FROM s"]);
    await raw.conn.closeWrite();
    assert.deepEqual(await raw.rest(), [[2, 0, null], [3, 0, [["count(*)"], [[n]]]]]);
  },
});

Deno.test({
  name:
    "Session: a half-closed client's autocommit writes run and are answered, reported outside a transaction",
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await db.exec("CREATE TABLE h (x INTEGER PRIMARY KEY)");
    for (let rep = 0; rep < 10; rep++) {
      // New SQL text each time: a write not seen before runs in the
      // background, holding the writer (not a transaction) meanwhile.
      const a = 2 * rep + 1, b = 2 * rep + 2;
      await using raw = await Raw.open(srv.connectOptions.path!);
      await raw.send(
        [Op.Exec, 5, `INSERT INTO h VALUES (${a})`],
        [Op.Run, 6, `INSERT INTO h VALUES (${b})`, null],
      );
      await raw.conn.closeWrite();
      assert.deepEqual(await raw.rest(), [[5, 0, null], [6, 0, [1, b]]], `run ${rep}`);
      assert.equal(await count(srv, `SELECT count(*) FROM h WHERE x IN (${a}, ${b})`), 2);
    }
  },
});

Deno.test({
  name:
    "Session: a foreignKeys: false batch whose client is gone: the next client's write runs with foreign keys on",
  async fn() {
    await using srv = await startServer({ synchronous: "normal" });
    await using db = await srv.client();
    await db.exec(
      "CREATE TABLE parent (id INTEGER PRIMARY KEY); CREATE TABLE scratch (x); " +
        "CREATE TABLE child (id INTEGER PRIMARY KEY, pid REFERENCES parent(id))",
    );
    await assert.rejects(db.run("INSERT INTO child (pid) VALUES (999)"), {
      code: "SQLITE_CONSTRAINT_FOREIGNKEY",
    });
    const items = Array.from(
      { length: 200_000 },
      (_, i) => ["INSERT INTO scratch VALUES (?)", [i]],
    );
    let orphan: Promise<unknown>;
    {
      await using raw = await Raw.open(srv.connectOptions.path!);
      await raw.send([Op.Batch, 2, items, { foreignKeys: false }]);
      await new Promise((r) => setTimeout(r, 100));
      // Waits for the writer the batch holds.
      orphan = db.run("INSERT INTO child (pid) VALUES (998)", [], { timeout: 60_000 })
        .then(() => "ran", (e) => e.code);
      await new Promise((r) => setTimeout(r, 50));
    } // the batch's client is gone
    assert.equal(await orphan, "SQLITE_CONSTRAINT_FOREIGNKEY");
    await assert.rejects(db.run("INSERT INTO child (pid) VALUES (997)"), {
      code: "SQLITE_CONSTRAINT_FOREIGNKEY",
    });
    assert.deepEqual(await db.values("SELECT count(*) FROM child"), [[0]]);
    assert.deepEqual(await db.values("SELECT count(*) FROM scratch"), [[0]], "nothing applied");
  },
});

Deno.test({
  name:
    "Session: a script that made a TEMP table and whose client is gone leaves the table known: statements naming it go to the writer",
  async fn() {
    await using srv = await startServer({ synchronous: "normal" });
    await using db = await srv.client();
    // Under load the script may not have begun when its client leaves (then
    // nothing ran and there is no table): try again, waiting longer.
    let n = 0;
    for (let wait = 150; n === 0; wait *= 2) {
      {
        await using raw = await Raw.open(srv.connectOptions.path!);
        await raw.send([
          Op.Exec,
          2,
          "CREATE TEMP TABLE IF NOT EXISTS scratch (a); INSERT INTO scratch VALUES (1); " +
          "INSERT INTO scratch VALUES (2);".repeat(100_000),
        ]);
        await new Promise((r) => setTimeout(r, wait));
      } // gone during the script
      await new Promise((r) => setTimeout(r, 100));
      try {
        [[n]] = await db.values<[number]>("SELECT count(*) FROM temp.scratch");
      } catch (err) {
        if (wait >= 2400 || !String(err).includes("no such table")) throw err;
      }
    }
    assert.ok(n >= 1, `${n} rows`);
    await db.run("INSERT INTO scratch VALUES (3)");
    assert.deepEqual(await db.values("SELECT count(*) FROM scratch WHERE a = 3"), [[1]]);
  },
});
