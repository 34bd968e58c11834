/**
 * How the project reaches users, from a checkout wherever it lies: the npm
 * build (`deno task build:node`) and `netsqlite bench` in a checkout whose
 * path holds characters a file URL escapes (a blank, `#`, a non-ASCII letter).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import { tempDir } from "./_helpers.ts";

const REPO = new URL("../", import.meta.url);
/** Top-level entries of the checkout left out of the copy: not needed, or large. */
const SKIP = new Set([".git", "tests", "node_modules", "coverage"]);

/**
 * Copies the checkout's sources (every file but those under {@link SKIP},
 * `npm/dist/` and the databases) to `dst`, as a clone there would hold them.
 */
async function copyCheckout(src: string, dst: string, top = true): Promise<void> {
  await Deno.mkdir(dst, { recursive: true });
  for await (const e of Deno.readDir(src)) {
    if (top && (SKIP.has(e.name) || e.name.startsWith("netsqlite.db"))) continue;
    if (e.isDirectory && e.name === "dist" && src.endsWith("/npm")) continue;
    if (e.isDirectory) await copyCheckout(join(src, e.name), join(dst, e.name), false);
    else if (e.isFile) await Deno.copyFile(join(src, e.name), join(dst, e.name));
  }
}

/** A directory name with a blank, a `#` and a non-ASCII letter: each escaped in a file URL. */
const ODD_NAME = "a checkout #1 é";

Deno.test("packaging: deno task build:node works in a checkout whose path has a blank, # or é", async () => {
  await using tmp = await tempDir();
  const checkout = join(tmp.path, ODD_NAME, "netsqlite");
  await copyCheckout(fromFileUrl(REPO), checkout);
  // Without --types: the bundle alone (the types need tsc from npm; the paths are the same).
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-lock", "npm/build.ts"],
    cwd: checkout,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  assert.equal(out.code, 0, `${dec.decode(out.stdout)}${dec.decode(out.stderr)}`);
  assert.equal(dec.decode(out.stdout), `Built ${join(checkout, "npm", "dist")}/\n`);
  const pkg = JSON.parse(await Deno.readTextFile(join(checkout, "npm/dist/package.json")));
  assert.equal(pkg.name, "@netsqlite/netsqlite");
  const client = await Deno.readTextFile(join(checkout, "npm/dist/netsqlite.mjs"));
  assert.match(client, /lib\/client\.js/);
});

Deno.test("packaging: build.ts takes an output directory relative to where it runs", async () => {
  await using tmp = await tempDir();
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-lock", fromFileUrl(new URL("npm/build.ts", REPO)), "out dir"],
    cwd: tmp.path,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  assert.equal(out.code, 0, `${dec.decode(out.stdout)}${dec.decode(out.stderr)}`);
  assert.equal(dec.decode(out.stdout), `Built ${join(tmp.path, "out dir")}/\n`);
  await Deno.stat(join(tmp.path, "out dir", "netsqlite.mjs"));
});

Deno.test("packaging: netsqlite bench runs bench/load.ts in a checkout whose path has a blank, # or é", async () => {
  await using tmp = await tempDir();
  const checkout = join(tmp.path, ODD_NAME, "netsqlite");
  await copyCheckout(fromFileUrl(REPO), checkout);
  // A bad flag: bench/load.ts itself refuses it (exit status 2), so it ran, and no load runs.
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(checkout, "cli.ts"), "bench", "--bogus"],
    cwd: tmp.path,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 2, stderr);
  assert.equal(stderr, "netsqlite: Unknown option '--bogus' (--help lists the options)\n");
});
