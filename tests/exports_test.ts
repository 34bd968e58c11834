/**
 * The package's entry points: the core modules pull in no ORM package (the
 * adapters' peers are optional), and the adapters load on their own.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { join } from "node:path";
import { buildNode, PEERS, rewriteNpmSpecifiers } from "../npm/build.ts";

async function graph(entry: string): Promise<string[]> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", fileURLToPath(new URL(`../${entry}`, import.meta.url))],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const info = JSON.parse(new TextDecoder().decode(out.stdout));
  // Every module of the graph, npm packages as `npm:/name@version` (`npmPackages` would
  // list the whole lockfile's resolution, not this graph).
  return (info.modules as { specifier: string }[]).map((m) => m.specifier);
}

for (const entry of ["mod.ts", "client.ts", "server.ts", "cli.ts"]) {
  Deno.test(`exports: ${entry} pulls in neither drizzle-orm nor kysely`, async () => {
    const deps = await graph(entry);
    assert.ok(deps.length > 5, `expected a module graph, got ${deps.length} entries`);
    assert.deepEqual(deps.filter((d) => /drizzle|kysely/.test(d)), []);
  });
}

Deno.test("exports: each adapter pulls in its own ORM package only", async () => {
  const drizzle = await graph("adapters/drizzle.ts");
  assert.ok(drizzle.some((d) => d.startsWith("npm:/drizzle-orm@")), drizzle.join("\n"));
  assert.ok(!drizzle.some((d) => d.includes("kysely")));
  const kysely = await graph("adapters/kysely.ts");
  assert.ok(kysely.some((d) => d.startsWith("npm:/kysely@")), kysely.join("\n"));
  assert.ok(!kysely.some((d) => d.includes("drizzle")));
});

Deno.test("exports: VERSION is deno.json's version, and every executable entry prints it", async () => {
  const { VERSION } = await import("../version.ts");
  const config = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  assert.equal(config.version, VERSION);
  for (const entry of ["server.ts", "cli.ts"]) {
    for (const flag of ["--version", "-V"]) {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", fileURLToPath(new URL(`../${entry}`, import.meta.url)), flag],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(out.code, 0, `${entry} ${flag}: ${new TextDecoder().decode(out.stderr)}`);
      assert.equal(new TextDecoder().decode(out.stdout), `netsqlite ${VERSION}\n`);
    }
  }
});

/**
 * Types of the ORM packages that `deno doc --lint` 2.9 reports as private
 * when an adapter's public API names them (denoland/deno#27364: it does not
 * yet know types of other packages are theirs to document). Nothing else may
 * be reported.
 */
const PEER_TYPES = new Set([
  "DrizzleConfig",
  "SqliteRemoteDatabase",
  "SqliteRemoteResult",
  "BaseSQLiteDatabase",
  "BatchItem",
  "BatchResponse",
  "Dialect",
  "Driver",
  "QueryCompiler",
  "DialectAdapter",
  "Kysely",
  "DatabaseIntrospector",
]);

Deno.test("exports: deno doc --lint is clean on every entry (adapters: but for peer types)", async () => {
  const root = fileURLToPath(new URL("../", import.meta.url));
  const lint = async (entries: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["doc", "--lint", ...entries],
      cwd: root,
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    return new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  };
  const core = await lint(["mod.ts", "client.ts", "server.ts", "version.ts"]);
  assert.doesNotMatch(core, /^error/m, core);
  const adapters = await lint([
    "mod.ts",
    "client.ts",
    "adapters/drizzle.ts",
    "adapters/kysely.ts",
  ]);
  const errors = [...adapters.matchAll(/^error\[([a-z-]+)\]: (.*)$/gm)];
  assert.ok(errors.length > 0 || !/^error/m.test(adapters), adapters);
  for (const [, code, message] of errors) {
    const ref = /references private type '(\w+)'/.exec(message);
    assert.ok(code === "private-type-ref" && ref && PEER_TYPES.has(ref[1]), `${code}: ${message}`);
  }
});

Deno.test("exports: mod.ts carries every value client.ts exports, and server.ts's but for its CLI", async () => {
  const mod = await import("../mod.ts");
  const client = await import("../client.ts");
  const server = await import("../server.ts");
  assert.deepEqual(Object.keys(client).filter((k) => !(k in mod)), []);
  assert.deepEqual(Object.keys(server).filter((k) => !(k in mod)).sort(), [
    "describeEngine",
    "main",
    "parseServeArgs",
  ]);
  assert.equal(mod.KvConflictError, client.KvConflictError);
});

