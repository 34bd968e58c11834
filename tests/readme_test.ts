/**
 * README's examples, as a new user runs them: the main example unchanged, in a
 * folder of its own whose deno.json holds the imports README's "Installing"
 * tells users to write (the package's paths pointed at this checkout),
 * against a server on the default socket of that folder's `netsqlite.db`,
 * twice; the Drizzle and Kysely examples likewise, with their socket path
 * pointed at a test server. The key-value, change-feed and `migrate`
 * snippets (fenced `ts ignore`: they use a `db` or `client` defined
 * elsewhere) run with a few lines before them that define it.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { serve } from "../server.ts";
import { connect } from "../client.ts";
import { defaultSocketPath } from "../transport/address.ts";
import { PEERS } from "../npm/build.ts";

const ROOT = new URL("../", import.meta.url);

/**
 * The `imports` of the deno.json README's "Installing" shows for a checkout,
 * with its `../netsqlite/` paths pointed at this checkout: what a user's
 * project holds (deno.json's own imports are not theirs).
 */
async function readmeImports(): Promise<Record<string, string>> {
  const readme = await Deno.readTextFile(new URL("README.md", ROOT));
  const start = readme.indexOf("\n## Installing\n");
  assert.ok(start >= 0, "README has a ## Installing section");
  const m = /\n```json\n([\s\S]*?)\n```/.exec(readme.slice(start));
  assert.ok(m, "README's ## Installing has a json block");
  const { imports } = JSON.parse(m[1]) as { imports: Record<string, string> };
  return Object.fromEntries(
    Object.entries(imports).map(([name, target]) => {
      if (!target.startsWith("../netsqlite/")) return [name, target];
      const local = new URL(target.slice("../netsqlite/".length), ROOT);
      assert.ok(Deno.statSync(local).isFile, `${name}: ${target}`);
      return [name, local.href];
    }),
  );
}

/**
 * Writes a new user's `deno.json` (README's imports) and deno.lock (this
 * checkout's, so the ORM packages are those the suite pins) into `dir`.
 */
async function writeProject(dir: string): Promise<void> {
  await Deno.writeTextFile(
    join(dir, "deno.json"),
    JSON.stringify({ imports: await readmeImports() }, null, 2),
  );
  await Deno.copyFile(new URL("deno.lock", ROOT), join(dir, "deno.lock"));
}

