/**
 * The one SQL lexer (`protocol/sql_lexer.ts`) and what its users read with
 * it: transaction control in the client, the first statement's tokens in the
 * engine, and cluster mode's transaction effects and parameters.
 */

import assert from "node:assert/strict";
import { leadingVerb, scan, tokenize } from "../protocol/sql_lexer.ts";
import { findTxControl } from "../client/_tx_control.ts";
import { hasStatement, startsWith, statementTokens } from "../engine/_sql_text.ts";
import { positionalArgs, txEffect } from "../engine/dqlite/_sql_scan.ts";
import { statementTexts } from "../engine/dqlite/_sql_shape.ts";

function kinds(sql: string): string[] {
  return tokenize(sql).map((t) => `${t.kind}:${t.text}`);
}

Deno.test("sql lexer: quoted strings and names, with doubled quotes inside", () => {
  assert.deepEqual(kinds(`'it''s' "a""b" \`c\`\`d\` [e"f] ''`), [
    "string:it's",
    'name:a"b',
    "name:c`d",
    'name:e"f',
    "string:",
  ]);
  // Offsets cover the token as written.
  const [t] = tokenize(`  "a""b" x`);
  assert.deepEqual([t.at, t.end], [2, 8]);
});

Deno.test("sql lexer: comments and blanks are skipped; unterminated ones run to the end", () => {
  assert.deepEqual(kinds("a -- b ; c\n d /* e ; */ f\t\r\n"), ["word:a", "word:d", "word:f"]);
  assert.deepEqual(kinds("a /* never closed ; b"), ["word:a"]);
  assert.deepEqual(kinds("a 'never closed ; b"), ["word:a", "string:never closed ; b"]);
  assert.deepEqual(kinds('a "never closed'), ["word:a", "name:never closed"]);
  assert.deepEqual(kinds("a [never closed"), ["word:a", "name:never closed"]);
  assert.deepEqual(kinds("a -- to the end"), ["word:a"]);
  // A byte-order mark is a blank to SQLite's tokenizer: here too (a file read with its BOM).
  assert.deepEqual(kinds("\ufeffVACUUM"), ["word:vacuum"]);
  assert.deepEqual(leadingVerb("\ufeff BEGIN"), { first: "begin", main: "" });
  assert.equal(startsWith(" \ufeffSELECT 1", "select"), true);
});

Deno.test("sql lexer: parameters, numbers, words and punctuation", () => {
  assert.deepEqual(kinds("? ?12 :a @b1 $c$d : x"), [
    "param:?",
    "param:?12",
    "param::a",
    "param:@b1",
    "param:$c$d",
    "punct::",
    "word:x",
  ]);
  // As SQLite's tokenizer: `#` is a prefix too; after any prefix, `::` and a
  // `(...)` suffix (TCL style) belong to the name; a prefix alone is none.
  assert.deepEqual(kinds("#a :a$b @a::b $::c :a(x:'y')z #a() @a(x y) $a:::b #:: @"), [
    "param:#a",
    "param::a$b",
    "param:@a::b",
    "param:$::c",
    "param::a(x:'y')",
    "word:z",
    "param:#a()",
    "param:@a(x",
    "word:y",
    "punct:)",
    "param:$a::",
    "param::b",
    "punct:#",
    "punct::",
    "punct::",
    "punct:@",
  ]);
  assert.deepEqual(kinds("x$y:z"), ["word:x$y", "param::z"]);
  assert.deepEqual(kinds("1.5e10 .5 0x1F a.b"), [
    "number:1.5e10",
    "number:.5",
    "number:0x1F",
    "word:a",
    "punct:.",
    "word:b",
  ]);
  // Words are lowercased; any character beyond ASCII is part of a word, as in SQLite.
  assert.deepEqual(kinds("SeLeCt Été_1$ x||y;"), [
    "word:select",
    "word:été_1$",
    "word:x",
    "punct:|",
    "punct:|",
    "word:y",
    "semicolon:;",
  ]);
});

Deno.test("sql lexer: scan starts at an offset and stops when asked", () => {
  const seen: string[] = [];
  scan("a b c d", (t) => {
    seen.push(t.text);
    return t.text !== "c";
  }, 2);
  assert.deepEqual(seen, ["b", "c"]);
});

