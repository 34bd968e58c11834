/**
 * The few runtime facts the client needs, from `Deno` where it exists and
 * from Node.js's `process` elsewhere (Node.js, Bun), so the client modules
 * load and run on all three.
 *
 * @module
 */

// deno-lint-ignore no-explicit-any
const nodeProcess: any = (globalThis as any).process;

/** True under Deno; false under Node.js and Bun. */
export const IS_DENO: boolean = typeof Deno !== "undefined" &&
  typeof Deno.connect === "function";

/** True under Bun (which has no `Deno`, and Node.js's `process` with `versions.bun`). */
export const IS_BUN: boolean = !IS_DENO && typeof nodeProcess?.versions?.bun === "string";

/** True on Windows. */
export const IS_WINDOWS: boolean = IS_DENO
  ? Deno.build.os === "windows"
  : nodeProcess?.platform === "win32";

/**
 * The operating system, named as `Deno.build.os` names it (`"linux"`,
 * `"darwin"`, `"windows"`, ...; Node.js's `"win32"` and `"sunos"` become
 * `"windows"` and `"solaris"`).
 */
export const OS: string = IS_DENO
  ? Deno.build.os
  : ({ win32: "windows", sunos: "solaris" } as Record<string, string>)[nodeProcess?.platform] ??
    String(nodeProcess?.platform);

/** An environment variable, or `undefined`. */
export function envGet(name: string): string | undefined {
  return IS_DENO ? Deno.env.get(name) : nodeProcess?.env?.[name];
}

/**
 * The user id, or `null` where there is none or it may not be read.
 *
 * @throws whatever Deno throws without `--allow-sys=uid` (callers fall back).
 */
export function userId(): number | null {
  return IS_DENO ? Deno.uid() : nodeProcess?.getuid?.() ?? null;
}

/**
 * True when `permission` is granted, asked without a prompt (always true
 * under Node.js and Bun, which have no permissions): a check, a warning or a
 * hint never makes Deno ask the user.
 */
export function granted(permission: Deno.PermissionDescriptor): boolean {
  if (!IS_DENO) return true;
  try {
    return Deno.permissions.querySync(permission).state === "granted";
  } catch {
    return false;
  }
}

/** Reads a UTF-8 text file. */
export async function readTextFile(path: string): Promise<string> {
  if (IS_DENO) return await Deno.readTextFile(path);
  const { readFile } = await import("node:fs/promises");
  return await readFile(path, "utf8");
}
