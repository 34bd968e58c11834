/**
 * The seeded generator of tests/exact_audit_test.ts: random parameter values
 * (every kind README's "Values" table names, accepted and refused),
 * placeholders of every style, and statements that read them back through
 * expressions, VALUES rows whose type changes from row to row and tables of
 * every affinity. Kept apart so that the Node.js check can serialize the same
 * cases ({@link toWire}).
 */

import { Buffer } from "node:buffer";
import { DatabaseSync } from "node:sqlite";
import { prng } from "./_bytes.ts";

/** One parameter value, and what README says must happen to it. */
export interface Param {
  /** What the client is given. */
  v: unknown;
  /** Why it must be refused (`INVALID_PARAM`), or undefined when it binds exactly. */
  refused?: string;
  /** False for a REAL whose text differs between SQLite 3.40 and 3.53 (15 vs 17 digits). */
  textSafe: boolean;
  /** A label for failure messages. */
  label: string;
}

/** A placeholder style. */
export type Style = "?" | "?NNN" | ":" | "@" | "$";
/** How the parameters of a statement with names are passed. */
export type Shape = "array" | "bare" | "prefixed";

/** A statement with its parameters, in the form the client takes and the oracle's. */
export interface Case {
  sql: string;
  /** The client's parameters (array or object). */
  params: unknown[] | Record<string, unknown> | undefined;
  /** The oracle's (node:sqlite): anonymous values, and named ones by their full names. */
  oracleAnon: unknown[];
  oracleNamed: Record<string, unknown> | undefined;
  /** The label of the first refused parameter as the client numbers it, when one is. */
  refusedLabel?: string;
  /** Every value of the case could convert to text the same on both SQLite versions. */
  textSafe: boolean;
  /** The statement is a SELECT the oracle may wrap to read its text's bytes. */
  select: boolean;
  /** How it was bound, to bind the same SQL again ({@link Gen.bind}'s `force`). */
  style: Style;
  shape: Shape;
  template: string;
}

const BIG = [
  2n ** 53n,
  2n ** 53n - 1n,
  2n ** 53n + 1n,
  -(2n ** 53n),
  -(2n ** 53n) + 1n,
  -(2n ** 53n) - 1n,
  2n ** 62n,
  2n ** 63n - 1n,
  -(2n ** 63n),
  -(2n ** 63n) + 1n,
  0n,
  5n,
  -7n,
];
const NUMBERS = [
  0,
  -0,
  1,
  -1,
  42,
  2 ** 31,
  -(2 ** 31) - 1,
  2 ** 32,
  Number.MAX_SAFE_INTEGER,
  -Number.MAX_SAFE_INTEGER,
  2 ** 53,
  -(2 ** 53),
  2 ** 53 + 2,
  2 ** 60,
  2 ** 63,
  -(2 ** 63),
  2 ** 64,
  1.5,
  -2.25,
  0.1,
  0.1 + 0.2,
  1 / 3,
  1e-300,
  5e-324,
  1.7976931348623157e308,
  Infinity,
  -Infinity,
  1e15,
  123456789.125,
];
const STRINGS = [
  "",
  "a",
  "héllo",
  "🙂",
  "a🙂𝄞b",
  "\uFEFFbom",
  "\uFFFD",
  "tab\tnew\nline\r\n",
  "'quote'\"",
  "12",
  " 12 ",
  "3.0",
  "1e3",
  "-5",
  "0x10",
  "\u0001\u007f",
  "日本語",
  "\u{10FFFF}",
  "\uD83D\uDE00", // a well-formed pair
];

class TaggedBytes extends Uint8Array {
  tag = "x";
}

/** Seeded random cases. */
export class Gen {
  readonly rnd: () => number;

  constructor(seed: number) {
    this.rnd = prng(seed);
  }

  int(n: number): number {
    return Math.floor(this.rnd() * n);
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    // No "-" (a subview may start at any byte): SQLite 3.40 reads a blob that starts with
    // one as the number -0.0, 3.53 as 0.
    for (let i = 0; i < n; i++) if (out[i] === 0x2d) out[i] = 0x2e;
    return out;
  }

  text(n: number): string {
    const alphabet = ["a", "b", "z", " ", "é", "ß", "Ω", "中", "🙂", "𝄞", "\u0085", "\u2028", "_"];
    let s = "";
    while (s.length < n) s += this.pick(alphabet);
    return s;
  }

