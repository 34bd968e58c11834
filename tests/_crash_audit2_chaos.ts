/**
 * Fault injection for tests/crash_audit2_test.ts: clients of every kind write
 * to a server process (autocommit runs, `transaction()`s with savepoints,
 * atomic and autocommit `exec` scripts, batches, key-value puts and atomics,
 * reserved connections with a raw BEGIN) while maintenance runs beside them
 * (checkpoints, backups, `vacuum into`) and a change feed reads (FFI engine);
 * the server is SIGKILLed at a random moment and restarted on the same
 * database, the clients going on through it (their pools reconnect). Each
 * write's outcome is recorded and checked against the database after the
 * last restart.
 *
 * More trials by hand (engine from `NETSQLITE_ENGINE`; feed 0 on node):
 * `deno run -A tests/_crash_audit2_chaos.ts TRIALS SEED full|normal 1|0 unix|tcp`.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { type Client, connect, ConnectionError, SqliteError, type Statement } from "../client.ts";
import { AbortError } from "../protocol/errors.ts";
import { Op } from "../protocol/messages.ts";
import { prng } from "./_bytes.ts";
import { openTestLink, startServerProcess } from "./_helpers.ts";

/** What a write came to. */
export type Outcome = "resolved" | "notRun" | "mayHaveRun" | "unsaid" | "pending";

/** One write: `parts` rows of tag `tag` (row k is `(tag, k)`), of kind `kind`. */
export interface Write {
  tag: number;
  kind: Kind;
  parts: number;
  outcome: Outcome;
  error?: string;
}

const KINDS = [
  "run",
  "txSavepoints",
  "execTx",
  "execAuto",
  "batch",
  "kvPut",
  "kvAtomic",
  "reservedTx",
  "slowTx",
  "slowRawTx",
  "prepared",
  "iterWrite",
] as const;
type Kind = (typeof KINDS)[number];

/** Options of {@link runChaos}. */
export interface ChaosOptions {
  trials: number;
  seed: number;
  synchronous: "full" | "normal";
  clients: number;
  /** Subscribe a change feed (FFI engine only). */
  feed: boolean;
  /** How clients reach the server (TCP: the same port at every restart). @default {"unix"} */
  transport?: "unix" | "tcp";
}

/** What {@link runChaos} found. */
export interface ChaosReport {
  kills: number;
  writes: number;
  byOutcome: Record<string, number>;
  /** Resolved writes verified present (each of their rows exactly once). */
  resolvedVerified: number;
  /** Findings: each one is a defect (or a harness bug). */
  problems: string[];
  feedEvents: number;
  feedEnds: string[];
  backupsChecked: number;
  codes: Record<string, number>;
}

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS ev (tag INTEGER NOT NULL, part INTEGER NOT NULL, pad TEXT);
  CREATE INDEX IF NOT EXISTS ev_tag ON ev(tag);
