/**
 * The file size limit (`ulimit -f`, `RLIMIT_FSIZE`): a write that would make
 * a file grow past it gets `SIGXFSZ`, whose default action kills the process.
 * While a server runs, a listener for that signal takes the default away: the
 * write fails instead (`EFBIG`), SQLite reports it to the client whose
 * statement wrote (`SQLITE_IOERR_WRITE`, "disk I/O error", or `SQLITE_FULL`),
 * the transaction is rolled back, and the server serves on; the listener logs
 * what happened.
 *
 * @module
 */

import type { Logger } from "./log.ts";

/** A listener for `SIGXFSZ` held while a server runs (none on Windows). */
export class FileSizeSignal {
  readonly #onSignal: (() => void) | null;
  #closed = false;

  /**
   * Adds the listener.
   *
   * @param log Where the warning goes (throttled: once a second at most).
   */
  constructor(log: Logger) {
    if (Deno.build.os === "windows") {
      this.#onSignal = null;
      return;
    }
    this.#onSignal = () =>
      log.warnThrottled(
        "file size limit",
        `a write went past the file size limit${describeLimit()} (ulimit -f): it failed ` +
          "(EFBIG) instead of stopping the server, and the statement that wrote was told " +
          "(SQLITE_IOERR_WRITE or SQLITE_FULL); raise the limit (ulimit -f unlimited) to let " +
          "the database grow",
        1000,
      );
    Deno.addSignalListener("SIGXFSZ", this.#onSignal);
  }

  /** Removes the listener. Idempotent. */
  close(): void {
    if (this.#onSignal === null || this.#closed) return;
    this.#closed = true;
    Deno.removeSignalListener("SIGXFSZ", this.#onSignal);
  }
}

/** ` of N bytes`, read from `/proc/self/limits` (Linux), or nothing. */
function describeLimit(): string {
  try {
    const text = Deno.readTextFileSync("/proc/self/limits");
    const m = /^Max file size\s+(\d+)\s/m.exec(text);
    return m === null ? "" : ` of ${m[1]} bytes`;
  } catch {
    return "";
  }
}
