/**
 * Small filesystems for the tests of a device that fills up: a tmpfs
 * mounted by the test (root on Linux; elsewhere `canMount` is false and
 * those tests are ignored), and a file that fills it to its last page.
 */

/** Mounts a tmpfs with `options` (`size=...`, more after commas) at `dir`; false where not possible. */
export function mountTmpfs(dir: string, options: string): boolean {
  if (Deno.build.os !== "linux" || Deno.uid() !== 0) return false;
  try {
    return new Deno.Command("mount", {
      args: ["-t", "tmpfs", "-o", `size=${options}`, "tmpfs", dir],
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
  } catch {
    return false;
  }
}

/** True when this process may mount a tmpfs (root on Linux). */
export const canMount: boolean = (() => {
  const dir = Deno.makeTempDirSync({ prefix: "netsqlite-mount-" });
  const ok = mountTmpfs(dir, "64k");
  if (ok) new Deno.Command("umount", { args: [dir] }).outputSync();
  Deno.removeSync(dir);
  return ok;
})();

/** Fills the device holding `dir` to its last page, or to its last `freePages` pages (a file `filler`). */
export async function fill(dir: string, freePages = 0): Promise<void> {
  using f = await Deno.open(`${dir}/filler`, { create: true, write: true });
  const chunk = new Uint8Array(1 << 20).fill(1);
  for (let size = chunk.length; size >= 4096;) {
    try {
      await f.write(chunk.subarray(0, size));
    } catch {
      size >>= 1;
    }
  }
  if (freePages > 0) await f.truncate((await f.stat()).size - freePages * 4096);
}

/**
 * A temp directory (`path`) holding a tmpfs mounted with `options` at
 * `disk`; unmounted (lazily: a server's files may still be open) and
 * removed on dispose.
 */
export async function mountedDisk(
  options: string,
): Promise<{ path: string; disk: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "netsqlite-disk-" });
  const disk = `${path}/disk`;
  await Deno.mkdir(disk);
  if (!mountTmpfs(disk, options)) throw new Error(`Cannot mount a tmpfs of ${options} at ${disk}`);
  return {
    path,
    disk,
    async [Symbol.asyncDispose]() {
      await new Deno.Command("umount", { args: ["-l", disk] }).output();
      await Deno.remove(path, { recursive: true }).catch(() => {});
    },
  };
}
