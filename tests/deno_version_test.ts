/** The start-up check of the Deno version: the comparison and the message. */

import assert from "node:assert/strict";
import { compareVersions, denoVersionProblem, MIN_DENO_VERSION } from "../server/deno_version.ts";

Deno.test("compareVersions() compares numerically, part by part", () => {
  assert.ok(compareVersions("2.4.0", "2.9.0") < 0);
  assert.ok(compareVersions("2.10.0", "2.9.6") > 0); // not as text
  assert.ok(compareVersions("3.0.0", "2.99.99") > 0);
  assert.ok(compareVersions("1.46.3", "2.0.0") < 0);
  assert.equal(compareVersions("2.9.0", "2.9.0"), 0);
  assert.equal(compareVersions("2.9", "2.9.0"), 0);
  assert.equal(compareVersions("2.9.0-rc.1", "2.9.0"), 0);
  assert.equal(compareVersions("2.9.6+4f2a1b3", "2.9.6"), 0);
  assert.ok(compareVersions("2.9.1", "2.9.0") > 0);
});

Deno.test("denoVersionProblem() refuses a Deno older than README's minimum, naming both versions", () => {
  assert.equal(MIN_DENO_VERSION, "2.9.0");
  assert.equal(
    denoVersionProblem("2.4.5"),
    "Deno 2.4.5 is too old: netsqlite needs Deno 2.9.0 or later; upgrade it (deno upgrade, or " +
      "npm install -g deno@2.9.6)",
  );
  assert.notEqual(denoVersionProblem("2.8.9"), null);
  assert.equal(denoVersionProblem("2.9.0"), null);
  assert.equal(denoVersionProblem("2.10.1"), null);
  assert.equal(denoVersionProblem(Deno.version.deno), null);
});

Deno.test("README names the same minimum Deno", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const [major, minor] = MIN_DENO_VERSION.split(".");
  assert.match(readme, new RegExp(`Deno ${major}\\.${minor}\\s+is\\s+the\\s+only\\s+requirement`));
});
