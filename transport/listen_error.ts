/**
 * The error of a server that cannot listen on its address.
 *
 * @module
 */

/**
 * The server could not listen on its address: a live server holds it, or
 * the system refused (permissions, a port in use).
 *
 * @example
 * ```ts
 * import { ListenError, serve } from "@netsqlite/netsqlite/server";
 * const dir = await Deno.makeTempDir();
 * await using first = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
 * try {
 *   await serve({ database: `${dir}/b.db`, path: `${dir}/a.sock` }); // the socket is taken
 *   throw new Error("expected ListenError");
 * } catch (err) {
 *   if (!(err instanceof ListenError)) throw err;
 * }
 * ```
 */
export class ListenError extends Error {
  /**
   * Creates the error.
   *
   * @param message What went wrong.
   * @param options Error options (`cause`).
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ListenError";
  }
}
