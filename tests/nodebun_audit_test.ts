/**
 * The client under Node.js and Bun as their users meet it, against a Deno server running as a
 * separate process: `deno task build:node`'s bundle loaded by the system's `node` and by Bun
 * (from its npm package, installed once into `<tmpdir>/netsqlite-bun-1`, the cache
 * `node_client_test.ts` uses too). A runtime that is missing (or Bun that cannot be installed) is
 * skipped, saying why.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildNode } from "../npm/build.ts";
import { readStdoutUntil, startServerProcess } from "./_helpers.ts";
import { withTimeLimit } from "./_limit.ts";
import { makeCertificateIfOpenssl } from "./_certs.ts";

const BURST = fileURLToPath(new URL("./fixtures/nodebun_burst_check.mjs", import.meta.url));
const IPV6 = fileURLToPath(new URL("./fixtures/nodebun_ipv6_check.mjs", import.meta.url));
const TLS_CA = fileURLToPath(new URL("./fixtures/nodebun_tls_ca_check.mjs", import.meta.url));
const SERVER = fileURLToPath(new URL("../server.ts", import.meta.url));
const decoder = new TextDecoder();

async function run(cmd: string, args: string[], env: Record<string, string>) {
  const out = await new Deno.Command(cmd, { args, env, stdout: "piped", stderr: "piped" })
    .output();
  return { code: out.code, text: decoder.decode(out.stdout) + decoder.decode(out.stderr) };
}

async function runs(cmd: string): Promise<boolean> {
  try {
    return (await run(cmd, ["--version"], {})).code === 0;
  } catch {
    return false;
  }
}

/** Bun from its npm package, installed once under the temp directory, or why not. */
async function installBun(): Promise<string | { skip: string }> {
  const dir = join(tmpdir(), "netsqlite-bun-1");
  const bin = join(dir, "node_modules", ".bin", "bun");
  if (await runs(bin)) return bin;
  if (!await runs("npm")) return { skip: "no `npm` to install Bun with" };
  await Deno.mkdir(dir, { recursive: true });
  const out = await new Deno.Command("npm", {
    args: ["install", "--no-audit", "--no-fund", "bun@1"],
    cwd: dir,
    stdout: "piped",
    stderr: "piped",
  }).output().catch((err) => ({ success: false, stderr: new TextEncoder().encode(String(err)) }));
  if (!out.success || !await runs(bin)) {
    const why = decoder.decode(out.stderr).trim().split("\n").pop();
    return { skip: `cannot install Bun from npm: ${why}` };
  }
  return bin;
}

/** The runtimes to run a check under: `node` when on PATH, Bun when installable. */
async function runtimes(): Promise<[string, string][]> {
  const found: [string, string][] = [];
  if (await runs("node")) found.push(["node", "node"]);
  else console.log("Node.js part skipped: no `node` on PATH");
  const bun = await installBun();
  if (typeof bun === "string") found.push(["bun", bun]);
  else console.log(`Bun part skipped: ${bun.skip}`);
  return found;
}

