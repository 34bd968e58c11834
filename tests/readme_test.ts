/**
 * README's examples, as a new user runs them: the main example unchanged but
 * for the package name mapped to this checkout, in a folder of its own,
 * against a server on the default socket of that folder's `netsqlite.db`,
 * twice; the Drizzle and Kysely examples likewise, with their socket path
 * pointed at a test server.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { serve } from "../server.ts";
import { defaultSocketPath } from "../transport/address.ts";

async function readmeExample(): Promise<string> {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const m = /\n## Example\n+```ts\n([\s\S]*?)\n```/.exec(readme);
  assert.ok(m, "README has a ## Example section with a ts block");
  return m[1];
}

Deno.test("readme: the example runs unchanged, twice, on the same database", async () => {
  const source = await readmeExample();
  assert.match(source, /from "@netsqlite\/netsqlite"/);
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-readme-" });
  try {
    await Deno.writeTextFile(
      join(dir, "deno.json"),
      JSON.stringify({
        imports: { "@netsqlite/netsqlite": new URL("../mod.ts", import.meta.url).href },
      }),
    );
    await Deno.writeTextFile(join(dir, "example.ts"), source);
    const database = join(dir, "netsqlite.db");
    await using _server = await serve({ database, path: defaultSocketPath(database) });
    for (const [round, text] of (await runTwice(dir)).entries()) {
      assert.match(text, /SQLITE_CONSTRAINT_UNIQUE/, `run ${round + 1}: ${text}`);
      assert.match(text, /name: "ada"/, `run ${round + 1}: ${text}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

/**
 * Runs `example.ts` in `dir` twice (`deno run --check -A`), each run
 * checked to exit 0; returns each run's output (stdout, and stderr unless
 * `withStderr` is false).
 */
async function runTwice(dir: string, withStderr = true): Promise<string[]> {
  const outputs: string[] = [];
  for (const round of [1, 2]) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--check", "-A", "example.ts"],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    const text = stdout + new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, `run ${round}: ${text}`);
    outputs.push(withStderr ? text : stdout);
  }
  return outputs;
}

/** The first `ts` block of README's `## {section}`. */
async function readmeSnippet(section: string): Promise<string> {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const start = readme.indexOf(`\n## ${section}\n`);
  assert.ok(start >= 0, `README has a ## ${section} section`);
  const m = /\n```ts\n([\s\S]*?)\n```/.exec(readme.slice(start));
  assert.ok(m, `README's ## ${section} has a ts block`);
  return m[1];
}

/** Runs README's `## {section}` example twice, its socket path replaced; returns each output. */
async function runSnippet(section: string, module: string): Promise<string[]> {
  const source = await readmeSnippet(section);
  assert.match(source, new RegExp(`from "@netsqlite/netsqlite/${module}"`));
  assert.match(source, /"\/tmp\/app\.sock"/);
  const config = JSON.parse(
    await Deno.readTextFile(new URL("../deno.json", import.meta.url)),
  ) as { imports: Record<string, string> };
  const dir = await Deno.makeTempDir({ prefix: `netsqlite-readme-${module}-` });
  try {
    const socket = join(dir, "app.sock");
    await Deno.writeTextFile(
      join(dir, "deno.json"),
      JSON.stringify({
        imports: {
          ...config.imports,
          "@netsqlite/netsqlite": new URL("../mod.ts", import.meta.url).href,
          [`@netsqlite/netsqlite/${module}`]: new URL(`../adapters/${module}.ts`, import.meta.url)
            .href,
        },
      }),
    );
    await Deno.copyFile(new URL("../deno.lock", import.meta.url), join(dir, "deno.lock"));
    await Deno.writeTextFile(
      join(dir, "example.ts"),
      source.replaceAll('"/tmp/app.sock"', JSON.stringify(socket)),
    );
    await using _server = await serve({ database: join(dir, "app.db"), path: socket });
    return await runTwice(dir, false);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

Deno.test("readme: the Drizzle example runs as written, twice, on the same database", async () => {
  const [first, second] = await runSnippet("Drizzle", "drizzle");
  assert.match(first, /name: "ada\d+ lovelace"/);
  assert.match(first, /\n1 1\n$/); // one user, counted by the batch
  assert.match(second, /name: "ada\d+ lovelace"/);
  assert.match(second, /\n2 2\n$/);
});

Deno.test("readme: the Kysely example runs as written, twice, on the same database", async () => {
  const [first, second] = await runSnippet("Kysely", "kysely");
  assert.equal(first, '{ id: 1, name: "Ada L." }\n');
  assert.equal(second, '{ id: 1, name: "Ada L." }\n{ id: 2, name: "Ada L." }\n');
});
