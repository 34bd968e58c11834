/** `deno task doc:lint` (tests/doc_lint.ts) covers every entry point and finds nothing of ours. */

import assert from "node:assert/strict";
import { docLint, entryPoints, THIRD_PARTY_TYPES } from "./doc_lint.ts";

Deno.test("docLint() lints every entry point of deno.json, the adapters included, and finds nothing but the documented drizzle-orm and kysely types", async () => {
  const tasks = JSON.parse(Deno.readTextFileSync(new URL("../deno.json", import.meta.url))).tasks;
  assert.equal(tasks["doc:lint"], "deno run --allow-read --allow-run tests/doc_lint.ts");
  const entries = entryPoints();
  for (const file of ["mod.ts", "client.ts", "server.ts", "version.ts"]) {
    assert.ok(entries.includes(file), entries.join(" "));
  }
  assert.ok(entries.includes("adapters/drizzle.ts") && entries.includes("adapters/kysely.ts"));
  const { findings, exceptions } = await docLint();
  assert.deepEqual(findings.map((f) => f.text), []);
  // Each exception listed is still reported: the list says what is true.
  for (const [file, types] of Object.entries(THIRD_PARTY_TYPES)) {
    for (const type of types) {
      assert.ok(
        exceptions.some((f) => f.file === file && f.privateType === type),
        `${file}: ${type} no longer reported`,
      );
    }
  }
});
