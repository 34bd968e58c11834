/**
 * The oldest Deno the server runs on, checked at start: an older one fails
 * later with something like `file.tryLockSync is not a function`.
 *
 * @module
 */

/** The oldest Deno version the server supports (README: "Deno 2.9"). */
export const MIN_DENO_VERSION = "2.9.0";

/**
 * Compares two `MAJOR.MINOR.PATCH` versions (anything after the patch, such as
 * `-rc.1` or `+abc`, is ignored; a missing part counts as 0).
 *
 * @returns a negative number when `a` is older, 0 when equal, positive when newer.
 * @example
 * ```ts
 * import { compareVersions } from "./deno_version.ts";
 * if (!(compareVersions("2.10.0", "2.9.6") > 0)) throw new Error("2.10 is newer than 2.9");
 * ```
 */
export function compareVersions(a: string, b: string): number {
  const parts = (v: string) => v.split(/[-+]/)[0].split(".").map((p) => Number(p) || 0);
  const x = parts(a);
  const y = parts(b);
  for (let i = 0; i < 3; i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/**
 * Why Deno `version` is too old to run the server, or `null` when it is not.
 *
 * @param version The running Deno's version (`Deno.version.deno`).
 * @example
 * ```ts
 * import { denoVersionProblem } from "./deno_version.ts";
 * if (denoVersionProblem("2.9.6") !== null) throw new Error("2.9.6 is enough");
 * ```
 */
export function denoVersionProblem(version: string): string | null {
  if (compareVersions(version, MIN_DENO_VERSION) >= 0) return null;
  return `Deno ${version} is too old: netsqlite needs Deno ${MIN_DENO_VERSION} or later; ` +
    "upgrade it (deno upgrade, or npm install -g deno@2.9.6)";
}
