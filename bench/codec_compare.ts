/**
 * protocol/msgpack.ts against npm:@msgpack/msgpack (configured as netsqlite
 * used it before: `useBigInt64`) on the messages that matter: a 100-row,
 * 4-column query reply (the load benchmark's range-100) and a point-read
 * request. Times are per message, the best of 5 rounds.
 *
 * Run: `deno run -A bench/codec_compare.ts`
 *
 * @module
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";
import { Decoder, Encoder } from "npm:@msgpack/msgpack@^3.1.3";
import { decodeMsgpack, MsgpackWriter } from "../protocol/msgpack.ts";
import { rowName, SCHEMA, SQL } from "./_server.ts";

const db = new DatabaseSync(":memory:");
db.exec(SCHEMA);
const insert = db.prepare("INSERT INTO items (id, name, value, n) VALUES (?, ?, ?, ?)");
for (let i = 1; i <= 1000; i++) insert.run(i, rowName(i), i * 1.5 + 0.25, i * 7);
const range = db.prepare(SQL.range100);
(range as StatementSync & { setReturnArrays(on: boolean): void }).setReturnArrays(true);
const rows = range.all(1) as unknown as unknown[][];

const messages: [string, unknown][] = [
  ["range-100 reply", [7, 0, [["id", "name", "value", "n"], rows]]],
  ["point-read request", [2, 17, SQL.pointRead, [1234]]],
];

function best(fn: () => unknown, iterations: number): number {
  let min = Infinity;
  for (let round = 0; round < 5; round++) {
    const t0 = performance.now();
    for (let i = 0; i < iterations; i++) fn();
    min = Math.min(min, ((performance.now() - t0) / iterations) * 1000);
  }
  return min;
}

const libEncoder = new Encoder({ useBigInt64: true });
const libDecoder = new Decoder({ useBigInt64: true });
const writer = new MsgpackWriter(4096);
console.log(
  "| message | bytes | library encode µs | ours encode µs | library decode µs | ours decode µs |",
);
console.log("| --- | --: | --: | --: | --: | --: |");
for (const [name, message] of messages) {
  const n = name.startsWith("range") ? 20_000 : 200_000;
  const libEncode = best(() => libEncoder.encode(message), n);
  const ownEncode = best(() => {
    writer.pos = 0;
    writer.write(message);
  }, n);
  const bytes = libEncoder.encode(message).slice();
  const libDecode = best(() => libDecoder.decode(bytes), n);
  const ownDecode = best(() => decodeMsgpack(bytes), n);
  const f = (x: number) => x.toFixed(2);
  console.log(
    `| ${name} | ${bytes.length} | ${f(libEncode)} | ${f(ownEncode)} | ${f(libDecode)} | ${
      f(ownDecode)
    } |`,
  );
}
