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
}

/** What {@link parseFlags} returns. */
export interface ParsedFlags {
  /** The options given, by long name. */
  values: Record<string, string | boolean | undefined>;
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
 * @param args The command-line arguments.
 * @param options The options, by long name.
 * @returns the values and the positionals.
 * @throws {TypeError} on an unknown option, a missing value, or a value given to a boolean option.
 */
export function parseFlags(
  args: readonly string[],
  options: Record<string, FlagSpec>,
): ParsedFlags {
  const { values, positionals } = parseArgs({
    args: joinValues(args, options),
    strict: true,
    allowPositionals: true,
    options,
  });
  return { values: values as ParsedFlags["values"], positionals };
}
