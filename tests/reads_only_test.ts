/**
 * `readsOnly()`: which SQL the client's pool treats as a read that never
 * waits for the server's writer (routing only; the server decides itself).
 */

import assert from "node:assert/strict";
import { readsOnly } from "../client/connection.ts";

const READS = [
  "SELECT 1",
  "  -- comment\n select 1",
  "/* x */select 1",
  "VALUES (1)",
  "EXPLAIN INSERT INTO t VALUES (1)",
  "EXPLAIN QUERY PLAN SELECT 1",
  "WITH x AS (SELECT 1) SELECT * FROM x",
  "with recursive c(i) as (select 1 union all select i + 1 from c limit 5) select i from c",
  "WITH a AS (SELECT 1), b(v) AS (VALUES (2)) VALUES (3)",
  "WITH x AS (SELECT 'insert (' AS s) SELECT s FROM x",
  "PRAGMA user_version",
  "PRAGMA main.journal_mode",
  "PRAGMA table_info('t')",
  "PRAGMA main.index_list(t)",
  "PRAGMA integrity_check",
  "PRAGMA quick_check(10)",
  "SELECT * FROM t WHERE x = 1",
];

const WRITES = [
  "INSERT INTO t VALUES (1) RETURNING *",
  "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
  "WITH x AS (SELECT 1 FROM (SELECT 2)) UPDATE t SET v = (SELECT * FROM x)",
  "with x as (select 1) delete from t where v in x",
  "WITH x AS (VALUES (1)) REPLACE INTO t SELECT * FROM x",
  "PRAGMA user_version = 5",
  "PRAGMA user_version(5)",
  "PRAGMA main.user_version=5",
  "PRAGMA journal_mode(DELETE)",
  "PRAGMA wal_checkpoint(TRUNCATE)",
  "PRAGMA wal_checkpoint",
  "PRAGMA optimize",
  "PRAGMA main.incremental_vacuum(10)",
  "PRAGMA shrink_memory",
  "PRAGMA foreign_keys=ON",
  "ANALYZE",
  "BEGIN",
  "(SELECT 1)",
];

Deno.test("readsOnly() classifies SELECT, VALUES, EXPLAIN, WITH ... SELECT and reading PRAGMAs as reads", () => {
  for (const sql of READS) assert.equal(readsOnly(sql), true, sql);
});

Deno.test("readsOnly() classifies WITH ... INSERT/UPDATE/DELETE, PRAGMAs with a value and acting PRAGMAs as possible writes", () => {
  for (const sql of WRITES) assert.equal(readsOnly(sql), false, sql);
});
