/**
 * Closing the files a server inherited beyond stdin, stdout and stderr. A
 * server started by `connect({ autostart })` outlives the process that
 * started it, and a child inherits every descriptor of its parent that is not
 * close-on-exec: those a program handed that process on purpose (a Node
 * parent's extra stdio pipe, a shell's `3>&1`, a build tool's
 * jobserver pipe). Kept open by the server, such a pipe never ends for the
 * program reading it (Node's `"close"` event, an output capture wait for it)
 * and a file stays held, for as long as the server runs.
 *
 * Deno opens its own descriptors close-on-exec, so at start every descriptor
 * above 2 without that flag is inherited. Linux and macOS, through FFI
 * (`fcntl`, `close`); elsewhere or without `--allow-ffi`, nothing is closed.
 *
 * @module
 */

import { getOpenFileLimit, openLibc } from "../engine/binding/_libc.ts";

const SYMBOLS = {
  // int fcntl(int fd, int cmd, ...): F_GETFD takes no third argument.
  fcntl: { parameters: ["i32", "i32"], result: "i32" },
  // int close(int fd)
  close: { parameters: ["i32"], result: "i32" },
} as const;

/** `F_GETFD` and `FD_CLOEXEC`: 1 and 1 on Linux, macOS and the BSDs. */
const F_GETFD = 1;
const FD_CLOEXEC = 1;
/** Highest descriptor looked at (the open-file limit may be far higher). */
const LAST_FD = 65535;

/**
 * Closes every descriptor above 2 that is not close-on-exec: call it first
 * thing, before the process opens anything itself (SQLite may open a file
 * without that flag).
 *
 * @returns how many were closed (0 where FFI or libc is not available).
 */
export function closeInheritedFiles(): number {
  if (Deno.build.os !== "linux" && Deno.build.os !== "darwin") return 0;
  const lib = openLibc(SYMBOLS);
  if (lib === null) return 0;
  let closed = 0;
  try {
    const last = Math.min(getOpenFileLimit() ?? 1024, LAST_FD + 1) - 1;
    for (let fd = 3; fd <= last; fd++) {
      const flags = lib.symbols.fcntl(fd, F_GETFD);
      if (flags >= 0 && (flags & FD_CLOEXEC) === 0 && lib.symbols.close(fd) === 0) closed++;
    }
  } finally {
    lib.close();
  }
  return closed;
}
