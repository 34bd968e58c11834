/**
 * `deno task doc:lint`: `deno doc --lint` of every entry point of the package
 * (the `exports` of deno.json, and version.ts), failing on any finding but
 * the documented exceptions below.
 *
 * The exceptions: the adapters' public signatures name the ORM packages' own
 * types (`drizzle()` takes Drizzle's `DrizzleConfig` and returns a
 * `NetsqliteDatabase`, Drizzle's `BaseSQLiteDatabase` with its `batch`
 * types; `migrate()` also takes Drizzle's `SqliteRemoteDatabase`;
 * `NetsqliteDialect` implements Kysely's `Dialect`).
 * `deno doc --lint` calls them private because they are not exported from
 * our modules. Re-exporting them would not help: the linter then goes on
 * into those packages' types (dozens of findings in drizzle-orm and kysely,
 * none ours to fix), and their documentation is the packages' own.
 *
 * Run: deno task doc:lint
 *
 * @module
 */

import { fileURLToPath } from "node:url";

/** Types of drizzle-orm and kysely that our public signatures name, per file. */
export const THIRD_PARTY_TYPES: Readonly<Record<string, readonly string[]>> = {
  "adapters/drizzle.ts": [
    "DrizzleConfig",
    "SqliteRemoteDatabase",
    "SqliteRemoteResult",
    "BaseSQLiteDatabase",
    "BatchItem",
    "BatchResponse",
  ],
  "adapters/kysely.ts": [
    "DatabaseIntrospector",
    "Dialect",
    "DialectAdapter",
    "Driver",
    "Kysely",
    "QueryCompiler",
  ],
};

const ROOT = new URL("../", import.meta.url);

/** One finding of `deno doc --lint`. */
export interface DocFinding {
  /** The rule, e.g. `private-type-ref`. */
  rule: string;
  /** The first line of the finding. */
  message: string;
  /** The file, relative to the checkout. */
  file: string;
  /** The whole finding, as printed. */
  text: string;
  /** The type a `private-type-ref` finding names as private. */
  privateType: string | null;
}

/** The entry points linted: deno.json's `exports`, and version.ts. */
export function entryPoints(): string[] {
  const config = JSON.parse(Deno.readTextFileSync(new URL("deno.json", ROOT))) as {
    exports: Record<string, string>;
  };
  const entries = Object.values(config.exports).map((path) => path.replace(/^\.\//, ""));
  return [...new Set([...entries, "version.ts"])];
}

/**
 * Runs `deno doc --lint` on {@link entryPoints} and splits what it found
 * into the documented exceptions and the rest.
 */
export async function docLint(): Promise<{ findings: DocFinding[]; exceptions: DocFinding[] }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["doc", "--lint", ...entryPoints()],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  const root = fileURLToPath(ROOT);
  const all: DocFinding[] = [];
  for (const block of text.split(/\n(?=error[[:])/).filter((b) => b.startsWith("error["))) {
    const head = /^error\[([\w-]+)\]: (.*)/.exec(block)!;
    const where = /-->\s+(.+?):\d+:\d+/.exec(block)?.[1] ?? ""; // (a path may hold blanks)
    const privateType = /references private type '([^']+)'/.exec(head[2])?.[1] ?? null;
    all.push({
      rule: head[1],
      message: head[2],
      file: where.startsWith(root) ? where.slice(root.length) : where,
      text: block.trim(),
      privateType,
    });
  }
  if (all.length === 0 && !out.success) {
    throw new Error(`deno doc --lint failed without findings:\n${text}`);
  }
  const excepted = (f: DocFinding) =>
    f.rule === "private-type-ref" && f.privateType !== null &&
    (THIRD_PARTY_TYPES[f.file] ?? []).includes(f.privateType);
  return { findings: all.filter((f) => !excepted(f)), exceptions: all.filter(excepted) };
}

if (import.meta.main) {
  const { findings, exceptions } = await docLint();
  for (const f of findings) console.error(`${f.text}\n`);
  const names = [...new Set(exceptions.map((f) => f.privateType))].join(", ");
  console.log(
    `deno doc --lint ${entryPoints().join(" ")}: ${findings.length} finding(s); ` +
      `${exceptions.length} documented exception(s) (drizzle-orm and kysely types: ${names})`,
  );
  Deno.exit(findings.length === 0 ? 0 : 1);
}
