/**
 * A script (`exec`) of single-row inserts inside a transaction, as a dump or
 * a seed runs: netsqlite's server (a separate process, per engine, and
 * optionally another checkout's server) against the same script run
 * in-process by node:sqlite. Runs alternate, so load from elsewhere hits
 * every side alike; the median of each side and its ratio to in-process
 * are printed.
 *
 * Usage: `deno run -A bench/exec_script.ts [--statements 20000] [--rounds 5]
 * [--engines ffi,node] [--server OTHER/server.ts] [--sync normal]`
 *
 * @module
 */

import { parseArgs } from "node:util";
import { DatabaseSync } from "node:sqlite";
import { connect } from "../client.ts";
import { type BenchServer, startServer } from "./_server.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    statements: { type: "string", default: "20000" },
    rounds: { type: "string", default: "5" },
    engines: { type: "string", default: "ffi,node" },
    server: { type: "string" },
    sync: { type: "string", default: "normal" },
  },
});
const statements = Number(values.statements);
const rounds = Number(values.rounds);
const synchronous = values.sync === "full" ? "full" : "normal";
const TABLE = "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL, value REAL, n INTEGER)";

/** The script: `statements` inserts, each with its own literals. */
function script(round: number): string {
  const parts: string[] = [];
  for (let i = 0; i < statements; i++) {
    const id = round * statements + i + 1;
    parts.push(
      `INSERT INTO t(id, name, value, n) VALUES (${id}, 'item-${id}', ${id}.25, ${id % 1000})`,
    );
  }
  return parts.join(";\n");
}

/** One side of the comparison: runs the script of `round` in a transaction, in ms. */
interface Side {
  name: string;
  run(round: number): Promise<number>;
  close(): Promise<void>;
}

function inProcess(): Side {
  const dir = Deno.makeTempDirSync({ prefix: "netsqlite-bench-" });
  const db = new DatabaseSync(`${dir}/inproc.db`);
  db.exec(`PRAGMA journal_mode = WAL; PRAGMA synchronous = ${synchronous.toUpperCase()}; ${TABLE}`);
  return {
    name: "in-process node:sqlite",
    run(round) {
      const sql = script(round);
      const start = performance.now();
      db.exec(`BEGIN; ${sql}; COMMIT`);
      return Promise.resolve(performance.now() - start);
    },
    close() {
      db.close();
      return Deno.remove(dir, { recursive: true });
    },
  };
}

async function served(name: string, serverArgs: string[], serverTs?: string): Promise<Side> {
  const server: BenchServer = await startServer({
    fixtureRows: 0,
    synchronous,
    serverArgs,
    serverTs,
  });
  const db = await connect({ ...server.connectOptions, max: 1 });
  await db.exec(TABLE);
  return {
    name,
    async run(round) {
      const sql = script(round);
      const start = performance.now();
      await db.transaction((tx) => tx.exec(sql));
      return performance.now() - start;
    },
    async close() {
      await db.close();
      await server.stop();
    },
  };
}

const sides: Side[] = [inProcess()];
for (const engine of values.engines.split(",")) {
  sides.push(await served(`netsqlite ${engine}`, ["--engine", engine]));
  if (values.server !== undefined) {
    sides.push(await served(`other ${engine}`, ["--engine", engine], values.server));
  }
}
const times = sides.map(() => [] as number[]);
await sides[0].run(rounds); // (warm-up, its own ids)
for (let r = 0; r < rounds; r++) {
  for (let s = 0; s < sides.length; s++) times[s].push(await sides[s].run(r));
}
for (const side of sides) await side.close();

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const base = median(times[0]);
console.log(
  `exec of ${statements} inserts in one transaction, synchronous=${synchronous}, ${rounds} rounds (median ms)`,
);
for (let s = 0; s < sides.length; s++) {
  const m = median(times[s]);
  const us = (m * 1000 / statements).toFixed(1);
  const ratio = (base / m).toFixed(2);
  console.log(
    `${sides[s].name.padEnd(26)} ${
      m.toFixed(0).padStart(6)
    } ms  ${us} µs/statement  in-process/this ${ratio}×`,
  );
}
