/**
 * The administration commands of `netsqlite`: `stats`, `backup`,
 * `checkpoint`, `vacuum` and `integrity`. Each connects to a running server
 * and sends one request of protocol ops 20+ (see PROTOCOL.md); the server
 * does the work (see `engine/maintenance.ts`) and says what it did.
 *
 * @module
 */

import { type FlagSpec, parseFlags } from "./args.ts";
import type { Link } from "../client/link.ts";
import {
  type ConnectConfig,
  type ConnectOptions,
  resolveConnectOptions,
} from "../client/options.ts";
import { openFinding } from "../client/_lock_owner.ts";
import {
  type BackupReport,
  type CheckpointReport,
  type IntegrityReport,
  Op,
  type StatsReport,
  type VacuumReport,
} from "../protocol/messages.ts";
import {
  CONNECT_FLAGS,
  CONNECT_FLAGS_HELP,
  type ConnectFlagValues,
  connectOptionsFromFlags,
  withFlagHints,
} from "./connect_flags.ts";
import { MAX_PROBLEMS } from "../engine/maintenance.ts";
import { OutputClosed, writeAllSync } from "./broken_pipe.ts";
import { escapedControls, shownText } from "./shown_text.ts";

/** `netsqlite integrity`'s exit status when the check finds problems (1: it could not run). */
export const INTEGRITY_PROBLEMS_EXIT = 3;

/** Where output goes (tests pass their own). */
export interface AdminIO {
  /**
   * Writes a line of results (standard output). It throws {@link OutputClosed} when the reader
   * went away (`netsqlite stats --watch 1 | head -1`): the command then stops and exits 0.
   */
  out(line: string): void;
  /** Writes a line of diagnostics (standard error). */
  err(line: string): void;
  /** Redraws the progress line (standard error, on a terminal); `null` when not a terminal. */
  progress: ((text: string) => void) | null;
  /**
   * Standard output is a terminal: `stats --watch` clears the screen before each report
   * (otherwise, into a file or a pipe, it separates reports with a blank line). @default {false}
   */
  outIsTerminal?: boolean;
}

const encoder = new TextEncoder();

/** Moves the cursor to the top left corner and clears the screen (`stats --watch` on a terminal). */
const CLEAR_SCREEN = "\x1b[H\x1b[2J";

/**
 * Standard output and error; a progress line when standard error is a terminal. Results are
 * written with `Deno.stdout` (`console.log` would ignore a broken pipe and `stats --watch` would
 * poll on, holding its admin session).
 */
export const ADMIN_STD_IO: AdminIO = {
  out: (line) => writeAllSync(`${line}\n`),
  err: (line) => console.error(line),
  progress: Deno.stderr.isTerminal()
    ? (text) => Deno.stderr.writeSync(encoder.encode(`\r\x1b[2K${text}`))
    : null,
  outIsTerminal: Deno.stdout.isTerminal(),
};

const CONNECT_HELP = `Connection:
${CONNECT_FLAGS_HELP}

The command opens an admin session: it runs at a full server (2 connection
slots are kept beyond --max-connections for admin sessions), with the same token.`;

