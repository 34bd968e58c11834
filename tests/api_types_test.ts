/**
 * Type-level tests of the query API, checked by `deno task check` (and by
 * `deno test`, which type-checks before running): what must compile does,
 * and each `@ts-expect-error` line must stay an error. The runtime tests
 * below run the same shapes against a real server.
 */
import assert from "node:assert/strict";
import {
  type BatchOptions,
  type BatchStatement,
  type BatchStatementsOf,
  type BindParamsOf,
  type CallOptions,
  type Client,
  connect,
  ErrorCode,
  type IterateOptions,
  type Row,
  type RunResult,
  SqliteError,
  type SqlValue,
  type Statement,
} from "../mod.ts";
import { changesOf } from "../client/_calls.ts";
import { startServer } from "./_helpers.ts";

interface UserParams {
  name: string;
  age: number;
}

interface User {
  id: number;
  name: string;
}

/** Asserts at compile time that `A` and `B` are the same type. */
type Same<A, B> = (<X>() => X extends A ? 1 : 2) extends (<X>() => X extends B ? 1 : 2) ? true
  : false;
function same<A, B>(_proof: Same<A, B>): void {}

// Never called: only type-checked.
async function typeLevel(db: Client, st: Statement): Promise<void> {
  // Named parameters typed by an interface are accepted, as object literals are.
  const p: UserParams = { name: "ada", age: 36 };
  await db.run("INSERT INTO u VALUES (:name, :age)", p);
  await db.query("SELECT * FROM u WHERE name = :name AND age = :age", p);
  await db.get("SELECT * FROM u WHERE name = :name AND age = :age", p);
  await db.values("SELECT * FROM u WHERE name = :name AND age = :age", p);
  await st.run(p);
  await st.all(p);
  for await (const _ of db.iterate("SELECT :name, :age", p));
  // With an explicit row type, name the parameters' type too (or spread them).
  const u = await db.get<User, UserParams>("SELECT * FROM u WHERE name = :name", p);
  same<typeof u, User | undefined>(true);
  await db.get<User>("SELECT * FROM u WHERE name = :name", { ...p });
  await db.run("SELECT :a, :b", { a: 1, b: null });
  await db.run("SELECT ?, ?", [1, "a"] as const);
  await db.run("SELECT ?", [new Uint8Array(1)]);
  await db.run("SELECT ?", [1n, true]);
  await db.run("SELECT 1", undefined, { timeout: 100 });

  // What cannot be bound stays refused at compile time.
  interface WithDate {
    at: Date;
  }
  const withDate: WithDate = { at: new Date() };
  // @ts-expect-error a Date property is not a BindValue
  await db.run("SELECT :at", withDate);
  // @ts-expect-error a Date property is not a BindValue
  await db.query("SELECT :at", { at: new Date() });
  const maybe: { a: number | undefined } = { a: undefined };
  // @ts-expect-error undefined is not a BindValue (pass null)
  await db.run("SELECT :a", maybe);
  // @ts-expect-error undefined is not a BindValue (pass null)
  await db.run("SELECT ?", [undefined]);
  // @ts-expect-error a Date is not a BindValue
  await db.run("SELECT ?", [new Date()]);
  // @ts-expect-error a Date is no parameters object
  await db.run("SELECT 1", new Date());
  // @ts-expect-error a Map is no parameters object
  await db.run("SELECT :a", new Map([["a", 1]]));
  // @ts-expect-error a nested object is not a BindValue
  await st.get({ a: { b: 1 } });
  // @ts-expect-error an explicit row type alone leaves the parameters as BindParams (see above)
  await db.get<User>("SELECT * FROM u WHERE name = :name", p);

  // Parameters are an array (positional) or an object (named), as the run time takes them;
  // a scalar or a function is refused at run time (INVALID_PARAM), so at compile time too.
  // @ts-expect-error a number is no parameters: pass [1]
  await st.run(1);
  // @ts-expect-error a string is no parameters: pass ["a"]
  await st.all("a");
  // @ts-expect-error a boolean is no parameters
  await st.get(true);
  // @ts-expect-error a bigint is no parameters
  await st.values(1n);
  // @ts-expect-error a number is no parameters
  for await (const _ of st.iterate(1));
  // @ts-expect-error a number is no parameters
  await db.run("SELECT ?", 1);
  // @ts-expect-error a string is no parameters
  await db.query("SELECT ?", "a");
  // @ts-expect-error a number is no parameters
  for await (const _ of db.iterate("SELECT ?", 1));
  // @ts-expect-error a number is no parameters
  await db.batch([{ sql: "SELECT ?", params: 1 }]);
  // @ts-expect-error a function is no parameters
  await st.run(() => 1);
  const scalarOrNamed: number | { a: number } = Math.random() > 0.5 ? 1 : { a: 1 };
  // @ts-expect-error one member of the union is a number
  await st.run(scalarOrNamed);
  // @ts-expect-error a number is no parameters
  const _badStatement: BatchStatement<number>[] = [];
  // null is no parameters, as leaving them out; so is an empty array or object.
  await st.run(null);
  await db.run("SELECT 1", null);
  await db.batch([{ sql: "SELECT 1", params: null }]);
  await st.run([]);
  await st.run({});
  // Parameters named like a function's methods are parameters like any other.
  await st.run({ call: 1, apply: "a", bind: null });

  // An optional property is refused: absent, its parameter would have no value (INVALID_PARAM).
  interface OptionalParams {
    name?: string;
  }
  const optional: OptionalParams = {};
  const optionalLiteral: { a?: number } = {};
  // @ts-expect-error an optional property may be absent (or undefined)
  await db.run("SELECT :name", optional);
  // @ts-expect-error an optional property may be absent (or undefined)
  await db.run("SELECT :a", optionalLiteral);
  // @ts-expect-error an optional property may be absent (or undefined)
  await st.all(optionalLiteral);
  // @ts-expect-error an optional property may be absent (or undefined)
  for await (const _ of db.iterate("SELECT :a", optionalLiteral));
  // @ts-expect-error an optional property may be absent (or undefined)
  await db.batch([{ sql: "SELECT :a", params: optionalLiteral }]);
  // @ts-expect-error an optional property may be absent (or undefined)
  await db.batch([{ sql: "SELECT :name", params: optional }]);
  // Required properties, and an object literal, are fine.
  await db.run("SELECT :a", { ...optionalLiteral, a: 1 });

  // batch() statements take parameters typed by an interface too, each checked on its own.
  await db.batch([{ sql: "INSERT INTO u VALUES (:name, :age)", params: p }]);
  await db.batch([
    { sql: "INSERT INTO u VALUES (:name, :age)", params: p },
    { sql: "INSERT INTO u VALUES (?, ?)", params: ["bob", 40] },
    { sql: "DELETE FROM u WHERE name = :name", params: { name: "eve" } },
    { sql: "SELECT 1" },
  ]);
  const [bp] = await db.batch([{ sql: "SELECT :name, :age", params: p }], { arrays: true });
  same<typeof bp.rows, SqlValue[][]>(true);
  const [bq] = await db.batch([{ sql: "SELECT :name, :age", params: p }]);
  same<typeof bq.rows, Row[]>(true);
  const typed: BatchStatement<UserParams>[] = [{
    sql: "INSERT INTO u VALUES (:name, :age)",
    params: p,
  }];
  await db.batch(typed);
  const plain: BatchStatement[] = [{ sql: "SELECT ?", params: [1] }];
  await db.batch(plain);
  await db.batch([{ sql: "SELECT ?", params: [1, "a"] }] as const);
  // @ts-expect-error a Date property is not a BindValue
  await db.batch([{ sql: "SELECT :at", params: withDate }]);
  // @ts-expect-error a Date property is not a BindValue
  await db.batch([{ sql: "SELECT 1" }, { sql: "SELECT :at", params: { at: new Date() } }]);
  const justA = { a: 1 };
  const withAt = { a: 1, at: new Date() };
  await db.batch([
    { sql: "SELECT :a", params: justA },
    // @ts-expect-error a Date property is not a BindValue, whatever the other statements bind
    { sql: "SELECT :a, :at", params: withAt },
  ]);
  // @ts-expect-error undefined is not a BindValue (pass null)
  await db.batch([{ sql: "SELECT ?", params: [undefined] }]);
  // @ts-expect-error undefined is not a BindValue (pass null)
  await db.batch([{ sql: "SELECT :a", params: maybe }]);
  // @ts-expect-error a Date is no parameters object
  await db.batch([{ sql: "SELECT 1", params: new Date() }]);
  // @ts-expect-error a Date property is not a BindValue
  const _badTyped: BatchStatement<WithDate>[] = [];
  // With an explicit row type, name the statements' type too (or spread the parameters).
  const [bu] = await db.batch<User, [BatchStatement<UserParams>]>([{
    sql: "SELECT :name",
    params: p,
  }]);
  same<typeof bu.rows, User[]>(true);
  await db.batch<User>([{ sql: "SELECT :name, :age", params: { ...p } }]);
  // @ts-expect-error an explicit row type alone leaves the statements as BatchStatement[]
  await db.batch<User>([{ sql: "SELECT :name", params: p }]);
  // BatchStatementsOf checks a caller's own generic helpers the same way.
  const statements = <S extends BatchStatementsOf<S>>(s: S): S => s;
  statements([{ sql: "SELECT :name, :age", params: p }]);
  // @ts-expect-error a Date property is not a BindValue
  statements([{ sql: "SELECT :at", params: withDate }]);

  // iterate() and batch() with arrays: true yield arrays.
  for await (const row of db.iterate("SELECT 1", [], { arrays: true })) {
    same<typeof row, SqlValue[]>(true);
  }
  for await (const row of db.iterate<[number]>("SELECT 1", undefined, { arrays: true })) {
    same<typeof row, [number]>(true);
  }
  for await (const row of db.iterate("SELECT 1")) same<typeof row, Row>(true);
  for await (const row of db.iterate("SELECT 1", [], { arrays: false })) {
    same<typeof row, Row>(true);
  }
  for await (const row of db.iterate<User>("SELECT 1")) same<typeof row, User>(true);
  const flag: boolean = Math.random() > 0.5;
  for await (const row of db.iterate("SELECT 1", [], { arrays: flag })) {
    same<typeof row, Row | SqlValue[]>(true);
  }
  for await (const row of st.iterate([], { arrays: true })) same<typeof row, SqlValue[]>(true);
  for await (const row of st.iterate()) same<typeof row, Row>(true);
  const [b1] = await db.batch([{ sql: "SELECT 1" }], { arrays: true });
  same<typeof b1.rows, SqlValue[][]>(true);
  const [b2] = await db.batch([{ sql: "SELECT 1" }]);
  same<typeof b2.rows, Row[]>(true);
  const [b3] = await db.batch<[number]>([{ sql: "SELECT 1" }], { arrays: true });
  same<typeof b3.rows, [number][]>(true);
  const [b4] = await db.batch([{ sql: "SELECT 1" }], { arrays: flag });
  same<typeof b4.rows, (Row | SqlValue[])[]>(true);

  // Options passed as a variable of the declared options type (arrays optional): object rows,
  // as without options; only a `true` type gives arrays, only a required boolean a union.
  const iterateOptions: IterateOptions = { timeout: 100 };
  for await (const row of db.iterate("SELECT 1", [], iterateOptions)) same<typeof row, Row>(true);
  for await (const row of db.iterate("SELECT :name", p, iterateOptions)) {
    same<typeof row, Row>(true);
  }
  for await (const row of db.iterate<User>("SELECT 1", [], iterateOptions)) {
    same<typeof row, User>(true);
  }
  for await (const row of st.iterate([], iterateOptions)) same<typeof row, Row>(true);
  for await (const row of st.iterate(undefined, iterateOptions)) same<typeof row, Row>(true);
  const callOptions: CallOptions = { timeout: 100 };
  for await (const row of db.iterate("SELECT 1", [], callOptions)) same<typeof row, Row>(true);
  const batchOptions: BatchOptions = { timeout: 100 };
  const [b5] = await db.batch([{ sql: "SELECT 1" }], batchOptions);
  same<typeof b5.rows, Row[]>(true);
  const [b6] = await db.batch<User>([{ sql: "SELECT 1" }], batchOptions);
  same<typeof b6.rows, User[]>(true);
  const signalOnly = { signal: AbortSignal.timeout(100) };
  const [b7] = await db.batch([{ sql: "SELECT 1" }], signalOnly);
  same<typeof b7.rows, Row[]>(true);
  const arraysOptions: IterateOptions & { arrays: true } = { arrays: true };
  for await (const row of db.iterate("SELECT 1", [], arraysOptions)) {
    same<typeof row, SqlValue[]>(true);
  }
  for await (const row of st.iterate([], arraysOptions)) same<typeof row, SqlValue[]>(true);
  const batchArrays: BatchOptions & { arrays: true } = { arrays: true, timeout: 100 };
  const [b8] = await db.batch([{ sql: "SELECT 1" }], batchArrays);
  same<typeof b8.rows, SqlValue[][]>(true);
  const unknownArrays: IterateOptions & { arrays: boolean } = { arrays: flag };
  for await (const row of db.iterate("SELECT 1", [], unknownArrays)) {
    same<typeof row, Row | SqlValue[]>(true);
  }
  for await (const row of st.iterate([], unknownArrays)) same<typeof row, Row | SqlValue[]>(true);
  const batchUnknown: BatchOptions & { arrays: boolean } = { arrays: flag };
  const [b9] = await db.batch([{ sql: "SELECT 1" }], batchUnknown);
  same<typeof b9.rows, (Row | SqlValue[])[]>(true);

  // An explicit row type does not change what `arrays` gives: `true` gives arrays whatever the
  // type names (a tuple type types them, an object type is no row of this call), `false` or no
  // `arrays` objects, a boolean either. With a boolean the type names one form: an array type
  // the arrays (objects are then `Row`), any other the objects (arrays are then `SqlValue[]`).
  for await (const row of db.iterate<User>("SELECT 1", [], { arrays: true })) {
    same<typeof row, SqlValue[]>(true);
  }
  for await (const row of db.iterate<User, UserParams>("SELECT :name", p, { arrays: true })) {
    same<typeof row, SqlValue[]>(true);
  }
  for await (const row of db.iterate<User>("SELECT 1", [], arraysOptions)) {
    same<typeof row, SqlValue[]>(true);
  }
  for await (const row of db.iterate<User>("SELECT 1", [], { arrays: flag })) {
    same<typeof row, User | SqlValue[]>(true);
  }
  for await (const row of db.iterate<User>("SELECT 1", [], unknownArrays)) {
    same<typeof row, User | SqlValue[]>(true);
  }
  for await (const row of db.iterate<[number]>("SELECT 1", [], { arrays: flag })) {
    same<typeof row, Row | [number]>(true);
  }
  for await (const row of db.iterate<User>("SELECT 1", [], { arrays: false })) {
    same<typeof row, User>(true);
  }
  for await (const row of st.iterate<User>([], { arrays: true })) {
    same<typeof row, SqlValue[]>(true);
  }
  for await (const row of st.iterate<User>([], { arrays: flag })) {
    same<typeof row, User | SqlValue[]>(true);
  }
  for await (const row of st.iterate<[number]>([], { arrays: flag })) {
    same<typeof row, Row | [number]>(true);
  }
  const [b10] = await db.batch<User>([{ sql: "SELECT 1" }], { arrays: true });
  same<typeof b10.rows, SqlValue[][]>(true);
  const [b11] = await db.batch<User>([{ sql: "SELECT 1" }], batchArrays);
  same<typeof b11.rows, SqlValue[][]>(true);
  const [b12] = await db.batch<User>([{ sql: "SELECT 1" }], { arrays: flag });
  same<typeof b12.rows, (User | SqlValue[])[]>(true);
  const [b13] = await db.batch<[number]>([{ sql: "SELECT 1" }], batchUnknown);
  same<typeof b13.rows, (Row | [number])[]>(true);
  const [b14] = await db.batch<User, [BatchStatement<UserParams>]>(
    [{ sql: "SELECT :name", params: p }],
    { arrays: true },
  );
  same<typeof b14.rows, SqlValue[][]>(true);
  // The same on a transaction and a reserved connection (Queryable's overloads).
  await db.transaction(async (tx) => {
    for await (const row of tx.iterate<User>("SELECT 1", [], { arrays: true })) {
      same<typeof row, SqlValue[]>(true);
    }
    const [t1] = await tx.batch<User>([{ sql: "SELECT 1" }], { arrays: flag });
    same<typeof t1.rows, (User | SqlValue[])[]>(true);
  });
  await using reserved = await db.reserve();
  for await (const row of reserved.iterate<User>("SELECT 1", [], { arrays: true })) {
    same<typeof row, SqlValue[]>(true);
  }
  const [r1] = await reserved.batch<User>([{ sql: "SELECT 1" }], { arrays: true });
  same<typeof r1.rows, SqlValue[][]>(true);

  // null options and a null signal are none, as the calls take them (fetch()'s RequestInit.signal
  // is `AbortSignal | null`): they compile, and keep the rows' type.
  const nullSignal: AbortSignal | null = null;
  const n1 = await db.query<User>("SELECT 1", [], null);
  same<typeof n1, User[]>(true);
  await db.get("SELECT 1", [], { signal: nullSignal });
  await db.run("SELECT 1", [], null);
  await db.values("SELECT 1", null, null);
  await db.exec("SELECT 1", null);
  for await (const row of db.iterate<User>("SELECT 1", [], null)) same<typeof row, User>(true);
  await db.batch([{ sql: "SELECT 1" }], null);
  await db.transaction(async () => {}, null);
  await db.transaction(async () => {}, { signal: nullSignal });
  const stmtN = await db.prepare("SELECT 1");
  await stmtN.all([], null);
  await stmtN.get(null, { signal: nullSignal });
  await (await db.reserve(null)).release();
  await (await db.reserve({ signal: nullSignal })).release();

  // `first` is the wire's, not an option of the public calls.
  // @ts-expect-error first is not a CallOptions field
  await db.query("SELECT 1", [], { first: true });
  // @ts-expect-error first is not a CallOptions field
  const _opts: CallOptions = { first: true };

  // changes is a number, as in better-sqlite3; lastInsertRowid may be a bigint.
  const r: RunResult = await db.run("DELETE FROM u");
  const total: number = r.changes + 1;
  same<typeof r.lastInsertRowid, number | bigint>(true);
  void total;

  // BindParamsOf checks a caller's own generic helpers the same way.
  const bind = <P extends BindParamsOf<P>>(params: P): P => params;
  bind(p);
  // @ts-expect-error a Date property is not a BindValue
  bind(withDate);
}
void typeLevel;

