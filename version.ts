/**
 * The package's version, in one place: `server.ts` and `cli.ts` report it,
 * the Node.js build stamps it into `package.json`, and a test checks that
 * `deno.json`'s `version` says the same.
 *
 * @module
 */

/**
 * Version of this package (semver).
 *
 * @example
 * ```ts
 * import { VERSION } from "@netsqlite/netsqlite";
 * if (!/^\d+\.\d+\.\d+/.test(VERSION)) throw new Error("not a semver version");
 * ```
 */
export const VERSION: string = "0.1.0";
