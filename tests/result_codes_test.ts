/**
 * engine/_result_codes.ts: every extended result code SQLite can return
 * has its own name (an I/O failure on the shared-memory file reaches the
 * client as SQLITE_IOERR_SHMSIZE, not just SQLITE_IOERR), and each name
 * belongs to its primary code.
 */

import assert from "node:assert/strict";
import { resultCodeName } from "../engine/_result_codes.ts";

Deno.test("resultCodeName names extended codes, and falls back to the primary name", () => {
  assert.equal(resultCodeName(10 | (19 << 8)), "SQLITE_IOERR_SHMSIZE");
  assert.equal(resultCodeName(10 | (34 << 8)), "SQLITE_IOERR_IN_PAGE");
  assert.equal(resultCodeName(4 | (2 << 8)), "SQLITE_ABORT_ROLLBACK");
  assert.equal(resultCodeName(14 | (6 << 8)), "SQLITE_CANTOPEN_SYMLINK");
  assert.equal(resultCodeName(11 | (3 << 8)), "SQLITE_CORRUPT_INDEX");
  assert.equal(resultCodeName(19 | (12 << 8)), "SQLITE_CONSTRAINT_DATATYPE");
  assert.equal(resultCodeName(19), "SQLITE_CONSTRAINT");
  // An extended code newer than this table: its primary code's name.
  assert.equal(resultCodeName(10 | (200 << 8)), "SQLITE_IOERR");
  assert.equal(resultCodeName(99), "SQLITE_UNKNOWN_99");
});

Deno.test("each extended name begins with its primary code's name, and no two codes share a name", () => {
  const seen = new Map<string, number>();
  for (let primary = 1; primary <= 28; primary++) {
    const base = resultCodeName(primary);
    for (let n = 1; n < 64; n++) {
      const code = primary | (n << 8);
      const name = resultCodeName(code);
      if (name === base) continue;
      assert.ok(name.startsWith(`${base}_`), `${code}: ${name} under ${base}`);
      assert.equal(seen.get(name), undefined, `${name} twice`);
      seen.set(name, code);
    }
  }
  assert.ok(seen.size >= 75, `${seen.size} extended names`);
});
