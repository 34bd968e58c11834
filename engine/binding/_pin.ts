/**
 * Keeps a library loaded by `Deno.dlopen` mapped until the process exits.
 *
 * Why: when the JavaScript side ends without closing the library (an
 * uncaught exception or unhandled rejection, a terminated worker), Deno drops
 * its resources and `dlclose`s the library. A `nonblocking` call still running
 * on a background thread (a long `sqlite3_step`) then executes code that was
 * just unmapped: the process dies of SIGSEGV, before Deno prints the error
 * that ended it. Pinning the library (an extra reference that is never
 * released, marked never-unload) keeps its code mapped; the background step
 * finishes or is cut off by process exit instead.
 *
 * @module
 */

/** `dlopen` flags: glibc/musl (Linux) and macOS values. */
const RTLD_LAZY = 1;
const RTLD_NOLOAD = { linux: 0x4, darwin: 0x10 } as const;
const RTLD_NODELETE = { linux: 0x1000, darwin: 0x80 } as const;
/** `GET_MODULE_HANDLE_EX_FLAG_PIN`: the module stays loaded until the process ends. */
const MODULE_PIN = 1;

const DLOPEN = {
  // void *dlopen(const char *filename, int flags)
  dlopen: { parameters: ["buffer", "i32"], result: "pointer" },
} as const;

const KERNEL32 = {
  // BOOL GetModuleHandleExW(DWORD dwFlags, LPCWSTR lpModuleName, HMODULE *phModule)
  GetModuleHandleExW: { parameters: ["u32", "buffer", "buffer"], result: "i32" },
} as const;

/**
 * Pins `name`, a library this process already loaded with `Deno.dlopen(name)`:
 * it is never unmapped, even after Deno closes its handle. Never loads a
 * second copy (`RTLD_NOLOAD`; on Windows the module must already be loaded).
 *
 * @param name The name or path exactly as given to `Deno.dlopen`.
 * @returns true when pinned; false when the platform or the FFI permission
 *   does not allow it (the library then unloads as before).
 */
export function pinLibrary(name: string): boolean {
  try {
    switch (Deno.build.os) {
      case "linux":
      case "darwin":
        return pinPosix(name, Deno.build.os);
      case "windows":
        return pinWindows(name);
      default:
        return false;
    }
  } catch {
    return false;
  }
}

function pinPosix(name: string, os: "linux" | "darwin"): boolean {
  // glibc before 2.34 keeps dlopen in libdl.
  const candidates = os === "linux" ? ["libc.so.6", "libdl.so.2"] : ["libSystem.dylib"];
  const flags = RTLD_LAZY | RTLD_NOLOAD[os] | RTLD_NODELETE[os];
  for (const lib of candidates) {
    if (!ffiGranted(lib)) continue;
    let libc: Deno.DynamicLibrary<typeof DLOPEN>;
    try {
      libc = Deno.dlopen(lib, DLOPEN);
    } catch {
      continue;
    }
    try {
      // The handle is deliberately never passed to dlclose.
      return libc.symbols.dlopen(new TextEncoder().encode(`${name}\0`), flags) !== null;
    } finally {
      libc.close(); // the C library itself stays: the process links it
    }
  }
  return false;
}

function pinWindows(name: string): boolean {
  if (!ffiGranted("kernel32.dll")) return false;
  const kernel32 = Deno.dlopen("kernel32.dll", KERNEL32);
  try {
    const wide = new Uint16Array(name.length + 1);
    for (let i = 0; i < name.length; i++) wide[i] = name.charCodeAt(i);
    const module = new BigUint64Array(1);
    return kernel32.symbols.GetModuleHandleExW(MODULE_PIN, wide, module) !== 0;
  } finally {
    kernel32.close();
  }
}

/** True when FFI on `path` is granted (queried, so it never prompts). */
function ffiGranted(path: string): boolean {
  return Deno.permissions.querySync({ name: "ffi", path }).state === "granted";
}
