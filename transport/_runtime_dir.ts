/**
 * Whether `$XDG_RUNTIME_DIR` is another user's: `su` (and `sudo` without a
 * login shell) keeps the variable, so a process of the new user looks for
 * its default sockets in the old user's runtime directory, which no one else
 * may enter (mode 0700): the server is refused its socket there, a client
 * the socket, or finds none. Server (`listen.ts`) and client (`connect.ts`)
 * name it in their errors. Examined without asking for a permission (no
 * prompt) and under Node.js and Bun too; what may not be examined is not known.
 *
 * @module
 */

import { statSync } from "node:fs";
import { isAbsolute, join, relative } from "node:path";
import { envGet, granted, IS_DENO, userId } from "./_runtime.ts";

/** What is known of the runtime directory above a socket path. */
export interface RuntimeDirOwner {
  /** `$XDG_RUNTIME_DIR` (absolute). */
  runtime: string;
  /** Its owner's uid, or `null` when not known (no read access, no `--allow-sys=uid`). */
  owner: number | null;
  /** This process's uid, or `null` when not known (no `--allow-sys=uid`). */
  user: number | null;
  /** True when this user may not search it (enter it); `null` when not known. */
  shut: boolean | null;
}

/**
 * `$XDG_RUNTIME_DIR` when `path` lies under it (only in its `netsqlite`
 * directory, where default sockets go, when `defaultOnly`), with its owner
 * and this user's uid; `null` when it is unset, relative, may not be read,
 * or `path` lies elsewhere.
 */
export function runtimeDirAbove(path: string, defaultOnly: boolean): RuntimeDirOwner | null {
  const runtime = runtimeDir();
  if (!runtime || !isAbsolute(runtime)) return null;
  const under = relative(runtime, path);
  if (under === "" || under.startsWith("..") || isAbsolute(under)) return null;
  if (defaultOnly && relative(join(runtime, "netsqlite"), path).includes("/")) return null;
  let owner: number | null = null;
  let user: number | null = null;
  let shut: boolean | null = null;
  try {
    if (granted({ name: "read", path: runtime })) {
      owner = statSync(runtime).uid;
      try {
        statSync(join(runtime, "netsqlite"));
        shut = false;
      } catch (err) {
        const code = (err as { code?: unknown }).code;
        shut = code === "EACCES" || (IS_DENO && err instanceof Deno.errors.PermissionDenied)
          ? true
          : code === "ENOENT" || code === "ENOTDIR" ||
              (IS_DENO && err instanceof Deno.errors.NotFound)
          ? false
          : null;
      }
    }
    if (granted({ name: "sys", kind: "uid" })) user = userId();
  } catch {
    // Not known: the caller says less.
  }
  return { runtime, owner, user, shut };
}

/**
 * `, which belongs to uid 0, not to this user (uid 1001): it was likely
 * inherited from another user (su keeps it)` when `dir` is known to be
 * another user's (or, without the uids, known to be closed to this user:
 * `, which this user may not enter: ...`); else `null`.
 */
export function foreignOwner(dir: RuntimeDirOwner): string | null {
  const inherited = ": it was likely inherited from another user (su keeps it)";
  if (dir.owner !== null && dir.user !== null) {
    return dir.owner === dir.user
      ? null
      : `, which belongs to uid ${dir.owner}, not to this user (uid ${dir.user})${inherited}`;
  }
  return dir.shut === true ? `, which this user may not enter${inherited}` : null;
}

/** `$XDG_RUNTIME_DIR`, or `undefined` when unset or not to be read (no prompt). */
export function runtimeDir(): string | undefined {
  try {
    return granted({ name: "env", variable: "XDG_RUNTIME_DIR" })
      ? envGet("XDG_RUNTIME_DIR")
      : undefined;
  } catch {
    return undefined;
  }
}
