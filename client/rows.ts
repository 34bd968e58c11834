/**
 * Rows as objects. SQLite sends rows as arrays with one list of column
 * names; a result whose names repeat (a join of two tables with an `id`
 * column) keeps, in the object, the value of the **last** column of that
 * name, as better-sqlite3 does. Every value stays reachable through the
 * array forms (`values()`, `batch(..., { arrays: true })`, `Statement.raw()`).
 *
 * @module
 */

/** A value SQLite returns: integers beyond 2^53 come back as bigint. */
export type SqlValue = null | number | bigint | string | Uint8Array;

/** A row as an object keyed by column name (the last of duplicate names wins). */
export type Row = Record<string, SqlValue>;

/** One row as an object; with duplicate names the last column wins. */
export function toObject(columns: readonly string[], row: readonly unknown[]): Row {
  return columns.some(inherited) ? toObjectDefining(columns, row) : toPlainObject(columns, row);
}

/**
 * True for a name `Object.prototype` has (`__proto__`, `toString`,
 * `constructor`, ...): assigning it would set the prototype, or throw where
 * the prototype is frozen (a hardened runtime), so it is defined instead.
 */
function inherited(name: string): boolean {
  return name in Object.prototype;
}

/** Every row as an object. */
export function toObjects(columns: readonly string[], rows: readonly unknown[][]): Row[] {
  const make = rowMaker(columns, rows.length);
  const out = new Array<Row>(rows.length);
  for (let r = 0; r < rows.length; r++) out[r] = make(rows[r]);
  return out;
}

/** Turns one row (an array in column order) into an object. */
export type RowMaker = (row: readonly unknown[]) => Row;

/** Rows from which a result's row maker is compiled at its column list's first sighting. */
const COMPILE_AT_ROWS = 16;
/** Column lists whose makers (or sightings) are kept; past it the cache starts over. */
const MAX_MAKERS = 256;
/** Most columns a compiled maker takes (more are assigned one by one). */
const MAX_COMPILED_COLUMNS = 256;
/** Per column list (as JSON): its compiled maker, or how often it was seen. */
const makers = new Map<string, RowMaker | number>();
/** False once compiling failed (a Content-Security-Policy without `'unsafe-eval'`). */
let canCompile = true;

/**
 * The function that makes the rows of `columns` objects, for a result of
 * `rows` rows (a cursor: any number). A column list seen before, or a
 * result of many rows, gets a function compiled once into one object
 * literal (`new Function`): ≈ 8× faster than assigning the columns one by
 * one (1 against 8 µs for 100 rows of 4 columns here), and every row gets
 * one hidden class. Its keys are the names as JSON string literals, in
 * column order, so a duplicate name keeps the last column's value, as the
 * assignments do. Names with `__proto__` (which a literal would take as the
 * prototype), very wide rows, and places that forbid compiling code keep
 * the assignments (definitions for names `Object.prototype` has).
 */
export function rowMaker(columns: readonly string[], rows: number): RowMaker {
  const assign: RowMaker = columns.some(inherited)
    ? (row) => toObjectDefining(columns, row)
    : (row) => toPlainObject(columns, row);
  if (
    !canCompile || columns.length === 0 || columns.length > MAX_COMPILED_COLUMNS ||
    columns.includes("__proto__")
  ) return assign;
  const key = JSON.stringify(columns);
  const known = makers.get(key);
  if (typeof known === "function") return known;
  if (known === undefined && rows < COMPILE_AT_ROWS) {
    if (makers.size >= MAX_MAKERS) makers.clear();
    makers.set(key, 1);
    return assign;
  }
  let compiled: RowMaker;
  try {
    const fields = columns.map((name, i) => `${JSON.stringify(name)}: r[${i}]`);
    compiled = new Function("r", `return { ${fields.join(", ")} };`) as RowMaker;
  } catch {
    canCompile = false;
    makers.clear();
    return assign;
  }
  if (makers.size >= MAX_MAKERS) makers.clear();
  makers.set(key, compiled);
  return compiled;
}

function toPlainObject(columns: readonly string[], row: readonly unknown[]): Row {
  const o: Row = {};
  for (let i = 0; i < columns.length; i++) o[columns[i]] = row[i] as SqlValue;
  return o;
}

/**
 * For columns that include a name `Object.prototype` has: assigning
 * `__proto__` would set the object's prototype, and assigning any of them
 * throws where the prototype is frozen, so each column is defined as an own
 * property.
 */
function toObjectDefining(columns: readonly string[], row: readonly unknown[]): Row {
  const o: Row = {};
  for (let i = 0; i < columns.length; i++) {
    Object.defineProperty(o, columns[i], {
      value: row[i],
      writable: true,
      enumerable: true,
      configurable: true,
    });
  }
  return o;
}