  /** An accepted value. */
  good(big = true): Param {
    const r = this.int(100);
    if (r < 8) return ok(null, "null");
    if (r < 30) {
      const v = this.pick(NUMBERS);
      return { v, textSafe: textSafe(v), label: `number ${Object.is(v, -0) ? "-0" : v}` };
    }
    if (r < 38) {
      const v = (this.rnd() - 0.5) * 10 ** (this.int(40) - 20);
      return { v, textSafe: textSafe(v), label: `number ${v}` };
    }
    if (r < 45) return ok(this.int(2001) - 1000, "small int");
    if (r < 55) {
      const v = this.pick(BIG);
      return ok(v, `bigint ${v}n`);
    }
    if (r < 58) return ok(this.rnd() < 0.5, "boolean");
    if (r < 70) return ok(this.pick(STRINGS), "string");
    if (r < 75) return ok(this.text(1 + this.int(60)), "random text");
    if (r < 77 && big) return ok(this.text(70_000 + this.int(70_000)), "long text");
    if (r < 83) return ok(this.bytes(this.int(20)), "blob");
    if (r < 86) {
      const whole = this.bytes(16 + this.int(16));
      const start = 1 + this.int(8);
      return ok(whole.subarray(start, start + this.int(8)), "Uint8Array subview");
    }
    if (r < 88) return ok(Buffer.from(this.bytes(1 + this.int(10))), "Buffer");
    if (r < 89) {
      const t = new TaggedBytes(3);
      t.set([1, 0, 255]);
      return ok(t, "Uint8Array subclass");
    }
    if (r < 91 && big) return ok(this.bytes(300_000 + this.int(300_000)), "large blob");
    if (r < 93) return ok(new Uint8Array(0), "empty blob");
    return ok(this.pick([0, 1, -1, 2, 100]), "tiny int");
  }

  /** A value README says is refused. */
  bad(): Param {
    const all: [unknown, string][] = [
      [undefined, "undefined"],
      [NaN, "NaN"],
      [new Date(0), "Date"],
      [new ArrayBuffer(4), "ArrayBuffer"],
      [new Int16Array(2), "Int16Array"],
      [new Uint8ClampedArray(2), "Uint8ClampedArray"],
      [new Float64Array(1), "Float64Array"],
      [new DataView(new ArrayBuffer(2)), "DataView"],
      [{}, "object"],
      [[1], "array"],
      [new Map(), "Map"],
      ["a\0b", "string with NUL"],
      ["\0", "NUL"],
      ["\ud800", "lone high surrogate"],
      ["a\udc00b", "lone low surrogate"],
      [2n ** 63n, "bigint 2^63"],
      [-(2n ** 63n) - 1n, "bigint -2^63-1"],
      [2n ** 64n, "bigint 2^64"],
      [new String("a"), "String object"],
      [new Number(1), "Number object"],
      [Symbol("s"), "symbol"],
      [() => 1, "function"],
    ];
    const [v, label] = this.pick(all);
    return { v, refused: label, textSafe: true, label };
  }

  param(refuseRate: number, big = true): Param {
    return this.rnd() < refuseRate ? this.bad() : this.good(big);
  }

  /**
   * A case of `n` placeholders in `template` (each `$P` replaced in turn), of
   * a random style, with the values `values`.
   */
  bind(
    template: string,
    values: Param[],
    select: boolean,
    force?: { style: Style; shape: Shape; order?: number[] },
  ): Case & { order: number[] } {
    const n = values.length;
    const style: Style = force?.style ??
      (n === 0 ? "?" : this.pick(["?", "?", "?NNN", ":", "@", "$"] as const));
    const names: string[] = []; // full names, in placeholder order
    let i = 0;
    // ?NNN: numbers from 1..n, shuffled, so ?3 may come first.
    const order = force?.order ?? Array.from({ length: n }, (_, k) => k + 1);
    if (style === "?NNN" && force?.order === undefined) order.sort(() => this.rnd() - 0.5);
    const how = { style, template, order };
    const sql = template.replace(/\$P/g, () => {
      const k = i++;
      if (style === "?") return "?";
      if (style === "?NNN") {
        names.push(`?${order[k]}`);
        return `?${order[k]}`;
      }
      const name = `${style}p${k}`;
      names.push(name);
      return name;
    });
    if (i !== n) throw new Error(`template ${template} has ${i} placeholders, not ${n}`);
    const textOk = values.every((p) => p.textSafe);
    if (style === "?") {
      const params = values.map((p) => p.v);
      const at = values.findIndex((p) => p.refused !== undefined);
      return {
        sql,
        params,
        oracleAnon: values.map((p) => oracleValue(p.v)),
        oracleNamed: undefined,
        refusedLabel: at < 0 ? undefined : String(at + 1),
        textSafe: textOk,
        select,
        shape: "array",
        ...how,
      };
    }
    // Value of each placeholder; for ?NNN the value goes to its number.
    const byName = new Map<string, Param>();
    names.forEach((name, k) => byName.set(name, values[k]));
    const oracleNamed: Record<string, unknown> = {};
    for (const [name, p] of byName) oracleNamed[name] = oracleValue(p.v);
    const shape: Shape = force?.shape ?? this.pick(["array", "bare", "prefixed"] as const);
    if (shape === "array") {
      // Positional: index of each parameter in SQLite's numbering.
      const positional: Param[] = [];
      if (style === "?NNN") {
        for (const [name, p] of byName) positional[Number(name.slice(1)) - 1] = p;
      } else {
        names.forEach((_, k) => positional[k] = values[k]);
      }
      const at = positional.findIndex((p) => p.refused !== undefined);
      return {
        sql,
        params: positional.map((p) => p.v),
        oracleAnon: [],
        oracleNamed,
        refusedLabel: at < 0 ? undefined : String(at + 1),
        textSafe: textOk,
        select,
        shape,
        ...how,
      };
    }
    const params: Record<string, unknown> = this.rnd() < 0.2 ? Object.create(null) : {};
    for (const [name, p] of byName) {
      const key = shape === "prefixed" ? name : name.slice(1);
      params[key] = p.v;
    }
    const refusedKey = Object.keys(params).find((key) => {
      const full = shape === "prefixed" ? key : `${style === "?NNN" ? "?" : style}${key}`;
      return byName.get(full)?.refused !== undefined;
    });
    return {
      sql,
      params,
      oracleAnon: [],
      oracleNamed,
      refusedLabel: refusedKey === undefined ? undefined : `"${refusedKey}"`,
      textSafe: textOk,
      select,
      shape,
      ...how,
    };
  }
}

