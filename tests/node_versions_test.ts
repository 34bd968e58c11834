/**
 * The bundled client under each Node.js version present on the machine, compared with Deno:
 * `tests/fixtures/node_versions_check.mjs` (values, typed errors, transactions, cursors, the
 * pool, close, no handle left open) run as a plain program by the system's `node` and by extra
 * Node.js binaries, and by Deno, against the same servers over a Unix socket, TCP and TLS; every
 * runtime must pass and see the same errors (class, name, code and message).
 *
 * Extra Node.js versions are never downloaded here: a version runs when its binary is present,
 * in `NETSQLITE_EXTRA_NODES` (paths separated by the system's path delimiter) or in
 * `<tmpdir>/netsqlite-node<major>-1/node_modules/node/bin/node` (what
 * `npm install node@<major>` in that directory installs), and is ignored, saying so, otherwise.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { delimiter, join } from "node:path";
import { tmpdir } from "node:os";
import { withTimeLimit } from "./_limit.ts";
import { nodeCheckServers } from "./_node_servers.ts";

const CHECK = fileURLToPath(new URL("./fixtures/node_versions_check.mjs", import.meta.url));
const decoder = new TextDecoder();

async function run(cmd: string, args: string[], env: Record<string, string>) {
  const out = await new Deno.Command(cmd, { args, env, stdout: "piped", stderr: "piped" })
    .output();
  return { code: out.code, text: decoder.decode(out.stdout) + decoder.decode(out.stderr) };
}

/** The version `node --version` prints (`v22.23.3`), or null when `bin` does not run. */
async function versionOf(bin: string, args = ["--version"]): Promise<string | null> {
  try {
    const out = await run(bin, args, {});
    return out.code === 0 ? out.text.trim() : null;
  } catch {
    return null;
  }
}

/** Runs the check with `cmd args`; returns what it observed, after asserting it passed. */
async function check(
  label: string,
  cmd: string,
  args: string[],
  env: Record<string, string>,
  tls: boolean,
): Promise<unknown> {
  const out = await run(cmd, [...args, CHECK], { ...env, NETSQLITE_TABLE_SUFFIX: label });
  assert.equal(out.code, 0, `${label}: ${out.text}`);
  const parts = ["unix", "tcp", ...(tls ? ["tls"] : []), "refused", "no handles left"];
  if (label !== "deno") parts.push("several addresses");
  for (const part of parts) {
    assert.match(out.text, new RegExp(`^ok ${part}$`, "m"), `${label}: ${out.text}`);
  }
  const line = out.text.split("\n").find((l) => l.startsWith("observed "));
  assert.ok(line, `${label}: ${out.text}`);
  return JSON.parse(line.slice("observed ".length));
}

/** Extra Node.js binaries present on the machine, by major version; none downloaded. */
async function extraNodes(): Promise<Map<string, { bin: string; version: string }>> {
  const candidates = (Deno.env.get("NETSQLITE_EXTRA_NODES") ?? "").split(delimiter)
    .filter((p) => p !== "");
  for (const major of ["22", "24"]) {
    candidates.push(
      join(tmpdir(), `netsqlite-node${major}-1`, "node_modules", "node", "bin", "node"),
    );
  }
  const found = new Map<string, { bin: string; version: string }>();
  for (const bin of candidates) {
    const version = await versionOf(bin);
    const major = version?.match(/^v(\d+)\./)?.[1];
    if (version && major && !found.has(major)) found.set(major, { bin, version });
  }
  return found;
}

/** Runs the check under Deno and then under `node` (a binary), and compares what they saw. */
async function sameAsDeno(node: string, version: string): Promise<void> {
  await using s = await nodeCheckServers("netsqlite-nodever-");
  const deno = await check("deno", Deno.execPath(), ["run", "-A"], s.env, s.tls);
  const seen = await check(`node_${version}`, node, [], s.env, s.tls);
  assert.deepEqual(seen, deno, `Node.js ${version} differs from Deno`);
}

const system = await versionOf("node");
const extras = await extraNodes();

Deno.test({
  name: `node: the client behaves under the system's Node.js (${system ?? "absent"}) as under Deno`,
  ignore: system === null,
  fn: withTimeLimit(180_000, () => sameAsDeno("node", system!)),
});

for (const major of new Set(["22", "24", ...extras.keys()])) {
  const extra = extras.get(major);
  const name = `node: the client behaves under Node.js ${major} as under Deno`;
  if (extra === undefined) {
    console.log(
      `${name}: ignored, no Node.js ${major} here (\`npm install node@${major}\` in ` +
        `${join(tmpdir(), `netsqlite-node${major}-1`)}, or its binary in NETSQLITE_EXTRA_NODES)`,
    );
  }
  Deno.test({
    name: extra === undefined ? name : `${name} (${extra.version}, ${extra.bin})`,
    ignore: extra === undefined || extra.version === system,
    fn: withTimeLimit(180_000, () => sameAsDeno(extra!.bin, extra!.version)),
  });
}