Deno.test("findTxControl: statements that control transactions, not words elsewhere", () => {
  assert.equal(findTxControl("begin immediate"), "BEGIN");
  assert.equal(findTxControl("/* c */ -- d\n  Commit"), "COMMIT");
  assert.equal(findTxControl("SELECT 1; end"), "END");
  assert.equal(findTxControl("SELECT 1; end", false), null, "only the first statement");
  assert.equal(findTxControl(";;savepoint a"), "SAVEPOINT");
  assert.equal(findTxControl("SELECT 'begin'; SELECT \"commit\" FROM t"), null);
  assert.equal(findTxControl("(SELECT 1); ROLLBACK"), "ROLLBACK");
  assert.equal(findTxControl("INSERT INTO t VALUES ('x'); RELEASE a"), "RELEASE");
  const trigger = "CREATE TRIGGER tr AFTER INSERT ON t BEGIN " +
    "UPDATE u SET v = CASE WHEN 1 THEN 2 END; DELETE FROM w; END";
  assert.equal(findTxControl(trigger), null, "the trigger's body is not a statement");
  assert.equal(findTxControl(`${trigger}; COMMIT`), "COMMIT", "after the trigger it is");
  assert.equal(findTxControl("SELECT begin FROM t"), null);
});

Deno.test("engine: hasStatement, startsWith and statementTokens read past comments", () => {
  assert.equal(hasStatement(" ;; -- x\n /* y */ ;"), false);
  assert.equal(hasStatement("SELECT 1; -- x", 9), false);
  assert.equal(hasStatement("SELECT 1; x", 9), true);
  assert.equal(hasStatement("/* unterminated"), false);
  assert.equal(startsWith(";; /* p */ Pragma x", "pragma"), true);
  assert.equal(startsWith("SELECT 'pragma'", "pragma"), false);
  assert.deepEqual(statementTokens("; ; VACUUM INTO 'a''b'").map((t) => t.text), [
    "vacuum",
    "into",
    "a'b",
  ]);
});

Deno.test("cluster mode: transaction effects, statements and parameters from the lexer", () => {
  assert.equal(txEffect("SELECT \"end\"; BEGIN; SELECT 'commit'").last, "begin");
  assert.equal(txEffect("ROLLBACK TO a").ends, false);
  assert.equal(txEffect("ROLLBACK TRANSACTION").ends, true);
  assert.deepEqual(
    statementTexts("SELECT ';'; CREATE TRIGGER x AFTER INSERT ON t BEGIN SELECT 1; END; SELECT 2"),
    ["SELECT ';';", "CREATE TRIGGER x AFTER INSERT ON t BEGIN SELECT 1; END;", "SELECT 2"],
  );
  // A doubled quote inside a name does not split it: one name, the parameters after it counted.
  assert.deepEqual(positionalArgs('SELECT "a"":b", :c, ?2', { c: 1, "?2": 2 }), [1, 2]);
  // Names as SQLite's tokenizer reads them; a `?NNN` names the index a `?` took before it.
  assert.deepEqual(positionalArgs("SELECT #a, :a$b, $c::d(e)", { a: 1, "a$b": 2, "c::d(e)": 3 }), [
    1,
    2,
    3,
  ]);
  assert.deepEqual(positionalArgs("SELECT ?, ?1", { "?1": 7 }), [7]);
  // A `?NNN` past SQLite's highest is refused before anything is built for it.
  assert.equal(positionalArgs("SELECT ?250000", new Array(250_000).fill(1)).length, 250_000);
  for (const sql of ["SELECT ?250001", "SELECT ?99999999999", "SELECT ?0"]) {
    assert.throws(() => positionalArgs(sql, []), {
      name: "SqliteError",
      code: "SQLITE_ERROR",
      message: "variable number must be between ?1 and ?250000",
    });
  }
  // Many distinct names are read in linear time (10,000 here).
  const many = Array.from({ length: 10_000 }, (_, i) => `:p${i}`).join(", ");
  assert.equal(positionalArgs(`SELECT ${many}`, new Array(10_000).fill(0)).length, 10_000);
});

Deno.test("leadingVerb() finds the first word, and a WITH's main verb after its CTEs at depth 0", () => {
  const cases: [string, { first: string; main: string }][] = [
    ["select 1", { first: "select", main: "" }],
    ["  /* c */ -- x\n  UPDATE t SET a = 1", { first: "update", main: "" }],
    ["WITH a(x) AS (SELECT 1), b AS (VALUES (2)) INSERT INTO t SELECT x FROM a", {
      first: "with",
      main: "insert",
    }],
    ["with recursive c(n) as (select 1 union all select n + 1 from c) select n from c", {
      first: "with",
      main: "select",
    }],
    ['WITH "replace" AS (SELECT 1) DELETE FROM t', { first: "with", main: "delete" }],
    ["WITH replace AS (SELECT 1) SELECT 1", { first: "with", main: "replace" }],
    ["WITH x AS (SELECT 1); SELECT 2", { first: "with", main: "" }],
    ["(SELECT 1)", { first: "?", main: "" }],
    ["", { first: "", main: "" }],
  ];
  for (const [sql, want] of cases) assert.deepEqual(leadingVerb(sql), want, sql);
});
