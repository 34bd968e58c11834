/**
 * Command-line parsing for the `netsqlite` commands: `node:util`'s
 * `parseArgs` (strict), except that an option which takes a value takes the
 * next argument as its value whatever it starts with, so that
 * `-c "-- report\nSELECT 1"` and `--token -secret` work as written.
 *
 * @module
 */

import { parseArgs } from "node:util";

/** One option as `parseArgs` takes it. */
export interface FlagSpec {
  /** `string` options take a value, `boolean` ones do not. */
  type: "string" | "boolean";
  /** A one-letter alias (`-c`). */
  short?: string;
  /**
   * A `string` option that may be given more than once (`-c A -c B`): {@link parseFlags} returns
   * its values in {@link ParsedFlags.lists}, in order. Otherwise the last one given counts.
   */
  multiple?: boolean;
}

/** What {@link parseFlags} returns. */
export interface ParsedFlags {
  /** The options given, by long name (not those that take several values). */
  values: Record<string, string | boolean | undefined>;
  /** The values of each option that may be given more than once, in order (none: `[]`). */
  lists: Record<string, string[]>;
  /** The arguments that are not options. */
  positionals: string[];
}

/**
 * Joins each option that takes a value with the argument after it
 * (`--name value` and `-n value` become `--name=value`), so that a value
 * starting with `-` is not taken for an option. Arguments after `--` and
 * forms already joined (`--name=value`, `-nvalue`) are left as they are; an
 * option with no argument after it too, for `parseArgs` to report.
 *
 * @example
 * ```ts
 * import { joinValues } from "./args.ts";
 * const args = joinValues(["-c", "-- note\nSELECT 1", "--json"], {
 *   command: { type: "string", short: "c" },
 *   json: { type: "boolean" },
 * });
 * if (args[0] !== "--command=-- note\nSELECT 1" || args[1] !== "--json") throw new Error();
 * ```
 *
 * @param args The command-line arguments.
 * @param options The options, by long name.
 * @returns the arguments, each value joined to its option.
 */
export function joinValues(args: readonly string[], options: Record<string, FlagSpec>): string[] {
  const takesValue = new Map<string, string>();
  for (const [name, spec] of Object.entries(options)) {
    if (spec.type !== "string") continue;
    takesValue.set(`--${name}`, name);
    if (spec.short !== undefined) takesValue.set(`-${spec.short}`, name);
  }
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      out.push(...args.slice(i));
      break;
    }
    const name = takesValue.get(arg);
    if (name !== undefined && i + 1 < args.length) {
      out.push(`--${name}=${args[++i]}`);
    } else {
      out.push(arg);
    }
  }
  return out;
}

/**
 * Parses arguments strictly (unknown options are errors) after
 * {@link joinValues}.
 *
 * @example
 * ```ts
 * import { parseFlags } from "./args.ts";
 * const { values, lists } = parseFlags(["-c", "SELECT 1", "--json", "-c", "SELECT 2"], {
 *   command: { type: "string", short: "c", multiple: true },
 *   json: { type: "boolean" },
 * });
 * if (values.json !== true || lists.command.join(" / ") !== "SELECT 1 / SELECT 2") throw new Error();
 * ```
 *
 * @param args The command-line arguments.
 * @param options The options, by long name.
 * @returns the values and the positionals.
 * @throws {TypeError} on an unknown option, a missing value, or a value given to a boolean option.
 */
export function parseFlags(
  args: readonly string[],
  options: Readonly<Record<string, FlagSpec>>,
): ParsedFlags {
  const joined = joinValues(args, options);
  let parsed;
  try {
    parsed = parseArgs({ args: joined, strict: true, allowPositionals: true, options });
  } catch (err) {
    throw flagError(err, joined, options);
  }
  const values = { ...parsed.values } as Record<string, string | boolean | string[] | undefined>;
  const lists: Record<string, string[]> = {};
  for (const [name, spec] of Object.entries(options)) {
    if (spec.multiple !== true) continue;
    const given = values[name];
    lists[name] = Array.isArray(given) ? given : [];
    delete values[name];
  }
  return { values: values as ParsedFlags["values"], lists, positionals: parsed.positionals };
}

/**
 * `parseArgs`'s error for an unknown option, in the commands' words; any other error as it is.
 *
 * Where positionals are allowed, `parseArgs` ends the message with a hint (`To specify a
 * positional argument starting with a '-', place it at the end of the command after '--', as in
 * '-- "--bogus"`) whose quote is unbalanced and which no netsqlite command needs: it is left out.
 * An unknown letter of a group of short options (`-bogus`, read as `-b -o -g -u -s`) is named
 * with the argument it came in, and `-json` for a long option `--json` gets a suggestion.
 *
 * @example
 * ```ts
 * import { parseArgs } from "node:util";
 * import { flagError } from "./args.ts";
 * const options = { json: { type: "boolean" } } as const;
 * let message = "";
 * try {
 *   parseArgs({ args: ["-json"], options, strict: true, allowPositionals: true });
 * } catch (err) {
 *   message = (flagError(err, ["-json"], options) as Error).message;
 * }
 * if (message !== "Unknown option '-j' in '-json': did you mean '--json'?") throw new Error(message);
 * ```
 *
 * @param err What `parseArgs` threw.
 * @param args The arguments it parsed (after {@link joinValues}).
 * @param options The options, by long name.
 * @returns a `TypeError` with the message and `err`'s `code`, or `err` itself.
 */
export function flagError(
  err: unknown,
  args: readonly string[],
  options: Readonly<Record<string, FlagSpec>>,
): unknown {
  const e = err as { code?: unknown; message?: unknown } | null;
  if (e?.code !== "ERR_PARSE_ARGS_UNKNOWN_OPTION" || typeof e.message !== "string") return err;
  const m = /^Unknown option '(.+?)'(?:$|\. To specify a positional argument )/s.exec(e.message);
  if (m === null) return err;
  const option = m[1];
  let message = `Unknown option '${option}'`;
  if (/^-[^-]$/.test(option)) {
    const end = args.indexOf("--");
    const given = (end === -1 ? args : args.slice(0, end)).find((arg) =>
      arg.length > 2 && arg[0] === "-" && arg[1] !== "-" && arg.includes(option[1], 1)
    );
    if (given !== undefined && given !== option) {
      message += ` in '${given}'`;
      const long = given.slice(1).split("=")[0];
      if (Object.hasOwn(options, long)) message += `: did you mean '--${long}'?`;
    }
  }
  // The code stays: it tells a mistake in the options from a bad value of one (server.ts).
  return Object.assign(new TypeError(message, { cause: err }), { code: e.code });
}

/**
 * Set to `netsqlite` in the environment of `bench/load.ts` when `netsqlite
 * bench` runs it, so that its errors start `netsqlite:` as serve's do (run
 * directly, it names itself).
 */
export const BENCH_PROG_VAR = "NETSQLITE_BENCH_PROG";
