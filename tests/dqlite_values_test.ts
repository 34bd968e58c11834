/**
 * Cluster mode against the single-file engine, value by value: the same SQL
 * and parameters through a server on a dqlite node and a server on a file
 * must give the same values, types, errors, `changes` and
 * `lastInsertRowid`. dqlite reports the pooled connection's last insert
 * rowid, which after an insert into a `WITHOUT ROWID` table (no rowid) was
 * the previous insert's, maybe another client's; it must be 0, as on a
 * file. Skipped (with the reason printed) when `dqlite-demo` is not
 * installed.
 */

import assert from "node:assert/strict";
import { type Client, connect } from "../client.ts";
import { serve } from "../server.ts";
import { DemoCluster, skipWithoutDqlite } from "./_dqlite_nodes.ts";
import { prng } from "./_bytes.ts";

const ignore = skipWithoutDqlite("dqlite_values_test.ts");

/** A value, exactly: -0, bigint and Uint8Array told apart; an error by its code and message. */
function show(v: unknown): string {
  return JSON.stringify(v, (_k, x) => {
    if (typeof x === "bigint") return `${x}n`;
    if (typeof x === "number" && !Number.isFinite(x)) return String(x);
    if (Object.is(x, -0)) return "-0";
    if (x instanceof Uint8Array) return `blob:${[...x].join(",")}`;
    if (x instanceof Error) return `${(x as { code?: string }).code}: ${x.message}`;
    return x;
  });
}

/** Two servers (a file, a one-node dqlite cluster), two clients on each. */
async function pair(): Promise<
  { file: [Client, Client]; cluster: [Client, Client] } & AsyncDisposable