/** `--help` texts. */
export const ADMIN_HELP: Readonly<Record<string, string>> = {
  stats: `netsqlite stats: the server's uptime, connections, request rates, latency, memory

Usage: netsqlite stats [--json] [--watch SECONDS [--count N]] [connection]

  --json             print the report as JSON (one object per line with --watch)
  --watch SECONDS    print again every SECONDS until interrupted (or --count reports)
  --count N          with --watch: stop after N reports

Rates and latency cover the last minute; latency runs from the start of a
request's turn on its connection to its reply (writer waits included).

${CONNECT_HELP}
`,
  backup: `netsqlite backup: copy the database online, while clients keep writing

Usage: netsqlite backup DEST [--json] [connection]

DEST is a path on the server: the server writes it only when started with
--backup-dir DIR, only under DIR (a relative DEST is taken under DIR), and
never over an existing file. The copy is one consistent snapshot taken when
the backup starts: it holds every write acknowledged before. Progress shows
on a terminal; otherwise one line sums up.

${CONNECT_HELP}
`,
  checkpoint: `netsqlite checkpoint: write the WAL back into the database file

Usage: netsqlite checkpoint [--truncate | --mode passive|full|restart|truncate] [--json] [connection]

  --truncate   checkpoint everything and empty the WAL file (mode truncate)
  --mode M     the PRAGMA wal_checkpoint mode (default passive)

It waits its turn for the writer like a write; it does not wait for readers:
when a reader (an open cursor, another process) holds an older snapshot it
reports "busy" with the frames it could not write back yet.

${CONNECT_HELP}
`,
  vacuum: `netsqlite vacuum: rebuild the database, or write a compacted copy

Usage: netsqlite vacuum [--into FILE] [--json] [connection]

  --into FILE  write a compacted copy to FILE (a path on the server, under its
               --backup-dir, new file) from one snapshot; writers go on meanwhile

Without --into, VACUUM runs in place on the writer: writes wait for it.

${CONNECT_HELP}
`,
  integrity: `netsqlite integrity: run PRAGMA integrity_check through the server

Usage: netsqlite integrity [--json] [connection]

It reads one snapshot on a connection of its own; writers go on meanwhile.
It lists at most ${MAX_PROBLEMS} problems. Exit status: 0 when the database is sound,
${INTEGRITY_PROBLEMS_EXIT} when the check finds problems (SQLite finding the database too
damaged to go on, SQLITE_CORRUPT or SQLITE_NOTADB, included: listed last), 1 when it
cannot run (e.g. no server), 2 on bad arguments.

${CONNECT_HELP}
`,
};

/** Each command's own options, by long name. */
const OWN_FLAGS: Readonly<Record<string, Record<string, FlagSpec>>> = {
  stats: { watch: { type: "string" }, count: { type: "string" } },
  backup: {},
  checkpoint: { truncate: { type: "boolean" }, mode: { type: "string" } },
  vacuum: { into: { type: "string" } },
  integrity: {},
};

/**
 * The options of each administration command: its own, `--json` and the connection flags
 * (`cli.ts` reads them to tell `--help` from the value of an option, as in `--token -h`).
 */
export const ADMIN_FLAGS: Readonly<Record<string, Readonly<Record<string, FlagSpec>>>> = Object
  .fromEntries(
    Object.entries(OWN_FLAGS).map((
      [name, own],
    ) => [name, { ...own, json: { type: "boolean" }, ...CONNECT_FLAGS }]),
  );

