/**
 * How the project reaches users, from a checkout wherever it lies: the npm
 * build (`deno task build:node`) and `netsqlite bench` in a checkout whose
 * path holds characters a file URL escapes (a blank, `#`, a non-ASCII letter).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath as fromFileUrl, pathToFileURL } from "node:url";
import { tempDir } from "./_helpers.ts";

const REPO = new URL("../", import.meta.url);
/** Top-level entries of the checkout left out of the copy: not needed, or large (the binary). */
const SKIP = new Set([".git", "tests", "node_modules", "coverage", "netsqlite", "netsqlite.exe"]);

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

/** The files `deno publish --dry-run` would ship from `dir`, relative to it. */
async function publishedFiles(dir: string): Promise<string[]> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["publish", "--dry-run", "--allow-dirty", "--no-check"],
    cwd: dir,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, text);
  const base = pathToFileURL(`${dir}/`).href;
  return [...text.matchAll(/^\s+(file:\/\/\S+) \(/gm)].map((m) => {
    assert.ok(m[1].startsWith(base), m[1]);
    return decodeURIComponent(m[1].slice(base.length));
  });
}

Deno.test("packaging: the JSR package ships no .git (a worktree's or submodule's file), tests or build", async () => {
  await using tmp = await tempDir();
  const checkout = join(tmp.path, "netsqlite");
  await copyCheckout(fromFileUrl(REPO), checkout);
  // A git worktree (or submodule) has a .git file naming the repository's directory on this machine.
  await Deno.writeTextFile(join(checkout, ".git"), "gitdir: /home/me/netsqlite/.git/worktrees/x\n");
  await Deno.mkdir(join(checkout, "npm/dist"));
  await Deno.writeTextFile(join(checkout, "npm/dist/netsqlite.mjs"), "");
  const files = await publishedFiles(checkout);
  assert.ok(files.includes("mod.ts") && files.includes("adapters/kysely.ts"), files.join("\n"));
  assert.deepEqual(files.filter((f) => /^(\.git|tests\/|bench\/|npm\/|\.ci\/)/.test(f)), []);
});

Deno.test("packaging: the files JSR would ship alone serve every export: server, client and adapters from another project", async () => {
  await using tmp = await tempDir();
  const checkout = join(tmp.path, "checkout");
  await copyCheckout(fromFileUrl(REPO), checkout);
  const pkg = join(tmp.path, "pkg");
  for (const file of await publishedFiles(checkout)) {
    await Deno.mkdir(join(pkg, file, ".."), { recursive: true });
    await Deno.copyFile(join(checkout, file), join(pkg, file));
  }
  const exports: Record<string, string> = JSON.parse(
    await Deno.readTextFile(join(pkg, "deno.json")),
  ).exports;
  const user = join(tmp.path, "user");
  await Deno.mkdir(user);
  await Deno.writeTextFile(
    join(user, "deno.json"),
    JSON.stringify({
      imports: Object.fromEntries(
        Object.entries(exports).map((
          [name, file],
        ) => [`@netsqlite/netsqlite${name.slice(1)}`, join(pkg, file)]),
      ),
    }),
  );
  await Deno.writeTextFile(
    join(user, "app.ts"),
    `import { connect, VERSION as V1 } from "@netsqlite/netsqlite";
import { serve, VERSION } from "@netsqlite/netsqlite/server";
import { connect as clientConnect } from "@netsqlite/netsqlite/client";
import { drizzle } from "@netsqlite/netsqlite/drizzle";
import { NetsqliteDialect } from "@netsqlite/netsqlite/kysely";
const dir = Deno.args[0];
await using server = await serve({ database: dir + "/app.db", path: dir + "/app.sock" });
await using db = await clientConnect({ path: dir + "/app.sock" });
await db.exec("CREATE TABLE t(a)");
await db.run("INSERT INTO t VALUES (?)", [42n]);
const orm = drizzle(db);
const dialect = new NetsqliteDialect({ client: db });
await using other = await connect({ database: dir + "/app.db" });
console.log(JSON.stringify({
  version: VERSION === V1 ? VERSION : null,
  a: (await other.get<{ a: number }>("SELECT a FROM t"))?.a,
  adapters: typeof orm.select === "function" && typeof dialect.createDriver === "function",
}));
`,
  );
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-lock", "app.ts", tmp.path],
    cwd: user,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  assert.equal(out.code, 0, dec.decode(out.stderr));
  const { VERSION } = await import("../version.ts");
  assert.deepEqual(JSON.parse(dec.decode(out.stdout)), { version: VERSION, a: 42, adapters: true });
});

Deno.test("packaging: the examples of the published API import the package by name, not by paths of the checkout", async () => {
  // JSR shows these examples on the package's pages, where "./drizzle.ts" or "../server.ts"
  // means nothing to the reader; "@netsqlite/netsqlite/..." works there and in `deno test --doc`.
  const entries = Object.values(
    JSON.parse(await Deno.readTextFile(new URL("deno.json", REPO))).exports as Record<
      string,
      string
    >,
  );
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["doc", "--json", ...entries],
    cwd: fromFileUrl(REPO),
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const relative: string[] = [];
  const visit = (node: unknown, name: string) => {
    if (typeof node === "string") {
      for (const m of node.matchAll(/from ["'](\.{1,2}\/[^"']+)["']/g)) {
        relative.push(`${name}: ${m[1]}`);
      }
    } else if (Array.isArray(node)) {
      for (const item of node) visit(item, name);
    } else if (typeof node === "object" && node !== null) {
      const own = (node as { name?: unknown }).name;
      for (const value of Object.values(node)) {
        visit(value, typeof own === "string" ? own : name);
      }
    }
  };
  visit(JSON.parse(new TextDecoder().decode(out.stdout)), "(module)");
  assert.deepEqual([...new Set(relative)], []);
});
