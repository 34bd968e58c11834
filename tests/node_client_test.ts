/**
 * The client under Node.js and Bun: `deno task build:node`'s bundle, loaded
 * by the machine's `node` (`node --test`) and by Bun (from its npm package,
 * installed once into a cache directory), against a real server over a Unix
 * socket, TCP and TLS, and the hints of failed TLS connections. Bun's part is
 * skipped, saying why, when it cannot be installed; Node's is skipped only
 * when `node` is missing.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildNode } from "../npm/build.ts";
import { VERSION } from "../version.ts";
import { startServer } from "./_helpers.ts";
import { withTimeLimit } from "./_limit.ts";
import { nodeCheckServers } from "./_node_servers.ts";
import { makeCertificateIfOpenssl } from "./_certs.ts";

const CHECK = fileURLToPath(new URL("./fixtures/node_client_check.mjs", import.meta.url));
const CA_CHECK = fileURLToPath(new URL("./fixtures/node_tls_ca_check.mjs", import.meta.url));
const ADAPTERS_CHECK = fileURLToPath(
  new URL("./fixtures/node_adapters_check.mjs", import.meta.url),
);
const decoder = new TextDecoder();

async function run(cmd: string, args: string[], env: Record<string, string>, cwd?: string) {
  const out = await new Deno.Command(cmd, { args, env, cwd, stdout: "piped", stderr: "piped" })
    .output();
  return { code: out.code, text: decoder.decode(out.stdout) + decoder.decode(out.stderr) };
}

async function which(cmd: string, args = ["--version"]): Promise<boolean> {
  try {
    return (await run(cmd, args, {})).code === 0;
  } catch {
    return false;
  }
}

/** The TypeScript the build emits declarations with, and type-checks consumers here. */
const TYPESCRIPT = "typescript@5.9";

/** `tsc --noEmit --strict` of TypeScript `version` (from npm) with `args`, run in `dir`. */
function tsc(dir: string, version: string, ...args: string[]) {
  return run(
    "npm",
    ["exec", "--yes", `--package=${version}`, "--", "tsc", "--noEmit", "--strict", ...args],
    {},
    dir,
  );
}