interface Parsed {
  connect: ConnectOptions;
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

function parse(args: string[], name: string): Parsed {
  const { values, positionals } = parseFlags(args, ADMIN_FLAGS[name]);
  const connect: ConnectOptions = {
    ...connectOptionsFromFlags(values as ConnectFlagValues),
    max: 1,
  };
  return { connect, values, positionals };
}

async function open(connect: ConnectOptions): Promise<Link> {
  return await openAdminLink(await resolveConnectOptions(connect));
}

/**
 * Opens a connection whose hello asks for an admin session (`admin: true`):
 * it runs only statistics and maintenance requests, and may take one of the
 * slots the server keeps for admin sessions beyond `--max-connections`, so
 * that these commands work at a full server. Otherwise as the client's own
 * connections open (`client/_lock_owner.ts` `openFinding`): within
 * `connectTimeout`, with the same token; on a database's default socket, the
 * socket its lock file names when nothing answers there.
 *
 * @param config Resolved connect options (`max`, `reconnect` and `autostart` play no part).
 * @returns the connection, its hello answered.
 * @throws {ProtocolError} `AUTH`, `TOO_MANY_CONNECTIONS` (the reserve is taken too), ...
 * @throws {ConnectionError} when no server answers.
 */
export async function openAdminLink(config: ConnectConfig): Promise<Link> {
  const [link] = await openFinding(config, { admin: true });
  return link;
}

async function close(link: Link): Promise<void> {
  link.fail(new Error("done"));
  await link.ended;
}

/**
 * Runs one administration command.
 *
 * @param name `stats`, `backup`, `checkpoint`, `vacuum` or `integrity`.
 * @param args Its arguments.
 * @param io Output.
 * @returns the exit status: 0, 1 on failure, 2 on bad arguments,
 *   {@link INTEGRITY_PROBLEMS_EXIT} when `integrity` finds problems.
 */
export async function runAdmin(
  name: string,
  args: string[],
  io: AdminIO = ADMIN_STD_IO,
): Promise<number> {
  let run: () => Promise<number>;
  try {
    run = prepare(name, args, io);
  } catch (err) {
    io.err(
      `netsqlite ${name}: ${escapedControls((err as Error).message)}\n\n${ADMIN_HELP[name] ?? ""}`,
    );
    return 2;
  }
  try {
    return await run();
  } catch (err) {
    // The reader of standard output went away: it chose to stop, as after `| head`.
    if (err instanceof OutputClosed) return 0;
    const code = (err as { code?: string }).code;
    io.err(`netsqlite ${name}: ${errorLine(code, (err as Error).message)}`);
    return 1;
  }
}

/**
 * An error as the command prints it: `CODE: message`, the client library's hints naming the
 * command's flags, and control characters escaped (the message may name a destination or a table
 * as a client gave it: `Cannot back up to "a\nb.db": the file exists`).
 */
function errorLine(code: string | undefined, message: string): string {
  return `${code ? `${code}: ` : ""}${escapedControls(withFlagHints(message))}`;
}

function prepare(name: string, args: string[], io: AdminIO): () => Promise<number> {
  switch (name) {
    case "stats": {
      const p = parse(args, name);
      noPositionals(p);
      const watch = p.values.watch === undefined ? 0 : positive("--watch", p.values.watch);
      if (watch > MAX_WATCH_SECONDS) {
        // A timer holds at most 2^31 - 1 ms; a longer one would fire after 1 ms, every time.
        throw new TypeError(
          `Invalid --watch "${String(p.values.watch)}": expected at most ${MAX_WATCH_SECONDS} ` +
            "seconds (24 days)",
        );
      }
      const count = p.values.count === undefined ? Infinity : positive("--count", p.values.count);
      if (!Number.isInteger(count) && count !== Infinity) {
        throw new TypeError(`Invalid --count "${String(p.values.count)}": expected a whole number`);
      }
      if (p.values.count !== undefined && watch === 0) {
        throw new TypeError("--count goes with --watch");
      }
      return () => stats(p, watch, count, io);
    }
    case "backup": {
      const p = parse(args, name);
      if (p.positionals.length !== 1) {
        throw new TypeError("Expected one destination: netsqlite backup DEST");
      }
      if (p.positionals[0] === "") {
        throw new TypeError("Invalid DEST: it is empty; expected a file path");
      }
      return () => backup(p, p.positionals[0], io);
    }
    case "checkpoint": {
      const p = parse(args, name);
      noPositionals(p);
      if (p.values.truncate && p.values.mode !== undefined) {
        throw new TypeError("Give --truncate or --mode, not both");
      }
      const mode = p.values.truncate ? "truncate" : String(p.values.mode ?? "passive");
      if (!["passive", "full", "restart", "truncate"].includes(mode)) {
        throw new TypeError(
          `Invalid --mode "${mode}": expected passive, full, restart or truncate`,
        );
      }
      return () =>
        simple(
          p,
          io,
          (l) => l.request(Op.Checkpoint, [mode as CheckpointReport["mode"]]),
          describeCheckpoint,
        );
    }
    case "vacuum": {
      const p = parse(args, name);
      noPositionals(p);
      const into = typeof p.values.into === "string" ? p.values.into : null;
      if (into === "") throw new TypeError("Invalid --into: it is empty; expected a file path");
      return () => simple(p, io, (l) => l.request(Op.Vacuum, [into]), describeVacuum);
    }
    case "integrity": {
      const p = parse(args, name);
      noPositionals(p);
      return () => simple(p, io, (l) => l.request(Op.Integrity, []), describeIntegrity);
    }
    default:
      throw new TypeError(`Unknown command "${name}"`);
  }
}

/** The longest `stats --watch` interval: a timer waits at most 2^31 - 1 ms. */
const MAX_WATCH_SECONDS = Math.floor((2 ** 31 - 1) / 1000);

function noPositionals(p: Parsed): void {
  if (p.positionals.length > 0) throw new TypeError(`Unexpected argument "${p.positionals[0]}"`);
}

function positive(flag: string, v: string | boolean): number {
  const n = Number(v);
  if (typeof v !== "string" || v.trim() === "" || !(n > 0) || !Number.isFinite(n)) {
    throw new TypeError(`Invalid ${flag} "${String(v)}": expected a positive number`);
  }
  return n;
}

/**
 * Sends one request and prints its reply. The exit status is 0, or
 * {@link INTEGRITY_PROBLEMS_EXIT} for a report with `ok: false`, also when the reader of
 * standard output is gone (the request ran: its outcome is the status).
 */
async function simple<T>(
  p: Parsed,
  io: AdminIO,
  ask: (link: Link) => Promise<T>,
  describe: (r: T) => string,
): Promise<number> {
  const link = await open(p.connect);
  try {
    const r = await ask(link);
    const status = (r as { ok?: boolean }).ok === false ? INTEGRITY_PROBLEMS_EXIT : 0;
    try {
      io.out(p.values.json ? JSON.stringify(r) : describe(r));
    } catch (err) {
      if (!(err instanceof OutputClosed)) throw err;
    }
    return status;
  } finally {
    await close(link);
  }
}

/** Prints reports; a closed standard output ({@link OutputClosed}) ends the loop and the session. */
async function stats(p: Parsed, watch: number, count: number, io: AdminIO): Promise<number> {
  const link = await open(p.connect);
  try {
    for (let n = 1;; n++) {
      const r = await link.request(Op.Stats, []);
      if (p.values.json) io.out(JSON.stringify(r));
      else {
        // On a terminal the screen is cleared first, in the same write: the report starts on the
        // top line (a line of its own for the clearing would leave that line empty).
        const clear = watch > 0 && io.outIsTerminal === true ? CLEAR_SCREEN : "";
        io.out(clear + describeStats(r));
      }
      if (watch === 0 || n >= count) return 0;
      await new Promise((resolve) => setTimeout(resolve, watch * 1000));
      if (watch > 0 && !p.values.json && io.outIsTerminal !== true) io.out("");
    }
  } finally {
    await close(link);
  }
}

async function backup(p: Parsed, dest: string, io: AdminIO): Promise<number> {
  const link = await open(p.connect);
  let poller: Link | null = null;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stopped = false;
  try {
    // The progress bar polls `stats` on a second admin session, opened before the backup is sent:
    // should the server refuse it (both admin slots taken), the backup goes on without a bar
    // rather than being reported as failed while the server writes the copy.
    if (io.progress !== null) {
      poller = await open(p.connect).catch((err) => {
        const code = (err as { code?: string }).code;
        io.err(
          "netsqlite backup: No progress bar (the backup goes on): cannot open a second admin " +
            `session for it: ${errorLine(code, (err as Error).message)}`,
        );
        return null;
      });
    }
    // Backups already running (another client's) are never taken for this one by the bar.
    const before = poller === null ? null : await backupsRunning(poller);
    const done = link.request(Op.Backup, [dest]);
    // Handled from the start: it may fail while the progress bar is drawn (awaited further on).
    done.catch(() => {});
    if (poller !== null && before !== null && io.progress !== null) {
      const draw = io.progress;
      const stats = poller;
      const started = performance.now();
      const poll = async (): Promise<void> => {
        if (stopped) return;
        const s = await stats.request(Op.Stats, []).catch(() => null);
        const b = s?.backups.find((x) => !before.has(x.dest) && isDestination(x.dest, dest));
        if (b !== undefined && !stopped) {
          try {
            draw(progressBar(b.done, b.total, performance.now() - started, s!));
          } catch {
            return; // standard error is gone (the terminal closed): no bar; the backup goes on
          }
        }
        if (!stopped) timer = setTimeout(poll, 200);
      };
      timer = setTimeout(poll, 100);
    }
    const r: BackupReport = await done;
    stopped = true;
    clearTimeout(timer);
    if (poller !== null) {
      try {
        io.progress?.(""); // clear the bar
      } catch { /* standard error is gone: nothing to clear */ }
    }
    io.out(p.values.json ? JSON.stringify(r) : describeBackup(r));
    return 0;
  } finally {
    stopped = true;
    clearTimeout(timer);
    if (poller !== null) await close(poller);
    await close(link);
  }
}

/** The destinations of the backups in progress, or `null` when `stats` fails (then no bar). */
async function backupsRunning(stats: Link): Promise<Set<string> | null> {
  const s = await stats.request(Op.Stats, []).catch(() => null);
  return s === null ? null : new Set(s.backups.map((b) => b.dest));
}

/**
 * Whether `resolved`, a destination as `stats` reports it (resolved by the server under its
 * `--backup-dir`), is `dest` as the command was given it: the same path, or one ending in `/` and
 * its last part (`/srv/copies/a.db` for `a.db`, but not `/srv/copies/ba.db`).
 */
function isDestination(resolved: string, dest: string): boolean {
  const name = dest.replace(/^.*\//, "");
  return resolved === dest || (name !== "" && resolved.endsWith(`/${name}`));
}

function progressBar(done: number, total: number, ms: number, s: StatsReport): string {
  const width = 30;
  const frac = total > 0 ? done / total : 0;
  const filled = Math.round(frac * width);
  // (A backup runs on the single-file engine only, where dbBytes is a number.)
  const pageSize = total > 0 && s.dbBytes !== null ? s.dbBytes / Math.max(total, 1) : 4096;
  const rate = ms > 0 ? (done * pageSize) / (ms / 1000) : 0;
  return `[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${done}/${total} pages ` +
    `${(frac * 100).toFixed(0)}% ${bytes(rate)}/s`;
}

/** One line: what a backup did. */
export function describeBackup(r: BackupReport): string {
  return `backup: ${counted(r.pages, "page")}, ${bytes(r.bytes)} to ${shownText(r.dest)} in ` +
    seconds(r.ms);
}

/**
 * One line: what a checkpoint did, from SQLite's answer (`walFrames` and
 * `checkpointed` are `PRAGMA wal_checkpoint`'s `log` and `checkpointed`):
 * -1 and -1 when it could not run (busy: another connection was
 * checkpointing; not busy: no WAL), 0 and 0 after a completed `restart` or
 * `truncate` (the WAL was reset), and, busy with every frame written back,
 * a WAL that could not be reset.
 */
export function describeCheckpoint(r: CheckpointReport): string {
  const wal = `WAL ${bytes(r.walBytesBefore)} -> ${bytes(r.walBytesAfter)}, ${seconds(r.ms)}`;
  if (r.busy && r.walFrames === -1) {
    return `checkpoint (${r.mode}): busy: another connection (another process) is ` +
      `checkpointing now, so this one could not run and wrote nothing back, ${wal}; try again`;
  }
  if (r.busy && r.checkpointed === r.walFrames) {
    const done = r.walFrames === 0 ? "no WAL frame to write back" : `all ${r.walFrames} WAL ` +
      "frames written back";
    return `checkpoint (${r.mode}): busy: ${done}, but the WAL could not be reset, ${wal}; a ` +
      "reader (an open cursor, another process) is reading it or another process writes: the " +
      "next checkpoint resets it";
  }
  if (r.busy) {
    return `checkpoint (${r.mode}): busy: ${r.checkpointed} of ${r.walFrames} WAL frames ` +
      `written back, ${wal}; a reader (an open cursor, another process) holds an older ` +
      "snapshot, the rest waits for the next checkpoint";
  }
  if (r.walFrames === -1) {
    return `checkpoint (${r.mode}): the database is not in WAL mode: there is no WAL to write back`;
  }
  // A completed TRUNCATE (or RESTART) resets the WAL, and SQLite then reports 0 frames.
  if (r.walFrames === 0 && r.walBytesBefore > 0) {
    return `checkpoint (${r.mode}): WAL written back and reset, ${wal}`;
  }
  return `checkpoint (${r.mode}): ${r.checkpointed} of ${r.walFrames} WAL frames written back, ` +
    wal;
}

/** One line: what a vacuum did. */
export function describeVacuum(r: VacuumReport): string {
  const what = r.into === null ? "vacuum" : `vacuum into ${shownText(r.into)}`;
  const line = `${what}: ${r.pagesBefore} -> ${r.pagesAfter} pages, ${bytes(r.bytesBefore)} -> ` +
    `${bytes(r.bytesAfter)}, ${seconds(r.ms)}`;
  if (!r.walBusy) return line;
  return `${line}; busy: a reader holds an older snapshot, so the vacuumed pages stay in the ` +
    "WAL and the file keeps its size: run `netsqlite checkpoint --truncate` once it is done";
}

/** What an integrity check found. */
export function describeIntegrity(r: IntegrityReport): string {
  const size = `${counted(r.pages, "page")}, ${bytes(r.bytes)}, ${seconds(r.ms)}`;
  if (r.ok) return `integrity: ok (${size})`;
  const n = r.problems.length;
  // The server lists MAX_PROBLEMS at most: as many means there may be more.
  const count = n >= MAX_PROBLEMS
    ? `at least ${n} problems (first ${n} shown)`
    : counted(n, "problem");
  // (A problem names tables and indexes: escaped, each stays on its line.)
  return [`integrity: ${count} (${size}):`, ...r.problems.map((p) => `  ${escapedControls(p)}`)]
    .join("\n");
}

/** TEMP objects named in the `stats` report at most. */
const TEMP_SHOWN = 10;

/**
 * A TEMP object as the `stats` report names it, `TYPE NAME` (`table scratch`): any client chooses
 * the name, so it is quoted and escaped when it holds a control character (`table "x\u001b[2J"`).
 */
function shownTempObject(entry: string): string {
  const space = entry.indexOf(" ");
  return space === -1
    ? shownText(entry)
    : entry.slice(0, space + 1) + shownText(entry.slice(space + 1));
}

/** The `stats` report for people. */
export function describeStats(r: StatsReport): string {
  const rates = Object.entries(r.rates).map(([op, n]) => `${op} ${n.toFixed(1)}`).join(", ");
  const total = Object.values(r.requests).reduce((a, b) => a + b, 0);
  const tx = r.transactions.length === 0
    ? "none"
    : r.transactions.map((t) => `session ${t.session} ${t.ageMs.toFixed(0)} ms`).join(", ");
  const g = r.groupCommit;
  const c = r.cluster ?? null;
  const lines = [
    `${r.server}, up ${duration(r.uptime)}${
      r.pid === undefined ? "" : `, pid ${r.pid}`
    }, engine ${r.engine} (${r.library}, SQLite ${r.sqliteVersion})`,
    c === null
      ? `database      ${shownText(r.database)} (${bytes(r.dbBytes ?? 0)}, WAL ${
        bytes(r.walBytes ?? 0)
      })`
      : `database      dqlite "${escapedControls(c.database)}" on ${
        counted(c.nodes.length, "node")
      }, ${
        c.leader === null
          ? `leader not known now, ${c.connections} of ${c.poolSize} connections open`
          : c.connections === 0
          // (No connection open, none watches the leader: it may have died since.)
          ? `last known leader ${escapedControls(c.leader)}, 0 of ${c.poolSize} connections open`
          : `leader ${
            escapedControls(c.leader)
          }, ${c.connections} of ${c.poolSize} connections to it open`
      }`,
    `connections   ${r.connections.open} open (at most ${r.connections.max}${
      r.connections.reserved ? `, and ${r.connections.reserved} more for admin sessions` : ""
    }), ${
      r.connections.admin === 1
        ? "1 of them an admin session, "
        : r.connections.admin
        ? `${r.connections.admin} of them admin sessions, `
        : ""
    }` +
    `${r.connections.handshaking ?? 0} handshaking, ` +
    `${r.connections.total} since start, ${r.connections.refused} refused` +
    (r.connections.dropped ? `, ${r.connections.dropped} dropped before their hello` : ""),
    `requests      ${total} since start, ${counted(r.errors, "error")}`,
    `requests/s    ${rates === "" ? "none in the last minute" : rates}`,
    `latency       p50 ${ms(r.latency.p50)}, p99 ${ms(r.latency.p99)}, max ${
      ms(r.latency.max)
    } (last minute, ${r.latency.count} requests)`,
    `writer        ${r.writer.waiting} waiting, longest wait ${ms(r.writer.longestWaitMs)}`,
    ...(r.lockWaiting
      ? [`lock waits    ${r.lockWaiting} waiting for another program's lock on the database file`]
      : []),
    `transactions  ${tx}`,
    `group commit  ${counted(g.groups, "group")}, ${counted(g.writes, "write")}, ${
      g.groups === 0 ? 0 : (g.writes / g.groups).toFixed(1)
    } per group, largest ${g.largest}`,
    `cursors       ${r.cursors} open`,
    `bytes         ${bytes(r.bytes.in)} in, ${bytes(r.bytes.out)} out`,
    `memory        rss ${bytes(r.memory.rss)}, heap ${bytes(r.memory.heapUsed)} of ${
      bytes(r.memory.heapTotal)
    }`,
  ].filter((line) =>
    // Cluster mode has no local writer nor group commit: those lines would always say 0.
    c === null || !(line.startsWith("writer ") || line.startsWith("group commit "))
  );
  const temp = r.writer.temp ?? []; // an older server does not report them
  const count = r.writer.tempCount ?? temp.length; // the server lists the first 1,000
  if (count > 0) {
    const shown = temp.slice(0, TEMP_SHOWN).map(shownTempObject).join(", ") +
      (count > TEMP_SHOWN ? `, and ${count - TEMP_SHOWN} more` : "");
    lines.splice(
      lines.findIndex((l) => l.startsWith("writer ")) + 1,
      0,
      `TEMP objects  ${count} on the writer (${shown}): every statement, reads too, ` +
        "goes through the writer until they are dropped",
    );
  }
  for (const b of r.backups) {
    lines.push(`backup        ${shownText(b.dest)}: ${b.done}/${b.total} pages, ${seconds(b.ms)}`);
  }
  return lines.join("\n");
}

/** `1 error`, `2 errors`, `0 errors`. */
function counted(n: number, noun: string): string {
  return `${n} ${n === 1 ? noun : `${noun}s`}`;
}

function bytes(n: number): string {
  if (n < 1024) return `${Math.round(n)} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

function ms(n: number): string {
  return n < 1 ? `${n.toFixed(3)} ms` : n < 100 ? `${n.toFixed(1)} ms` : `${Math.round(n)} ms`;
}

function seconds(n: number): string {
  return n < 1000 ? `${n.toFixed(1)} ms` : `${(n / 1000).toFixed(2)} s`;
}

function duration(s: number): string {
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.floor(s % 60);
  return d > 0 ? `${d}d ${h}h ${m}m` : h > 0 ? `${h}h ${m}m ${sec}s` : `${m}m ${sec}s`;
}