Deno.test("Queryable.run() and Statement.all() take named parameters typed by an interface", async () => {
  await using srv = await startServer();
  await using db = await connect(srv.connectOptions);
  await db.exec("CREATE TABLE u (name TEXT, age INTEGER)");
  const p: UserParams = { name: "ada", age: 36 };
  const r = await db.run("INSERT INTO u VALUES (:name, :age)", p);
  assert.equal(r.changes, 1);
  assert.equal(typeof r.changes, "number");
  const st = await db.prepare("SELECT name, age FROM u WHERE name = :name AND age = :age");
  assert.deepEqual(await st.all(p), [{ name: "ada", age: 36 }]);
  await st.finalize();
  const rows: SqlValue[][] = [];
  for await (const row of db.iterate("SELECT name, age FROM u", [], { arrays: true })) {
    rows.push(row);
  }
  assert.deepEqual(rows, [["ada", 36]]);
  const [result] = await db.batch([{ sql: "SELECT age FROM u" }], { arrays: true });
  assert.deepEqual(result.rows, [[36]]);
  assert.equal(typeof result.changes, "number");
});

Deno.test("Queryable.batch() takes statements whose parameters are typed by an interface", async () => {
  await using srv = await startServer();
  await using db = await connect(srv.connectOptions);
  await db.exec("CREATE TABLE u (name TEXT, age INTEGER)");
  const p: UserParams = { name: "ada", age: 36 };
  const results = await db.batch([
    { sql: "INSERT INTO u VALUES (:name, :age)", params: p },
    { sql: "SELECT name, age FROM u WHERE name = :name", params: { name: p.name } },
  ]);
  assert.equal(results[0].changes, 1);
  assert.deepEqual(results[1].rows, [{ name: "ada", age: 36 }]);
});

