/**
 * What the Node.js checks run against: `deno task build:node`'s bundle, and
 * a Unix-socket, a TCP and (with openssl) a TLS server, with the
 * environment a check program reads them from.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { buildNode } from "../npm/build.ts";
import { startServer } from "./_helpers.ts";
import { makeCertificateIfOpenssl } from "./_certs.ts";

/** The build and the servers; disposing stops them and removes the directory. */
export interface NodeCheckServers extends AsyncDisposable {
  /** `NETSQLITE_BUILD`, `NETSQLITE_PATH`, `NETSQLITE_PORT`, `NETSQLITE_DATABASE`, `NETSQLITE_SCRATCH`, and with TLS `NETSQLITE_TLS_PORT`, `NETSQLITE_TLS_CA`, `NETSQLITE_TOKEN`. */
  env: Record<string, string>;
  /** True when the TLS server runs. */
  tls: boolean;
}

/** Builds the bundle into a fresh temp directory (`prefix`) and starts the servers. */
export async function nodeCheckServers(prefix: string): Promise<NodeCheckServers> {
  const dir = await Deno.makeTempDir({ prefix });
  const build = join(dir, "dist");
  await buildNode(new URL(`file://${build}/`));
  const unix = await startServer();
  const tcp = await startServer({ transport: "tcp" });
  const certificate = await makeCertificateIfOpenssl(dir);
  const tls = certificate === null ? null : await startServer({
    transport: "tcp",
    tls: { cert: certificate.cert, key: certificate.key },
    token: "node-secret",
  });
  const port = (s: typeof tcp): string => {
    const addr = s.server.addr;
    assert.equal(addr.transport, "tcp");
    return String(addr.transport === "tcp" ? addr.port : 0);
  };
  const env: Record<string, string> = {
    NETSQLITE_BUILD: build,
    NETSQLITE_PATH: (unix.connectOptions as { path: string }).path,
    NETSQLITE_PORT: port(tcp),
    NETSQLITE_DATABASE: unix.database,
    NETSQLITE_SCRATCH: dir,
  };
  if (tls !== null && certificate !== null) {
    env.NETSQLITE_TLS_PORT = port(tls);
    env.NETSQLITE_TLS_CA = certificate.ca;
    env.NETSQLITE_TOKEN = "node-secret";
  } else {
    console.log("TLS part skipped: no `openssl` to make a certificate");
  }
  return {
    env,
    tls: tls !== null,
    async [Symbol.asyncDispose]() {
      await unix[Symbol.asyncDispose]();
      await tcp[Symbol.asyncDispose]();
      await tls?.[Symbol.asyncDispose]();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}