Deno.test("exports: the LICENSE (MIT, as deno.json says) goes into the JSR package and the npm build", async () => {
  const root = new URL("../", import.meta.url);
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));
  assert.equal(config.license, "MIT");
  const license = await Deno.readTextFile(new URL("LICENSE", root));
  assert.match(license, /^MIT License\n\nCopyright \(c\) \d{4} netsqlite authors\n/);
  // The files `deno publish` would upload.
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["publish", "--dry-run", "--allow-dirty", "--no-check"],
    cwd: root,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const listed = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, listed);
  assert.ok(listed.includes(`${new URL("LICENSE", root).href} (`), listed);
  const dist = await Deno.makeTempDir({ prefix: "netsqlite-license-" });
  try {
    await buildNode(new URL(`file://${dist}/`));
    assert.equal(await Deno.readTextFile(`${dist}/LICENSE`), license);
    const pkg = JSON.parse(await Deno.readTextFile(`${dist}/package.json`));
    assert.equal(pkg.license, "MIT");
  } finally {
    await Deno.remove(dist, { recursive: true });
  }
});

/** The specifiers `text` imports from (static `from "..."` and `import("...")`). */
function importedSpecifiers(text: string): string[] {
  return [...text.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|^import\s*)["']([^"']+)["']/gm)]
    .map((m) => m[1]);
}

Deno.test("exports: the adapters import their ORM package by npm: specifier at the range the npm build declares as peer", async () => {
  const adapters = [
    ["drizzle.ts", "drizzle-orm"],
    ["drizzle_migrate.ts", "drizzle-orm"],
    ["kysely.ts", "kysely"],
  ];
  for (const [file, name] of adapters) {
    const text = await Deno.readTextFile(new URL(`../adapters/${file}`, import.meta.url));
    const npm = importedSpecifiers(text).filter((s) => s.startsWith("npm:"));
    assert.ok(npm.length > 0, file);
    for (const specifier of npm) {
      const peer = `npm:${name}@${PEERS[name]}`;
      assert.ok(specifier === peer || specifier.startsWith(`${peer}/`), `${file}: ${specifier}`);
    }
  }
});

Deno.test("rewriteNpmSpecifiers() names a peer package as Node.js does, and refuses another package or range", () => {
  assert.equal(
    rewriteNpmSpecifiers(
      'import { a } from "npm:drizzle-orm@^0.45/sqlite-proxy";\n' +
        "import { b } from 'npm:kysely@^0.28';\nawait import(\"npm:drizzle-orm@^0.45\");\n",
      "x.js",
    ),
    'import { a } from "drizzle-orm/sqlite-proxy";\n' +
      "import { b } from 'kysely';\nawait import(\"drizzle-orm\");\n",
  );
  assert.equal(rewriteNpmSpecifiers('import "./chunk.js";\n', "x.js"), 'import "./chunk.js";\n');
  for (
    const specifier of [
      "npm:kysely@^0.27",
      "npm:kysely",
      "npm:left-pad@1",
      "npm:@scope/kysely@^0.28",
    ]
  ) {
    assert.throws(
      () => rewriteNpmSpecifiers(`import "${specifier}";`, "x.js"),
      new RegExp(
        `^Error: Cannot build "x\\.js": it imports "${specifier.replace(/[.^]/g, "\\$&")}"`,
      ),
    );
  }
});

Deno.test("exports: the npm build leaves drizzle-orm and kysely to the project's node_modules, by their bare names, with no npm: specifier left", async () => {
  const dist = await Deno.makeTempDir({ prefix: "netsqlite-npm-peers-" });
  try {
    await buildNode(new URL(`file://${dist}/`));
    const pkg = JSON.parse(await Deno.readTextFile(join(dist, "package.json")));
    assert.deepEqual(pkg.peerDependencies, { "drizzle-orm": "^0.45", kysely: "^0.28" });
    assert.deepEqual(pkg.peerDependenciesMeta, {
      "drizzle-orm": { optional: true },
      kysely: { optional: true },
    });
    const bare: Record<string, string[]> = {};
    const walk = async (dir: string): Promise<void> => {
      for await (const e of Deno.readDir(dir)) {
        const path = join(dir, e.name);
        if (e.isDirectory) await walk(path);
        else if (/\.(m?js|d\.m?ts)$/.test(e.name)) {
          const text = await Deno.readTextFile(path);
          assert.doesNotMatch(text, /["']npm:/, path);
          bare[path.slice(dist.length + 1)] = importedSpecifiers(text)
            .filter((s) => !s.startsWith(".") && !s.startsWith("node:"));
        }
      }
    };
    await walk(dist);
    // Each adapter imports its package (bundled, it would not), the client neither.
    assert.ok(bare["lib/adapters/drizzle.js"].length > 0, JSON.stringify(bare));
    assert.ok(bare["lib/adapters/drizzle.js"].every((s) => /^drizzle-orm(\/|$)/.test(s)));
    assert.deepEqual(bare["lib/adapters/kysely.js"], ["kysely"]);
    const others = Object.entries(bare).filter(([file]) => !file.startsWith("lib/adapters/"));
    const peers = others.flatMap(([, specifiers]) =>
      specifiers.filter((s) => /^(drizzle-orm|kysely)(\/|$)/.test(s))
    );
    assert.deepEqual(peers, []);
  } finally {
    await Deno.remove(dist, { recursive: true });
  }
});
