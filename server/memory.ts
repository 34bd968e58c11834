/**
 * Gives memory back to the operating system after connections close.
 *
 * A burst of connections leaves garbage in the V8 heap and freed blocks in
 * glibc's malloc arenas. V8's memory reducer collects the garbage some
 * 10–40 s after allocation quiets down, but glibc keeps most of what is then
 * freed (its heap shrinks only from the top), so without help the server's
 * RSS stays tens of MiB above where it started. `malloc_trim(0)` hands the
 * free pages back; it is called through FFI, so it needs `--allow-ffi` (all
 * of it, or scoped to the path of libc) and glibc on Linux. When `gc` is
 * exposed (`--v8-flags=--expose-gc`), a wave of disconnects also triggers a
 * full collection, so the memory comes back within about a second instead of
 * after V8's own delay.
 *
 * Schedule: a release runs {@link FIRST_RELEASE_MS} after a connection
 * closes, then every {@link FOLLOW_UP_MS} until {@link FOLLOW_UP_WINDOW_MS}
 * have passed since the last close (so what V8 frees late is trimmed too).
 * A wave of closes — at least {@link WAVE_MIN_CLOSED} since the last
 * release, and at most half of the peak still open — brings the next
 * release forward to {@link FIRST_RELEASE_MS}, and only a wave runs the full
 * collection, which pauses the server for 10–40 ms (1000 idle connections
 * just closed, 2-core machine). The trim runs on a worker thread.
 *
 * Large blocks: glibc raises its mmap threshold (up to 32 MiB) each time it
 * frees a large mmapped block, so later blocks of that size come from an
 * arena instead. A block that SQLite allocates while a statement steps on a
 * worker thread (a nonblocking FFI call) lands in that thread's arena, and
 * once freed it sits at the top of that arena's heap, which `malloc_trim`
 * never shrinks (it trims the top of the main arena only) and `free` shrinks
 * only past twice the raised threshold: a 30 MB value read in the background
 * kept 30 MB resident per worker thread for good. So the releaser fixes
 * the thresholds with `mallopt` once, at start ({@link MMAP_THRESHOLD},
 * {@link TRIM_THRESHOLD}): a block of 4 MiB or more is mapped on its own and
 * unmapped when freed, and a heap's free top is given back past 8 MiB. The
 * price: each value of 4 MiB or more is faulted in afresh (an 8 MB blob read
 * took ~30 ms instead of ~20 ms on a 2-core machine); smaller ones, the
 * common case, are served as before. It needs what trimming needs.
 *
 * @module
 */

import { libcFiles } from "../engine/binding/_libc.ts";

/** Delay from a close to the first release, in ms. */
export const FIRST_RELEASE_MS = 1000;
/** Interval of the follow-up releases, in ms. */
export const FOLLOW_UP_MS = 10_000;
/** Follow-up releases run until this long after the last close, in ms. */
export const FOLLOW_UP_WINDOW_MS = 60_000;
/** Closes since the last release that make a wave (with the open count halved). */
export const WAVE_MIN_CLOSED = 64;
/** Blocks of this many bytes or more are mapped on their own (`M_MMAP_THRESHOLD`). */
export const MMAP_THRESHOLD = 4 * 1024 * 1024;
/** A heap's free top past this many bytes goes back to the system at once (`M_TRIM_THRESHOLD`). */
export const TRIM_THRESHOLD = 2 * MMAP_THRESHOLD;
/** `mallopt` parameters (glibc's malloc.h). */
const M_TRIM_THRESHOLD = -1;
const M_MMAP_THRESHOLD = -3;

/** How a server gives memory back; see the module notes. */
export interface MemoryRelease {
  /** `malloc_trim` is called after closes (needs glibc and `--allow-ffi`). */
  readonly trim: boolean;
  /** A full collection runs after a wave of closes (needs `--v8-flags=--expose-gc`). */
  readonly gc: boolean;
  /** Why trimming is off, when it is. */
  readonly trimOffReason: string | null;
  /**
   * The mmap threshold fixed with `mallopt` ({@link MMAP_THRESHOLD}), or
   * `null` when glibc's own, moving one applies (trimming is off).
   */
  readonly mmapThreshold: number | null;
  /** `malloc_trim` calls so far. */
  readonly trims: number;
  /** Full collections so far. */
  readonly collections: number;
}

type Gc = (options?: { type: string; execution: string; flavor: string }) => void;
type Libc = Deno.DynamicLibrary<{
  malloc_trim: { parameters: ["usize"]; result: "i32"; nonblocking: true };
  mallopt: { parameters: ["i32", "i32"]; result: "i32" };
}>;

/** Tracks open connections and releases memory after they close. */
export class MemoryReleaser {
  readonly trim: boolean;
  readonly gc: boolean;
  readonly trimOffReason: string | null;
  readonly mmapThreshold: number | null;
  #trims = 0;
  #collections = 0;
  readonly #libc: Libc | null;
  readonly #collect: Gc | null;
  #open = 0;
  #peak = 0;
  #closedSinceRelease = 0;
  #lastCloseAt = 0;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #dueAt = 0;
  #trimming: Promise<unknown> | null = null;
  #closed = false;

