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
  return columns.includes("__proto__")
    ? toObjectDefining(columns, row)
    : toPlainObject(columns, row);
}

/** Every row as an object. */
export function toObjects(columns: readonly string[], rows: readonly unknown[][]): Row[] {
  const convert = columns.includes("__proto__") ? toObjectDefining : toPlainObject;
  const out = new Array<Row>(rows.length);
  for (let r = 0; r < rows.length; r++) out[r] = convert(columns, rows[r]);
  return out;
}

function toPlainObject(columns: readonly string[], row: readonly unknown[]): Row {
  const o: Row = {};
  for (let i = 0; i < columns.length; i++) o[columns[i]] = row[i] as SqlValue;
  return o;
}

/**
 * For columns that include `__proto__`: assigning it would set the
 * object's prototype (or do nothing) under Node.js and Bun, so it is
 * defined as an own property, as the other columns are.
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
