/**
 * `netsqlite`: the one command-line entry — `serve`, `shell`, `bench`,
 * `stats`, `backup`, `checkpoint`, `vacuum`, `integrity`.
 *
 * Run it: `deno run -A cli.ts <command> [options]`, `deno task cli <command>`,
 * or build a single binary with `deno task compile` (this module is its
 * entry, so it keeps to static imports).
 *
 * @module
 */

import { ADMIN_FLAGS, ADMIN_HELP, runAdmin } from "./cli/admin.ts";
import { BENCH_PROG_VAR, type FlagSpec, joinValues } from "./cli/args.ts";
import { runShell, SHELL_FLAGS, SHELL_HELP } from "./cli/shell.ts";
import { main as serverMain, VERSION } from "./server.ts";

/** One subcommand. */
interface Command {
  /** One line for the command list. */
  summary: string;
  /** Full `--help` text. */
  help: string;
  /** Runs it; resolves to the exit status. */
  run(args: string[]): Promise<number>;
  /**
   * Its options, so that `-h` or `--help` given as the value of one (`--token -h`,
   * `-c --help`) is taken as that value, not as a request for help; `"own"`: the command reads
   * `--help` itself.
   */
  flags: Readonly<Record<string, FlagSpec>> | "own";
}

const SERVE_HELP = `netsqlite serve: run the server (the options of server.ts)

Usage: netsqlite serve [options]
`;

const BENCH_HELP = `netsqlite bench: the load generator (bench/load.ts)

Usage: netsqlite bench [options of bench/load.ts]

It runs bench/load.ts from a source checkout (it starts server and client
processes from the sources); the compiled binary does not contain it.
The options of bench/load.ts follow, when its sources are present.
`;

/** An administration command (`cli/admin.ts`). */
function admin(name: string, summary: string): Command {
  return {
    summary,
    help: ADMIN_HELP[name],
    run: (args) => runAdmin(name, args),
    flags: ADMIN_FLAGS[name],
  };
}

const COMMANDS: Readonly<Record<string, Command>> = {
  serve: {
    summary: "run the server",
    help: SERVE_HELP,
    // The server's own parser: `--help` and `-h` print its help, which shows both ways to start it.
    run: (args) => serverMain(args),
    flags: "own",
  },
  shell: {
    summary: "run SQL against a running server, interactively or from a script",
    help: SHELL_HELP,
    run: (args) => runShell(args),
    flags: SHELL_FLAGS,
  },
  bench: {
    summary: "run the load generator (from a source checkout)",
    help: BENCH_HELP,
    run: runBench,
    // bench/load.ts takes no option value that starts with `-` (`--out=-x` only).
    flags: {},
  },
  stats: admin("stats", "show the server's uptime, connections, request rates, latency, memory"),
  backup: admin("backup", "copy the database online, while clients keep writing"),
  checkpoint: admin("checkpoint", "checkpoint the write-ahead log through the server"),
  vacuum: admin("vacuum", "rebuild the database, or write a compacted copy, through the server"),
  integrity: admin("integrity", "run PRAGMA integrity_check through the server"),
};

/** Top-level help: the command list. */
export function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length)) + 2;
  const list = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}${c.summary}`);
  return `netsqlite ${VERSION}: share one SQLite database between processes

Usage: netsqlite <command> [options]

Commands:
${list.join("\n")}

Options:
  -h, --help     show this help (netsqlite <command> --help for a command's)
  -V, --version  show the version
`;
}

/**
 * Runs the `netsqlite` command line.
 *
 * @param args The arguments (`Deno.args`).
 * @returns the exit status.
 */
export async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  if (name === undefined) {
    console.error(usage());
    return 2;
  }
  if (name === "--help" || name === "-h" || name === "help") {
    if (rest[0] === "serve") return await serverMain(["--help"]);
    const about = rest[0] === undefined ? undefined : COMMANDS[rest[0]];
    console.log(about?.help ?? usage());
    return 0;
  }
  if (name === "--version" || name === "-V" || name === "version") {
    console.log(`netsqlite ${VERSION}`);
    return 0;
  }
  const command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (command === undefined) {
    console.error(`netsqlite: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  if (command.flags !== "own" && asksHelp(rest, command.flags)) {
    console.log(command.help);
    if (name === "bench") await runBench(["--help"]);
    return 0;
  }
  return await command.run(rest);
}

/**
 * Whether `args` ask for help: `--help` or `-h` where an option stands, before any `--`; not as
 * the value of an option that takes one (`--token -h` is a token, `-c --help` SQL), as the
 * command's parser will read them.
 */
function asksHelp(args: string[], flags: Readonly<Record<string, FlagSpec>>): boolean {
  for (const arg of joinValues(args, flags)) {
    if (arg === "--") return false;
    if (arg === "--help" || arg === "-h") return true;
  }
  return false;
}

/** `netsqlite bench`: runs bench/load.ts in a child process from a source checkout. */
async function runBench(args: string[]): Promise<number> {
  const url = new URL("./bench/load.ts", import.meta.url);
  let present = false;
  if (!Deno.build.standalone && url.protocol === "file:") {
    present = await Deno.stat(url).then((s) => s.isFile, () => false);
  }
  if (!present) {
    console.error(
      "netsqlite bench: the load generator is not part of this build: " +
        "from a source checkout run: deno run -A bench/load.ts [options]",
    );
    return 1;
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", url.href, ...args],
    // Its errors then name the command run, as serve's do (`netsqlite: ...`).
    env: { [BENCH_PROG_VAR]: "netsqlite" },
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  return (await child.status).code;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