Deno.test(
  "nodebun: a burst of clients overflowing a Unix socket's listen backlog all connect under Node.js and Bun, and a stale socket still fails at once",
  withTimeLimit(90_000, async () => {
    const found = await runtimes();
    if (found.length === 0) return;
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-nodebun-" });
    try {
      const build = join(dir, "dist");
      await buildNode(new URL(`file://${build}/`));
      // A killed server leaves its socket file, which nothing listens on: connecting is refused.
      const gone = await startServerProcess({ dir, database: join(dir, "gone.db") });
      const stale = (gone.connectOptions as { path: string }).path;
      await gone.kill();
      await Deno.rename(stale, join(dir, "stale.sock"));
      // Four handshakes at once: the rest of the burst waits in the listen backlog, and what
      // does not fit there is refused by the system (EAGAIN), which the client tries again.
      await using server = await startServerProcess({ dir, args: ["--max-handshakes", "4"] });
      for (const [name, bin] of found) {
        const { code, text } = await run(bin, [BURST], {
          NETSQLITE_BUILD: build,
          NETSQLITE_PATH: (server.connectOptions as { path: string }).path,
          NETSQLITE_STALE: join(dir, "stale.sock"),
          NETSQLITE_CLIENTS: "2000",
        });
        assert.equal(code, 0, `${name}: ${text}`);
        const seen = JSON.parse(text.trim().split("\n").pop()!);
        assert.deepEqual(seen.errors, {}, `${name}: ${text}`);
        assert.equal(seen.ok, 2000, `${name}: ${text}`);
        assert.match(
          seen.stale,
          /^ConnectionError CONNECTION_CLOSED: Cannot connect to unix:\S+stale\.sock: connect ECONNREFUSED \S+ \(is the server running\?\)$/,
          `${name}: ${text}`,
        );
        // At once: not tried again as a full backlog would be (for 3 s).
        assert.ok(seen.staleMs < 1500, `${name}: ${text}`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }),
);

/** A TCP port nothing listens on at `hostname` (taken, then freed). */
function closedPort(hostname: string): number {
  const listener = Deno.listen({ hostname, port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

Deno.test(
  "nodebun: a bracketed IPv6 host name ([::1], as new URL() gives it) connects under Node.js and Bun as under Deno",
  withTimeLimit(60_000, async () => {
    try {
      closedPort("::1");
    } catch (err) {
      console.log(`skipped: no IPv6 loopback here (${(err as Error).message})`);
      return;
    }
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-nodebun-" });
    try {
      const build = join(dir, "dist");
      await buildNode(new URL(`file://${build}/`));
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", SERVER, "--db", join(dir, "v6.db"), "--tcp", "[::1]:0"],
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      const { text: banner, drained } = await readStdoutUntil(child, /\n/);
      try {
        const port = Number(/ on tcp:\[::1\]:(\d+)/.exec(banner)?.[1]);
        assert.ok(port > 0, banner);
        const closed = closedPort("::1");
        const env = {
          NETSQLITE_BUILD: build,
          NETSQLITE_PORT: String(port),
          NETSQLITE_CLOSED_PORT: String(closed),
        };
        const refused = new RegExp(
          `^ConnectionError: Cannot connect to tcp:\\[::1\\]:${closed}: ` +
            "(connect ECONNREFUSED ::1:\\d+|Connection refused \\(os error 111\\)) \\(is the server",
        );
        const runners: [string, string, string[]][] = [
          ["deno", Deno.execPath(), ["run", "-A", IPV6]],
          ...(await runtimes()).map(([name, bin]): [string, string, string[]] => [
            name,
            bin,
            [IPV6],
          ]),
        ];
        for (const [name, bin, args] of runners) {
          const { code, text } = await run(bin, args, env);
          assert.equal(code, 0, `${name}: ${text}`);
          const seen = JSON.parse(text.trim().split("\n").pop()!);
          assert.equal(seen.plain, 42, `${name}: ${text}`);
          assert.equal(seen.bracketed, 42, `${name}: ${text}`);
          assert.match(seen.closed, refused, `${name}: ${text}`);
        }
      } finally {
        child.kill("SIGKILL");
        await child.status;
        await drained;
      }
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }),
);

Deno.test(
  "nodebun: a tls.caCerts entry that is no certificate fails with a hint under Node.js and Bun as under Deno",
  withTimeLimit(60_000, async () => {
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-nodebun-" });
    try {
      if (await makeCertificateIfOpenssl(dir) === null) {
        console.log("skipped: no `openssl` to make a certificate");
        return;
      }
      const build = join(dir, "dist");
      await buildNode(new URL(`file://${build}/`));
      await using server = await startServerProcess({
        dir,
        transport: "tcp",
        args: ["--tls-cert", join(dir, "cert.pem"), "--tls-key", join(dir, "key.pem")],
        env: { NETSQLITE_TOKEN: "nodebun-secret" },
      });
      const env = {
        NETSQLITE_BUILD: build,
        NETSQLITE_TLS_PORT: String((server.connectOptions as { port: number }).port),
        NETSQLITE_TOKEN: "nodebun-secret",
      };
      // Deno: "invalid peer certificate: BadEncoding" or "UnknownIssuer"; Node.js: "unable to
      // verify the first certificate" (it skips what does not decode); Bun: "Invalid CA".
      const hinted = new RegExp(
        "^ConnectionError CONNECTION_CLOSED: Cannot connect to tcp:127\\.0\\.0\\.1:\\d+ with TLS: " +
          "[^(]+ \\((a certificate given in tls: \\{ caCerts \\} \\(CLI: --tls-ca FILE\\) does " +
          "not decode|the client does not trust the server's certificate)",
      );
      const runners: [string, string, string[]][] = [
        ["deno", Deno.execPath(), ["run", "-A", TLS_CA]],
        ...(await runtimes()).map(([name, bin]): [string, string, string[]] => [
          name,
          bin,
          [TLS_CA],
        ]),
      ];
      for (const [name, bin, args] of runners) {
        const { code, text } = await run(bin, args, env);
        assert.equal(code, 0, `${name}: ${text}`);
        const seen = JSON.parse(text.trim().split("\n").pop()!);
        assert.match(seen.badBase64, hinted, `${name}: ${text}`);
        assert.match(seen.noPem, hinted, `${name}: ${text}`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }),
);
