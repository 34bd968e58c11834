/**
 * The two facts about this process that the server asks the C library for,
 * through FFI: its limit on open files (`getrlimit`) and the file a loaded
 * library was mapped from (`dladdr`); and {@link openLibc}, how every part
 * of the server that calls libc opens it.
 *
 * Why not `/proc/self`: Deno (2.9) reads `/proc/self/*` only under
 * `--allow-all`, while `Deno.permissions` answers "granted" for it under
 * `--allow-read`; the documented `deno task serve` runs with narrow
 * permissions (`--allow-ffi` among them), so the read failed and the server
 * went on without the limit. `/proc` stays the fallback where FFI is not
 * permitted.
 *
 * Linux (glibc; `dladdr` is in `libdl.so.2` before glibc 2.34) and macOS;
 * elsewhere, or without `--allow-ffi`, each answer is `null`.
 *
 * @module
 */

/** The C functions, each optional: a library without one still answers the other. */
const SYMBOLS = {
  // int getrlimit(int resource, struct rlimit *rlim)
  getrlimit: { parameters: ["i32", "buffer"], result: "i32", optional: true },
  // int dladdr(const void *addr, Dl_info *info)
  dladdr: { parameters: ["pointer", "buffer"], result: "i32", optional: true },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** `RLIMIT_NOFILE`: 7 on Linux, 8 on macOS and the BSDs. */
const RLIMIT_NOFILE = { linux: 7, darwin: 8 } as const;

/**
 * The C libraries that FFI is permitted on (queried: it never prompts), in
 * the order to try them: by name (`libc.so.6`, and `libdl.so.2` for
 * `dladdr` before glibc 2.34; `libSystem.B.dylib`), then, on Linux, glibc
 * at its usual paths, for an `--allow-ffi` scoped to its file.
 *
 * @returns names or paths for `Deno.dlopen`; empty on other systems.
 */
export function libcFiles(): string[] {
  const os = Deno.build.os;
  const arch = Deno.build.arch;
  const files = os === "linux"
    ? [
      "libc.so.6",
      "libdl.so.2",
      ...[
        `/lib/${arch}-linux-gnu`,
        `/usr/lib/${arch}-linux-gnu`,
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
      ].map((dir) => `${dir}/libc.so.6`),
    ]
    : os === "darwin"
    ? ["libSystem.B.dylib"]
    : [];
  return files.filter((path) => {
    try {
      return Deno.permissions.querySync({ name: "ffi", path }).state === "granted";
    } catch {
      return false;
    }
  });
}

/**
 * Opens the first C library of {@link libcFiles} that loads with `symbols`
 * and that `usable` accepts (the others are closed again): the one way the
 * server reaches libc, whether `--allow-ffi` is whole or scoped to libc's
 * file (README's `--allow-ffi=<path of libc.so.6>`). Close it when done
 * (the C library itself stays: the process links it).
 *
 * @param symbols The functions wanted (mark those a library may lack `optional`).
 * @param usable Whether a library that loaded will do (e.g. has an optional symbol).
 * @returns the library, or `null`: none loads, another system, or no FFI permission.
 */
export function openLibc<S extends Deno.ForeignLibraryInterface>(
  symbols: S,
  usable: (lib: Deno.DynamicLibrary<S>) => boolean = () => true,
): Deno.DynamicLibrary<S> | null {
  for (const name of libcFiles()) {
    let lib: Deno.DynamicLibrary<S>;
    try {
      lib = Deno.dlopen(name, symbols);
    } catch {
      continue; // not this library (or lacks a symbol)
    }
    let ok = false;
    try {
      ok = usable(lib);
    } finally {
      if (!ok) lib.close();
    }
    if (ok) return lib;
  }
  return null;
}

/**
 * Calls `use` with the first C library (of {@link libcFiles}) that loads
 * and for which it returns something other than `null`; `null` when none
 * does, on another system, or without FFI permission.
 */
function withLibc<T>(use: (libc: Libc) => T | null): T | null {
  let answer: T | null = null;
  openLibc(SYMBOLS, (lib) => (answer = use(lib.symbols)) !== null)?.close();
  return answer;
}

/**
 * The soft limit on open files of this process (`getrlimit(RLIMIT_NOFILE)`;
 * Deno raises it to the hard limit at start), `Infinity` when unlimited, or
 * `null` when it cannot be asked (see the module notes).
 *
 * @example
 * ```ts
 * import { getOpenFileLimit } from "./_libc.ts";
 * const limit = getOpenFileLimit();
 * if (Deno.build.os === "linux" && !(limit! > 3)) throw new Error(String(limit));
 * ```
 */
export function getOpenFileLimit(): number | null {
  return withLibc((libc) => {
    const os = Deno.build.os as "linux" | "darwin";
    // struct rlimit { rlim_t rlim_cur; rlim_t rlim_max; }, rlim_t a 64-bit unsigned.
    const rlimit = new BigUint64Array(2);
    if (libc.getrlimit === null || libc.getrlimit(RLIMIT_NOFILE[os], rlimit) !== 0) return null;
    const soft = rlimit[0];
    // RLIM_INFINITY is ~0 on Linux, 2^63 - 1 on macOS.
    return soft > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(soft);
  });
}

/**
 * The path of the file mapped at `address` (`dladdr`'s `dli_fname`, as the
 * dynamic loader found it, symlinks unresolved), or `null` when it cannot be
 * asked or `address` is in no loaded file.
 *
 * @param address Any address inside the library: a function, or data it returned.
 */
export function mappedFilePath(address: Deno.PointerValue): string | null {
  if (address === null) return null;
  return withLibc((libc) => {
    // Dl_info { const char *dli_fname; void *dli_fbase; const char *dli_sname; void *dli_saddr; }
    const info = new BigUint64Array(4);
    if (libc.dladdr === null || libc.dladdr(address, info) === 0) return null;
    const fname = Deno.UnsafePointer.create(info[0]);
    if (fname === null) return null;
    const path = Deno.UnsafePointerView.getCString(fname);
    return path.startsWith("/") ? path : null;
  });
}
