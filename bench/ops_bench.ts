/**
 * Per-operation benchmarks: `deno bench -A bench/ops_bench.ts` (or
 * `deno task bench`).
 *
 * Every group compares in-process node:sqlite (the baseline: its own temp
 * file, WAL, same schema, statements prepared outside the timed function)
 * with the netsqlite client talking to a server that runs as a separate
 * process, over a Unix socket and over TCP. The "echo floor" group measures
 * a raw Unix-socket round trip of a 44-byte frame against a separate echo
 * process: no request can come back faster than that.
 *
 * Servers are started here (top-level await) and killed from an `unload`
 * handler, which `deno bench` runs after the last benchmark.
 *
 * Note: client and servers share the machine's cores; on a 2-core machine the
 * netsqlite numbers include that contention.
 *
 * @module
 */

import type { DatabaseSync } from "node:sqlite";
import { type BatchStatement, type Client, connect } from "../client.ts";
import {
  type BenchServer,
  buildFixture,
  type EchoServer,
  randomId,
  randomRangeStart,
  rowParams,
  SQL,
  startEchoServer,
  startServer,
} from "./_server.ts";
import { connectEcho, EchoClient } from "./_echo_client.ts";

// ---- setup (outside every timed function) --------------------------------

const children: { killSync(): void }[] = [];
const tempDirs: string[] = [];
const clients: Client[] = [];
const inproc: DatabaseSync[] = [];

globalThis.addEventListener("unload", () => {
  for (const c of clients) c.close();
  for (const db of inproc) {
    try {
      db.close();
    } catch { /* closed */ }
  }
  for (const c of children) c.killSync();
  for (const d of tempDirs) {
    try {
      Deno.removeSync(d, { recursive: true });
    } catch { /* gone */ }
  }
});

async function server(
  transport: "unix" | "tcp",
  synchronous: "full" | "normal",
): Promise<BenchServer> {
  const s = await startServer({ transport, synchronous });
  children.push(s);
  return s;
}

async function client(s: BenchServer): Promise<Client> {
  const c = await connect(s.connectOptions);
  clients.push(c);
  return c;
}

async function inProcess(synchronous: "full" | "normal"): Promise<DatabaseSync> {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-bench-inproc-" });
  tempDirs.push(dir);
  const db = buildFixture(`${dir}/inproc.db`, { synchronous });
  inproc.push(db);
  return db;
}

let echo: EchoServer;
let unixFull: BenchServer, tcpFull: BenchServer, unixNormal: BenchServer, tcpNormal: BenchServer;
try {
  [echo, unixFull, tcpFull, unixNormal, tcpNormal] = await Promise.all([
    startEchoServer().then((e) => (children.push(e), e)),
    server("unix", "full"),
    server("tcp", "full"),
    server("unix", "normal"),
    server("tcp", "normal"),
  ]);
} catch (err) {
  for (const c of children) c.killSync();
  throw err;
}

const [unix, tcp, unixN, tcpN] = await Promise.all([
  client(unixFull),
  client(tcpFull),
  client(unixNormal),
  client(tcpNormal),
]);
const db = await inProcess("full");
const dbN = await inProcess("normal");
// Reads inside one long read transaction (on their own file): no statement
// pays SQLite's per-transaction WAL locking syscalls. The server keeps such a
// snapshot open between commits, so this is the fair floor for its reads.
const dbTx = await inProcess("full");
dbTx.exec("BEGIN");
dbTx.prepare("SELECT count(*) FROM items").get();
const echoUnix = new EchoClient(await connectEcho({ path: echo.path }));
const echoTcp = new EchoClient(await connectEcho({ hostname: "127.0.0.1", port: echo.port }));

const pointRead = db.prepare(SQL.pointRead);
const range100 = db.prepare(SQL.range100);
const pointReadTx = dbTx.prepare(SQL.pointRead);
const range100Tx = dbTx.prepare(SQL.range100);
const insert = db.prepare(SQL.insert);
const insertN = dbN.prepare(SQL.insert);

let seq = 1_000_000;
const BATCH_ROWS = 1000;
const batchParams = Array.from({ length: BATCH_ROWS }, (_, i) => rowParams(i));
const batchStatements: BatchStatement[] = batchParams.map((params) => ({
  sql: SQL.insert,
  params,
}));

// Sanity checks, so a broken setup fails loudly instead of benchmarking errors.
{
  const id = randomId();
  const local = pointRead.get(id) as Record<string, unknown>;
  for (const c of [unix, tcp]) {
    const remote = await c.get(SQL.pointRead, [id]);
    if (JSON.stringify(remote) !== JSON.stringify(local)) {
      throw new Error(`netsqlite and in-process disagree: ${JSON.stringify([remote, local])}`);
    }
    const rows = await c.query(SQL.range100, [1]);
    if (rows.length !== 100) throw new Error(`range read returned ${rows.length} rows`);
  }
}

