/**
 * A seeded, randomized audit of writes and change feeds on a device that
 * fills up and is freed again and again (a small tmpfs, mounted as root):
 * clients write units of rows (pipelined autocommit inserts that group,
 * transactions, batches, `BEGIN ... COMMIT` scripts through `exec()`) and
 * update rows already acknowledged (pipelined, and in transactions), a
 * raw-protocol connection subscribes and pipelines inserts (some split by
 * a write that is never grouped) on the same connection,
 * feed subscribers record what they are told (one slow, with a small
 * buffer, that lags and resumes with `since`), and a filler fills the
 * device and frees it. Once the device is free: every acknowledged unit is
 * in the database whole and once, none refused with `mayHaveRun` false is
 * there, none is there in part, each row's update count (`ver`) within
 * the acknowledged ones and those that may have run, and each feed told
 * exactly the committed inserts and updates in commit order (triggers log
 * them in that order). The seed is `NETSQLITE_SEED`'s when set. FFI engine
 * only: node:sqlite has no feeds.
 */

import assert from "node:assert/strict";
import { type Client, connect, SqliteError } from "../mod.ts";
import { delay, startServer } from "./_helpers.ts";
import { ENGINE } from "./_logged_server.ts";
import { canMount, fill, mountedDisk } from "./_tmpfs.ts";
import { prng } from "./_bytes.ts";
import { seedNote, testSeed } from "./_seed.ts";
import { Wire } from "./_wire.ts";
import { Op, Status } from "../protocol/messages.ts";

const INSERT = "INSERT INTO t (id, unit, pad) VALUES (?, ?, randomblob(?))";
const UPDATE = "UPDATE t SET ver = ver + 1, pad = randomblob(?) WHERE id = ?";
/** A write that changes nothing and is never grouped (it mentions rollback). */
const ALONE = "UPDATE z SET a = 1 WHERE 0 -- rollback";
const WRITE_MS = 10_000;

type Outcome = "ok" | "notRun" | "maybe";
interface Unit {
  unit: number;
  kind: string;
  ids: number[];
  outcome?: Outcome;
  error?: string;
}
interface Seen {
  seq: number;
  commitSeq: number;
  op: string;
  rowid: number;
}

function classify(u: Unit, err: unknown, codes: Map<string, number>): void {
  const code = err instanceof SqliteError ? err.code : (err as Error)?.name ?? String(err);
  codes.set(code, (codes.get(code) ?? 0) + 1);
  u.outcome = (err as { mayHaveRun?: boolean })?.mayHaveRun === false ? "notRun" : "maybe";
  u.error = `${code}: ${(err as Error)?.message}`;
}

/** Follows table `t` until it sees rowid 0, resuming after each `lagged`. */
async function follow(
  db: Client,
  buffer: number,
  slow: boolean,
  rnd: () => number,
  ready: () => void,
): Promise<{ seen: Seen[]; resumes: number }> {
  const seen: Seen[] = [];
  let since: number | undefined;
  let resumes = 0;
  for (;;) {
    await using feed = await db.subscribe(
      since === undefined ? { tables: ["t"], buffer } : { tables: ["t"], buffer, since },
    );
    ready();
    let lagged = false;
    for await (const e of feed) {
      if (e.type === "lagged") {
        since = e.resumeFrom;
        lagged = true;
        break;
      }
      assert.equal(e.type, "table");
      if (e.type !== "table") continue;
      assert.ok(e.op === "insert" || e.op === "update", JSON.stringify(e));
      seen.push({ seq: e.seq, commitSeq: e.commitSeq, op: e.op, rowid: Number(e.rowid) });
      if (e.rowid === 0) return { seen, resumes };
      if (slow && rnd() < 0.02) await delay(Math.floor(rnd() * 5));
    }
    if (!lagged) throw new Error("the feed ended without lagged before the last write");
    resumes++;
  }
}

