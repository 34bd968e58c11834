/**
 * README's example, as a new user runs it: unchanged but for the package
 * name mapped to this checkout, in a folder of its own, against a server on
 * the default socket of that folder's `netsqlite.db`, twice.
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
    for (const round of [1, 2]) {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--check", "-A", "example.ts"],
        cwd: dir,
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, `run ${round}: ${text}`);
      assert.match(text, /SQLITE_CONSTRAINT_UNIQUE/, `run ${round}: ${text}`);
      assert.match(text, /name: "ada"/, `run ${round}: ${text}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