// ---- point read ------------------------------------------------------------

Deno.bench({
  name: "in-process node:sqlite get()",
  group: "point read",
  baseline: true,
  fn: () => {
    pointRead.get(randomId());
  },
});
Deno.bench({
  name: "in-process get() inside one read transaction",
  group: "point read",
  fn: () => {
    pointReadTx.get(randomId());
  },
});
Deno.bench({
  name: "netsqlite unix get()",
  group: "point read",
  fn: async () => {
    await unix.get(SQL.pointRead, [randomId()]);
  },
});
Deno.bench({
  name: "netsqlite tcp get()",
  group: "point read",
  fn: async () => {
    await tcp.get(SQL.pointRead, [randomId()]);
  },
});

// ---- 100-row read --------------------------------------------------------

Deno.bench({
  name: "in-process node:sqlite all() 100 rows",
  group: "100-row read",
  baseline: true,
  fn: () => {
    range100.all(randomRangeStart());
  },
});
Deno.bench({
  name: "in-process all() 100 rows inside one read transaction",
  group: "100-row read",
  fn: () => {
    range100Tx.all(randomRangeStart());
  },
});
Deno.bench({
  name: "netsqlite unix query() 100 rows",
  group: "100-row read",
  fn: async () => {
    await unix.query(SQL.range100, [randomRangeStart()]);
  },
});
Deno.bench({
  name: "netsqlite tcp query() 100 rows",
  group: "100-row read",
  fn: async () => {
    await tcp.query(SQL.range100, [randomRangeStart()]);
  },
});

// ---- single insert ---------------------------------------------------------

Deno.bench({
  name: "in-process run() synchronous=full (fsync-bound)",
  group: "single insert (synchronous=full, fsync-bound)",
  baseline: true,
  fn: () => {
    insert.run(...rowParams(seq++));
  },
});
Deno.bench({
  name: "netsqlite unix run() synchronous=full (fsync-bound)",
  group: "single insert (synchronous=full, fsync-bound)",
  fn: async () => {
    await unix.run(SQL.insert, rowParams(seq++));
  },
});
Deno.bench({
  name: "netsqlite tcp run() synchronous=full (fsync-bound)",
  group: "single insert (synchronous=full, fsync-bound)",
  fn: async () => {
    await tcp.run(SQL.insert, rowParams(seq++));
  },
});
Deno.bench({
  name: "in-process run() synchronous=normal",
  group: "single insert (synchronous=normal)",
  baseline: true,
  fn: () => {
    insertN.run(...rowParams(seq++));
  },
});
Deno.bench({
  name: "netsqlite unix run() synchronous=normal",
  group: "single insert (synchronous=normal)",
  fn: async () => {
    await unixN.run(SQL.insert, rowParams(seq++));
  },
});
Deno.bench({
  name: "netsqlite tcp run() synchronous=normal",
  group: "single insert (synchronous=normal)",
  fn: async () => {
    await tcpN.run(SQL.insert, rowParams(seq++));
  },
});

// ---- 1000-row batch insert -------------------------------------------------

Deno.bench({
  name: "in-process BEGIN; 1000 run(); COMMIT (synchronous=full)",
  group: "1000-row batch insert",
  baseline: true,
  fn: () => {
    db.exec("BEGIN IMMEDIATE");
    for (let i = 0; i < BATCH_ROWS; i++) insert.run(...batchParams[i]);
    db.exec("COMMIT");
  },
});
Deno.bench({
  name: "netsqlite unix batch() 1000 inserts (synchronous=full)",
  group: "1000-row batch insert",
  fn: async () => {
    await unix.batch(batchStatements);
  },
});
Deno.bench({
  name: "netsqlite tcp batch() 1000 inserts (synchronous=full)",
  group: "1000-row batch insert",
  fn: async () => {
    await tcp.batch(batchStatements);
  },
});

// ---- echo floor -------------------------------------------------------------

Deno.bench({
  name: "raw unix echo round trip (44-byte frame)",
  group: "echo floor",
  baseline: true,
  fn: async () => {
    await echoUnix.roundTrip();
  },
});
Deno.bench({
  name: "raw tcp echo round trip (44-byte frame)",
  group: "echo floor",
  fn: async () => {
    await echoTcp.roundTrip();
  },
});
Deno.bench({
  name: "netsqlite unix get() (same as point read)",
  group: "echo floor",
  fn: async () => {
    await unix.get(SQL.pointRead, [randomId()]);
  },
});
Deno.bench({
  name: "netsqlite tcp get() (same as point read)",
  group: "echo floor",
  fn: async () => {
    await tcp.get(SQL.pointRead, [randomId()]);
  },
});
