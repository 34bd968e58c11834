/**
 * Builds the Node.js/Bun package into `npm/dist/` (`deno task build:node`):
 * the client (`client.ts`) and the two adapters bundled as ES modules with
 * `deno bundle`, `drizzle-orm` and `kysely` left as peer imports, and a
 * `package.json` stamped with {@link VERSION}. The server stays Deno-only.
 *
 * Use it from a checkout: `deno task build:node`, then in a Node.js project
 * `npm install /path/to/netsqlite/npm/dist`.
 *
 * @module
 */

import { VERSION } from "../version.ts";

const root = new URL("../", import.meta.url);
const out = new URL("./dist/", import.meta.url);

/** The modules of the build: entry in the checkout, file in `dist/`, export name. */
const ENTRIES = [
  ["client.ts", "netsqlite.mjs", "."],
  ["adapters/drizzle.ts", "drizzle.mjs", "./drizzle"],
  ["adapters/kysely.ts", "kysely.mjs", "./kysely"],
] as const;

/**
 * Bundles every entry into `dist` and writes its `package.json`.
 *
 * @param dist Output directory.
 * @returns the output directory's path.
 * @throws {Error} when `deno bundle` fails, with its output.
 */
export async function buildNode(dist: URL = out): Promise<string> {
  await Deno.remove(dist, { recursive: true }).catch(() => {});
  await Deno.mkdir(dist, { recursive: true });
  for (const [entry, file] of ENTRIES) {
    const result = await new Deno.Command(Deno.execPath(), {
      args: [
        "bundle",
        "--quiet",
        "--platform=deno", // keeps node: imports as they are (Node.js and Bun have them)
        "--format=esm",
        "--external=drizzle-orm",
        "--external=drizzle-orm/*",
        "--external=kysely",
        "-o",
        new URL(file, dist).pathname,
        new URL(entry, root).pathname,
      ],
      cwd: root.pathname,
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!result.success) {
      const dec = new TextDecoder();
      throw new Error(
        `Cannot bundle "${entry}": ${dec.decode(result.stderr)}${dec.decode(result.stdout)}`,
      );
    }
  }
  const pkg = {
    name: "@netsqlite/netsqlite",
    version: VERSION,
    description: "Client of netsqlite: share one SQLite database between processes",
    license: "MIT",
    type: "module",
    engines: { node: ">=20" },
    exports: Object.fromEntries(ENTRIES.map(([, file, name]) => [name, `./${file}`])),
    peerDependencies: { "drizzle-orm": "^0.45", kysely: "^0.28" },
    peerDependenciesMeta: { "drizzle-orm": { optional: true }, kysely: { optional: true } },
  };
  await Deno.writeTextFile(new URL("package.json", dist), JSON.stringify(pkg, null, 2) + "\n");
  return dist.pathname;
}

if (import.meta.main) {
  const dir = Deno.args[0] === undefined ? out : new URL(`file://${Deno.args[0]}/`);
  console.log(`Built ${await buildNode(dir)}`);
}
