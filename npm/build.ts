/**
 * Builds the Node.js/Bun package into `npm/dist/` (`deno task build:node`):
 * the client (`client.ts`) and the two adapters bundled as ES modules by one
 * `deno bundle` run with code splitting, so the package holds one copy of the
 * client's classes, shared by the client and the adapters (`lib/`, with
 * `netsqlite.mjs`, `drizzle.mjs` and `kysely.mjs` re-exporting its entries);
 * `drizzle-orm` and `kysely` left as peer imports (the adapters' `npm:`
 * specifiers, such as `npm:drizzle-orm@^0.45/sqlite-proxy`, rewritten to the
 * bare names Node.js resolves, `drizzle-orm/sqlite-proxy`), a `package.json`
 * stamped with {@link VERSION}, and the `LICENSE`. The server stays Deno-only. With `--types`,
 * type declarations too, for the client and the two adapters (`types/`, by one run of
 * TypeScript's `tsc`, installed from npm with the ORM packages at the ranges of {@link PEERS}
 * into a temporary folder): the adapters' declarations import the client's (one copy of its
 * classes, as in the bundle) and the ORM packages by their bare names (the `npm:` specifiers
 * rewritten as in the bundle), and `netsqlite.d.mts`, `drizzle.d.mts` and `kysely.d.mts` are the
 * `types` of the package's exports. Importing only the client needs neither ORM package, for
 * its types either.
 *
 * Use it from a checkout: `deno task build:node`, then in a Node.js project
 * `npm pack /path/to/netsqlite/npm/dist` and `npm install
 * ./netsqlite-netsqlite-VERSION.tgz` (a plain `npm install DIR` links the
 * folder, and Node.js then looks for `drizzle-orm` and `kysely` next to it).
 *
 * @module
 */

import { fileURLToPath, pathToFileURL } from "node:url";
import { VERSION } from "../version.ts";

const root = new URL("../", import.meta.url);
const out = new URL("./dist/", import.meta.url);

/**
 * The modules of the build: entry in the checkout, file in `dist/`, export names. The client is
 * both the root and `./client`, the name README and the JSR package use.
 */
const ENTRIES = [
  ["client.ts", "netsqlite.mjs", [".", "./client"]],
  ["adapters/drizzle.ts", "drizzle.mjs", ["./drizzle"]],
  ["adapters/kysely.ts", "kysely.mjs", ["./kysely"]],
] as const;

/** Folder of `dist/` the bundle's entries and shared chunks are written to. */
const LIB = "lib";

/**
 * The adapters' ORM packages: left out of the bundle, optional peer dependencies of the package,
 * each with the version range the adapters' `npm:` specifiers name (the build fails when an
 * adapter imports another package or range from npm, so the two stay in step).
 */
export const PEERS: Readonly<Record<string, string>> = { "drizzle-orm": "^0.45", kysely: "^0.28" };

