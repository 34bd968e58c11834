/**
 * The same echo server as `_echo_server.ts`, but on `node:net`, to compare
 * Node's socket layer in Deno with `Deno.listen`.
 *
 * Usage: `deno run -A bench/_net_echo_server.ts SOCKET_PATH`; prints
 * `echo listening on PATH` and exits when its stdin closes.
 *
 * @module
 */

import { createServer } from "node:net";

const path = Deno.args[0];
const server = createServer((socket) => {
  socket.on("data", (chunk) => socket.write(chunk));
  socket.on("error", () => socket.destroy());
});
server.listen(path, () => console.log(`echo listening on ${path}`));
(async () => {
  const buf = new Uint8Array(256);
  try {
    while ((await Deno.stdin.read(buf)) !== null) { /* ignore */ }
  } catch { /* closed */ }
  server.close();
  try {
    Deno.removeSync(path);
  } catch { /* gone */ }
  Deno.exit(0);
})();