Deno.test("readme: the imports Installing shows map the package's every export to the checkout, and the ORM packages at the adapters' ranges", async () => {
  const imports = await readmeImports();
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT))) as {
    name: string;
    exports: Record<string, string>;
    imports?: Record<string, string>;
  };
  for (const [path, file] of Object.entries(config.exports)) {
    const name = config.name + path.slice(1);
    assert.equal(imports[name], new URL(file, ROOT).href, name);
  }
  const others = Object.entries(imports).filter(([name]) => !name.startsWith(config.name));
  assert.deepEqual(others, [
    ["drizzle-orm", `npm:drizzle-orm@${PEERS["drizzle-orm"]}`],
    ["drizzle-orm/", `npm:/drizzle-orm@${PEERS["drizzle-orm"]}/`],
    ["kysely", `npm:kysely@${PEERS.kysely}`],
  ]);
  // deno task installs every npm package deno.json maps (see serve_task_test.ts).
  assert.equal(config.imports, undefined);
});

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
    await writeProject(dir);
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
  const dir = await Deno.makeTempDir({ prefix: `netsqlite-readme-${module}-` });
  try {
    const socket = join(dir, "app.sock");
    await writeProject(dir);
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

/** The `ts` block (fenced `ts` or `ts ignore`, possibly indented) of README's `heading` holding `marker`. */
async function readmeBlock(heading: string, marker: string): Promise<string> {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const start = readme.indexOf(`\n${heading}\n`);
  assert.ok(start >= 0, `README has a ${heading} section`);
  const blocks = readme.slice(start).matchAll(/\n( *)```ts(?: ignore)?\n([\s\S]*?)\n *```/g);
  for (const [, indent, body] of blocks) {
    if (!body.includes(marker)) continue;
    return body.split("\n").map((line) => line.slice(indent.length)).join("\n");
  }
  assert.fail(`README's ${heading} has a ts block with ${JSON.stringify(marker)}`);
}

/**
 * Writes `program` as `example.ts` in a new folder (with README's imports,
 * the package mapped to this checkout, and `files` beside it), serves
 * `app.db` there, runs the program twice and returns each run's stdout;
 * `after` sees the server's socket path before the server stops.
 */
async function runProgram(
  program: (socket: string) => string,
  files: Record<string, string> = {},
  after?: (socket: string) => Promise<void>,
): Promise<string[]> {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-readme-snippet-" });
  try {
    const socket = join(dir, "app.sock");
    await writeProject(dir);
    for (const [name, text] of Object.entries(files)) {
      await Deno.mkdir(join(dir, name, ".."), { recursive: true });
      await Deno.writeTextFile(join(dir, name), text);
    }
    await Deno.writeTextFile(join(dir, "example.ts"), program(socket));
    await using _server = await serve({ database: join(dir, "app.db"), path: socket });
    const outputs = await runTwice(dir, false);
    await after?.(socket);
    return outputs;
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Lines that give the key-value and feed snippets their `db` and an `orders` table. */
function kvPreamble(socket: string): string {
  return [
    'import { connect } from "@netsqlite/netsqlite";',
    `await using db = await connect({ path: ${JSON.stringify(socket)} });`,
    'await db.exec("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, total INTEGER)");',
    "",
  ].join("\n");
}

Deno.test("readme: the key-value example runs as written, twice, on the same database", async () => {
  const kv = await readmeBlock("### Key-value collections", 'db.kv("carts")');
  let left = -1;
  let orders = -1;
  const outputs = await runProgram((socket) => kvPreamble(socket) + kv, {}, async (socket) => {
    await using db = await connect({ path: socket });
    left = await db.kv("carts").count({ prefix: ["user"] });
    orders = (await db.values("SELECT count(*) FROM orders"))[0][0] as number;
  });
  // Both runs list the two keys, newest first; each deleted them at its end.
  for (const out of outputs) assert.equal(out, '[ "user", 43 ]\n[ "user", 42 ]\n');
  assert.equal(left, 0);
  assert.equal(orders, 2);
});

Deno.test({
  name: "readme: the change-feed example reports the key-value example's changes as written",
  // node:sqlite has no update hook: subscribe fails with FEED_UNSUPPORTED there.
  ignore: Deno.env.get("NETSQLITE_ENGINE") === "node",
  async fn() {
    const kv = await readmeBlock("### Key-value collections", 'db.kv("carts")');
    const feed = await readmeBlock("### Change feeds", "db.subscribe(");
    const [subscribe, ...loop] = feed.split("\n");
    assert.match(subscribe, /^await using feed = await db\.subscribe\(/);
    // The feed is open before the writes start; they run while it is read,
    // and the feed is closed once it printed their 7 changes.
    const program = (socket: string): string =>
      [
        kvPreamble(socket),
        subscribe,
        "const print = console.log;",
        "let changes = 0;",
        "console.log = (...args: unknown[]) => {",
        "  print(...args);",
        '  if (typeof args[0] === "number" && ++changes === 7) feed.close();',
        "};",
        `const writes = (async () => {\n${kv}\n})();`,
        ...loop,
        "await writes;",
      ].join("\n");
    for (const out of await runProgram(program)) {
      const lines = out.trimEnd().split("\n").filter((line) => /^\d/.test(line));
      const expected = [
        /^(\d+) carts \[ "user", 42 \] (insert|update) (\d+) \{ items: \[ 1n, 2n \], note: Uint8Array\(1\) \[ 1 \] \}$/,
        /^(\d+) carts \[ "user", 42 \] update (\d+) \{ items: \[\] \}$/,
        /^(\d+) carts \[ "user", 43 \] (insert|update) (\d+) \{\}$/,
        /^(\d+) carts \[ "user", 42 \] update (\d+) \{\}$/,
        /^(\d+) carts \[ "user", 43 \] delete (\d+) undefined$/,
        /^(\d+) orders insert (\d+) \{ id: \2, total: 42 \}$/,
        /^(\d+) carts \[ "user", 42 \] delete (\d+) undefined$/,
      ];
      assert.equal(lines.length, expected.length, out);
      lines.forEach((line, i) => assert.match(line, expected[i], out));
      const commits = lines.map((line) => Number(line.split(" ")[0]));
      // One commit per write; the atomic's two changes share one, as do the transaction's.
      assert.equal(new Set(commits).size, 5, out);
      assert.equal(commits[3], commits[4], out);
      assert.equal(commits[5], commits[6], out);
    }
  },
});

Deno.test("readme: the Drizzle bigint column snippet reads 2^62 + 7 exactly through a nested with", async () => {
  const snippet = await readmeBlock("## Drizzle", "const bigintText = customType<");
  const program = (socket: string): string =>
    [
      'import { connect } from "@netsqlite/netsqlite";',
      'import { drizzle } from "@netsqlite/netsqlite/drizzle";',
      'import { relations } from "drizzle-orm";',
      snippet,
      'const owners = sqliteTable("owners", { id: integer("id").primaryKey() });',
      "const ownersRelations = relations(owners, ({ many }) => ({ accounts: many(accounts) }));",
      "const accountsRelations = relations(accounts, ({ one }) => ({",
      "  owner: one(owners, { fields: [accounts.ownerId], references: [owners.id] }),",
      "}));",
      `await using client = await connect({ path: ${JSON.stringify(socket)} });`,
      "const db = drizzle(client, {",
      "  schema: { owners, accounts, ownersRelations, accountsRelations },",
      "});",
      "await client.exec(",
      '  "CREATE TABLE IF NOT EXISTS owners (id INTEGER PRIMARY KEY); " +',
      '    "CREATE TABLE IF NOT EXISTS accounts (id INTEGER PRIMARY KEY, " +',
      '    "owner_id INTEGER NOT NULL, balance TEXT NOT NULL); " +',
      '    "DELETE FROM accounts; DELETE FROM owners; INSERT INTO owners VALUES (1)",',
      ");",
      "await db.insert(accounts).values({ id: 1, ownerId: 1, balance: 2n ** 62n + 7n });",
      "const owner = await db.query.owners.findFirst({ with: { accounts: true } });",
      "const balance = owner?.accounts[0].balance;",
      "console.log(typeof balance, String(balance));",
    ].join("\n");
  const outputs = await runProgram(program);
  assert.deepEqual(outputs, ["bigint 4611686018427387911\n", "bigint 4611686018427387911\n"]);
});

Deno.test("readme: the drizzle-kit migrate snippet applies a migration folder, once", async () => {
  const snippet = await readmeBlock("## Drizzle", "await migrate(");
  let tables: unknown[][] = [];
  const journal = {
    version: "7",
    dialect: "sqlite",
    entries: [{
      idx: 0,
      version: "6",
      when: 1_700_000_000_000,
      tag: "0000_init",
      breakpoints: true,
    }],
  };
  const outputs = await runProgram(
    (socket) =>
      [
        'import { connect } from "@netsqlite/netsqlite";',
        `await using client = await connect({ path: ${JSON.stringify(socket)} });`,
        snippet,
      ].join("\n"),
    {
      "drizzle/0000_init.sql":
        "CREATE TABLE users (id INTEGER PRIMARY KEY);\n--> statement-breakpoint\nINSERT INTO users DEFAULT VALUES;",
      "drizzle/meta/_journal.json": JSON.stringify(journal),
    },
    async (socket) => {
      await using db = await connect({ path: socket });
      tables = await db.values(
        "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM __drizzle_migrations)",
      );
    },
  );
  assert.deepEqual(outputs, ["", ""]);
  assert.deepEqual(tables, [[1, 1]]); // applied by the first run only
});
