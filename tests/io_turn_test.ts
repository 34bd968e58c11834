/**
 * `engine/io_turn.ts`: a script's turn for other connections' sockets waits
 * for a byte through a loopback connection of the engine's own.
 */

import assert from "node:assert/strict";
import { IoTurn } from "../engine/io_turn.ts";

Deno.test("IoTurn.take() resolves after a socket poll; turns taken at once share one; close() frees the pair", async () => {
  const turns = new IoTurn();
  await turns.take(); // opens the pair
  const a = turns.take();
  const b = turns.take();
  assert.equal(a, b, "a turn under way is shared (one byte in flight at a time)");
  await a;
  // Many turns in a row: each byte is read by its own turn (none left over to end a later one early).
  for (let i = 0; i < 200; i++) await turns.take();
  turns.close();
  // Closed: a timer turn, no socket (the resource sanitizer checks the pair was closed).
  await turns.take();
  await new Promise((resolve) => setTimeout(resolve, 10)); // the close lands
});

Deno.test("IoTurn closed before its first turn opens nothing", async () => {
  const turns = new IoTurn();
  turns.close();
  await turns.take();
});

Deno.test("IoTurn closed while its pair opens closes the pair", async () => {
  const turns = new IoTurn();
  const first = turns.take();
  turns.close();
  await first;
  await new Promise((resolve) => setTimeout(resolve, 10));
});

Deno.test("IoTurn takes its own connection, not another process's that reached its listener first", async () => {
  const connect = Deno.connect;
  let stranger: Deno.TcpConn | null = null;
  // The stranger connects between the listen and the engine's own connect.
  Deno.connect = (async (options: Deno.ConnectOptions) => {
    Deno.connect = connect;
    stranger = await connect(options);
    await new Promise((resolve) => setTimeout(resolve, 20)); // accepted first
    return await connect(options);
  }) as typeof Deno.connect;
  const turns = new IoTurn();
  try {
    await turns.take();
    assert.ok(stranger !== null, "the stranger connected");
    // Closed by the engine, never used as its pair: it reads the end, no byte.
    assert.equal(await (stranger as Deno.TcpConn).read(new Uint8Array(8)), null);
    for (let i = 0; i < 20; i++) await turns.take();
  } finally {
    Deno.connect = connect;
    (stranger as Deno.TcpConn | null)?.close();
    turns.close();
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
});