`;
const INS = "INSERT INTO ev (tag, part, pad) VALUES (?, ?, ?)";

function classify(err: unknown): { outcome: Outcome; code: string } {
  if (err instanceof ConnectionError) {
    const where = /^Cannot (re)?connect/.test(err.message) ? "at connect" : "lost";
    return { outcome: err.mayHaveRun ? "mayHaveRun" : "notRun", code: `Conn ${err.code} ${where}` };
  }
  if (err instanceof AbortError) {
    return { outcome: err.mayHaveRun ? "mayHaveRun" : "unsaid", code: `Abort ${err.ran}` };
  }
  if (err instanceof SqliteError) {
    return {
      outcome: err.mayHaveRun === undefined ? "unsaid" : err.mayHaveRun ? "mayHaveRun" : "notRun",
      code: `Sqlite ${err.code}`,
    };
  }
  return { outcome: "unsaid", code: `OTHER ${String(err)}` };
}

const pad = (rnd: () => number) => "p".repeat(20 + Math.floor(rnd() * 300));

const prepared = new WeakMap<Client, Statement>();

/** Runs one write of `kind`; rejects as the client's call does. */
async function doWrite(db: Client, one: Client, w: Write, rnd: () => number): Promise<void> {
  const t = w.tag;
  switch (w.kind) {
    case "run":
      await db.run(INS, [t, 0, pad(rnd)]);
      return;
    case "txSavepoints":
      // Rows 0, 2, 3 commit; row 1 is rolled back to its savepoint: never present.
      await db.transaction(async (tx) => {
        await tx.run(INS, [t, 0, pad(rnd)]);
        await tx.transaction(async (inner) => {
          await inner.run(INS, [t, 1, "undone"]);
          throw new Error("undo");
        }).catch((e) => {
          if ((e as Error).message !== "undo") throw e;
        });
        await tx.transaction(async (inner) => {
          await inner.run(INS, [t, 2, pad(rnd)]);
        });
        await tx.run(INS, [t, 3, pad(rnd)]);
      });
      return;
    case "execTx":
      // A raw BEGIN goes through a client of one connection (a pool refuses it: TX_CONTROL).
      await one.exec(
        `BEGIN IMMEDIATE; INSERT INTO ev VALUES (${t}, 0, 'a'); SAVEPOINT s; ` +
          `INSERT INTO ev VALUES (${t}, 1, 'undone'); ROLLBACK TO s; RELEASE s; ` +
          `INSERT INTO ev VALUES (${t}, 2, 'b'); INSERT INTO ev VALUES (${t}, 3, 'c'); COMMIT`,
      );
      return;
    case "execAuto":
      await db.exec(
        Array.from({ length: w.parts }, (_, k) => `INSERT INTO ev VALUES (${t}, ${k}, 'auto')`)
          .join("; "),
      );
      return;
    case "batch":
      await db.batch(
        Array.from({ length: w.parts }, (_, k) => ({ sql: INS, params: [t, k, pad(rnd)] })),
      );
      return;
    case "kvPut":
      await db.kv("c").put(["k", t], { t, big: pad(rnd) });
      return;
    case "kvAtomic":
      await db.kv("c").atomic().set(["k", t], { t }).set(["k2", t], { t }).commit();
      return;
    case "prepared": {
      // A statement prepared once per client, run across restarts (prepared again there).
      let stmt = prepared.get(db);
      if (stmt === undefined) prepared.set(db, stmt = await db.prepare(INS));
      await stmt.run([t, 0, pad(rnd)]);
      return;
    }
    case "iterWrite": {
      // A write read through a cursor: its RETURNING rows, all read, acknowledge it.
      const values = Array.from({ length: w.parts }, (_, k) => `(${t}, ${k}, 'it')`).join(", ");
      let n = 0;
      for await (const _ of db.iterate(`INSERT INTO ev VALUES ${values} RETURNING part`)) n++;
      if (n !== w.parts) throw new Error(`iterWrite: ${n} rows returned of ${w.parts}`);
      return;
    }
    case "slowTx":
      // Pauses inside the transaction: a kill may fall between its statements.
      await db.transaction(async (tx) => {
        for (let k = 0; k < w.parts; k++) {
          await sleep(Math.floor(rnd() * 12));
          await tx.run(INS, [t, k, pad(rnd)]);
        }
      });
      return;
    case "slowRawTx": {
      // A raw BEGIN on a client of one connection, with pauses; on any error, ROLLBACK.
      await one.exec("BEGIN");
      try {
        for (let k = 0; k < w.parts; k++) {
          await sleep(Math.floor(rnd() * 12));
          await one.run(INS, [t, k, pad(rnd)]);
        }
        await one.exec("COMMIT");
      } catch (err) {
        await one.exec("ROLLBACK").catch(() => {});
        throw err;
      }
      return;
    }
    case "reservedTx": {
      await using r = await db.reserve();
      await r.exec("BEGIN");
      try {
        for (let k = 0; k < w.parts; k++) await r.run(INS, [t, k, pad(rnd)]);
        await r.exec("COMMIT");
      } catch (err) {
        await r.exec("ROLLBACK").catch(() => {});
        throw err;
      }
      return;
    }
  }
}

function partsOf(kind: Kind, rnd: () => number): number {
  switch (kind) {
    case "run":
    case "kvPut":
    case "prepared":
      return 1;
    case "kvAtomic":
      return 2;
    case "txSavepoints":
    case "execTx":
      return 4;
    default:
      return 2 + Math.floor(rnd() * 4);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Whether `p` settles within `ms` (its timer cleared either way). */
async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p.then(() => true, () => true),
      new Promise<boolean>((r) => timer = setTimeout(r, ms, false)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Runs the trials; see the module doc. */
export async function runChaos(o: ChaosOptions): Promise<ChaosReport> {
  const rnd = prng(o.seed);
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-chaos-" });
  const database = `${dir}/c.db`;
  const copies = `${dir}/copies`;
  await Deno.mkdir(copies);
  const args = ["--synchronous", o.synchronous, "--backup-dir", copies];
  const transport = o.transport ?? "unix";
  const writes: Write[] = [];
  const problems: string[] = [];
  const codes: Record<string, number> = {};
  let nextTag = 1;
  let stop = false;
  let feedEvents = 0;
  const feedSeen: [number, number][] = [];
  const feedEnds: string[] = [];
  const clients: Client[] = [];
  let kills = 0;
  let backupsChecked = 0;
  let server: Awaited<ReturnType<typeof startServerProcess>> | undefined;
  try {
    server = await startServerProcess({ dir, database, args, transport });
    // Over TCP every restart listens on the port the first start got (the last --tcp wins).
    if (transport === "tcp") args.push("--tcp", `127.0.0.1:${server.connectOptions.port}`);
    {
      await using db = await server.client();
      await db.exec(SCHEMA);
    }
    for (let c = 0; c < o.clients; c++) {
      clients.push(await connect({ ...server.connectOptions, max: 2, requestTimeout: 20_000 }));
      clients.push(await connect({ ...server.connectOptions, max: 1, requestTimeout: 20_000 }));
    }
    const writer = async (db: Client, one: Client, c: number) => {
      const r = prng(o.seed * 100 + c);
      let oneLock: Promise<void> = Promise.resolve();
      while (!stop) {
        const burst = 1 + Math.floor(r() * 5);
        let failed = false;
        await Promise.all(Array.from({ length: burst }, () => {
          const kind = KINDS[Math.floor(r() * KINDS.length)];
          const w: Write = { tag: nextTag++, kind, parts: partsOf(kind, r), outcome: "pending" };
          writes.push(w);
          // The client of one connection runs one write at a time (a raw BEGIN there makes
          // every call on it join the transaction).
          const run = w.kind === "execTx" || w.kind === "slowRawTx"
            ? (oneLock = oneLock.then(() => doWrite(db, one, w, r)))
            : doWrite(db, one, w, r);
          oneLock = oneLock.catch(() => {});
          return run.then(() => {
            w.outcome = "resolved";
          }, (err) => {
            const { outcome, code } = classify(err);
            w.outcome = outcome;
            w.error = `${code}: ${(err as Error).message}`;
            codes[`${w.kind} ${outcome} ${code}`] = (codes[`${w.kind} ${outcome} ${code}`] ?? 0) +
              1;
            failed = true;
          });
        }));
        if (failed) await sleep(20);
      }
    };
    const running = Array.from(
      { length: o.clients },
      (_, c) => writer(clients[2 * c], clients[2 * c + 1], c),
    );
    for (let trial = 0; trial < o.trials; trial++) {
      // Maintenance beside the writers, on a link of its own.
      const maint = await openTestLink(server.connectOptions).catch(() => null);
      let maintStop = false;
      const maintRun = (async () => {
        if (maint === null) return;
        let i = 0;
        while (!maintStop) {
          const pick = i++ % 5;
          try {
            if (pick === 0) await maint.request(Op.Checkpoint, ["truncate"]);
            else if (pick === 1) await maint.request(Op.Checkpoint, ["passive"]);
            else if (pick === 4) await maint.request(Op.Vacuum, [null]);
            else if (pick === 2) {
              await maint.request(Op.Backup, [`${copies}/b${trial}-${i}.db`]);
            } else await maint.request(Op.Vacuum, [`${copies}/v${trial}-${i}.db`]);
          } catch (err) {
            if (err instanceof ConnectionError) return;
            if (err instanceof SqliteError && /busy|BUSY/.test(err.code)) continue;
            problems.push(`maintenance: ${String(err)}`);
            return;
          }
          await sleep(5);
        }
      })();
      // A change feed (FFI only): every change it reports must be durable.
      let feedRun: Promise<void> = Promise.resolve();
      if (o.feed) {
        const sub = await clients[0].subscribe({ tables: ["ev"], values: true }).catch((e) => e);
        if (sub instanceof Error) problems.push(`subscribe: ${sub.message}`);
        else {
          feedRun = (async () => {
            try {
              for await (const e of sub) {
                if (e.type === "table" && e.value) {
                  const v = e.value as Record<string, number>;
                  feedSeen.push([v.tag, v.part]);
                  feedEvents++;
                }
              }
              feedEnds.push("ended without error");
            } catch (err) {
              feedEnds.push(
                err instanceof ConnectionError
                  ? `ConnectionError ${err.code}`
                  : `${(err as Error).name} ${String(err)}`,
              );
            }
          })();
        }
      }
      await sleep(80 + Math.floor(rnd() * 400));
      await server.kill();
      kills++;
      maintStop = true;
      const feedDone = await settlesWithin(feedRun, 5000);
      if (!feedDone) problems.push(`trial ${trial}: the feed did not end 5 s after the kill`);
      await maintRun;
      await maint?.[Symbol.asyncDispose]();
      // Down for a moment: calls fail unsent.
      await sleep(50 + Math.floor(rnd() * 100));
      server = await startServerProcess({ dir, database, args, transport });
      // Backups and vacuum copies at their final names must be whole databases.
      for await (const e of Deno.readDir(copies)) {
        if (!e.name.endsWith(".db")) continue;
        try {
          const copy = new DatabaseSync(`${copies}/${e.name}`, { readOnly: true });
          try {
            const rows = copy.prepare("PRAGMA integrity_check").all();
            const ok = rows.length === 1 && Object.values(rows[0])[0] === "ok";
            if (!ok) problems.push(`copy ${e.name}: integrity ${JSON.stringify(rows)}`);
            copy.prepare("SELECT count(*) FROM ev").get();
          } finally {
            copy.close();
          }
          backupsChecked++;
        } catch (err) {
          problems.push(`copy ${e.name}: ${String(err)}`);
        }
        await Deno.remove(`${copies}/${e.name}`).catch(() => {});
      }
      await sleep(150 + Math.floor(rnd() * 200));
    }
    stop = true;
    const settled = await settlesWithin(Promise.all(running), 30_000);
    if (!settled) problems.push("writers did not settle within 30 s");
    await Promise.all(clients.splice(0).map((c) => c.close()));
    // Check after a clean restart (the current server still runs).
    await server.kill();
    kills++;
    server = await startServerProcess({ dir, database, args, transport });
    await using db = await server.client();
    const integrity = await db.values<[string]>("PRAGMA integrity_check");
    if (JSON.stringify(integrity) !== '[["ok"]]') {
      problems.push(`integrity: ${JSON.stringify(integrity)}`);
    }
    const rows = new Map<number, Map<number, number>>();
    for (
      const [tag, part, n] of await db.values<[number, number, number]>(
        "SELECT tag, part, count(*) FROM ev GROUP BY tag, part",
      )
    ) {
      let m = rows.get(tag);
      if (!m) rows.set(tag, m = new Map());
      m.set(part, n);
    }
    const kvc = db.kv("c");
    const byOutcome: Record<string, number> = {};
    let resolvedVerified = 0;
    for (const w of writes) {
      byOutcome[w.outcome] = (byOutcome[w.outcome] ?? 0) + 1;
      const what = `${w.kind} ${w.tag} (${w.outcome}${w.error ? `: ${w.error}` : ""})`;
      let present: number[];
      if (w.kind === "kvPut" || w.kind === "kvAtomic") {
        present = [];
        const a = await kvc.get(["k", w.tag]);
        if (a !== null) present.push(0);
        if (w.kind === "kvAtomic" && (await kvc.get(["k2", w.tag])) !== null) present.push(1);
      } else {
        const m = rows.get(w.tag) ?? new Map();
        for (const [part, n] of m) {
          if (n !== 1) problems.push(`${what}: row ${part} present ${n} times`);
        }
        present = [...m.keys()].sort((a, b) => a - b);
      }
      const expected = w.kind === "txSavepoints" || w.kind === "execTx"
        ? [0, 2, 3]
        : Array.from({ length: w.parts }, (_, k) => k);
      const all = JSON.stringify(present) === JSON.stringify(expected);
      const none = present.length === 0;
      const prefix = JSON.stringify(present) ===
        JSON.stringify(expected.slice(0, present.length));
      switch (w.outcome) {
        case "resolved":
          if (!all) problems.push(`${what}: resolved but present ${JSON.stringify(present)}`);
          else resolvedVerified++;
          break;
        case "notRun":
        case "unsaid":
          if (!none) problems.push(`${what}: said not run but present ${JSON.stringify(present)}`);
          break;
        case "mayHaveRun":
          if (w.kind === "execAuto" ? !prefix : !(all || none)) {
            problems.push(`${what}: partly present ${JSON.stringify(present)}`);
          }
          break;
        case "pending":
          problems.push(`${what}: never settled`);
      }
    }
    // Every change a feed reported was committed: present now.
    for (const [tag, part] of feedSeen) {
      if (!(rows.get(tag)?.get(part))) problems.push(`feed reported (${tag}, ${part}), now absent`);
    }
    return {
      kills,
      writes: writes.length,
      byOutcome,
      resolvedVerified,
      problems,
      feedEvents,
      feedEnds,
      backupsChecked,
      codes,
    };
  } finally {
    stop = true;
    await Promise.all(clients.map((c) => c.close()));
    await server?.kill();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const [trials = "4", seed = "1", sync = "full", feed = "1", transport = "unix"] = Deno.args;
  const r = await runChaos({
    trials: Number(trials),
    seed: Number(seed),
    synchronous: sync as "full" | "normal",
    clients: 4,
    feed: feed === "1",
    transport: transport as "unix" | "tcp",
  });
  console.log(JSON.stringify(r, null, 1));
}