Deno.test("Queryable.get() with an optional property (a compile error) fails at run time with INVALID_PARAM whether it is absent or undefined", async () => {
  await using srv = await startServer();
  await using db = await connect(srv.connectOptions);
  // What the types refuse, as README says it fails when the check is bypassed.
  const absent = {} as { name: string };
  const unset = { name: undefined } as unknown as { name: string };
  const failsWith = (message: string) => (err: unknown): boolean => {
    assert.ok(err instanceof SqliteError, String(err));
    assert.equal(err.code, ErrorCode.InvalidParam);
    assert.equal(err.message, message);
    return true;
  };
  const missing = `Missing value for parameter ":name": the parameters object has no "name" ` +
    `(or ":name")`;
  const undef = `Cannot bind parameter "name": undefined is not a value: pass null for NULL`;
  await assert.rejects(db.get("SELECT :name", absent), failsWith(missing));
  await assert.rejects(db.get("SELECT :name", unset), failsWith(undef));
  await assert.rejects(
    db.batch([{ sql: "SELECT :name", params: absent }]),
    failsWith(`Batch statement 1 of 1 failed, nothing was applied: ${missing}`),
  );
  await assert.rejects(
    db.batch([{ sql: "SELECT :name", params: unset }]),
    failsWith(`Batch statement 1: ${undef}`),
  );
});

