/**
 * netsqlite: many processes share one SQLite database through a server that
 * owns the file, over a Unix socket (or TCP), with real transactions, exact
 * values and typed errors.
 *
 * Start a server with `deno task serve` (or {@link serve}), then:
 *
 * @example
 * ```ts
 * import { connect, serve } from "@netsqlite/netsqlite";
 * const dir = await Deno.makeTempDir();
 * await using server = await serve({ database: `${dir}/app.db`, path: `${dir}/app.sock` });
 * await using db = await connect({ path: `${dir}/app.sock` });
 * await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)");
 * const { lastInsertRowid } = await db.run("INSERT INTO t (name) VALUES (?)", ["ada"]);
 * const rows = await db.query<{ id: number; name: string }>("SELECT * FROM t");
 * if (rows[0].id !== lastInsertRowid || rows[0].name !== "ada") throw new Error("mismatch");
 * ```
 *
 * @module
 */

// The client's whole API (errors, kv, change feeds included), and the server's but for its CLI.
export * from "./client.ts";
export {
  type Address,
  DatabaseLockedError,
  type DqliteOptions,
  type EngineChoice,
  ListenError,
  type LogLevel,
  type MemoryRelease,
  serve,
  type ServeOptions,
  type Server,
  type ShutdownOptions,
  type SqliteInfo,
  type TcpAddress,
  type TlsServerOptions,
  type UnixAddress,
  VERSION,
} from "./server.ts";
