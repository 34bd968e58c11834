/**
 * Notices commits to a WAL-mode database by any process, cheaply: every
 * commit rewrites the WAL-index header at the start of the `-shm` file
 * (its change counter, last frame, checksums and salts, SQLite's file
 * format §4.5), which every process maps from the same page cache. Reading
 * those 48 bytes costs one seek and one read (≈0.5 µs measured here,
 * against ≈1.3 µs for `PRAGMA data_version`, which opens a read
 * transaction).
 *
 * The engine reads the header before renewing its read snapshot, so a
 * snapshot is never older than the header it recorded: a commit that
 * completed before a read arrives is always seen by that read.
 *
 * @module
 */

const HEADER_BYTES = 48;

/** Watches one database's WAL-index header. */
export class WalWatch {
  readonly #path: string;
  #file: Deno.FsFile | null = null;
  #seen = new Uint8Array(HEADER_BYTES);
  #now = new Uint8Array(HEADER_BYTES);
  #seen32 = new Uint32Array(this.#seen.buffer);
  #now32 = new Uint32Array(this.#now.buffer);

  /** @param database The database file (its `-shm` file is watched). */
  constructor(database: string) {
    this.#path = `${database}-shm`;
  }

  /**
   * True when the header differs from the one recorded by the last call
   * that returned true (or when it cannot be read: then every call is a
   * change, which is safe). The header read now becomes the recorded one.
   */
  changed(): boolean {
    const file = this.#file ?? this.#open();
    if (file === null) return true;
    let n: number | null;
    try {
      file.seekSync(0, Deno.SeekMode.Start);
      n = file.readSync(this.#now);
    } catch {
      n = null;
    }
    if (n !== HEADER_BYTES) return true;
    const a = this.#now32, b = this.#seen32;
    for (let i = 0; i < a.length; i++) {
      if (a[i] !== b[i]) {
        const t = this.#seen;
        this.#seen = this.#now;
        this.#now = t;
        this.#seen32 = a;
        this.#now32 = b;
        return true;
      }
    }
    return false;
  }

  /** Closes the file. Idempotent. */
  close(): void {
    this.#file?.close();
    this.#file = null;
  }

  #open(): Deno.FsFile | null {
    try {
      this.#file = Deno.openSync(this.#path, { read: true });
    } catch {
      this.#file = null;
    }
    return this.#file;
  }
}