/** A quoted `npm:` specifier: quote, package name, version range, subpath (with its `/`). */
const NPM_SPECIFIER = /(["'])npm:((?:@[^/"'@]+\/)?[^/"'@]+)(?:@([^/"']*))?(\/[^"']*)?\1/g;

/**
 * `text` (a bundled module) with each `npm:` specifier of a {@link PEERS} package rewritten to
 * the bare name Node.js and Bun resolve from a project's `node_modules`:
 * `"npm:drizzle-orm@^0.45/sqlite-proxy"` becomes `"drizzle-orm/sqlite-proxy"`.
 *
 * @param text A module written by `deno bundle`.
 * @param file Its name, for errors.
 * @returns the rewritten module.
 * @throws {Error} when a specifier names another package, or another range than {@link PEERS}.
 */
export function rewriteNpmSpecifiers(text: string, file: string): string {
  return text.replace(NPM_SPECIFIER, (specifier, quote, name, range, subpath = "") => {
    if (!Object.hasOwn(PEERS, name) || range !== PEERS[name]) {
      throw new Error(
        `Cannot build "${file}": it imports ${specifier}, not a peer dependency ` +
          `(${Object.entries(PEERS).map(([n, r]) => `npm:${n}@${r}`).join(", ")})`,
      );
    }
    return `${quote}${name}${subpath}${quote}`;
  });
}

/** Options of {@link buildNode}. */
export interface BuildOptions {
  /**
   * Also emit the `.d.ts` files of the client and the adapters with `tsc` (installed from npm with
   * the {@link PEERS} packages). @default {false}
   */
  types?: boolean;
}

/** TypeScript libs the declarations load themselves, whatever the consumer's `target` and `lib`. */
const LIB_REFERENCES = [
  "esnext.disposable",
  "es2022.error",
  "es2018.asyncgenerator",
  "es2018.asynciterable",
];

/** TypeScript used for declarations. */
const TYPESCRIPT = "typescript@5.9";

/**
 * Bundles every entry into `dist` and writes its `package.json`.
 *
 * @param dist Output directory.
 * @param options Whether to emit type declarations.
 * @returns the output directory's path.
 * @throws {Error} when `deno bundle` or `tsc` fails, with its output.
 */
export async function buildNode(dist: URL = out, options: BuildOptions = {}): Promise<string> {
  await Deno.remove(dist, { recursive: true }).catch(() => {});
  await Deno.mkdir(dist, { recursive: true });
  // One run for all entries: code shared between them goes to chunks they import, so the
  // adapters use the very classes the client module exports (private fields, instanceof).
  const result = await new Deno.Command(Deno.execPath(), {
    args: [
      "bundle",
      "--quiet",
      "--platform=deno", // keeps node: imports as they are (Node.js and Bun have them)
      "--format=esm",
      "--code-splitting",
      // The ORM packages at deno.lock's versions (deno.json has "lock": false, see README).
      `--lock=${fileURLToPath(new URL("deno.lock", root))}`,
      // The adapters import their ORM packages by `npm:` specifiers, rewritten below.
      ...Object.keys(PEERS).map((name) => `--external=npm:${name}@*`),
      "--outdir",
      fileURLToPath(new URL(`${LIB}/`, dist)),
      ...ENTRIES.map(([entry]) => fileURLToPath(new URL(entry, root))),
    ],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!result.success) {
    const dec = new TextDecoder();
    throw new Error(`Cannot bundle: ${dec.decode(result.stderr)}${dec.decode(result.stdout)}`);
  }
  for (const [entry, file] of ENTRIES) {
    // deno bundle names each entry's output by its path under the entries' common folder.
    const bundled = `./${LIB}/${entry.replace(/\.ts$/, ".js")}`;
    const exists = await Deno.stat(new URL(bundled, dist)).then(() => true, () => false);
    if (!exists) throw new Error(`Cannot bundle "${entry}": no "${bundled}" written`);
    await Deno.writeTextFile(new URL(file, dist), `export * from "${bundled}";\n`);
  }
  for await (const file of walk(new URL(`${LIB}/`, dist), ".js")) {
    const text = await Deno.readTextFile(file);
    const rewritten = rewriteNpmSpecifiers(text, fileURLToPath(file));
    if (rewritten !== text) await Deno.writeTextFile(file, rewritten);
  }
  const types = options.types === true;
  if (types) await emitTypes(dist);
  const pkg = {
    name: "@netsqlite/netsqlite",
    version: VERSION,
    description: "Client of netsqlite: share one SQLite database between processes",
    license: "MIT",
    type: "module",
    engines: { node: ">=20" },
    // For TypeScript's older resolution (node10), which reads no "exports".
    ...(types ? { types: declarationsOf("netsqlite.mjs") } : {}),
    exports: Object.fromEntries([
      ...ENTRIES.flatMap(([, file, names]) =>
        names.map((name) =>
          types
            ? [name, { types: declarationsOf(file), default: `./${file}` }]
            : [name, `./${file}`]
        )
      ),
      // For tools that read the version: require("@netsqlite/netsqlite/package.json").
      ["./package.json", "./package.json"],
    ]),
    peerDependencies: PEERS,
    peerDependenciesMeta: Object.fromEntries(
      Object.keys(PEERS).map((name) => [name, { optional: true }]),
    ),
  };
  await Deno.writeTextFile(new URL("package.json", dist), JSON.stringify(pkg, null, 2) + "\n");
  // npm packs a LICENSE file whatever "files" says; the MIT licence asks for its text to go along.
  await Deno.copyFile(new URL("LICENSE", root), new URL("LICENSE", dist));
  await refuseNpmSpecifiers(dist);
  return fileURLToPath(dist);
}

/**
 * Emits `types/**\/*.d.ts` for `client.ts` and the two adapters in one `tsc` run, so the
 * adapters' declarations import the client's (one copy of its classes, as in the bundle), and
 * `netsqlite.d.mts`, `drizzle.d.mts` and `kysely.d.mts` pointing at them. `tsc` and the
 * {@link PEERS} packages (whose types the adapters' declarations use) are installed from npm into a
 * temporary folder; `tsc` finds the adapters' `npm:` specifiers there through `paths`, and they are
 * rewritten to the bare names, as in the bundle. Declarations import each other as `.js`, as
 * Node.js resolution wants.
 */
async function emitTypes(dist: URL): Promise<void> {
  const dec = new TextDecoder();
  const tmp = await Deno.makeTempDir({ prefix: "netsqlite-types-build-" });
  try {
    await Deno.writeTextFile(`${tmp}/package.json`, '{ "private": true }\n');
    const install = await new Deno.Command("npm", {
      args: ["install", "--no-audit", "--no-fund", "--ignore-scripts", TYPESCRIPT].concat(
        Object.entries(PEERS).map(([name, range]) => `${name}@${range}`),
      ),
      cwd: tmp,
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!install.success) {
      throw new Error(
        `Cannot emit types: npm install of ${TYPESCRIPT} and the peer packages failed: ` +
          `${dec.decode(install.stderr)}${dec.decode(install.stdout)}`,
      );
    }
    const modules = `${tmp}/node_modules`;
    const paths = Object.fromEntries(
      Object.entries(PEERS).flatMap(([name, range]) => [
        [`npm:${name}@${range}`, [`${modules}/${name}`]],
        [`npm:${name}@${range}/*`, [`${modules}/${name}/*`]],
      ]),
    );
    const config = `${tmp}/tsconfig.json`;
    await Deno.writeTextFile(
      config,
      JSON.stringify({
        compilerOptions: {
          declaration: true,
          emitDeclarationOnly: true,
          allowImportingTsExtensions: true,
          target: "es2022",
          module: "esnext",
          moduleResolution: "bundler",
          lib: ["es2024", "dom", "esnext.disposable"],
          skipLibCheck: true,
          stripInternal: true,
          rootDir: fileURLToPath(root),
          outDir: fileURLToPath(new URL("types/", dist)),
          // No @types/node: the adapters' `node:` imports stay out of their declarations.
          types: [],
          paths,
        },
        files: ENTRIES.map(([entry]) => fileURLToPath(new URL(entry, root))),
      }),
    );
    const tsc = await new Deno.Command(`${modules}/.bin/tsc`, {
      args: ["--project", config],
      cwd: root,
      stdout: "piped",
      stderr: "piped",
    }).output();
    // tsc reports the Deno and node: names it has no types for here, and emits anyway; an npm:
    // specifier it cannot find would leave the adapters' inferred types unchecked.
    const report = `${dec.decode(tsc.stdout)}${dec.decode(tsc.stderr)}`;
    const unresolved = report.match(/^.*Cannot find module 'npm:.*$/m);
    if (unresolved !== null) throw new Error(`Cannot emit types: ${unresolved[0]}`);
    for (const [entry] of ENTRIES) {
      const emitted = new URL(`types/${entry.replace(/\.ts$/, ".d.ts")}`, dist);
      if (!await Deno.stat(emitted).then(() => true, () => false)) {
        throw new Error(`Cannot emit types of "${entry}": ${report}`);
      }
    }
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  for await (const file of walk(new URL("types/", dist), ".d.ts")) {
    const text = await Deno.readTextFile(file);
    const rewritten = rewriteNpmSpecifiers(
      text.replace(/(from\s+["']\.{1,2}\/[^"']+)\.ts(["'])/g, "$1.js$2"),
      fileURLToPath(file),
    );
    if (rewritten !== text) await Deno.writeTextFile(file, rewritten);
  }
  // AsyncDisposable and Symbol.asyncDispose (of `await using`) are in TypeScript's
  // esnext.disposable lib, which a consumer's target below esnext lacks without @types/node;
  // ErrorOptions and Error.cause (of the error classes) are in es2022.error, which a target
  // below es2022 lacks; AsyncGenerator and AsyncIterable (of iterate()) in es2018's libs.
  for (const [entry, file] of ENTRIES) {
    await Deno.writeTextFile(
      new URL(declarationsOf(file), dist),
      LIB_REFERENCES.map((lib) => `/// <reference lib="${lib}" />\n`).join("") +
        `export * from "./types/${entry.replace(/\.ts$/, ".js")}";\n`,
    );
  }
}

/** The declaration file next to `file` of `dist/` (`netsqlite.mjs`: `netsqlite.d.mts`). */
function declarationsOf(file: string): string {
  return `./${file.replace(/\.mjs$/, ".d.mts")}`;
}

/** The files under `dir` whose names end with `suffix`, in its subfolders too. */
async function* walk(dir: URL, suffix: string): AsyncGenerator<URL> {
  for await (const e of Deno.readDir(dir)) {
    const url = new URL(e.isDirectory ? `${e.name}/` : e.name, dir);
    if (e.isDirectory) yield* walk(url, suffix);
    else if (e.name.endsWith(suffix)) yield url;
  }
}

/**
 * Fails when a file of `dist` still holds an `npm:` specifier, which Node.js and Bun cannot load
 * (`ERR_UNSUPPORTED_ESM_URL_SCHEME`).
 */
async function refuseNpmSpecifiers(dist: URL): Promise<void> {
  for await (const file of walk(dist, "")) {
    const text = await Deno.readTextFile(file);
    const left = text.match(NPM_SPECIFIER);
    if (left !== null) {
      throw new Error(`Cannot build "${fileURLToPath(file)}": it still imports ${left.join(", ")}`);
    }
  }
}

if (import.meta.main) {
  const args = Deno.args.filter((a) => a !== "--types");
  const dir = args[0] === undefined ? out : pathToFileURL(`${args[0]}/`);
  console.log(`Built ${await buildNode(dir, { types: Deno.args.includes("--types") })}`);
}