function ok(v: unknown, label: string): Param {
  return { v, textSafe: true, label };
}

/**
 * True when SQLite 3.40 (15 significant digits) and 3.53 write `v` as the
 * same text: when 3.53's text (which may use 17 digits where 15 would do)
 * has at most 15 significant digits.
 */
export function textSafe(v: unknown): boolean {
  if (typeof v !== "number" || Number.isSafeInteger(v) || !Number.isFinite(v)) return true;
  const text = String(textOf.get(v)!.t);
  const mantissa = text.replace(/^-/, "").replace(/e.*$/, "").replace(".", "")
    .replace(/^0+/, "").replace(/0+$/, "");
  // From 1e15 on 3.40 writes an exponent ("-3.1159528484568e+16"), 3.53 all the digits.
  return mantissa.length <= 15 && Math.abs(v) < 1e15;
}

const textOf = new DatabaseSync(":memory:").prepare("SELECT CAST(? AS TEXT) AS t");

/** What node:sqlite is given for an accepted value, so that it binds what netsqlite binds. */
export function oracleValue(v: unknown): unknown {
  if (typeof v === "number" && Number.isSafeInteger(v) && !Object.is(v, -0)) return BigInt(v);
  if (typeof v === "boolean") return v ? 1n : 0n;
  if (v instanceof Uint8Array) return new Uint8Array(v); // a plain copy of the view's bytes
  return v;
}

/** Integers as netsqlite returns them: a number within ±(2^53 − 1), else a bigint. */
export function normalize(v: unknown): unknown {
  if (typeof v === "bigint" && v >= -(2n ** 53n) + 1n && v <= 2n ** 53n - 1n) return Number(v);
  if (v instanceof Uint8Array) return new Uint8Array(v);
  return v;
}

/** A JSON form that keeps bigints, -0, ±Infinity, NaN, undefined and bytes (for Node.js and messages). */
export function toWire(v: unknown): unknown {
  if (typeof v === "bigint") return { $big: String(v) };
  if (typeof v === "number" && (Object.is(v, -0) || !Number.isFinite(v))) {
    return { $num: Object.is(v, -0) ? "-0" : String(v) };
  }
  if (v === undefined) return { $undef: 1 };
  if (typeof v === "symbol" || typeof v === "function") return { $bad: typeof v };
  if (Buffer.isBuffer(v)) return { $buf: [...v] };
  if (v instanceof TaggedBytes) return { $tagged: [...v] };
  if (v instanceof Uint8Array) {
    // A subview is sent with bytes around it, so the Node.js side rebuilds it as a subview.
    return {
      $u8: [...new Uint8Array(v.buffer, 0, v.buffer.byteLength)],
      off: v.byteOffset,
      len: v.length,
    };
  }
  if (Array.isArray(v)) return v.map(toWire);
  if (v !== null && typeof v === "object") {
    const proto = Object.getPrototypeOf(v);
    if (proto !== Object.prototype && proto !== null) return { $bad: v.constructor.name };
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toWire(x)]));
  }
  return v;
}

/** Undoes {@link toWire}. */
export function fromWire(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(fromWire);
  if (v !== null && typeof v === "object") {
    const o = v as Record<string, unknown>;
    if ("$big" in o) return BigInt(o.$big as string);
    if ("$num" in o) return Number(o.$num);
    if ("$undef" in o) return undefined;
    if ("$buf" in o) return new Uint8Array(o.$buf as number[]);
    if ("$tagged" in o) return new Uint8Array(o.$tagged as number[]);
    if ("$u8" in o) {
      return new Uint8Array(o.$u8 as number[]).subarray(
        o.off as number,
        (o.off as number) + (o.len as number),
      );
    }
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, fromWire(x)]));
  }
  return v;
}

/** A short printable form of a value for failure messages. */
export function show(v: unknown): string {
  return JSON.stringify(toWire(v), (_k, x) => {
    if (typeof x === "string" && x.length > 80) return `${x.slice(0, 60)}...(${x.length} chars)`;
    if (Array.isArray(x) && x.length > 40 && typeof x[0] === "number") {
      return `[${x.length} numbers]`;
    }
    return x;
  });
}