  constructor(options: { enabled: boolean }) {
    const libc = options.enabled ? openLibc() : "disabled by the releaseMemory option";
    this.#libc = typeof libc === "string" ? null : libc;
    this.trim = this.#libc !== null;
    this.trimOffReason = typeof libc === "string" ? libc : null;
    this.mmapThreshold = this.#libc !== null && fixThresholds(this.#libc) ? MMAP_THRESHOLD : null;
    const gc = (globalThis as { gc?: unknown }).gc;
    this.#collect = options.enabled && typeof gc === "function" ? gc as Gc : null;
    this.gc = this.#collect !== null;
  }

  /** A snapshot of the settings and counts. */
  snapshot(): MemoryRelease {
    const { trim, gc, trimOffReason, mmapThreshold } = this;
    return {
      trim,
      gc,
      trimOffReason,
      mmapThreshold,
      trims: this.#trims,
      collections: this.#collections,
    };
  }

  /** A connection opened. */
  opened(): void {
    this.#open++;
    if (this.#open > this.#peak) this.#peak = this.#open;
  }

  /** A connection closed: schedule a release, sooner when a wave of closes is under way. */
  closed(): void {
    this.#open--;
    this.#closedSinceRelease++;
    const now = this.#lastCloseAt = performance.now();
    if (this.#timer === null) {
      this.#schedule(FIRST_RELEASE_MS);
    } else if (this.#dueAt > now + FIRST_RELEASE_MS && this.#isWave()) {
      clearTimeout(this.#timer);
      this.#schedule(FIRST_RELEASE_MS);
    }
  }

  /** Stops the schedule, waits for a running trim and unloads libc. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    await this.#trimming;
    this.#libc?.close();
  }

  #schedule(ms: number): void {
    if (this.#closed || (this.#libc === null && this.#collect === null)) return;
    const timer = setTimeout(() => this.#release(), ms);
    Deno.unrefTimer(timer);
    this.#timer = timer;
    this.#dueAt = performance.now() + ms;
  }

  #isWave(): boolean {
    return this.#closedSinceRelease >= WAVE_MIN_CLOSED && this.#open <= this.#peak / 2;
  }

  #release(): void {
    this.#timer = null;
    if (this.#collect !== null && this.#isWave()) {
      this.#collect({ type: "major", execution: "sync", flavor: "last-resort" });
      this.#collections++;
    }
    if (this.#libc !== null && this.#trimming === null) {
      // On a worker thread: returning pages takes up to ~10 ms.
      this.#trimming = this.#libc.symbols.malloc_trim(0n).finally(() => this.#trimming = null);
      this.#trims++;
    }
    this.#peak = this.#open;
    this.#closedSinceRelease = 0;
    if (performance.now() - this.#lastCloseAt < FOLLOW_UP_WINDOW_MS) this.#schedule(FOLLOW_UP_MS);
  }
}

/** One line for the server's log saying how memory is given back. */
export function describeMemoryRelease(m: MemoryRelease): string {
  const trim = m.trim ? "malloc_trim after disconnects" : `no malloc_trim (${m.trimOffReason})`;
  return `memory release: ${trim}; full gc after a wave of disconnects ${m.gc ? "on" : "off"}`;
}

/**
 * Fixes glibc's mmap and trim thresholds (see the module notes); false
 * when glibc refused either. Process-wide, and glibc's moving thresholds
 * stay off from then on.
 */
function fixThresholds(libc: Libc): boolean {
  const s = libc.symbols;
  return s.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) === 1 &&
    s.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) === 1;
}

/** Opens glibc for `malloc_trim`, or says why not (never prompts for permission). */
function openLibc(): Libc | string {
  if (Deno.build.os !== "linux") return `not Linux`;
  const path = libcPath();
  if (path === null) return "libc is not glibc";
  if (Deno.permissions.querySync({ name: "ffi", path }).state !== "granted") {
    return "no --allow-ffi";
  }
  try {
    return Deno.dlopen(path, {
      malloc_trim: { parameters: ["usize"], result: "i32", nonblocking: true },
      mallopt: { parameters: ["i32", "i32"], result: "i32" },
    });
  } catch (err) {
    return `cannot load ${path}: ${(err as Error).message}`;
  }
}

/**
 * The path of the glibc this process runs on, from /proc/self/maps (which
 * Deno reads only under `--allow-all`); else the first glibc that FFI is
 * permitted on ({@link libcFiles}), else `libc.so.6`; `null` when the maps
 * show another C library.
 */
function libcPath(): string | null {
  const maps = "/proc/self/maps";
  try {
    if (Deno.permissions.querySync({ name: "read", path: maps }).state === "granted") {
      const m = /\s(\/\S*\/libc\.so\.6)$/m.exec(Deno.readTextFileSync(maps));
      return m === null ? null : m[1];
    }
  } catch {
    // not readable: Deno wants --allow-all for /proc/self
  }
  return libcFiles().find((file) => file.endsWith("libc.so.6")) ?? "libc.so.6";
}