> {
  const nodes = await DemoCluster.start(1);
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-dqlite-values-" });
  // The FFI engine, whatever NETSQLITE_ENGINE says: it loads the system's libsqlite3, as the
  // dqlite node does (node:sqlite's own SQLite writes REAL as text with more digits).
  const fileServer = await serve({
    path: `${dir}/f.sock`,
    database: `${dir}/f.db`,
    engine: "ffi",
  });
  const clusterServer = await serve({
    path: `${dir}/c.sock`,
    dqlite: { nodes: nodes.addresses, database: "values" },
  });
  const clients: Client[] = [];
  for (const path of [`${dir}/f.sock`, `${dir}/f.sock`, `${dir}/c.sock`, `${dir}/c.sock`]) {
    clients.push(await connect({ path, max: 1 }));
  }
  return {
    file: [clients[0], clients[1]],
    cluster: [clients[2], clients[3]],
    async [Symbol.asyncDispose]() {
      for (const c of clients) await c.close();
      await clusterServer.shutdown();
      await fileServer.shutdown();
      await nodes.stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

type Case = [label: string, run: (c: Client, other: Client) => Promise<unknown>];

/** Runs every case on both engines; returns the differences. */
async function differences(
  p: { file: [Client, Client]; cluster: [Client, Client] },
  cases: Case[],
): Promise<string[]> {
  const out: string[] = [];
  for (const [label, run] of cases) {
    const onFile = show(await run(...p.file).catch((e) => e));
    const onCluster = show(await run(...p.cluster).catch((e) => e));
    if (onFile !== onCluster) out.push(`${label}: file ${onFile}, cluster ${onCluster}`);
  }
  return out;
}

Deno.test({
  name: "an insert into a WITHOUT ROWID table reports lastInsertRowid 0 in cluster mode, " +
    "not the connection's previous insert",
  ignore,
  async fn() {
    await using p = await pair();
    const setup = "CREATE TABLE t (id INTEGER PRIMARY KEY, v); " +
      'CREATE TABLE "W r" (k PRIMARY KEY, v) WITHOUT ROWID; CREATE TABLE kv (k TEXT PRIMARY KEY) WITHOUT ROWID';
    for (const c of [p.file[0], p.cluster[0]]) await c.exec(setup);
    const cases: Case[] = [
      ["plain insert", (c) => c.run("INSERT INTO t (v) VALUES (1)")],
      ["WITHOUT ROWID", (c) => c.run('INSERT INTO "W r" (k, v) VALUES (?, 1)', ["a"])],
      ["after another client's insert", async (c, other) => {
        await other.run("INSERT INTO t (v) VALUES (2)");
        return c.run("INSERT INTO kv VALUES ('b')");
      }],
      ["schema-qualified, OR REPLACE", (c) => c.run("INSERT OR REPLACE INTO main.kv VALUES ('b')")],
      [
        "REPLACE, WITH",
        (c) => c.run("WITH x(k) AS (VALUES ('c')) REPLACE INTO KV SELECT k FROM x"),
      ],
      ["batch", (c) =>
        c.batch([
          { sql: "INSERT INTO t (v) VALUES (3)" },
          { sql: "INSERT INTO kv VALUES ('d')" },
        ])],
      ["transaction", (c) =>
        c.transaction(async (tx) => [
          await tx.run("INSERT INTO t (v) VALUES (4)"),
          await tx.run("INSERT INTO kv VALUES ('e')"),
        ])],
      ["prepared", async (c) => {
        await c.run("INSERT INTO t (v) VALUES (5)");
        const s = await c.prepare("INSERT INTO kv VALUES (?)");
        return s.run(["f"]);
      }],
      // A rowid table whose new row got the rowid of the previous insert (rolled back) keeps it.
      ["rowid reused", async (c) => {
        await c.exec("BEGIN");
        const first = await c.run("INSERT INTO t (v) VALUES (6)");
        await c.exec("ROLLBACK");
        return [first, await c.run("INSERT INTO t (v) VALUES (7)")];
      }],
      [
        "rows",
        (c) =>
          c.values('SELECT * FROM t UNION ALL SELECT * FROM "W r" UNION ALL SELECT k, 0 FROM kv'),
      ],
    ];
    assert.deepEqual(await differences(p, cases), []);
    assert.deepEqual(await p.cluster[0].run("INSERT INTO kv VALUES ('g')"), {
      changes: 1,
      lastInsertRowid: 0,
    });
  },
});

const EXPRESSIONS = [
  "9007199254740991",
  "9007199254740992",
  "-9007199254740993",
  "9223372036854775807",
  "-9223372036854775808",
  "9223372036854775808",
  "-0.0",
  "1e308",
  "1e309",
  "-1e309",
  "1e309 - 1e309",
  "4.9e-324",
  "2.2250738585072014e-308",
  "char(55296)",
  "char(128512)",
  "'😀'",
  "CAST(x'ff' AS TEXT)",
  "CAST(x'eda080' AS TEXT)",
  "x''",
  "zeroblob(0)",
  "zeroblob(100000)",
  "NULL",
  "''",
  "true",
  "9.0",
  "123456789012345678.0",
  "abs(-9223372036854775807 - 1)",
  "9223372036854775807 + 1",
];

const PARAMS: unknown[] = [
  9007199254740991,
  2 ** 53,
  -(2 ** 53),
  2 ** 63,
  -0,
  Infinity,
  -Infinity,
  NaN,
  1e308,
  5e-324,
  9223372036854775807n,
  -9223372036854775808n,
  9223372036854775808n,
  true,
  false,
  new Uint8Array(),
  new Uint8Array(300_000).fill(7),
  new Uint8Array([1, 2, 3, 4]).subarray(1, 3),
  "a\0b",
  "a\ud800",
  "😀",
  "",
  null,
  undefined,
  3.0,
];

async function collect(it: AsyncIterable<unknown>): Promise<unknown[]> {
  const out = [];
  for await (const row of it) out.push(row);
  return out;
}

Deno.test({
  name: "values, types and refusals match the single-file engine in cluster mode",
  ignore,
  async fn() {
    await using p = await pair();
    const cases: Case[] = [];
    for (const e of EXPRESSIONS) {
      const sql = `SELECT ${e} AS v, typeof(${e}) AS t`;
      cases.push([`query ${e}`, (c) => c.query(sql)]);
      cases.push([`values ${e}`, (c) => c.values(sql)]);
      cases.push([`iterate ${e}`, (c) => collect(c.iterate(sql))]);
      cases.push([`batch ${e}`, (c) => c.batch([{ sql }])]);
    }
    for (const [i, v] of PARAMS.entries()) {
      cases.push([
        `param ${i}`,
        (c) => c.query("SELECT ?1 AS v, typeof(?1) AS t, quote(?1) q", [v] as never),
      ]);
      cases.push([
        `named ${i}`,
        (c) => c.get("SELECT :x AS v, typeof($x) AS t", { x: v } as never),
      ]);
      cases.push([`?2 ${i}`, (c) => c.values("SELECT ?2, typeof(?2), ?1", [1, v] as never)]);
    }
    for (const c of [p.file[0], p.cluster[0]]) {
      await c.exec("CREATE TABLE a (i INTEGER, r REAL, x TEXT, n NUMERIC, b BLOB, none)");
    }
    for (const [i, v] of PARAMS.entries()) {
      cases.push([
        `insert ${i}`,
        (c) => c.run("INSERT INTO a VALUES (?1, ?1, ?1, ?1, ?1, ?1)", [v] as never),
      ]);
    }
    cases.push(["affinities", (c) =>
      c.query(
        "SELECT *, typeof(i), typeof(r), typeof(x), typeof(n), typeof(b), typeof(none) FROM a",
      )]);
    // Seeded random values through INSERT and SELECT.
    const rnd = prng(7);
    const random = Array.from({ length: 2000 }, (): unknown => {
      const bytes = new Uint8Array(8).map(() => Math.floor(rnd() * 256));
      const view = new DataView(bytes.buffer);
      switch (Math.floor(rnd() * 6)) {
        case 0:
          return view.getBigInt64(0);
        case 1: {
          const f = view.getFloat64(0);
          return Number.isNaN(f) ? -0 : f;
        }
        case 2:
          return Math.floor((rnd() - 0.5) * 2 ** 54);
        case 3:
          return bytes.slice(0, Math.floor(rnd() * 9));
        case 4:
          return String.fromCodePoint(
            ...Array.from({ length: Math.floor(rnd() * 6) }, () => {
              const cp = Math.floor(rnd() * 0x10ffff) + 1;
              return cp >= 0xd800 && cp <= 0xdfff ? 0x41 : cp;
            }),
          );
        default:
          return rnd() < 0.5 ? null : rnd() < 0.5;
      }
    });
    for (const c of [p.file[0], p.cluster[0]]) {
      await c.exec("CREATE TABLE rt (id INTEGER PRIMARY KEY, v, i INTEGER, r REAL, x TEXT)");
    }
    for (let i = 0; i < random.length; i += 100) {
      const chunk = random.slice(i, i + 100);
      cases.push([`random insert ${i}`, (c) =>
        c.batch(chunk.map((v) => ({
          sql: "INSERT INTO rt (v, i, r, x) VALUES (?1, ?1, ?1, ?1)",
          params: [v] as never,
        })))]);
    }
    cases.push(["random select", (c) =>
      c.values(
        "SELECT id, v, typeof(v), i, typeof(i), r, typeof(r), x, typeof(x) FROM rt ORDER BY id",
      )]);
    assert.deepEqual(await differences(p, cases), []);
  },
});
