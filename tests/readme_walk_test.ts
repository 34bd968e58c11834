/**
 * Defects met walking README as a new user does (Installing, the commands,
 * the examples, Troubleshooting), each checked against a real server.
 */

import assert from "node:assert/strict";
import { connect, ConnectionError } from "../client.ts";
import { serve } from "../server.ts";
import { tempDir } from "./_helpers.ts";

/** A PEM certificate whose base64 does not decode to a certificate (a damaged copy). */
const DAMAGED_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

Deno.test("connect() with a damaged certificate in tls.caCerts names the decoding error, not Deno's 'Bad resource ID'", async () => {
  await using dir = await tempDir();
  // The CA is read before the handshake, so the server need not speak TLS.
  await using server = await serve({
    database: `${dir.path}/a.db`,
    hostname: "127.0.0.1",
    port: 0,
    logLevel: "error",
  });
  const port = (server.addr as Deno.NetAddr).port;
  const err = await connect({ hostname: "127.0.0.1", port, tls: { caCerts: [DAMAGED_PEM] } })
    .then(() => null, (e: unknown) => e);
  assert.ok(err instanceof ConnectionError, String(err));
  assert.doesNotMatch(err.message, /Bad resource ID/);
  assert.match(err.message, /BadEncoding/);
  assert.match(err.message, /tls: \{ caCerts \}.*--tls-ca/);
  assert.equal(err.mayHaveRun, false);
});