Deno.test("Statement.run() and Queryable.run() with a scalar as parameters (a compile error) fail at run time with INVALID_PARAM; null binds nothing", async () => {
  await using srv = await startServer();
  await using db = await connect(srv.connectOptions);
  await db.exec("CREATE TABLE t (x)");
  const st = await db.prepare("INSERT INTO t VALUES (1)");
  const refused = (kind: string) => (err: unknown): boolean => {
    assert.ok(err instanceof SqliteError, String(err));
    assert.equal(err.code, ErrorCode.InvalidParam);
    assert.equal(
      err.message,
      `Cannot bind parameters: pass an array (positional) or a plain object (named), got ${kind}`,
    );
    return true;
  };
  // What the types refuse, as it fails when the check is bypassed.
  await assert.rejects(st.run(1 as never), refused("a number"));
  await assert.rejects(st.all("a" as never), refused("a string"));
  await assert.rejects(db.run("SELECT ?", true as never), refused("a boolean"));
  await assert.rejects(st.run((() => 1) as never), refused("a function"));
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]], "nothing ran");
  assert.equal((await st.run(null)).changes, 1);
  assert.equal((await db.run("INSERT INTO t VALUES (2)", null)).changes, 1);
  await st.finalize();
});

Deno.test("changesOf() keeps every count exactly: a number as it is, a bigint when exact, else an error", () => {
  assert.equal(changesOf(3), 3);
  assert.equal(changesOf(7n), 7);
  assert.equal(changesOf(BigInt(Number.MAX_SAFE_INTEGER)), Number.MAX_SAFE_INTEGER);
  assert.throws(() => changesOf(2n ** 53n), /impossible change count: 9007199254740992/);
});