Deno.test(
  "node: the bundled client runs under Node.js over a Unix socket, TCP and TLS",
  withTimeLimit(120_000, async () => {
    if (!await which("node")) {
      console.log("skipped: no `node` on PATH");
      return;
    }
    await using s = await nodeCheckServers("netsqlite-node-");
    const { code, text } = await run("node", ["--test", "--test-reporter=tap", CHECK], s.env);
    assert.equal(code, 0, text);
    assert.match(text, s.tls ? /# pass 5\b/ : /# pass 4\b/, text);
    assert.match(text, /# fail 0\b/, text);
  }),
);

/** Bun from its npm package, installed once under the temp directory, or why not. */
async function installBun(): Promise<string | { skip: string }> {
  const dir = join(tmpdir(), "netsqlite-bun-1");
  const bin = join(dir, "node_modules", ".bin", "bun");
  if (await which(bin)) return bin;
  if (!await which("npm")) return { skip: "no `npm` to install Bun with" };
  await Deno.mkdir(dir, { recursive: true });
  const res = await run("npm", ["install", "--no-audit", "--no-fund", "bun@1"], {}, dir)
    .catch((err) => ({ code: 1, text: String(err) }));
  if (res.code !== 0 || !await which(bin)) {
    return { skip: `cannot install Bun from npm: ${res.text.trim().split("\n").pop()}` };
  }
  return bin;
}

Deno.test(
  "node: the bundled client runs under Bun over a Unix socket, TCP and TLS",
  withTimeLimit(180_000, async () => {
    const bun = await installBun();
    if (typeof bun !== "string") {
      console.log(`skipped: ${bun.skip}`);
      return;
    }
    await using s = await nodeCheckServers("netsqlite-node-");
    const { code, text } = await run(bun, ["run", CHECK], s.env);
    assert.equal(code, 0, text);
    assert.match(text, /^ok unix$/m, text);
    assert.match(text, /^ok tcp$/m, text);
    if (s.tls) assert.match(text, /^ok tls$/m, text);
    assert.match(text, /^ok tls hints$/m, text);
    assert.match(text, /^ok runtime options$/m, text);
  }),
);

Deno.test(
  "node: tls.caCerts adds to the authorities of Node.js and Bun, as under Deno: NODE_EXTRA_CA_CERTS stays trusted",
  withTimeLimit(180_000, async () => {
    const node = await which("node");
    const bun = await installBun();
    if (!node && typeof bun !== "string") {
      console.log(`skipped: no \`node\` on PATH, and ${bun.skip}`);
      return;
    }
    await using s = await nodeCheckServers("netsqlite-node-");
    if (!s.tls) return; // nodeCheckServers() said why
    // The server's CA (ca.pem, made by nodeCheckServers()) in NODE_EXTRA_CA_CERTS; caCerts another CA.
    const other = join(s.env.NETSQLITE_SCRATCH, "other");
    await Deno.mkdir(other);
    const env = {
      ...s.env,
      NODE_EXTRA_CA_CERTS: join(s.env.NETSQLITE_SCRATCH, "ca.pem"),
      NETSQLITE_OTHER_CA: (await makeCertificateIfOpenssl(other))!.ca,
    };
    if (node) {
      const { code, text } = await run("node", ["--test", "--test-reporter=tap", CA_CHECK], env);
      assert.equal(code, 0, text);
      assert.match(text, /# pass 1\b/, text);
    } else {
      console.log("Node.js part skipped: no `node` on PATH");
    }
    if (typeof bun === "string") {
      const { code, text } = await run(bun, ["run", CA_CHECK], env);
      assert.equal(code, 0, text);
      assert.match(text, /^ok caCerts add to the defaults$/m, text);
    } else {
      console.log(`Bun part skipped: ${bun.skip}`);
    }
  }),
);

Deno.test(
  "node: the build's type declarations type-check a TypeScript consumer",
  withTimeLimit(180_000, async () => {
    if (!await which("npm")) {
      console.log("skipped: no `npm` to run tsc with");
      return;
    }
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-types-" });
    try {
      const pkg = join(dir, "node_modules", "@netsqlite", "netsqlite");
      try {
        await buildNode(new URL(`file://${pkg}/`), { types: true });
      } catch (err) {
        console.log(`skipped: cannot run tsc from npm: ${(err as Error).message.slice(0, 200)}`);
        return;
      }
      await Deno.writeTextFile(join(dir, "package.json"), '{ "type": "module" }\n');
      await Deno.writeTextFile(
        join(dir, "main.mts"),
        [
          'import { connect, type Row, type RunResult } from "@netsqlite/netsqlite/client";',
          'import { SqliteError } from "@netsqlite/netsqlite";',
          'const db = await connect({ path: "/tmp/app.sock", max: 2 });',
          'const rows: Row[] = await db.query("SELECT 1");',
          'const r: RunResult = await db.run("SELECT 1");',
          'await db.transaction(async (tx) => { await tx.run("SELECT 1"); });',
          "// @ts-expect-error: port is a number",
          'await connect({ port: "7878" });',
          "// @ts-expect-error: no such method",
          "db.nope();",
          "const e: unknown = null;",
          "if (e instanceof SqliteError) console.log(e.code.toUpperCase());",
          "console.log(rows, r);",
          "{",
          '  await using scoped = await connect({ path: "/tmp/app.sock" });',
          '  await scoped.run("SELECT 1");',
          "}",
        ].join("\n") + "\n",
      );
      // TypeScript's older resolution (node10) reads no "exports", only "types".
      await Deno.writeTextFile(
        join(dir, "legacy.ts"),
        [
          'import { connect, type Row } from "@netsqlite/netsqlite";',
          "export async function first(): Promise<Row | undefined> {",
          '  const db = await connect({ path: "/tmp/app.sock" });',
          '  try { return await db.get("SELECT 1"); } finally { await db.close(); }',
          "}",
        ].join("\n") + "\n",
      );
      // No --skipLibCheck, no --lib and no @types/node: the declarations must stand alone,
      // whatever the target (below es2022 the default lib has no ErrorOptions, below es2018 no
      // AsyncGenerator: the declarations load those libs themselves). No drizzle-orm nor kysely
      // here: the client's declarations need neither.
      const esm = ["--module", "nodenext", "--moduleResolution", "nodenext", "main.mts"];
      for (const target of ["es2022", "es2017"]) {
        const out = await tsc(dir, TYPESCRIPT, "--target", target, ...esm);
        assert.equal(out.code, 0, `target ${target}: ${out.text}`);
      }
      // TypeScript 7 (what `npm install typescript` gives now) reads the same declarations.
      const seven = await tsc(dir, "typescript@7", "--target", "es2022", ...esm);
      assert.equal(seven.code, 0, `TypeScript 7: ${seven.text}`);
      // TypeScript 7 removed node10 (TS5108), hence 5.9 here.
      const legacy = await tsc(
        dir,
        TYPESCRIPT,
        ...["--target", "es2022", "--module", "commonjs", "--moduleResolution", "node10"],
        "legacy.ts",
      );
      assert.equal(legacy.code, 0, legacy.text);
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }),
);

/** esbuild from npm, installed once under the temp directory, or why not. */
async function installEsbuild(): Promise<string | { skip: string }> {
  const dir = join(tmpdir(), "netsqlite-esbuild-1");
  const bin = join(dir, "node_modules", ".bin", "esbuild");
  if (await which(bin)) return bin;
  if (!await which("npm")) return { skip: "no `npm` to install esbuild with" };
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(join(dir, "package.json"), '{ "private": true }\n');
  const res = await run("npm", ["install", "--no-audit", "--no-fund", "esbuild@0.25"], {}, dir)
    .catch((err) => ({ code: 1, text: String(err) }));
  if (res.code !== 0 || !await which(bin)) {
    return { skip: `cannot install esbuild from npm: ${res.text.trim().split("\n").pop()}` };
  }
  return bin;
}

Deno.test(
  "node: the build bundles to CommonJS, exports its package.json, and refuses autostart clearly",
  withTimeLimit(180_000, async (t) => {
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-npm-cjs-" });
    try {
      const pkg = join(dir, "node_modules", "@netsqlite", "netsqlite");
      await buildNode(new URL(`file://${pkg}/`));
      await Deno.writeTextFile(join(dir, "package.json"), '{ "private": true }\n');

      await t.step(
        "Deno: autostart from the build (no server.ts) is a clear TypeError",
        async () => {
          const mod = await import(`file://${pkg}/netsqlite.mjs`);
          await assert.rejects(
            mod.connect({
              path: join(dir, "none.sock"),
              autostart: { database: join(dir, "a.db"), timeout: 5000 },
            }),
            (err: Error) => {
              assert.ok(err instanceof TypeError, `${err.constructor.name}: ${err.message}`);
              assert.match(err.message, /^Invalid option "autostart": this copy of the client has/);
              assert.match(err.message, /server\.ts": the npm build ships the client only\)/);
              return true;
            },
          );
        },
      );

      if (!await which("node")) {
        console.log("Node.js part skipped: no `node` on PATH");
        return;
      }
      await t.step("Node.js: require() of the package's package.json", async () => {
        await Deno.writeTextFile(
          join(dir, "pkg.cjs"),
          'console.log(require("@netsqlite/netsqlite/package.json").version);\n',
        );
        const out = await run("node", ["pkg.cjs"], {}, dir);
        assert.equal(out.code, 0, out.text);
        assert.equal(out.text.trim(), VERSION);
      });

      await t.step(
        "Node.js: an esbuild CommonJS bundle of the client loads and queries",
        async () => {
          const esbuild = await installEsbuild();
          if (typeof esbuild !== "string") {
            console.log(`skipped: ${esbuild.skip}`);
            return;
          }
          await Deno.writeTextFile(
            join(dir, "app.cjs"),
            [
              'const { connect } = require("@netsqlite/netsqlite");',
              "(async () => {",
              "  const db = await connect({ path: process.env.NETSQLITE_PATH });",
              '  try { console.log(JSON.stringify(await db.get("SELECT 40 + 2 AS x"))); }',
              "  finally { await db.close(); }",
              "})().catch((err) => { console.error(err); process.exitCode = 1; });",
            ].join("\n") + "\n",
          );
          const bundle = await run(
            esbuild,
            ["app.cjs", "--bundle", "--platform=node", "--format=cjs", "--outfile=bundled.cjs"],
            {},
            dir,
          );
          assert.equal(bundle.code, 0, bundle.text);
          await using srv = await startServer();
          const env = { NETSQLITE_PATH: (srv.connectOptions as { path: string }).path };
          const out = await run("node", ["bundled.cjs"], env, dir);
          assert.equal(out.code, 0, out.text);
          assert.equal(out.text.trim(), '{"x":42}');
        },
      );
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }),
);

/** The ORM packages from npm, installed once into `<tmpdir>/netsqlite-peers-1`, or why not. */
async function installPeers(): Promise<string | { skip: string }> {
  const dir = join(tmpdir(), "netsqlite-peers-1");
  const ready = join(dir, "node_modules", "kysely", "package.json");
  const installed = await Deno.stat(join(dir, "node_modules", "drizzle-orm", "package.json"))
    .then(() => Deno.stat(ready)).then(() => true, () => false);
  if (installed) return dir;
  if (!await which("npm")) return { skip: "no `npm` to install drizzle-orm and kysely with" };
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(join(dir, "package.json"), '{ "private": true }\n');
  const res = await run(
    "npm",
    ["install", "--no-audit", "--no-fund", "drizzle-orm@^0.45", "kysely@^0.28"],
    {},
    dir,
  ).catch((err) => ({ code: 1, text: String(err) }));
  if (res.code !== 0) {
    return { skip: `cannot install the ORM packages: ${res.text.trim().split("\n").pop()}` };
  }
  return dir;
}

/**
 * A fresh project inside the ORM packages' folder (Node.js finds them there, as it finds a
 * project's own) with the build installed as README says: built outside it, packed by
 * `npm pack`, installed from the tarball. A link to the build instead of a copy would not find
 * the ORM packages, as for a user.
 */
async function adaptersProject(): Promise<
  { dir: string; [Symbol.asyncDispose](): Promise<void> } | { skip: string }
> {
  const peers = await installPeers();
  if (typeof peers !== "string") return peers;
  const build = await Deno.makeTempDir({ prefix: "netsqlite-npm-dist-" });
  const dir = await Deno.makeTempDir({ dir: peers, prefix: "project-" });
  const project = {
    dir,
    async [Symbol.asyncDispose]() {
      await Deno.remove(build, { recursive: true }).catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
  try {
    await buildNode(new URL(`file://${build}/`), { types: true });
    await Deno.writeTextFile(join(dir, "package.json"), '{ "private": true }\n');
    const pack = await run("npm", ["pack", "--pack-destination", dir, build], {}, dir);
    assert.equal(pack.code, 0, pack.text);
    const tarball = `netsqlite-netsqlite-${VERSION}.tgz`;
    const install = await run(
      "npm",
      ["install", "--no-audit", "--no-fund", `./${tarball}`],
      {},
      dir,
    );
    assert.equal(install.code, 0, install.text);
    const installed = await Deno.lstat(join(dir, "node_modules", "@netsqlite", "netsqlite"));
    assert.ok(installed.isDirectory, "Expected a copy of the build in node_modules, not a link");
    return project;
  } catch (err) {
    await project[Symbol.asyncDispose]();
    throw err;
  }
}

Deno.test(
  "node: the adapters' build runs drizzle-orm and kysely under Node.js and Bun, and type-checks",
  withTimeLimit(300_000, async () => {
    const made = await adaptersProject();
    if ("skip" in made) {
      console.log(`skipped: ${made.skip}`);
      return;
    }
    await using project = made;
    await using srv = await startServer();
    const env = { NETSQLITE_PATH: (srv.connectOptions as { path: string }).path };
    const script = join(project.dir, "check.mjs");
    await Deno.copyFile(ADAPTERS_CHECK, script); // bare imports resolve from the project
    if (await which("node")) {
      const { code, text } = await run(
        "node",
        ["--test", "--test-reporter=tap", script],
        env,
        project.dir,
      );
      assert.equal(code, 0, text);
      assert.match(text, /# pass 3\b/, text);
    } else {
      console.log("Node.js part skipped: no `node` on PATH");
    }
    const bun = await installBun();
    if (typeof bun === "string") {
      const { code, text } = await run(bun, ["run", script], env, project.dir);
      assert.equal(code, 0, text);
      assert.match(text, /^ok drizzle$/m, text);
      assert.match(text, /^ok kysely$/m, text);
      assert.match(text, /^ok shared client$/m, text);
    } else {
      console.log(`Bun part skipped: ${bun.skip}`);
    }
    await checkAdapterTypes(project.dir);
  }),
);

/**
 * Type-checks a TypeScript consumer of the adapters in `dir` (a project from
 * {@link adaptersProject}) against the build's declarations and those of the ORM packages:
 * `tsc --strict`, `nodenext`, no `--skipLibCheck` and no `@types/node`. The `@ts-expect-error`
 * lines fail the check when a type is `any` (the directive is then unused), and handing the
 * client module's `Client` to both adapters fails when the adapters' declarations hold another
 * copy of its class (its private fields make the two incompatible). drizzle-orm's own declarations
 * do not type-check without `skipLibCheck` (they name `Buffer`, `mysql2` and `gel`, whichever
 * driver a project uses), so errors in its files are let through, and no others.
 */
async function checkAdapterTypes(dir: string): Promise<void> {
  await Deno.writeTextFile(
    join(dir, "typed.mts"),
    [
      'import { connect } from "@netsqlite/netsqlite/client";',
      'import { drizzle, migrate, type NetsqliteRunResult } from "@netsqlite/netsqlite/drizzle";',
      'import { NetsqliteDialect } from "@netsqlite/netsqlite/kysely";',
      'import { eq } from "drizzle-orm";',
      'import { integer, sqliteTable, text } from "drizzle-orm/sqlite-core";',
      'import { type Generated, Kysely } from "kysely";',
      'const users = sqliteTable("users", { id: integer("id").primaryKey(), name: text("name").notNull() });',
      'const client = await connect({ path: "/tmp/app.sock" });',
      "const db = drizzle(client, { schema: { users } });",
      "const rows: { id: number; name: string }[] = await db.select().from(users).where(eq(users.id, 1));",
      "// @ts-expect-error: name is a string",
      "const wrong: { name: number }[] = await db.select().from(users);",
      'const r: NetsqliteRunResult = await db.insert(users).values({ name: "a" }).run();',
      "const changes: number = r.changes;",
      "const found: { id: number; name: string } | undefined = await db.query.users.findFirst();",
      "// @ts-expect-error: no such table in the schema",
      "await db.query.nope.findFirst();",
      'await migrate(db, { migrationsFolder: "./drizzle" });',
      "interface Database { people: { id: Generated<number>; name: string } }",
      "const k = new Kysely<Database>({ dialect: new NetsqliteDialect({ client }) });",
      'const people: { id: number; name: string }[] = await k.selectFrom("people").selectAll().execute();',
      "// @ts-expect-error: no such table",
      'await k.selectFrom("nope").selectAll().execute();',
      "// @ts-expect-error: client is a Client",
      "new NetsqliteDialect({ client: {} });",
      "console.log(rows, wrong, changes, found, people);",
      "await client.close();",
    ].join("\n") + "\n",
  );
  const out = await tsc(
    dir,
    TYPESCRIPT,
    ...["--target", "es2022", "--module", "nodenext", "--moduleResolution", "nodenext"],
    "typed.mts",
  );
  // An error is one line `file(line,col): error TSn: ...`, its details indented on the next ones.
  const drizzles = /^(\.\.\/)*node_modules\/drizzle-orm\/[^(]+\(\d+,\d+\): error TS\d+: /;
  const others = out.text.split("\n").filter((line) =>
    line.trim() !== "" && !line.startsWith(" ") && !drizzles.test(line)
  );
  assert.deepEqual(others, [], out.text);
}