Deno.test({
  name: "Audit: writers of every kind and change feeds through a device filled and freed " +
    "again and again: acknowledged units whole and once, units refused as not run absent, " +
    "none partial, updates counted once, and each feed told exactly the committed changes in commit order [ffi]",
  ignore: !canMount || ENGINE !== "ffi",
  async fn() {
    const seed = testSeed(20261207);
    const rnd = prng(seed);
    const int = (n: number) => Math.floor(rnd() * n);
    await using disk = await mountedDisk("32m");
    await using srv = await startServer({ database: `${disk.disk}/a.db` });
    const admin = await srv.client();
    const slowClient = await srv.client();
    const writers: Client[] = [];
    const codes = new Map<string, number>();
    const units: Unit[] = [];
    const tally: Record<string, number> = {};
    let rawConn: Wire | undefined;
    let warmRows = 0;
    // Updates of rows already acknowledged: per row, those acknowledged and
    // those that may have run.
    const committed: number[] = [];
    const updates = new Map<number, { ok: number; maybe: number }>();
    const updated = (id: number, outcome: "ok" | "maybe") => {
      const n = updates.get(id) ?? { ok: 0, maybe: 0 };
      n[outcome]++;
      updates.set(id, n);
    };
    const target = () => committed[int(committed.length)];
    const ok = (u: Unit) => {
      u.outcome = "ok";
      committed.push(...u.ids);
    };
    try {
      await admin.exec(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, unit INTEGER NOT NULL, ver INTEGER NOT NULL " +
          "DEFAULT 0, pad BLOB); CREATE TABLE log (n INTEGER PRIMARY KEY, op TEXT, id INTEGER); " +
          "CREATE TABLE z (a); CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN " +
          "INSERT INTO log (op, id) VALUES ('insert', new.id); END; " +
          "CREATE TRIGGER t_upd AFTER UPDATE ON t BEGIN " +
          "INSERT INTO log (op, id) VALUES ('update', new.id); END",
      );
      for (let i = 0; i < 4; i++) writers.push(await connect({ ...srv.connectOptions, max: 1 }));
      // Known fast before anything fails, so that they group.
      warmRows = 3; // the raw connection's, below
      for (const [i, w] of writers.entries()) {
        for (let k = 0; k < 3; k++) {
          const u: Unit = { unit: units.length + 1, kind: "warm", ids: [1_000_000 + i * 10 + k] };
          units.push(u);
          await w.run(INSERT, [u.ids[0], u.unit, 10]);
          ok(u);
        }
      }
      // A raw connection that subscribes and writes too (pipelined inserts,
      // grouped): its events come between its replies, some of which wait
      // for a group commit that may fail.
      const raw = await Wire.open((srv.connectOptions as { path: string }).path);
      rawConn = raw;
      for (let k = 0; k < 3; k++) {
        assert.equal((await raw.call(Op.Run, ALONE, null, null)).status & Status.Error, 0);
        assert.equal(
          (await raw.call(Op.Run, INSERT, [2_000_000 + k, 0, 10], null)).status & Status.Error,
          0,
        );
      }
      const sub = await raw.call(Op.Subscribe, { tables: ["t"], buffer: 100_000 });
      assert.equal(sub.status & Status.Error, 0, JSON.stringify(sub.body));
      let subscribed = 0;
      const feeds = [
        follow(admin, 10_000, false, prng(seed + 1), () => subscribed++),
        follow(slowClient, 20, true, prng(seed + 2), () => subscribed++),
      ];
      for (const f of feeds) f.catch(() => {}); // awaited below
      while (subscribed < 2) await delay(5);

      let nextId = 1;
      const newUnit = (kind: string, rows: number): Unit => {
        const u: Unit = { unit: units.length + 1, kind, ids: [] };
        for (let r = 0; r < rows; r++) u.ids.push(nextId++);
        units.push(u);
        return u;
      };
      const size = () => 50 + int(800);
      const end = performance.now() + WRITE_MS;
      let stop = false;

      const filler = (async () => {
        let fills = 0;
        while (!stop) {
          await fill(disk.disk);
          fills++;
          await delay(20 + int(150));
          await Deno.remove(`${disk.disk}/filler`);
          await delay(20 + int(200));
        }
        return fills;
      })();

      const writer = async (w: Client) => {
        while (performance.now() < end) {
          const kind = ["auto", "auto", "update", "tx", "batch", "exec"][int(6)];
          if (kind === "auto") {
            const group = Array.from({ length: 2 + int(5) }, () => newUnit("auto", 1));
            await Promise.all(group.map((u) =>
              w.run(INSERT, [u.ids[0], u.unit, size()]).then(
                () => ok(u),
                (err) => classify(u, err, codes),
              )
            ));
          } else if (kind === "update") {
            // Pipelined, grouped, each its own commit.
            const ids = Array.from({ length: 1 + int(4) }, target);
            await Promise.all(ids.map((id) =>
              w.run(UPDATE, [size(), id]).then(
                () => updated(id, "ok"),
                (err) => {
                  const u: Unit = { unit: -1, kind: "update", ids: [id] };
                  classify(u, err, codes);
                  if (u.outcome === "maybe") updated(id, "maybe");
                  else tally["update notRun"] = (tally["update notRun"] ?? 0) + 1;
                },
              )
            ));
          } else if (kind === "tx") {
            // Inserts, and updates of rows acknowledged before.
            const u = newUnit("tx", 1 + int(4));
            const ups = Array.from({ length: int(3) }, target);
            await w.transaction(async (t) => {
              for (const id of u.ids) await t.run(INSERT, [id, u.unit, size()]);
              for (const id of ups) await t.run(UPDATE, [size(), id]);
            }).then(() => {
              ok(u);
              for (const id of ups) updated(id, "ok");
            }, (err) => {
              classify(u, err, codes);
              if (u.outcome === "maybe") { for (const id of ups) updated(id, "maybe"); }
            });
          } else if (kind === "batch") {
            const u = newUnit("batch", 1 + int(4));
            await w.batch(u.ids.map((id) => ({ sql: INSERT, params: [id, u.unit, size()] }))).then(
              () => ok(u),
              (err) => classify(u, err, codes),
            );
          } else {
            const u = newUnit("exec", 1 + int(4));
            const script = "BEGIN; " +
              u.ids.map((id) =>
                `INSERT INTO t (id, unit, pad) VALUES (${id}, ${u.unit}, randomblob(${size()}));`
              ).join(" ") + " COMMIT";
            await w.exec(script).then(
              () => ok(u),
              async (err) => {
                classify(u, err, codes);
                // The script's transaction may still be open (a COMMIT or an
                // INSERT that failed): end it.
                await w.exec("ROLLBACK").catch(() => {}); // none open: fine
              },
            );
          }
        }
      };
      const rawSeen: Seen[] = [];
      let rawEnded = false;
      const take = ([, status, body]: [number, number, unknown]): boolean => {
        if ((status & Status.Event) === 0) return false;
        const [, kind, data] = body as [number, number, unknown];
        assert.equal(kind, 0, `the raw feed ended: ${JSON.stringify(body)}`);
        for (const c of data as [number, number, string, string, number][]) {
          rawSeen.push({ seq: c[0], commitSeq: c[1], op: c[3], rowid: Number(c[4]) });
          if (Number(c[4]) === 0) rawEnded = true;
        }
        return true;
      };
      const rawWriter = async () => {
        while (performance.now() < end) {
          const group = Array.from({ length: 1 + int(5) }, () => newUnit("raw", 1));
          // Between inserts, now and then a write that changes nothing and is
          // never grouped (it mentions rollback): it waits for the group
          // before it to commit, then runs inline, and the next insert opens
          // a new group (whose COMMIT may fail).
          const requests: unknown[][] = [];
          const of: (Unit | null)[] = [];
          for (const u of group) {
            requests.push([Op.Run, INSERT, [u.ids[0], u.unit, size()], null]);
            of.push(u);
            if (rnd() < 0.5) {
              requests.push([Op.Run, ALONE, null, null]);
              of.push(null);
            }
          }
          const ids = await raw.sendAll(...requests);
          let answered = 0;
          while (answered < ids.length) {
            const r = await raw.reply();
            if (take(r)) continue;
            const at = ids.indexOf(r[0]);
            assert.ok(at !== -1, `reply to ${r[0]}`);
            answered++;
            const u = of[at];
            if (u === null) continue;
            if ((r[1] & Status.Error) === 0) ok(u);
            else {
              u.outcome = "maybe"; // (the raw error's mayHaveRun is not read here)
              tally["raw failed"] = (tally["raw failed"] ?? 0) + 1;
            }
          }
        }
      };
      await Promise.all([...writers.map(writer), rawWriter()]);
      stop = true;
      const fills = await filler;
      await Deno.remove(`${disk.disk}/filler`).catch(() => {});

      // The last write, which the followers stop at.
      await admin.run(INSERT, [0, 0, 1]).catch(async (err) => {
        const sizes = [];
        for await (const e of Deno.readDir(disk.disk)) {
          sizes.push(`${e.name} ${(await Deno.stat(`${disk.disk}/${e.name}`)).size}`);
        }
        throw new Error(`the last write failed (${sizes}): ${err}`);
      });
      const followed = await Promise.all(feeds);
      while (!rawEnded) take(await raw.reply());
      followed.push({ seen: rawSeen, resumes: 0 });

      const rows = await admin.values<[number, number, number]>("SELECT id, unit, ver FROM t");
      const log = await admin.values<[string, number]>("SELECT op, id FROM log ORDER BY n");
      const logged = log.filter(([op]) => op === "insert").map(([, id]) => id);
      const present = new Map(rows.map(([id, unit]) => [id, unit]));
      const note = `${seedNote(seed)}; ${units.length} units, fills ${fills}, errors ${
        JSON.stringify([...codes])
      }`;
      // Each row once (the key) and logged once.
      assert.equal(new Set(logged).size, logged.length, `a row logged twice; ${note}`);
      assert.deepEqual(
        [...logged].sort((a, b) => a - b),
        [...present.keys()].sort((a, b) => a - b),
      );
      for (const u of units) {
        const there = u.ids.filter((id) => present.has(id)).length;
        const what = `${u.kind} unit ${u.unit} (${u.outcome}${
          u.error ? `, ${u.error}` : ""
        }); ${note}`;
        assert.ok(there === 0 || there === u.ids.length, `partly applied: ${what}`);
        if (u.outcome === "ok") assert.equal(there, u.ids.length, `acknowledged, missing: ${what}`);
        if (u.outcome === "notRun") assert.equal(there, 0, `refused as not run, present: ${what}`);
        assert.ok(u.outcome !== undefined, `never answered: ${what}`);
        const key = `${u.kind} ${u.outcome}${there ? "+" : "-"}`;
        tally[key] = (tally[key] ?? 0) + 1;
      }
      // Each acknowledged update applied once, none refused as not run applied;
      // each logged once.
      const logUpdates = new Map<number, number>();
      for (const [op, id] of log) {
        if (op === "update") logUpdates.set(id, (logUpdates.get(id) ?? 0) + 1);
      }
      for (const [id, , ver] of rows) {
        const n = updates.get(id) ?? { ok: 0, maybe: 0 };
        assert.ok(
          ver >= n.ok && ver <= n.ok + n.maybe,
          `row ${id}: ver ${ver}, updates ${JSON.stringify(n)}; ${note}`,
        );
        assert.equal(logUpdates.get(id) ?? 0, ver, `row ${id}; ${note}`);
        tally.updated = (tally.updated ?? 0) + ver;
      }
      // Each feed: exactly the inserts logged after it subscribed, in the log's
      // (commit) order, seq rising (the log's changes have theirs too), one commit per unit.
      const warm = units.filter((u) => u.kind === "warm").length + warmRows;
      const expected = log.slice(warm).map(([op, id]) => `${op} ${id}`);
      const unitOf = new Map<number, number>(present);
      unitOf.set(0, 0);
      for (const [f, { seen }] of followed.entries()) {
        const got = seen.map((s) => `${s.op} ${s.rowid}`);
        const at = got.findIndex((g, k) => g !== expected[k]);
        assert.ok(
          at === -1 && got.length === expected.length,
          `feed ${f}: ${got.length} changes, ${expected.length} committed; first difference at ` +
            `${at}: told ${JSON.stringify(got.slice(at, at + 5))}, committed ` +
            `${JSON.stringify(expected.slice(at, at + 5))}; ${note}`,
        );
        for (let i = 1; i < seen.length; i++) {
          assert.ok(seen[i].seq > seen[i - 1].seq, `feed ${f} at ${i}; ${note}`);
          assert.ok(seen[i].commitSeq >= seen[i - 1].commitSeq, `feed ${f} at ${i}; ${note}`);
          const inserts = seen[i].op === "insert" && seen[i - 1].op === "insert";
          if (inserts && unitOf.get(seen[i].rowid) === unitOf.get(seen[i - 1].rowid)) {
            assert.equal(seen[i].commitSeq, seen[i - 1].commitSeq, `unit split; ${note}`);
          }
        }
      }
      assert.deepEqual(await admin.values("PRAGMA integrity_check"), [["ok"]]);
      assert.deepEqual(await writers[0].values("SELECT 1"), [[1]]);
      console.log(
        `${note}; outcomes ${JSON.stringify(tally)}; rows ${rows.length}; resumes ${
          followed.map((f) => f.resumes)
        }`,
      );
      for (const kind of ["auto", "tx", "batch", "exec"]) {
        assert.ok(tally[`${kind} notRun-`] > 0, `no ${kind} unit met the full device; ${note}`);
        assert.ok(tally[`${kind} ok+`] > 0, `no ${kind} unit committed; ${note}`);
      }
      assert.ok(
        tally["update notRun"] > 0 && tally.updated > 0,
        `updates: ${JSON.stringify(tally)}`,
      );
    } finally {
      await rawConn?.[Symbol.asyncDispose]();
      for (const w of writers) await w.close();
      await slowClient.close();
      await admin.close();
    }
  },
});
